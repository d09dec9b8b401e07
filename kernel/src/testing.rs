//! The kernel booted on the one simulated Xen, for host tests: the same
//! start as on the real Xen up to the memory, event and grant layers
//! (platform, physmap, frame allocator, grant table).

use crate::{events, grant, mm, platform};
use xen::sim::{SimConfig, SimSession, SimXen};

/// A booted guest; the simulated machine is the test's while it lives.
pub struct Guest {
    _session: SimSession,
}

/// Boots a guest of `cfg` on a fresh simulated Xen.
pub fn boot(cfg: SimConfig) -> Guest {
    let (session, si) = SimXen::boot(cfg);
    // SAFETY: `si` is the simulated domain's start_info page, live until
    // the next boot.
    unsafe { platform::init(si) };
    events::forget_all();
    platform::map_shared_info();
    mm::kernel_memory::init();
    grant::init();
    Guest { _session: session }
}

/// Runs `f` on the simulated hypervisor's state.
pub fn sim<R>(f: impl FnOnce(&mut xen::sim::Sim) -> R) -> R {
    xen::sim::with(f)
}

/// Panics with the list if the simulated Xen saw a guest mistake.
pub fn assert_no_violations() {
    let v = sim(|s| s.violations().to_vec());
    assert!(v.is_empty(), "the simulated Xen saw guest mistakes:\n{}", v.join("\n"));
}
