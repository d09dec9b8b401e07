//! The suspend coordinator on the real Xen: `xl save`, `xl save -c`,
//! `xl restore` and migration, seen from inside the guest.
//!
//! The order of the steps and their unwinding live in `suspend_seq`; this
//! file says what each step does here. The hypercall returns 0 in a new
//! domain (shared_info, event channels, rings and every machine frame are
//! new) and 1 when the suspend was cancelled and the old domain goes on.

use crate::mm::suspend_release::{self, Released};
use crate::mm::{aspace, physmap};
use crate::percpu::VcpuId;
use crate::rejects::{excerpt, RateLimit};
use crate::suspend_seq::{self, SuspendSteps};
use crate::{console, events, events_mask, platform, pm, restock, sched, smp, time};
use crate::{Hv, Hypervisor};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

pub use crate::suspend_seq::{Outcome, Refusal, Timings};

/// How long tasks get to reach a safe point in one freeze attempt.
const FREEZE_TIMEOUT_NS: u64 = 2_000_000_000;
/// Freeze attempts before the suspend is refused. The acknowledgement is
/// already written when the freeze starts, and libxl then waits 60 s for
/// the domain to suspend: a refusal costs the toolstack that whole minute
/// (`xl save`/`migrate` fail after ~62 s), while a retry costs a laggard's
/// few seconds. 5 attempts of 2 s plus the pauses stay far inside it.
const FREEZE_ATTEMPTS: u32 = 5;
/// How long the other vCPUs get to reach the rendezvous: each needs only
/// to finish its running task's current stretch and stop in its idle loop.
const RENDEZVOUS_TIMEOUT_NS: u64 = 2_000_000_000;
/// Between attempts every task runs thawed, so a laggard waiting for a
/// parked task can finish what it was doing.
const FREEZE_RETRY_PAUSE_MS: u64 = 200;

/// Figures of the suspends so far, published under `data/suspend/`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Suspends that reached the hypercall (resumed or cancelled).
    pub suspends: u64,
    pub cancels: u64,
    pub refused: u64,
    /// Freeze attempts that timed out (a suspend may still succeed after them).
    pub freeze_retries: u64,
    /// Durations of the last suspend that reached the hypercall.
    pub last: Timings,
    pub last_released_pages: u64,
    pub last_release_us: u64,
    /// Taken back in the background after the last suspend (`restock`):
    /// pages from Xen, and the time from the hypercall's return until the
    /// guest had its memory again.
    pub last_repopulated_pages: u64,
    pub last_repopulate_us: u64,
    /// Of those, pages that came back populated and were adopted.
    pub last_adopted_pages: u64,
}

/// Written only by the suspend path, read by publishers: a lock so that a
/// reader always sees one suspend's figures together.
static FIGURES: Mutex<Figures> = Mutex::new(Figures {
    suspends: 0,
    cancels: 0,
    refused: 0,
    freeze_retries: 0,
    last: Timings { total_us: 0, frozen_us: 0, before_us: 0, after_us: 0 },
    last_released_pages: 0,
    last_release_us: 0,
    last_repopulated_pages: 0,
    last_repopulate_us: 0,
    last_adopted_pages: 0,
});

/// A consistent copy of the figures.
pub fn figures() -> Figures {
    *FIGURES.lock()
}

fn update(f: impl FnOnce(&mut Figures)) {
    f(&mut FIGURES.lock());
}

/// The background restock's account of the last suspend.
pub fn record_restock(adopted: u64, repopulated: u64, us: u64) {
    update(|f| {
        f.last_adopted_pages = adopted;
        f.last_repopulated_pages = repopulated;
        f.last_repopulate_us = us;
    });
}

/// Starts from no suspends, with release at suspend as the command line
/// says.
pub fn init(release_at_suspend: bool) {
    *FIGURES.lock() = Figures::default();
    RELEASE_AT_SUSPEND.store(release_at_suspend, Ordering::Relaxed);
    SUSPENDING.store(false, Ordering::Relaxed);
}

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
    /// The vCPUs the rendezvous stopped, started again on the way back.
    stopped: Vec<VcpuId>,
}

impl SuspendSteps for RealSteps {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    fn report(&mut self, line: core::fmt::Arguments) {
        log::info!("suspend: {}", line);
    }

