//! Memory pressure: the guest takes memory back from Xen before it fails an
//! allocation.
//!
//! Three parts:
//!
//! - [`replenish`] populates ballooned pfns at once, for whoever is short:
//!   [`TaskPages::try_new`] (memory a task asks for, fallibly) and the
//!   heap's page source when a request cannot be met. It goes up to what
//!   Xen allows (the domain's maximum); past that the request fails.
//! - Tasks get memory only while [`TASK_RESERVE_PAGES`] stay free after
//!   it, so the kernel's own allocations (which cannot fail gracefully)
//!   still find frames when a task has eaten everything Xen would give.
//!   Such a refusal is an error for the task that asked, counted in
//!   [`figures`], never a panic.
//! - Every pressure event is timed. For [`HOLD_MS`] after the last one the
//!   balloon keeps [`headroom_pages`] above what is in use, so that it does
//!   not give straight back what was just taken (guest and host would
//!   fight); after that it returns toward `memory/target`. The low
//!   watermark itself is watched by the balloon driver's pressure task.

use super::ballooning;
use super::kernel_memory::with_frames;
use crate::platform::pfn_to_va;
use crate::time;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Free memory below this is pressure: 4 MiB.
pub const LOW_WATERMARK_PAGES: u64 = 1024;
/// The least one pressure event asks Xen for: 8 MiB.
pub const REPLENISH_PAGES: u64 = 2048;
/// Frames a task may never take: 2 MiB kept for the kernel itself.
pub const TASK_RESERVE_PAGES: u64 = 512;
/// How long after the last pressure event the balloon keeps headroom.
pub const HOLD_MS: u64 = 10_000;
/// Extra free memory kept while pressure is recent: 16 MiB.
pub const HEADROOM_PAGES: u64 = 4096;

// Counters for `data/meminfo`; atomics, because any task on any vCPU may
// be the one that is short.
static EVENTS: AtomicU64 = AtomicU64::new(0);
static PAGES_TAKEN: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);
static TASK_PAGES_HELD: AtomicU64 = AtomicU64::new(0);
/// Milliseconds since boot of the last pressure event, plus one (0: never).
static LAST_EVENT_MS: AtomicU64 = AtomicU64::new(0);
/// When Xen last gave nothing, plus one (0: it gave the last time).
static REFUSED_AT_MS: AtomicU64 = AtomicU64::new(0);
/// How long a refusal stands before Xen is asked again.
const RETRY_AFTER_REFUSAL_MS: u64 = 1000;
/// Off with the balloon (`ballast.balloon=0`): such a guest moves no memory.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns taking memory back under pressure on or off.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

fn now_ms() -> u64 {
    time::now_ns() / 1_000_000
}

/// Pressure figures since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PressureFigures {
    /// Times memory was taken back from Xen because the guest was short.
    pub deflates: u64,
    /// Pages taken back that way.
    pub pages: u64,
    /// Requests refused after that (no memory left to take back).
    pub failures: u64,
}

pub fn figures() -> PressureFigures {
    PressureFigures {
        deflates: EVENTS.load(Ordering::Relaxed),
        pages: PAGES_TAKEN.load(Ordering::Relaxed),
        failures: FAILURES.load(Ordering::Relaxed),
    }
}

/// Pages tasks hold now as [`TaskPages`].
pub fn task_pages() -> u64 {
    TASK_PAGES_HELD.load(Ordering::Relaxed)
}

/// Forgets every pressure event and count (a new boot of the simulated
/// Xen in host tests reuses the kernel's statics).
pub fn clear() {
    ENABLED.store(true, Ordering::Relaxed);
    for c in [&EVENTS, &PAGES_TAKEN, &FAILURES, &LAST_EVENT_MS, &REFUSED_AT_MS, &TASK_PAGES_HELD] {
        c.store(0, Ordering::Relaxed);
    }
}

/// Counts a request that could not be met even after replenishing.
pub fn count_failure() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// Milliseconds since the last pressure event, if there was one.
pub fn since_last_event_ms() -> Option<u64> {
    match LAST_EVENT_MS.load(Ordering::Relaxed) {
        0 => None,
        t => Some(now_ms().saturating_sub(t - 1)),
    }
}

/// Extra pages the balloon's floor keeps now: [`HEADROOM_PAGES`] within
/// [`HOLD_MS`] of the last pressure event, else none.
pub fn headroom_pages() -> u64 {
    match since_last_event_ms() {
        Some(ms) if ms < HOLD_MS => HEADROOM_PAGES,
        _ => 0,
    }
}

