//! blkfront on the one simulated Xen, against its simulated blkback: the
//! handshake, the block self-test's I/O with several requests in flight,
//! requests held in flight across a restore, a checkpoint and a migration
//! (issued again exactly once in a new domain, answered by the same
//! backend after a checkpoint), a detach and an attach while running, and
//! backends that misbehave in every way the protocol allows: each fails
//! its disk, never the guest.

use drivers::blkfront::{self, Phase};
use kernel::testing::{assert_no_violations, boot, request_suspend, run_until, sim, store, Guest};
use std::sync::atomic::Ordering;
use xen::sim::{BlkFault, DiskFeatures, SimConfig, SuspendPlan};

const VDEV: u32 = 51712;
/// 4 MiB disks; the self-test covers the first MiB.
const SECTORS: u64 = 8192;

fn start(cmdline: &str) -> Guest {
    let g =
        boot(SimConfig { cmdline: format!("ballast.pattern=2 ballast.sleepers=1 {cmdline}"), ..Default::default() });
    drivers::start(&g.opts);
    g
}

fn console() -> String {
    xen::sim::console_text()
}

fn figure(vdev: u32, name: &str) -> u64 {
    blkfront::disks()
        .into_iter()
        .find(|d| d.id == vdev)
        .map(|d| {
            let f = &d.figures;
            let c = match name {
                "passes" => &f.passes,
                "reissued" => &f.reissued,
                "mismatches" => &f.mismatches,
                "duplicates" => &f.duplicates,
                "requests" => &f.requests,
                _ => panic!("no figure {name}"),
            };
            c.load(Ordering::Relaxed)
        })
        .unwrap_or(0)
}

fn phase(vdev: u32) -> Option<Phase> {
    blkfront::disks().into_iter().find(|d| d.id == vdev).map(|d| d.phase())
}

fn passes_past(n: u64) {
    run_until("another self-test pass", 120_000, || figure(VDEV, "passes") > n);
}

fn assert_clean() {
    assert!(!console().contains("page leaked"), "a page was dropped while its backend had it mapped");
    assert_eq!(figure(VDEV, "mismatches"), 0, "the self-test read back wrong data");
    assert_eq!(figure(VDEV, "duplicates"), 0);
    assert_eq!(kernel::selftest::PATTERN_ERRORS.load(Ordering::Relaxed), 0);
    assert!(!console().contains("panicked"));
    assert_no_violations();
}

/// The self-test's line in sector `n` of the simulated disk.
fn sector_line(n: u64) -> String {
    sim(|s| {
        let d = s.disk(VDEV).expect("the disk");
        let bytes = d.sector(n);
        let end = bytes.iter().position(|&b| b == b'\n').unwrap_or(0);
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    })
}

/// Holds the backend's answers until `n` requests are in flight.
fn hold_in_flight(n: usize) {
    sim(|s| s.disk_hold(VDEV, true));
    run_until("requests to be held in flight", 60_000, || sim(|s| s.disk(VDEV).map_or(0, |d| d.held())) >= n);
}

