//! Memory pressure on the one simulated Xen: the hog grows past the
//! target, the guest takes memory back from Xen before anything fails,
//! says so in `data/meminfo`, and returns to the target once the hog lets
//! go; past the domain's maximum the hog alone is refused.

use kernel::mm::ballooning;
use kernel::selftest::hog;
use kernel::testing::{assert_no_violations, boot, run_until, sim, Guest};
use std::sync::atomic::Ordering;
use xen::sim::SimConfig;

const MIB: u64 = 256; // pages

/// A guest of `boot_mib` with `max_mib` as Xen's maximum, drivers started
/// and the balloon settled at `boot_mib` (written as `memory/target`).
fn start(boot_mib: u64, max_mib: u64) -> Guest {
    let g = boot(SimConfig {
        nr_pages: boot_mib * MIB,
        max_pages: max_mib * MIB,
        cmdline: "ballast.pattern=4 ballast.sleepers=1".into(),
        ..Default::default()
    });
    sim(|s| s.toolstack_write("memory/target", format!("{}", boot_mib * 1024).as_bytes()));
    drivers::start(&g.opts);
    run_until("the balloon to start", 10_000, || console().contains("balloon: static-max"));
    g
}

fn console() -> String {
    xen::sim::console_text()
}

fn store_u64(path: &str) -> Option<u64> {
    sim(|s| s.xenstore.value(path).and_then(|v| String::from_utf8_lossy(v).trim().parse().ok()))
}

fn ask_hog(mib: u64) {
    sim(|s| s.toolstack_write("data/hog/mib", format!("{mib}").as_bytes()));
}

fn assert_no_errors() {
    let errors: Vec<String> = console().lines().filter(|l| l.contains("] ERROR")).map(String::from).collect();
    assert!(errors.is_empty(), "the guest logged errors:\n{}", errors.join("\n"));
    assert_eq!(hog::ERRORS.load(Ordering::Relaxed), 0, "the hog's pattern changed");
    assert_eq!(kernel::selftest::PATTERN_ERRORS.load(Ordering::Relaxed), 0);
    assert_no_violations();
}

/// The published figures add up: every page Xen backs is free or has one
/// owner.
fn assert_meminfo_adds_up() {
    let f = |n: &str| store_u64(&format!("data/meminfo/{n}")).unwrap_or_else(|| panic!("no data/meminfo/{n}"));
    let parts = ["free_kb", "kernel_kb", "heap_kb", "task_stacks_kb", "page_tables_kb", "task_pages_kb"];
    let sum: u64 = parts.iter().map(|p| f(p)).sum();
    assert_eq!(sum, f("total_kb"), "{parts:?} = {:?}", parts.map(f));
    assert_eq!(f("balloon_current_kb"), f("total_kb"));
    // (On the host the heap is std's: no heap or stack frames to see.)
    assert!(f("page_tables_kb") > 0 && f("kernel_kb") > 0);
}

#[test]
fn a_hog_past_the_target_gets_memory_from_xen_and_gives_it_back() {
    let _g = start(64, 192);
    run_until("data/meminfo", 5_000, || store_u64("data/meminfo/total_kb").is_some());
    assert_meminfo_adds_up();
    assert_eq!(store_u64("data/meminfo/balloon_target_kb"), Some(64 * 1024));

    ask_hog(120);
    run_until("the hog to reach 120 MiB", 300_000, || hog::HELD_MIB.load(Ordering::Relaxed) == 120);
    assert_eq!(hog::REFUSALS.load(Ordering::Relaxed), 0, "refused while Xen had memory to give");
    assert!(ballooning::populated_pages() > 120 * MIB, "grew past the 64 MiB target");
    assert!(console().contains("pressure: on"), "no pressure line");
    run_until("the figures to show it", 5_000, || {
        store_u64("data/meminfo/pressure_deflates").unwrap_or(0) > 0
            && store_u64("data/meminfo/task_pages_kb") == Some(120 * 1024)
    });
    assert_meminfo_adds_up();

    ask_hog(0);
    run_until("the hog to let go", 300_000, || hog::HELD_MIB.load(Ordering::Relaxed) == 0);
    run_until("the balloon to return to the target", 300_000, || ballooning::populated_pages() == 64 * MIB);
    assert!(console().contains("pressure: off"), "no line for the end of the pressure");
    assert_no_errors();
}

#[test]
fn past_the_domains_maximum_only_the_hog_is_refused() {
    let _g = start(64, 96);
    ask_hog(200);
    run_until("the hog to be refused", 300_000, || hog::REFUSALS.load(Ordering::Relaxed) > 0);
    let held = hog::HELD_MIB.load(Ordering::Relaxed);
    assert!((70..96).contains(&held), "held {held} MiB of a 96 MiB domain");
    assert!(console().contains("hog: out of memory"));
    let passes = kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed);
    run_until("the guest to run on", 60_000, || kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed) > passes);
    run_until("the refusals to be counted", 5_000, || store_u64("data/meminfo/alloc_failures").unwrap_or(0) > 0);

    sim(|s| s.toolstack_write("data/hog/mib", b"lots"));
    run_until("the bad size to be ignored", 5_000, || console().contains("hog: ignoring data/hog/mib"));
    ask_hog(10);
    run_until("the hog to shrink", 300_000, || hog::HELD_MIB.load(Ordering::Relaxed) == 10);
    assert_no_errors();
}
