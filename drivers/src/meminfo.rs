//! `data/meminfo/*`: where the guest's memory is, in KiB, for dom0 and
//! `ballastd`.
//!
//! Every figure is written together (one transaction, so a reader never
//! sees half an update) when one of them moved by more than 1% since the
//! last write, or a count, the balloon's target or its floor changed; at
//! most once a second.

use crate::balloon::{self, BalloonMemory, KernelMemory, PAGE_KB};
use alloc::format;
use alloc::vec::Vec;
use kernel::mm::meminfo;
use kernel::{sched, xenstore};

/// The figures in publishing order: name under `data/meminfo/`, value, and
/// whether any change publishes it (counts, the balloon's target and floor)
/// or only one of more than 1%.
pub fn figures(m: &meminfo::MemInfo, target_pages: u64, floor_pages: u64) -> [(&'static str, u64, bool); 14] {
    [
        ("total_kb", m.total * PAGE_KB, false),
        ("free_kb", m.free * PAGE_KB, false),
        ("available_kb", m.available * PAGE_KB, false),
        ("kernel_kb", m.kernel * PAGE_KB, false),
        ("heap_kb", m.heap * PAGE_KB, false),
        ("task_stacks_kb", m.task_stacks * PAGE_KB, false),
        ("page_tables_kb", m.page_tables * PAGE_KB, false),
        ("task_pages_kb", m.task_pages * PAGE_KB, false),
        ("balloon_current_kb", m.total * PAGE_KB, false),
        // Exact: a host daemon sets targets from the floor, and a stale
        // floor 1% low would leave a large guest short of its target.
        ("balloon_target_kb", target_pages * PAGE_KB, true),
        ("balloon_floor_kb", floor_pages * PAGE_KB, true),
        ("alloc_failures", m.alloc_failures, true),
        ("pressure_deflates", m.pressure_deflates, true),
        ("pressure_kb", m.pressure_pages * PAGE_KB, true),
    ]
}

/// True if `new` differs enough from what was last written (`last`, None
/// before the first write) to write again.
pub fn worth_writing(last: Option<&[u64]>, new: &[(&str, u64, bool)]) -> bool {
    let Some(last) = last else { return true };
    last.len() != new.len()
        || new.iter().zip(last).any(|(&(_, v, count), &old)| {
            if count {
                v != old
            } else {
                // More than 1% of the old value (any change from 0).
                v.abs_diff(old) * 100 > old
            }
        })
}

fn write(values: &[(&str, u64, bool)]) -> xenstore::Result<()> {
    xenstore::transaction(|tx| {
        for (name, v, _) in values {
            xenstore::write_tx(tx, &format!("data/meminfo/{}", name), &format!("{}", v))?;
        }
        Ok(())
    })
}

fn run(balloon_on: bool) {
    let mut last: Option<Vec<u64>> = None;
    let mut failures = 0u32;
    loop {
        let m = meminfo::snapshot();
        let (target, floor) = if balloon_on { (balloon::target_pages(), KernelMemory.floor_pages()) } else { (0, 0) };
        let values = figures(&m, target, floor);
        if worth_writing(last.as_deref(), &values) {
            match write(&values) {
                Ok(()) => last = Some(values.iter().map(|v| v.1).collect()),
                Err(e) => {
                    failures += 1;
                    if failures <= 3 {
                        log::warn!("meminfo: publishing data/meminfo failed: {:?}", e);
                    }
                }
            }
        }
        sched::sleep_ms(1000);
    }
}

/// Starts the publisher; with the balloon off its target and floor read 0.
pub fn spawn(balloon_on: bool) {
    sched::spawn("meminfo", move || run(balloon_on));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(kb: u64, count: u64) -> [(&'static str, u64, bool); 2] {
        [("free_kb", kb, false), ("alloc_failures", count, true)]
    }

    #[test]
    fn writes_on_a_move_over_one_percent_or_any_count() {
        assert!(worth_writing(None, &vals(1000, 0)), "the first time");
        let last = [1000u64, 0];
        assert!(!worth_writing(Some(&last), &vals(1010, 0)), "exactly 1%: not yet");
        assert!(worth_writing(Some(&last), &vals(1011, 0)));
        assert!(worth_writing(Some(&last), &vals(989, 0)));
        assert!(!worth_writing(Some(&last), &vals(995, 0)));
        assert!(worth_writing(Some(&last), &vals(1000, 1)), "a count changed");
        assert!(worth_writing(Some(&[0, 0]), &vals(1, 0)), "any move away from 0");
        assert!(!worth_writing(Some(&[0, 0]), &vals(0, 0)));
    }
}