#[test]
fn the_selftest_rides_through_restore_checkpoint_and_migration_with_io_in_flight() {
    let _g = start("ballast.blk=1");
    sim(|s| s.attach_disk(VDEV, SECTORS, DiskFeatures { flush: true, max_indirect_segments: 64, persistent: true }));
    run_until("the disk to connect", 60_000, || console().contains("blkfront 51712: connected to dom0"));
    passes_past(0);
    assert!(sector_line(5).starts_with("ballast-blk sector=5 gen="), "sector 5: {:?}", sector_line(5));
    assert!(sim(|s| s.disk(VDEV).unwrap().figures().flushes) > 0, "no flush reached the backend");
    run_until("figures under data/blk", 10_000, || store("data/blk/51712/passes").is_some());
    // As dom0's blkback, the backend keeps the pages it saw mapped; every
    // one the pool held once, and no more than were ever in flight.
    assert!(console().contains("persistent yes"), "{}", console());
    let mapped = sim(|s| s.disk_mapped(VDEV));
    assert!(mapped > 8 && mapped <= 32 * 33, "{mapped} grants kept mapped");

    // A restore: what the old backend held is gone with the old domain and
    // issued again on the new ring, once.
    hold_in_flight(4);
    let held = sim(|s| s.disk(VDEV).unwrap().held()) as u64;
    request_suspend(Some(SuspendPlan::Restore));
    sim(|s| s.disk_hold(VDEV, false));
    run_until("the reconnect", 60_000, || figure(VDEV, "reissued") >= held);
    let dropped = sim(|s| s.disk(VDEV).unwrap().figures().dropped_with_old_domain);
    assert_eq!(dropped, held, "the old backend's held requests");
    assert_eq!(figure(VDEV, "reissued"), held, "every request in flight issued again exactly once");
    let p = figure(VDEV, "passes");
    passes_past(p);

    // A checkpoint: the same backend answers what it held; nothing again.
    hold_in_flight(2);
    let reissued = figure(VDEV, "reissued");
    request_suspend(Some(SuspendPlan::Cancel));
    sim(|s| s.disk_hold(VDEV, false));
    let p = figure(VDEV, "passes");
    passes_past(p);
    assert_eq!(figure(VDEV, "reissued"), reissued, "a checkpoint issues nothing again");

    // A migration, as a restore.
    hold_in_flight(3);
    request_suspend(Some(SuspendPlan::Migrate));
    sim(|s| s.disk_hold(VDEV, false));
    let p = figure(VDEV, "passes");
    passes_past(p);
    assert!(figure(VDEV, "reissued") >= reissued + 3);
    assert_eq!(phase(VDEV), Some(Phase::Connected));
    assert_clean();
    // Every sector of the range names itself.
    for n in (0..2048).step_by(97) {
        assert!(sector_line(n).starts_with(&format!("ballast-blk sector={n} gen=")), "sector {n}");
    }
}

#[test]
fn a_detached_disk_goes_and_an_attached_one_is_driven() {
    let _g = start("ballast.blk=1");
    let persistent = DiskFeatures { persistent: true, ..DiskFeatures::default() };
    sim(|s| s.attach_disk(VDEV, SECTORS, persistent));
    passes_past(0);
    assert!(sim(|s| s.detach_disk(VDEV)));
    run_until("the detach", 60_000, || console().contains("blkfront 51712: detached"));
    run_until("the disk to be forgotten", 10_000, || phase(VDEV).is_none());
    assert!(!sim(|s| s.disk(VDEV).unwrap().attached()), "the backend finished closing");
    sim(|s| s.attach_disk(VDEV, SECTORS, DiskFeatures::default()));
    run_until("the new disk to connect", 60_000, || phase(VDEV) == Some(Phase::Connected));
    passes_past(0);
    assert_clean();
}

/// A guest with disks `vdevs`, each connected, and a task reading from
/// every one so that each sees responses.
fn start_with_disks(vdevs: &[u32]) -> Guest {
    let g = start("ballast.blk=0");
    for &v in vdevs {
        sim(|s| s.attach_disk(v, SECTORS, DiskFeatures::default()));
    }
    run_until("the disks to connect", 60_000, || vdevs.iter().all(|&v| phase(v) == Some(Phase::Connected)));
    kernel::sched::spawn("prober", || loop {
        for d in blkfront::disks() {
            if d.phase() == Phase::Connected {
                let _ = d.read(0, 8);
            }
        }
        kernel::sched::sleep_ms(20);
    });
    g
}

#[test]
fn backends_breaking_the_ring_fail_their_disk_only() {
    let faults = [
        (51712, BlkFault::RspProdBeyondRing),
        (51728, BlkFault::UnknownId),
        (51744, BlkFault::BadStatus),
        (51760, BlkFault::DuplicateResponse),
    ];
    let _g = start_with_disks(&faults.map(|(v, _)| v));
    run_until("the prober to read", 30_000, || figure(51760, "requests") > 2);
    for (v, f) in faults {
        sim(|s| s.disk_fault(v, f));
    }
    for (v, f) in faults {
        run_until(&format!("disk {v} to fail on {f:?}"), 60_000, || phase(v) == Some(Phase::Failed));
    }
    let text = console();
    assert!(text.contains("blkfront 51712: ring fault"), "{text}");
    assert!(text.contains("blkfront 51728: a response for request") && text.contains("never issued"));
    assert!(text.contains("blkfront 51744: response status 7 out of range"));
    // Answering one request twice is a response too many for the ring, or
    // (with others in flight) a second completion for the shadow.
    assert!(
        text.contains("blkfront 51760: ring fault") || text.contains("blkfront 51760: a second response"),
        "{text}"
    );
    // The guest runs on.
    let passes = kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed);
    run_until("the guest to go on", 60_000, || kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed) > passes);
    assert!(!text.contains("panicked"));
    assert_no_violations();
}

