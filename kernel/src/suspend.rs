//! The suspend coordinator: `xl save`, `xl save -c`, `xl restore` and
//! migration, seen from inside the guest.
//!
//! `do_suspend` reads top to bottom as the sequence: freeze tasks, suspend
//! devices, quiesce other vCPUs, pin every page-table root, canonicalise
//! start_info and unmap shared_info, then the suspend hypercall. Xen
//! returns from it in one of two worlds. 0: a new domain (after a restore
//! or migration) where shared_info, event channels, rings and every machine
//! frame are new. 1: the suspend was cancelled and the old domain goes on.
//! The steps after the hypercall are the mirror image of the steps before
//! it, and a failure before the hypercall unwinds exactly what was done.

use crate::mm::{aspace, physmap};
use crate::{console, events, events_mask, platform, pm, sched, time};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// How long tasks get to reach a safe point.
const FREEZE_TIMEOUT_NS: u64 = 2_000_000_000;

/// Figures of the suspends so far, published under `data/suspend/`.
pub static SUSPENDS: AtomicU64 = AtomicU64::new(0);
pub static CANCELS: AtomicU64 = AtomicU64::new(0);
pub static REFUSED: AtomicU64 = AtomicU64::new(0);
pub static LAST_TOTAL_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_FROZEN_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_SUSPEND_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_RESUME_US: AtomicU64 = AtomicU64::new(0);

/// Times one step and logs it.
struct Stopwatch {
    start: u64,
    step: u64,
}

impl Stopwatch {
    fn new() -> Self {
        let t = time::now_ns();
        Self { start: t, step: t }
    }
    /// Microseconds since the last lap, logged with `what`.
    fn lap(&mut self, what: core::fmt::Arguments) -> u64 {
        let now = time::now_ns();
        let us = (now - self.step) / 1000;
        self.step = now;
        log::info!("suspend: {} ({} us)", what, us);
        us
    }
    fn total_us(&self) -> u64 {
        (time::now_ns() - self.start) / 1000
    }
}

/// What the hypercall said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Running in a new domain.
    Resumed,
    /// The old domain continues.
    Cancelled,
    /// Never suspended: a step before the hypercall failed.
    Refused,
}

