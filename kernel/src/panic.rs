//! The end of the line: report a panic on the console and have Xen mark the
//! domain crashed (so `on_crash` in the xl config decides what happens).
//!
//! Several vCPUs may panic at once (one fault often drags others after
//! it). Each reports its own line, one after another, and the domain is
//! crashed only once every vCPU that got here has had its say: a vCPU that
//! crashed the domain at once would cut the first report short.

use crate::percpu::{self, VcpuId};
use crate::{Hv, Hypervisor};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use xen::abi::sched;

/// vCPUs that have entered the panic path, a bit each.
static PANICKING: AtomicU64 = AtomicU64::new(0);
/// vCPUs whose report is written (or given up on).
static REPORTED: AtomicU64 = AtomicU64::new(0);
/// The vCPU writing its report now (`NOBODY`: none). Reports take turns
/// so that their lines do not interleave.
static WRITER: AtomicU32 = AtomicU32::new(NOBODY);
const NOBODY: u32 = u32::MAX;

/// How long a vCPU waits for its turn to write, and then for the others to
/// finish, in yields to Xen (each gives up the pCPU once).
const PATIENCE_YIELDS: u32 = 20_000;

pub fn report_and_crash(info: &PanicInfo) -> ! {
    crate::events_mask::mask();
    let me = percpu::current();
    let bit = 1u64 << (me as u64 % 64);
    if PANICKING.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
        // Panicked again while reporting: the report so far must do.
        REPORTED.fetch_or(bit, Ordering::AcqRel);
        Hv::shutdown(sched::REASON_CRASH)
    }
    if wait_for(|| WRITER.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire).is_ok()) {
        write_report(me, info);
        WRITER.store(NOBODY, Ordering::Release);
    }
    REPORTED.fetch_or(bit, Ordering::AcqRel);
    // Let every vCPU already on this path finish its line.
    wait_for(|| {
        let panicking = PANICKING.load(Ordering::Acquire);
        REPORTED.load(Ordering::Acquire) & panicking == panicking
    });
    Hv::shutdown(sched::REASON_CRASH)
}

fn write_report(me: VcpuId, info: &PanicInfo) {
    match info.location() {
        Some(loc) => crate::console::emergency_write(format_args!(
            "ballast panicked on vCPU {} at {}:{}:{}: {}\n",
            me,
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        )),
        None => crate::console::emergency_write(format_args!("ballast panicked on vCPU {}: {}\n", me, info.message())),
    }
}

/// Polls `done` until it holds or patience runs out; says which.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..PATIENCE_YIELDS {
        if done() {
            return true;
        }
        Hv::yield_now();
    }
    done()
}