#[test]
fn backends_that_never_connect_close_or_write_garbage_fail_their_disk_only() {
    let g = start("ballast.blk=0");
    sim(|s| {
        s.attach_disk(51712, SECTORS, DiskFeatures::default());
        s.disk_fault(51712, BlkFault::NeverConnect);
        s.attach_disk(51728, SECTORS, DiskFeatures::default());
        s.attach_disk(51744, SECTORS, DiskFeatures::default());
    });
    run_until("two disks to connect", 60_000, || {
        phase(51728) == Some(Phase::Connected) && phase(51744) == Some(Phase::Connected)
    });
    sim(|s| {
        s.disk_fault(51728, BlkFault::GoClosed);
        s.disk_fault(51744, BlkFault::StateGarbage);
    });
    run_until("the silent backend to be given up", 120_000, || phase(51712) == Some(Phase::Failed));
    assert!(console().contains("blkfront 51712: backend not connected after"));
    run_until("the closed backend's disk to go", 60_000, || phase(51728).is_none());
    assert!(console().contains("blkfront 51728: detached"));
    // It stays closed while its nodes stay: no reconnect to a closed backend.
    kernel::testing::run_for(12_000);
    assert!(phase(51728).is_none(), "a closed backend's disk came back");
    run_until("the garbage state to fail its disk", 60_000, || phase(51744) == Some(Phase::Failed));
    assert!(console().contains("blkfront 51744: backend state: not a number"), "{}", console());
    drop(g);
}

#[test]
fn the_bench_writes_and_reads_its_own_range_beside_the_selftest() {
    // The self-test covers MiB 0; the bench MiB 1..3 of the 4 MiB disk.
    let _g = start("ballast.blk=1 ballast.blkbench=2");
    sim(|s| s.attach_disk(VDEV, SECTORS, DiskFeatures { flush: true, max_indirect_segments: 64, persistent: true }));
    run_until("the bench figures", 120_000, || store("data/blk/51712/bench_read_us").is_some());
    assert_eq!(store("data/blk/51712/bench_bytes").as_deref(), Some("2097152"));
    let write_us: u64 = store("data/blk/51712/bench_write_us").unwrap().parse().unwrap();
    assert!(write_us > 0, "a write of 2 MiB took no time");
    assert!(console().contains("blk-bench: disk 51712: 2 MiB in 128 KiB requests, 8 in flight"), "{}", console());
    passes_past(1);
    // The bench's bytes fill its range only; the self-test's range names itself.
    for n in [2048, 3000, 6143] {
        assert!(sim(|s| s.disk(VDEV).unwrap().sector(n).iter().all(|&b| b == 0xb5)), "sector {n}");
    }
    assert!(sim(|s| s.disk(VDEV).unwrap().sector(6144).iter().all(|&b| b == 0)), "sector 6144 past the bench");
    assert!(sector_line(2047).starts_with("ballast-blk sector=2047 gen="), "{:?}", sector_line(2047));
    assert_eq!(store("data/blk/51712/bench_error"), None);
    assert_clean();
}

#[test]
fn a_bench_larger_than_the_disk_is_refused_with_a_log_line() {
    let _g = start("ballast.blk=1 ballast.blkbench=4");
    sim(|s| s.attach_disk(VDEV, SECTORS, DiskFeatures::default()));
    run_until("the refusal", 60_000, || {
        console().contains("blk-bench: disk 51712 has 4 MiB, the bench needs sectors 2048..10240; no bench")
    });
    passes_past(1);
    assert_eq!(store("data/blk/51712/bench_read_us"), None);
    assert_clean();
}