/// Takes at least `pages` (and at least [`REPLENISH_PAGES`]) back from Xen
/// now, as far as Xen allows; records a pressure event if it got any.
/// Returns the pages populated: 0 if Xen has none to give (and then, for
/// [`RETRY_AFTER_REFUSAL_MS`], without asking again), or if the caller is
/// itself in the middle of moving memory.
pub fn replenish(pages: u64) -> u64 {
    replenish_with(pages, ballooning::deflate_if_idle)
}

/// As [`replenish`], but gives up at once if another vCPU is moving memory:
/// for the heap's page source, whose caller may hold a spin lock with
/// events masked.
pub fn replenish_without_waiting(pages: u64) -> u64 {
    replenish_with(pages, ballooning::deflate_without_waiting)
}

fn replenish_with(pages: u64, deflate: fn(u64) -> Option<ballooning::Progress>) -> u64 {
    if !ENABLED.load(Ordering::Relaxed) {
        return 0;
    }
    // Xen said no a moment ago (the domain's maximum, or the host is
    // out): a failing request does not pay for asking again at once.
    let refused = REFUSED_AT_MS.load(Ordering::Relaxed);
    if refused != 0 && now_ms() < refused - 1 + RETRY_AFTER_REFUSAL_MS {
        return 0;
    }
    let want = pages.max(REPLENISH_PAGES);
    let Some(got) = deflate(want) else { return 0 };
    if got.pages == 0 {
        REFUSED_AT_MS.store(now_ms() + 1, Ordering::Relaxed);
        return 0;
    }
    REFUSED_AT_MS.store(0, Ordering::Relaxed);
    LAST_EVENT_MS.store(now_ms() + 1, Ordering::Relaxed);
    EVENTS.fetch_add(1, Ordering::Relaxed);
    PAGES_TAKEN.fetch_add(got.pages, Ordering::Relaxed);
    got.pages
}

/// Why a task's request for memory was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    /// Pages asked for.
    pub pages: u64,
    /// Pages free when it was refused.
    pub free: u64,
}

/// 2^order contiguous frames a task owns, given back on drop.
pub struct TaskPages {
    pfn: u64,
    order: u32,
}

impl TaskPages {
    /// Takes 2^`order` frames for a task, replenishing from Xen first if
    /// that would leave fewer than [`TASK_RESERVE_PAGES`] free (or none of
    /// that size). Fails only once Xen gives no more.
    pub fn try_new(order: u32) -> Result<Self, OutOfMemory> {
        let pages = 1u64 << order;
        let take = || with_frames(|f| if f.free_count() >= pages + TASK_RESERVE_PAGES { f.alloc(order) } else { None });
        let held = |pfn| {
            TASK_PAGES_HELD.fetch_add(pages, Ordering::Relaxed);
            Self { pfn, order }
        };
        if let Some(pfn) = take() {
            return Ok(held(pfn));
        }
        replenish(pages + TASK_RESERVE_PAGES);
        match take() {
            Some(pfn) => Ok(held(pfn)),
            None => {
                count_failure();
                Err(OutOfMemory { pages, free: ballooning::free_pages() })
            }
        }
    }

    /// The first frame.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// The pages as 64-bit words.
    pub fn words_mut(&mut self) -> &mut [u64] {
        let len = (4096 / 8) << self.order;
        // SAFETY: the frames were taken from the allocator for this value
        // alone, are mapped writable at `pfn_to_va`, and `&mut self`
        // guarantees no other reference to them exists.
        unsafe { core::slice::from_raw_parts_mut(pfn_to_va(self.pfn) as *mut u64, len) }
    }

    pub fn words(&self) -> &[u64] {
        let len = (4096 / 8) << self.order;
        // SAFETY: as in `words_mut`; shared access through `&self`.
        unsafe { core::slice::from_raw_parts(pfn_to_va(self.pfn) as *const u64, len) }
    }
}

impl Drop for TaskPages {
    fn drop(&mut self) {
        TASK_PAGES_HELD.fetch_sub(1 << self.order, Ordering::Relaxed);
        if let Err(e) = with_frames(|f| f.free(self.pfn, self.order)) {
            log::error!("pressure: freeing task pages {:#x} (order {}) failed: {:?}", self.pfn, self.order, e);
        }
    }
}