    fn freeze_tasks(&mut self) -> Result<usize, Refusal> {
        let mut attempt = 1;
        loop {
            let e = match sched::freeze(FREEZE_TIMEOUT_NS) {
                Ok(n) => return Ok(n),
                Err(e) => e,
            };
            if attempt == FREEZE_ATTEMPTS {
                return Err(Refusal::TaskDidNotFreeze {
                    task: e.task,
                    id: e.id,
                    attempts: attempt,
                    attempt_ms: FREEZE_TIMEOUT_NS / 1_000_000,
                });
            }
            update(|f| f.freeze_retries += 1);
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

    fn suspend_devices(&mut self) -> Result<usize, Refusal> {
        pm::suspend_all().map_err(Refusal::Device)
    }

    fn resume_devices(&mut self) {
        pm::resume_all();
    }

    fn cancel_devices(&mut self) {
        pm::cancel_all();
    }

    /// Every other running vCPU stops in its idle loop (events masked,
    /// `VCPUOP_down`); this task runs on vCPU 0, as the tools require.
    fn quiesce_vcpus(&mut self) -> Result<usize, Refusal> {
        let others = smp::running_others();
        match smp::stop(&others, RENDEZVOUS_TIMEOUT_NS) {
            Ok(()) => {
                self.stopped = others;
                Ok(self.stopped.len())
            }
            Err(smp::SmpError::DidNotStop(vcpu)) => Err(Refusal::VcpuDidNotArrive { vcpu }),
            Err(e) => {
                log::error!("suspend: stopping the other vCPUs failed: {:?}", e);
                Err(Refusal::VcpuDidNotArrive { vcpu: others.first().copied().unwrap_or(0) })
            }
        }
    }

    /// Same domain: each goes on where it stopped; new domain: each starts
    /// afresh (its timer and IPI already rebound with every other port).
    fn wake_vcpus(&mut self) {
        for &v in &self.stopped {
            if let Err(e) = smp::restart(v) {
                log::error!("suspend: vCPU {} cannot be started again: {:?}; offline until dom0 asks again", v, e);
            }
        }
    }

    fn pin_roots(&mut self) -> Result<(usize, usize), Refusal> {
        self.pinned = aspace::pin_all_unpinned().map_err(|(space, error)| Refusal::PinFailed { space, error })?;
        Ok((self.pinned.len(), aspace::counts().0))
    }

    fn unpin_roots(&mut self) {
        aspace::unpin_list(&self.pinned);
    }

    fn release_free_memory(&mut self) -> Option<u64> {
        if !RELEASE_AT_SUSPEND.load(Ordering::Relaxed) {
            update(|f| (f.last_released_pages, f.last_release_us) = (0, 0));
            return None;
        }
        let t0 = time::now_ns();
        self.released = suspend_release::release_free(suspend_release::RESERVE_PAGES);
        let pages = self.released.pages();
        let us = (time::now_ns() - t0) / 1000;
        update(|f| (f.last_released_pages, f.last_release_us) = (pages, us));
        Some(pages)
    }

    fn owe_memory(&mut self, new_domain: bool) -> u64 {
        let goal = (self.released.pages() > 0).then(|| suspend_release::goal(&self.released));
        restock::owe(goal, new_domain)
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
        time::rebase_on_this_host();
        let (console_port, store_port) = platform::with_start_info(|si| {
            // SAFETY: a domU's start_info carries the domU console variant.
            (unsafe { si.console.domU.evtchn }, si.store_evtchn)
        });
        let n = events::rebind_all(|name| match name {
            "console" => Some(console_port),
            "xenstore" => Some(store_port),
            _ => None,
        });
        smp::refresh_ports();
        smp::forget_contexts();
        smp::stop_periodic_timer_here();
        console::init();
        events_mask::restore(self.was_masked);
        n
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

/// Set while a suspend runs: requests come from two places (`control/shutdown`
/// and the suspend event channel) and only one suspend may run at a time.
static SUSPENDING: AtomicBool = AtomicBool::new(false);

/// Runs a suspend requested by the toolstack. A request that arrives while
/// another suspend runs is refused (logged; nothing else happens).
pub fn do_suspend() -> Outcome {
    if SUSPENDING.swap(true, Ordering::AcqRel) {
        log::warn!("suspend: a second request arrived while a suspend runs; ignored");
        return Outcome::Refused(Refusal::AlreadySuspending);
    }
    // A hotplug change under way finishes first; none starts meanwhile.
    let _hotplug = smp::hotplug_exclusive();
    // The tools require the suspend to come from vCPU 0.
    let pin = sched::current_pin();
    sched::pin_current(Some(0));
    let outcome = run_suspend();
    sched::pin_current(pin);
    SUSPENDING.store(false, Ordering::Release);
    outcome
}

fn run_suspend() -> Outcome {
    log::info!("suspend: starting (suspend #{})", figures().suspends + 1);
    read_release_switch();
    update(|f| (f.last_adopted_pages, f.last_repopulated_pages, f.last_repopulate_us) = (0, 0, 0));
    let (outcome, t) = suspend_seq::run(&mut RealSteps::default());
    let f = {
        let mut f = FIGURES.lock();
        match outcome {
            Outcome::Refused(_) => f.refused += 1,
            Outcome::Cancelled => f.cancels += 1,
            Outcome::Resumed => {}
        }
        if !matches!(outcome, Outcome::Refused(_)) {
            f.suspends += 1;
            f.last = t;
        }
        *f
    };
    if !matches!(outcome, Outcome::Refused(_)) {
        log::info!(
            "suspend: done: {:?}, total {} us, frozen {} us, before hypercall {} us, after {} us; suspends={} cancels={}",
            outcome,
            t.total_us,
            t.frozen_us,
            t.before_us,
            t.after_us,
            f.suspends,
            f.cancels
        );
        sched::log_deepest_stack("suspend");
    }
    outcome
}

/// `data/suspend/release` overrides the command line when dom0 sets it.
fn read_release_switch() {
    match crate::xenstore::read("data/suspend/release").as_deref() {
        Ok("0") => RELEASE_AT_SUSPEND.store(false, Ordering::Relaxed),
        Ok("1") => RELEASE_AT_SUSPEND.store(true, Ordering::Relaxed),
        Ok(other) => {
            static REJECTS: RateLimit = RateLimit::new();
            crate::warn_limited!(
                REJECTS,
                "suspend: data/suspend/release = {:?} is neither 0 nor 1; ignored",
                excerpt(other, 40)
            )
        }
        Err(_) => {} // not set: the command line decides
    }
}
