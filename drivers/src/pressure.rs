//! The low-watermark watch: when free memory falls below
//! `LOW_WATERMARK_PAGES` the guest takes memory back from Xen before any
//! allocation has to fail, and the balloon then keeps headroom; once the
//! pressure has been gone for `HOLD_MS` the balloon returns toward
//! `memory/target` (see `kernel::mm::pressure`). Every change of state is
//! one console line with figures.

use crate::balloon::{self, BalloonMemory, KernelMemory, PAGE_KB};
use kernel::mm::{ballooning, pressure};
use kernel::sched;

/// How often free memory is looked at: often when it is near the
/// watermark, rarely otherwise (an allocation that finds nothing free
/// replenishes at once anyway, without waiting for this task).
const TIGHT_MS: u64 = 100;
const CALM_MS: u64 = 500;
/// Back off this long after Xen gave nothing.
const REFUSED_MS: u64 = 2000;
/// Memory held above the balloon's goal that makes it look again (a task
/// freed what pressure brought in): 8 MiB.
const RETURN_SLACK_PAGES: u64 = 2048;
const RETRY_ASK_MS: u64 = 5000;
/// The least excess worth a quiet second look: 1 MiB (less is the floor's
/// everyday wobble as tasks allocate and free).
const TIDY_PAGES: u64 = 256;
const MAX_ASKS: u32 = 3;

/// Pages the guest holds above what the balloon would settle at now (none
/// before the balloon has a target).
fn excess_pages() -> u64 {
    if balloon::target_pages() == 0 {
        return 0;
    }
    let goal = balloon::target_pages().max(KernelMemory.floor_pages());
    ballooning::populated_pages().saturating_sub(goal)
}

fn run() {
    let mut under_pressure = false;
    let mut seen_events = pressure::figures().deflates;
    let mut refused = false;
    // Memory freed after the balloon settled stays with the guest until
    // the balloon is asked to look again: asked as soon as the excess
    // passes RETURN_SLACK_PAGES, and for one of TIDY_PAGES or more every
    // RETRY_ASK_MS,
    // but no more than MAX_ASKS times for an excess that does not shrink
    // (one the balloon cannot shed is not asked about forever).
    let mut asked_at_excess = 0;
    let mut asked_at_ms = 0;
    let mut asks = 0;
    loop {
        let free = ballooning::free_pages();
        let mut wait = if free < 4 * pressure::LOW_WATERMARK_PAGES { TIGHT_MS } else { CALM_MS };
        if free < pressure::LOW_WATERMARK_PAGES {
            let got = pressure::replenish(pressure::REPLENISH_PAGES);
            if got > 0 {
                refused = false;
                log::info!(
                    "pressure: {} KiB free, below the low watermark of {} KiB: took {} KiB back from Xen (now {} KiB free)",
                    free * PAGE_KB,
                    pressure::LOW_WATERMARK_PAGES * PAGE_KB,
                    got * PAGE_KB,
                    ballooning::free_pages() * PAGE_KB
                );
            } else {
                if !refused {
                    log::warn!(
                        "pressure: {} KiB free and Xen gives no more (the domain's maximum, or the host is out): tasks asking for memory will be refused",
                        free * PAGE_KB
                    );
                }
                refused = true;
                wait = REFUSED_MS;
            }
        }
        let f = pressure::figures();
        if f.deflates != seen_events {
            if !under_pressure {
                log::info!(
                    "pressure: on; keeping {} KiB of headroom until it has been gone for {} s ({} deflates, {} KiB so far)",
                    pressure::HEADROOM_PAGES * PAGE_KB,
                    pressure::HOLD_MS / 1000,
                    f.deflates,
                    f.pages * PAGE_KB
                );
            }
            seen_events = f.deflates;
            under_pressure = true;
            balloon::recheck();
        } else if under_pressure && pressure::headroom_pages() == 0 {
            log::info!(
                "pressure: off for {} s; returning toward memory/target ({} KiB free)",
                pressure::HOLD_MS / 1000,
                free * PAGE_KB
            );
            under_pressure = false;
            balloon::recheck();
        } else if !under_pressure {
            let excess = excess_pages();
            let now = kernel::time::now_ns() / 1_000_000;
            if excess < TIDY_PAGES
                || excess + RETURN_SLACK_PAGES <= asked_at_excess
                || excess >= asked_at_excess + RETURN_SLACK_PAGES
            {
                asks = 0; // none, a new excess, or the last ask helped
            }
            // A large excess at once; a small one once things are quiet.
            let due = if asks == 0 && excess > RETURN_SLACK_PAGES {
                true
            } else {
                excess >= TIDY_PAGES && now >= asked_at_ms + RETRY_ASK_MS
            };
            if due && asks < MAX_ASKS {
                if asks == 0 {
                    log::info!(
                        "pressure: {} KiB above the balloon's goal now that tasks freed memory; giving it back",
                        excess * PAGE_KB
                    );
                }
                asks += 1;
                asked_at_excess = excess;
                asked_at_ms = now;
                balloon::recheck();
            }
        }
        sched::sleep_ms(wait);
    }
}

pub fn spawn() {
    sched::spawn("pressure", run);
}
