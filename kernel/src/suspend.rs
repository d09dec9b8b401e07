//! The suspend coordinator on the real Xen: `xl save`, `xl save -c`,
//! `xl restore` and migration, seen from inside the guest.
//!
//! The order of the steps and their unwinding live in `suspend_seq`; this
//! file says what each step does here. The hypercall returns 0 in a new
//! domain (shared_info, event channels, rings and every machine frame are
//! new) and 1 when the suspend was cancelled and the old domain goes on.

use crate::mm::suspend_release::{self, Released};
use crate::mm::{aspace, physmap, reservation};
use crate::suspend_seq::{self, SuspendSteps};
use crate::{console, events, events_mask, platform, pm, sched, time};
use crate::{Hv, Hypervisor};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use crate::suspend_seq::Outcome;

/// How long tasks get to reach a safe point in one freeze attempt.
const FREEZE_TIMEOUT_NS: u64 = 2_000_000_000;
/// Freeze attempts before the suspend is refused. The acknowledgement is
/// already written when the freeze starts, and libxl then waits 60 s for
/// the domain to suspend: a refusal costs the toolstack that whole minute
/// (`xl save`/`migrate` fail after ~62 s), while a retry costs a laggard's
/// few seconds. 5 attempts of 2 s plus the pauses stay far inside it.
const FREEZE_ATTEMPTS: u32 = 5;
/// Between attempts every task runs thawed, so a laggard waiting for a
/// parked task can finish what it was doing.
const FREEZE_RETRY_PAUSE_MS: u64 = 200;

/// Figures of the suspends so far, published under `data/suspend/`.
pub static SUSPENDS: AtomicU64 = AtomicU64::new(0);
pub static CANCELS: AtomicU64 = AtomicU64::new(0);
pub static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Freeze attempts that timed out (a suspend may still succeed after them).
pub static FREEZE_RETRIES: AtomicU64 = AtomicU64::new(0);
pub static LAST_TOTAL_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_FROZEN_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_SUSPEND_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_RESUME_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_RELEASED_PAGES: AtomicU64 = AtomicU64::new(0);
pub static LAST_RELEASE_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_REPOPULATED_PAGES: AtomicU64 = AtomicU64::new(0);
pub static LAST_REPOPULATE_US: AtomicU64 = AtomicU64::new(0);
pub static LAST_ADOPTED_PAGES: AtomicU64 = AtomicU64::new(0);

/// Whether free memory is given back at suspend (small images). On by
/// default; `ballast.release=0` or `data/suspend/release` = 0 turns it off.
pub static RELEASE_AT_SUSPEND: AtomicBool = AtomicBool::new(true);

/// State carried between the steps of one suspend.
#[derive(Default)]
struct RealSteps {
    pinned: Vec<aspace::SpaceId>,
    released: Released,
    store_pfn: u64,
    console_pfn: u64,
    was_masked: bool,
}

impl SuspendSteps for RealSteps {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    fn report(&mut self, line: core::fmt::Arguments) {
        log::info!("suspend: {}", line);
    }

    fn freeze_tasks(&mut self) -> Result<usize, String> {
        let mut attempt = 1;
        loop {
            let e = match sched::freeze(FREEZE_TIMEOUT_NS) {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
            if attempt == FREEZE_ATTEMPTS {
                return Err(format!(
                    "task {} ({}) did not freeze in {} attempts of {} ms",
                    e.task,
                    e.id,
                    FREEZE_ATTEMPTS,
                    FREEZE_TIMEOUT_NS / 1_000_000
                ));
            }
            FREEZE_RETRIES.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "suspend: task {} ({}) did not freeze within {} ms (attempt {} of {}); all thawed, retrying in {} ms",
                e.task,
                e.id,
                FREEZE_TIMEOUT_NS / 1_000_000,
                attempt,
                FREEZE_ATTEMPTS,
                FREEZE_RETRY_PAUSE_MS
            );
            sched::sleep_ms(FREEZE_RETRY_PAUSE_MS);
            attempt += 1;
        }
    }

    fn thaw_tasks(&mut self) {
        sched::thaw();
    }

    fn suspend_devices(&mut self) -> Result<usize, String> {
        pm::suspend_all().map_err(|(dev, why)| format!("device {} could not suspend: {}", dev, why))
    }

    fn resume_devices(&mut self) {
        pm::resume_all();
    }

    fn cancel_devices(&mut self) {
        pm::cancel_all();
    }

    fn quiesce_vcpus(&mut self) -> Result<usize, String> {
        // ballast runs on vCPU 0 alone: the hypercall already comes from
        // vCPU 0 and nothing else runs.
        Ok(0)
    }

    fn wake_vcpus(&mut self) {}

    fn pin_roots(&mut self) -> Result<(usize, usize), String> {
        self.pinned =
            aspace::pin_all_unpinned().map_err(|(id, e)| format!("pinning address space {} failed: {:?}", id, e))?;
        Ok((self.pinned.len(), aspace::counts().0))
    }

    fn unpin_roots(&mut self) {
        aspace::unpin_list(&self.pinned);
    }

    fn release_free_memory(&mut self) -> Option<u64> {
        if !RELEASE_AT_SUSPEND.load(Ordering::Relaxed) {
            LAST_RELEASED_PAGES.store(0, Ordering::Relaxed);
            return None;
        }
        let t0 = time::now_ns();
        self.released = suspend_release::release_free(suspend_release::RESERVE_PAGES);
        let pages = self.released.pages();
        LAST_RELEASED_PAGES.store(pages, Ordering::Relaxed);
        LAST_RELEASE_US.store((time::now_ns() - t0) / 1000, Ordering::Relaxed);
        Some(pages)
    }

