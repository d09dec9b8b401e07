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

/// Pages the guest holds above what the balloon would settle at now.
fn excess_pages() -> u64 {
    let goal = balloon::target_pages().max(KernelMemory.floor_pages());
    ballooning::populated_pages().saturating_sub(goal)
}

fn run() {
    let mut under_pressure = false;
    let mut seen_events = pressure::figures().deflates;
    let mut refused = false;
    // The excess when the balloon was last asked to give it back, so that
    // one it cannot shed is not asked about again and again.
    let mut excess_asked = 0;
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
            excess_asked = excess_pages();
            balloon::recheck();
        } else if !under_pressure {
            // The balloon settles and waits for a new target; memory freed
            // since (the end of a burst) would otherwise stay with the guest.
            let excess = excess_pages();
            if excess > RETURN_SLACK_PAGES && excess.abs_diff(excess_asked) > RETURN_SLACK_PAGES {
                log::info!(
                    "pressure: {} KiB above the balloon's goal now that tasks freed memory; giving it back",
                    excess * PAGE_KB
                );
                excess_asked = excess;
                balloon::recheck();
            }
        }
        sched::sleep_ms(wait);
    }
}

pub fn spawn() {
    sched::spawn("pressure", run);
}
