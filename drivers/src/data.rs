//! Figures under the guest's own `data/` directory, for dom0 to read with
//! `xenstore-read`, and an echo of what dom0 writes to `data/echo`.

mod task {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::sync::atomic::Ordering;
    use kernel::mm::kernel_memory;
    use kernel::rejects::{excerpt, RateLimit};
    use kernel::selftest::hog;
    use kernel::{sched, selftest, smp, suspend, time, warn_limited, xenstore};

    fn publish() -> xenstore::Result<()> {
        let m = kernel_memory::figures();
        let f = suspend::figures();
        let mut figures: Vec<(String, String)> = [
            ("data/uptime", format!("{}", time::now_ns() / 1_000_000_000)),
            ("data/free_kb", format!("{}", m.free * 4)),
            ("data/tasks", format!("{}", sched::task_count())),
            ("data/selftest/pattern_mib", format!("{}", selftest::PATTERN_MIB.load(Ordering::Relaxed))),
            ("data/selftest/pattern_passes", format!("{}", selftest::PATTERN_PASSES.load(Ordering::Relaxed))),
            ("data/selftest/dirty_passes", format!("{}", selftest::DIRTY_PASSES.load(Ordering::Relaxed))),
            ("data/selftest/pattern_errors", format!("{}", selftest::PATTERN_ERRORS.load(Ordering::Relaxed))),
            ("data/selftest/sleeper_wakeups", format!("{}", selftest::SLEEPER_WAKEUPS.load(Ordering::Relaxed))),
            ("data/suspend/count", format!("{}", f.suspends)),
            ("data/suspend/cancels", format!("{}", f.cancels)),
            ("data/suspend/refused", format!("{}", f.refused)),
            ("data/suspend/freeze_retries", format!("{}", f.freeze_retries)),
            ("data/suspend/last_total_us", format!("{}", f.last.total_us)),
            ("data/suspend/last_frozen_us", format!("{}", f.last.frozen_us)),
            ("data/suspend/last_suspend_us", format!("{}", f.last.before_us)),
            ("data/suspend/last_resume_us", format!("{}", f.last.after_us)),
            ("data/suspend/last_released_pages", format!("{}", f.last_released_pages)),
            ("data/suspend/last_release_us", format!("{}", f.last_release_us)),
            ("data/suspend/last_repopulated_pages", format!("{}", f.last_repopulated_pages)),
            ("data/suspend/last_adopted_pages", format!("{}", f.last_adopted_pages)),
            ("data/suspend/last_repopulate_us", format!("{}", f.last_repopulate_us)),
            ("data/selftest/moves", format!("{}", selftest::MOVES.load(Ordering::Relaxed))),
            ("data/selftest/move_errors", format!("{}", selftest::MOVE_ERRORS.load(Ordering::Relaxed))),
            ("data/vcpu/online", format!("{}", smp::online_mask().count_ones())),
            ("data/hog/held_mib", format!("{}", hog::HELD_MIB.load(Ordering::Relaxed))),
            ("data/hog/refusals", format!("{}", hog::REFUSALS.load(Ordering::Relaxed))),
            ("data/hog/errors", format!("{}", hog::ERRORS.load(Ordering::Relaxed))),
        ]
        .into_iter()
        .map(|(p, v)| (String::from(p), v))
        .collect();
        let tasks = sched::tasks_per_vcpu();
        for v in 0..smp::possible() {
            figures.push((format!("data/vcpu/{}/ticks", v), format!("{}", smp::ticks(v))));
            figures.push((format!("data/vcpu/{}/tasks", v), format!("{}", tasks[v as usize])));
        }
        xenstore::transaction(|tx| {
            for (path, value) in &figures {
                xenstore::write_tx(tx, path, value)?;
            }
            Ok(())
        })
    }

    /// `data/hog/mib`: the size dom0 asks the memory hog for, decimal MiB.
    fn watch_hog_size() {
        static REJECTS: RateLimit = RateLimit::new();
        xenstore::on_each_change("data/hog/mib", "; the hog stays idle", || {
            let Ok(raw) = xenstore::read("data/hog/mib") else { return };
            match raw.trim().parse::<u64>() {
                Ok(mib) if mib <= hog::MAX_MIB => {
                    log::info!("hog: asked for {} MiB (holding {} MiB)", mib, hog::HELD_MIB.load(Ordering::Relaxed));
                    hog::set_size(mib);
                }
                _ => warn_limited!(
                    REJECTS,
                    "hog: ignoring data/hog/mib {:?}: not a number of MiB up to {}",
                    excerpt(&raw, 40),
                    hog::MAX_MIB
                ),
            }
        });
    }

    pub fn spawn() {
        sched::spawn("data-publisher", || {
            let mut failures = 0u32;
            loop {
                if let Err(e) = publish() {
                    failures += 1;
                    if failures <= 3 {
                        log::warn!("data: publishing figures failed: {:?}", e);
                    }
                }
                sched::sleep_ms(1000);
            }
        });
        sched::spawn("hog-watch", watch_hog_size);
        sched::spawn("echo", || {
            xenstore::on_each_change("data/echo", "", || {
                // Not there (yet) is fine: the watch fires once at registration.
                if let Ok(v) = xenstore::read("data/echo") {
                    log::info!("echo: {}", v.chars().take(200).collect::<alloc::string::String>());
                }
            })
        });
    }
}

pub use task::spawn;