/// Runs a suspend requested through `control/shutdown`.
pub fn do_suspend() -> Outcome {
    let mut sw = Stopwatch::new();
    log::info!("suspend: starting (suspend #{})", SUSPENDS.load(Ordering::Relaxed) + 1);

    // 1. Freeze tasks.
    let frozen_at = time::now_ns();
    match sched::freeze(FREEZE_TIMEOUT_NS) {
        Ok(n) => {
            sw.lap(format_args!("froze {} tasks", n));
        }
        Err(e) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "suspend: refused: task {} ({}) did not freeze within {} ms; all tasks thawed, guest runs on",
                e.task,
                e.id,
                FREEZE_TIMEOUT_NS / 1_000_000
            );
            return Outcome::Refused;
        }
    }

    // 2. Suspend devices.
    match pm::suspend_all() {
        Ok(n) => {
            sw.lap(format_args!("suspended {} devices", n));
        }
        Err((dev, why)) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            log::error!("suspend: refused: device {} could not suspend: {}", dev, why);
            sched::thaw();
            return Outcome::Refused;
        }
    }

    // 3. Quiesce other vCPUs: ballast runs on vCPU 0 alone, so the
    //    hypercall already comes from vCPU 0 and nothing else runs.

    // 4. Pin every page-table root that is not pinned yet.
    let pinned: Vec<aspace::SpaceId> = match aspace::pin_all_unpinned() {
        Ok(ids) => ids,
        Err((id, e)) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            log::error!("suspend: refused: pinning address space {} failed: {:?}", id, e);
            pm::cancel_all();
            sched::thaw();
            return Outcome::Refused;
        }
    };
    let (spaces, _) = aspace::counts();
    sw.lap(format_args!("pinned {} of {} address spaces", pinned.len(), spaces));

    // 5. Canonicalise and 6. suspend, with events masked: from here until
    //    shared_info is mapped again nothing may touch it.
    let was_masked = events_mask::mask();
    let canon = canonicalise();
    LAST_SUSPEND_US.store(sw.total_us(), Ordering::Relaxed);
    let start_info_mfn = physmap::pfn_to_mfn(platform::va_to_pfn(platform::start_info_ptr() as u64));
    // SAFETY: tasks are frozen, devices quiesced, every root pinned,
    // start_info canonical and shared_info unmapped: the state the
    // toolstack expects. Xen returns here when the domain runs again.
    let rc = unsafe { xen::hv::suspend(start_info_mfn) };

    let outcome = if rc == 0 {
        resume_new_domain();
        Outcome::Resumed
    } else {
        resume_cancelled(canon);
        Outcome::Cancelled
    };
    events_mask::restore(was_masked);
    let resume_start = time::now_ns();
    match outcome {
        Outcome::Resumed => {
            pm::resume_all();
            sw.lap(format_args!("resumed in a new domain: shared_info, p2m frame lists, {} event channels, devices", events::count()));
        }
        _ => {
            pm::cancel_all();
            CANCELS.fetch_add(1, Ordering::Relaxed);
            sw.lap(format_args!("cancelled (checkpoint): same domain, devices continue"));
        }
    }
    sched::rearm_timer();

    // Mirror of 4: unpin exactly what was pinned for the suspend.
    aspace::unpin_list(&pinned);
    // Mirror of 1.
    sched::thaw();
    let frozen_us = (time::now_ns() - frozen_at) / 1000;
    LAST_RESUME_US.store((time::now_ns() - resume_start) / 1000, Ordering::Relaxed);
    LAST_FROZEN_US.store(frozen_us, Ordering::Relaxed);
    let total = sw.total_us();
    LAST_TOTAL_US.store(total, Ordering::Relaxed);
    SUSPENDS.fetch_add(1, Ordering::Relaxed);
    log::info!(
        "suspend: done: {:?}, total {} us, frozen {} us, before hypercall {} us, after {} us; suspends={} cancels={}",
        outcome,
        total,
        frozen_us,
        LAST_SUSPEND_US.load(Ordering::Relaxed),
        LAST_RESUME_US.load(Ordering::Relaxed),
        SUSPENDS.load(Ordering::Relaxed),
        CANCELS.load(Ordering::Relaxed)
    );
    outcome
}

/// The pfns of the rings that start_info names, kept to undo the change.
#[derive(Clone, Copy)]
struct Canonical {
    store_pfn: u64,
    console_pfn: u64,
}

/// Step 5: start_info names the xenstore and console rings by pfn (the
/// toolstack only translates it this way round), and shared_info is
/// unmapped (an entry naming its frame would wreck the restore).
fn canonicalise() -> Canonical {
    let si = platform::start_info_ptr();
    // SAFETY: start_info stays mapped; only this task touches it now.
    let canon = unsafe {
        let store_pfn = platform::mfn_to_pfn((*si).store_mfn);
        let console_pfn = platform::mfn_to_pfn((*si).console.domU.mfn);
        (*si).store_mfn = store_pfn;
        (*si).console.domU.mfn = console_pfn;
        Canonical { store_pfn, console_pfn }
    };
    platform::unmap_shared_info();
    canon
}

/// Resumed with 0: everything that named a machine frame or a port is new.
fn resume_new_domain() {
    platform::map_shared_info();
    physmap::publish_frame_lists();
    // The new host's system time may be behind the old one's: continue the
    // monotonic clock from where it stopped.
    time::clock().rebase(time::system_time_ns(), 0);
    let (console_port, store_port) = platform::with_start_info(|si| {
        // SAFETY: a domU's start_info carries the domU console variant.
        (unsafe { si.console.domU.evtchn }, si.store_evtchn)
    });
    events::rebind_all(|name| match name {
        "console" => Some(console_port),
        "xenstore" => Some(store_port),
        _ => None,
    });
    console::init();
}

/// Resumed with 1: undo step 5 in the same domain; ports stay bound.
fn resume_cancelled(canon: Canonical) {
    let si = platform::start_info_ptr();
    // SAFETY: as in `canonicalise`.
    unsafe {
        (*si).store_mfn = physmap::pfn_to_mfn(canon.store_pfn);
        (*si).console.domU.mfn = physmap::pfn_to_mfn(canon.console_pfn);
    }
    platform::map_shared_info();
}
