//! vCPU hotplug: dom0's `cpu/<n>/availability` ("online" or "offline",
//! written by `xl vcpu-set` and at domain creation) decides which vCPUs
//! run. The watch fires once when it is set up, which is the boot pass.

use alloc::format;
use kernel::rejects::{excerpt, RateLimit};
use kernel::{sched, smp, warn_limited, xenstore};

/// How long a vCPU taken offline gets to stop.
const OFFLINE_TIMEOUT_NS: u64 = 10_000_000_000;

/// What dom0 wants for vCPU `v`: None when the node is absent or says
/// something else (logged; the vCPU stays as it is).
fn wanted(v: u32) -> Option<bool> {
    match xenstore::read(&format!("cpu/{}/availability", v)).as_deref() {
        Ok("online") => Some(true),
        Ok("offline") => Some(false),
        Ok(other) => {
            static REJECTS: RateLimit = RateLimit::new();
            warn_limited!(
                REJECTS,
                "vcpus: cpu/{}/availability = {:?} is neither online nor offline; ignored",
                v,
                excerpt(other, 40)
            );
            None
        }
        Err(_) => None,
    }
}

/// Brings every vCPU to what dom0 wants, one change at a time.
fn reconcile() {
    let _exclusive = smp::hotplug_exclusive();
    for v in 1..smp::possible() {
        let Some(want) = wanted(v) else { continue };
        if want == smp::is_online(v) {
            continue;
        }
        let r = if want { smp::bring_online(v) } else { smp::take_offline(v, OFFLINE_TIMEOUT_NS) };
        if let Err(e) = r {
            log::error!("vcpus: taking vCPU {} {} failed: {:?}", v, if want { "online" } else { "offline" }, e);
        }
    }
}

/// The hotplug task runs on vCPU 0, which never goes offline: on the vCPU
/// it takes offline, it would wait for itself to stop.
pub fn spawn() {
    sched::spawn_pinned("vcpu-hotplug", 0, || xenstore::on_each_change("cpu", "; only vCPU 0 runs", reconcile));
}
