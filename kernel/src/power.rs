//! Ending the domain in order: park every task, say so, then ask Xen.

use crate::{console, sched};
use crate::{Hv, Hypervisor};
use xen::abi::sched as reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Poweroff,
    Reboot,
}

/// How long tasks get to reach a safe point before the domain goes anyway.
const STOP_FREEZE_NS: u64 = 2_000_000_000;

/// Parks all tasks (bounded) and shuts the domain down with `how`.
pub fn stop(how: Stop) -> ! {
    let t0 = crate::time::now_ns();
    let parked = match sched::freeze(STOP_FREEZE_NS) {
        Ok(n) => n,
        Err(e) => {
            log::warn!("power: task {} ({}) did not stop; going down anyway", e.task, e.id);
            0
        }
    };
    let code = match how {
        Stop::Poweroff => reason::REASON_POWEROFF,
        Stop::Reboot => reason::REASON_REBOOT,
    };
    log::info!(
        "power: {:?}: {} tasks stopped in {} ms, shutting down",
        how,
        parked,
        (crate::time::now_ns() - t0) / 1_000_000
    );
    // Let xenconsoled take the last lines before the domain goes.
    console::flush(1_000_000_000);
    Hv::shutdown(code)
}
