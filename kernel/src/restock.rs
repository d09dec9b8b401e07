//! Answer first, take the memory back after: the background half of the
//! suspend-time release.
//!
//! A suspend gives free frames to Xen so that the image is small. The
//! guest does not wait for them to come back before it runs again: the
//! suspend path records how many pages the guest had (`owe`) and thaws at
//! once; this task then adopts what a migration brought back populated
//! and asks Xen for the rest, one chunk at a time with a yield between
//! chunks, so that tasks run (and take free frames from the 4 MiB kept
//! through the suspend) while it works. The balloon waits for it
//! (`wait_done`) before it reconciles, so the two never move memory at
//! once. A suspend arriving mid-way parks it at the yield; the debt only
//! grows to the larger of the two goals.

use crate::mm::{ballooning, reservation};
use crate::sched::{self, WaitQueue};
use crate::{events_mask, suspend, time};
use spin::Mutex;

/// Pages asked of Xen per step: 8 MiB, a few ms of work under TCG.
const CHUNK_PAGES: u64 = 2048;

/// What the guest is owed since the last suspend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Debt {
    /// Populated pages to return to.
    goal: u64,
    /// A new domain: pfns may have come back populated (a live migration
    /// sends every page) and are adopted before anything is asked for.
    adopt: bool,
    /// When the guest resumed (monotonic ns), for the figures.
    since_ns: u64,
    /// Bumped by every suspend, so that a finished pass does not clear a
    /// newer debt.
    generation: u64,
}

/// Set by the suspend path (tasks frozen), read and cleared by the task; a
/// lock, taken with events masked, because both sides change it.
static DEBT: Mutex<Option<Debt>> = Mutex::new(None);
static WORK: WaitQueue = WaitQueue::new();
static DONE: WaitQueue = WaitQueue::new();

fn debt() -> Option<Debt> {
    events_mask::without_events(|| *DEBT.lock())
}

/// Whether memory released at a suspend is still being taken back.
pub fn pending() -> bool {
    debt().is_some()
}

/// Records, right after the suspend hypercall, that the guest is owed
/// memory up to `goal` populated pages (`None` when nothing was released)
/// and wakes the task. Returns the pages owed now.
pub fn owe(goal: Option<u64>, new_domain: bool) -> u64 {
    let now = time::now_ns();
    let d = events_mask::without_events(|| {
        let mut slot = DEBT.lock();
        let next = match (*slot, goal) {
            // Nothing owed; but a new domain may still hold pages the
            // balloon gave back during a migration's live rounds.
            (None, None) if !new_domain => None,
            (old, new) => Some(Debt {
                goal: old.map_or(0, |o| o.goal).max(new.unwrap_or(0)),
                adopt: old.is_some_and(|o| o.adopt) || new_domain,
                since_ns: now,
                generation: old.map_or(0, |o| o.generation) + 1,
            }),
        };
        *slot = next;
        next
    });
    WORK.wake_all();
    d.map_or(0, |d| d.goal.saturating_sub(ballooning::populated_pages()))
}

/// Blocks until no memory is owed (the balloon calls this before it
/// reconciles); a freezer safe point.
pub fn wait_done() {
    DONE.wait_until(|| (!pending()).then_some(()));
}

/// Starts the task.
pub fn spawn() {
    sched::spawn("restock", run);
}

fn run() {
    loop {
        let d = WORK.wait_until(debt);
        let adopted = if d.adopt { adopt(d.generation) } else { 0 };
        let mut got = 0;
        loop {
            let want = d.goal.saturating_sub(ballooning::populated_pages()).min(CHUNK_PAGES);
            if want == 0 || debt().map(|n| n.generation) != Some(d.generation) {
                break;
            }
            let moved = ballooning::deflate(want).pages;
            got += moved;
            if moved == 0 {
                log::warn!(
                    "restock: Xen supplied no more pages at {} of {}; the balloon will keep asking",
                    ballooning::populated_pages(),
                    d.goal
                );
                break;
            }
            // Tasks that need memory run before the next chunk.
            sched::yield_now();
        }
        finish(d, adopted, got);
    }
}

/// Adopts what came back populated, once per debt.
fn adopt(generation: u64) -> u64 {
    let t0 = time::now_ns();
    let n = reservation::adopt_backed_unmapped();
    events_mask::without_events(|| {
        if let Some(d) = DEBT.lock().as_mut().filter(|d| d.generation == generation) {
            d.adopt = false;
        }
    });
    if n > 0 {
        log::info!(
            "restock: {} pages ({} MiB) came back populated (a live migration sends every page); adopted in {} us",
            n,
            n / 256,
            (time::now_ns() - t0) / 1000
        );
    }
    n
}

/// Clears the debt unless a newer suspend replaced it meanwhile.
fn finish(d: Debt, adopted: u64, got: u64) {
    let cleared = events_mask::without_events(|| {
        let mut slot = DEBT.lock();
        let same = slot.is_some_and(|n| n.generation == d.generation);
        if same {
            *slot = None;
        }
        same
    });
    if !cleared {
        return; // the newer debt's pass reports
    }
    let us = (time::now_ns() - d.since_ns) / 1000;
    suspend::record_restock(adopted, got, us);
    log::info!(
        "restock: back to {} of {} pages {} us after the suspend returned ({} adopted, {} from Xen)",
        ballooning::populated_pages(),
        d.goal,
        us,
        adopted,
        got
    );
    DONE.wake_all();
    WORK.wake_all();
}