    fn repopulate_memory(&mut self) -> (u64, u64) {
        if self.released.pages() == 0 {
            return (0, 0);
        }
        let t0 = time::now_ns();
        let suspend_release::Repopulated { got, wanted } = suspend_release::repopulate(&self.released);
        LAST_REPOPULATED_PAGES.store(got, Ordering::Relaxed);
        LAST_REPOPULATE_US.store((time::now_ns() - t0) / 1000, Ordering::Relaxed);
        if got < wanted {
            log::warn!("suspend: Xen supplied {} of {} pages; the balloon driver will keep asking", got, wanted);
        }
        (got, wanted)
    }

    /// start_info names the xenstore and console rings by pfn (the toolstack
    /// translates them back), and shared_info is unmapped (an entry naming
    /// its frame would wreck the restore). Events stay masked until
    /// shared_info is back.
    fn canonicalise(&mut self) {
        self.was_masked = events_mask::mask();
        let si = platform::start_info_ptr();
        // SAFETY: start_info stays mapped; every other task is frozen.
        unsafe {
            self.store_pfn = platform::mfn_to_pfn((*si).store_mfn);
            self.console_pfn = platform::mfn_to_pfn((*si).console.domU.mfn);
            (*si).store_mfn = self.store_pfn;
            (*si).console.domU.mfn = self.console_pfn;
        }
        platform::unmap_shared_info();
    }

    fn hypercall(&mut self) -> i64 {
        let start_info_mfn = physmap::pfn_to_mfn(platform::va_to_pfn(platform::start_info_ptr() as u64));
        // SAFETY: tasks are frozen, devices quiesced, every root pinned,
        // start_info canonical and shared_info unmapped: the state the
        // toolstack expects. Xen returns here when the domain runs again.
        unsafe { Hv::suspend(start_info_mfn) }
    }

    fn reconnect_new_domain(&mut self) -> usize {
        platform::map_shared_info();
        physmap::publish_frame_lists();
        // The new host's system time may be behind the old one's: continue
        // the monotonic clock from where it stopped.
        time::clock().rebase(time::system_time_ns(), 0);
        let (console_port, store_port) = platform::with_start_info(|si| {
            // SAFETY: a domU's start_info carries the domU console variant.
            (unsafe { si.console.domU.evtchn }, si.store_evtchn)
        });
        let n = events::rebind_all(|name| match name {
            "console" => Some(console_port),
            "xenstore" => Some(store_port),
            _ => None,
        });
        console::init();
        events_mask::restore(self.was_masked);
        n
    }

    fn adopt_backed_memory(&mut self) -> u64 {
        let t0 = time::now_ns();
        let adopted = reservation::adopt_backed_unmapped();
        LAST_ADOPTED_PAGES.store(adopted, Ordering::Relaxed);
        if adopted > 0 {
            log::info!(
                "suspend: {} pages ({} MiB) came back populated (a live migration sends every page); adopted in {} us",
                adopted,
                adopted / 256,
                (time::now_ns() - t0) / 1000
            );
        }
        adopted
    }

    fn undo_canonicalise(&mut self) {
        let si = platform::start_info_ptr();
        // SAFETY: as in `canonicalise`.
        unsafe {
            (*si).store_mfn = physmap::pfn_to_mfn(self.store_pfn);
            (*si).console.domU.mfn = physmap::pfn_to_mfn(self.console_pfn);
        }
        platform::map_shared_info();
        events_mask::restore(self.was_masked);
    }

    fn rearm_timer(&mut self) {
        sched::rearm_timer();
    }
}

/// Runs a suspend requested through `control/shutdown`.
pub fn do_suspend() -> Outcome {
    log::info!("suspend: starting (suspend #{})", SUSPENDS.load(Ordering::Relaxed) + 1);
    read_release_switch();
    let (outcome, t) = suspend_seq::run(&mut RealSteps::default());
    match outcome {
        Outcome::Refused => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return outcome;
        }
        Outcome::Cancelled => {
            CANCELS.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Resumed => {}
    }
    let suspends = SUSPENDS.fetch_add(1, Ordering::Relaxed) + 1;
    LAST_TOTAL_US.store(t.total_us, Ordering::Relaxed);
    LAST_FROZEN_US.store(t.frozen_us, Ordering::Relaxed);
    LAST_SUSPEND_US.store(t.before_us, Ordering::Relaxed);
    LAST_RESUME_US.store(t.after_us, Ordering::Relaxed);
    log::info!(
        "suspend: done: {:?}, total {} us, frozen {} us, before hypercall {} us, after {} us; suspends={} cancels={}",
        outcome,
        t.total_us,
        t.frozen_us,
        t.before_us,
        t.after_us,
        suspends,
        CANCELS.load(Ordering::Relaxed)
    );
    outcome
}

/// `data/suspend/release` overrides the command line when dom0 sets it.
fn read_release_switch() {
    match crate::xenstore::read("data/suspend/release").as_deref() {
        Ok("0") => RELEASE_AT_SUSPEND.store(false, Ordering::Relaxed),
        Ok("1") => RELEASE_AT_SUSPEND.store(true, Ordering::Relaxed),
        Ok(other) => log::warn!("suspend: data/suspend/release = {:?} is neither 0 nor 1; ignored", other),
        Err(_) => {} // not set: the command line decides
    }
}
