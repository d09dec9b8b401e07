//! The kernel booted on the one simulated Xen, for host tests: the same
//! `kmain` as on the real Xen, with the test's thread as the idle task.

use crate::{cmdline, sched, smp, start};
use xen::sim::{SimConfig, SimSession, SimXen};

/// A booted guest; the simulated machine is the test's while it lives.
pub struct Guest {
    pub opts: cmdline::Options,
    _session: SimSession,
}

impl Drop for Guest {
    /// Every vCPU but 0 is a host thread running guest code: each is
    /// stopped (parked in `VCPUOP_down` on its own stack) before the next
    /// test boots a new guest over the same kernel state.
    fn drop(&mut self) {
        let others = smp::running_others();
        if !others.is_empty() {
            if let Err(e) = smp::stop(&others, 10_000_000_000) {
                // A vCPU still running guest code would run it on into the
                // next test's guest: stop here (an abort, if unwinding).
                panic!("testing: vCPUs {:?} did not stop at the end of the test: {:?}", others, e);
            }
        }
    }
}

/// Boots a guest of `cfg` on a fresh simulated Xen, up to where drivers
/// start. The address-space self-test is off whatever the command line
/// says: it reads through page tables of its own, which a host process
/// cannot load.
pub fn boot(cfg: SimConfig) -> Guest {
    boot_after(cfg, |_| {})
}

/// [`boot`], with `prepare` run on the simulated Xen before the guest
/// starts (to arm a fault its boot meets).
pub fn boot_after(mut cfg: SimConfig, prepare: impl FnOnce(&mut xen::sim::Sim)) -> Guest {
    cfg.cmdline.push_str(" ballast.aspace=0");
    let (session, si) = SimXen::boot(cfg);
    sim(prepare);
    // Only now is the simulated machine (and the kernel's statics) ours.
    crate::mm::pressure::clear();
    crate::selftest::hog::clear();
    // SAFETY: `si` is the simulated domain's start_info page, and this
    // thread holds the simulated machine (the session) while it runs.
    let opts = unsafe { start::kmain(si) };
    Guest { opts, _session: session }
}

/// Runs `f` on the simulated hypervisor's state.
pub fn sim<R>(f: impl FnOnce(&mut xen::sim::Sim) -> R) -> R {
    xen::sim::with(f)
}

/// Runs the guest (this thread is its idle task) until `done()` holds.
/// Panics when `limit_ms` of system time pass first, or when the guest
/// blocks with nothing armed that could ever wake it.
pub fn run_until(what: &str, limit_ms: u64, mut done: impl FnMut() -> bool) {
    let deadline = sim(|s| s.now_ns()) + limit_ms * 1_000_000;
    while !done() {
        let (now, idle) = sim(|s| (s.now_ns(), s.idle_blocks));
        assert!(now < deadline, "waited {limit_ms} ms of guest time for {what}; the console ends:\n{}", console_tail());
        sched::idle_once();
        assert!(
            done() || sim(|s| s.idle_blocks) == idle,
            "the guest sleeps with no timer armed while waiting for {what}"
        );
    }
}

/// The last lines the guest wrote to its console, for a failure message.
fn console_tail() -> alloc::string::String {
    let text = xen::sim::console_text();
    let lines: alloc::vec::Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Lets the guest run for `ms` of system time.
pub fn run_for(ms: u64) {
    let until = sim(|s| s.now_ns()) + ms * 1_000_000;
    run_until("time to pass", ms + 1, || sim(|s| s.now_ns()) >= until);
}

/// Panics with the list if the simulated Xen saw a guest mistake.
pub fn assert_no_violations() {
    let v = sim(|s| s.violations().to_vec());
    assert!(v.is_empty(), "the simulated Xen saw guest mistakes:\n{}", v.join("\n"));
}

/// A xenstore node's value as text (the simulated xenstored's tree).
pub fn store(path: &str) -> Option<alloc::string::String> {
    sim(|s| s.xenstore.value(path).map(|v| alloc::string::String::from_utf8_lossy(v).into_owned()))
}

/// Asks for a suspend as libxl does (`control/shutdown`), `plan` saying
/// what the simulated Xen does with it, and runs until the guest is done
/// with it and has taken back the memory it released; returns the figures.
pub fn request_suspend(plan: Option<xen::sim::SuspendPlan>) -> crate::suspend::Figures {
    let before = crate::suspend::figures();
    if let Some(p) = plan {
        sim(|s| s.plan_suspend(p));
    }
    sim(|s| s.toolstack_write("control/shutdown", b"suspend"));
    run_until("the suspend to finish", 120_000, || {
        let f = crate::suspend::figures();
        f.suspends + f.refused > before.suspends + before.refused
    });
    assert_eq!(store("control/shutdown").as_deref(), Some(""), "the request was not acknowledged");
    run_until("the released memory to come back", 60_000, || !crate::restock::pending());
    crate::suspend::figures()
}

/// xorshift64*: a deterministic source for tests that pick random
/// operations, the same sequence on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
