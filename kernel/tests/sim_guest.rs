//! The kernel's memory and grant layers against the one simulated Xen:
//! release and repopulation through the balloon's mechanism, a short host,
//! a refused decrease, grant bounds. The whole suspend sequence, driven
//! through `control/shutdown`, is in `drivers/tests/guest.rs`.

use kernel::grant::{self, GrantFlags};
use kernel::mm::{ballooning, kernel_memory, physmap, suspend_release};
use kernel::testing::{assert_no_violations, boot, boot_after, run_until, sim};
use kernel::{restock, suspend};
use xen::abi::INVALID_MFN;
use xen::seam::XenError;
use xen::sim::{Failure, SimConfig};

/// Every free pfn is backed by a frame the domain owns and mapped at its place.
fn assert_free_frames_backed() {
    let total = ballooning::max_pages();
    let free: Vec<u64> = kernel_memory::with_frames(|f| (0..total).filter(|&p| f.is_free(p)).collect());
    for pfn in free {
        let mfn = physmap::pfn_to_mfn(pfn);
        assert_ne!(mfn, INVALID_MFN, "free pfn {pfn:#x} is not backed");
        assert!(sim(|s| s.owns(mfn) && s.mfn_mapped(mfn)), "free pfn {pfn:#x} (mfn {mfn:#x}) not owned and mapped");
    }
}

#[test]
fn boot_maps_memory_without_mistakes() {
    let _g = boot(SimConfig::default());
    assert_no_violations();
    assert_eq!(ballooning::populated_pages(), 8192);
    assert_eq!(sim(|s| s.owned_pages()), 8192);
    assert_free_frames_backed();
}

#[test]
fn a_refused_maximum_reservation_boots_within_the_boot_pages() {
    let refused = Failure { call: "maximum_reservation", skip: 0, error: XenError::EPERM };
    let _g = boot_after(SimConfig::default(), |s| s.faults.fail = Some(refused));
    assert_eq!(sim(|s| s.faults.failures_returned), 1);
    assert!(xen::sim::console_text().contains("Xen refused maximum_reservation"), "no line says maxmem is unknown");
    assert_eq!(ballooning::max_pages(), 8192, "the physmap must stop at the boot pages");
    assert_eq!(ballooning::populated_pages(), 8192);
    assert_no_violations();
    assert_free_frames_backed();
}

#[test]
fn release_and_background_restock_go_through_the_balloon_mechanism() {
    let _g = boot(SimConfig::default());
    let (owned, free) = (sim(|s| s.owned_pages()), ballooning::free_pages());
    let r = suspend_release::release_free(suspend_release::RESERVE_PAGES);
    assert!(r.pages() > 4096, "released only {}", r.pages());
    assert!(r.moved.extents_2m > 0, "no 2 MiB extent went in one piece");
    assert_eq!(ballooning::free_pages(), suspend_release::RESERVE_PAGES);
    assert_eq!(sim(|s| s.owned_pages()), owned - r.pages());
    assert_no_violations();

    assert_eq!(restock::owe(Some(suspend_release::goal(&r)), false), r.pages());
    run_until("the restock to finish", 10_000, || !restock::pending());
    assert_eq!(suspend::figures().last_repopulated_pages, r.pages());
    assert_eq!(sim(|s| s.owned_pages()), owned);
    // Tasks ran meanwhile and may hold a frame more than before.
    assert_eq!(ballooning::populated_pages(), suspend_release::goal(&r));
    assert!(ballooning::free_pages() + 16 >= free, "free {} of {}", ballooning::free_pages(), free);
    assert_no_violations();
    assert_free_frames_backed();
}

#[test]
fn the_limit_probe_leaves_every_frame_where_it_was() {
    let _g = boot(SimConfig::default());
    let populated = ballooning::populated_pages();
    let f = kernel::mm::limit_probe::run().expect("probe ran");
    assert!(f.bare_pages >= 4096 && f.ballast_pages >= f.bare_pages, "{f:?}");
    assert_eq!(ballooning::populated_pages(), populated);
    assert_eq!(sim(|s| s.owned_pages()), populated);
    assert_no_violations();
    assert_free_frames_backed();
}

#[test]
fn a_short_host_leaves_the_rest_ballooned() {
    let _g = boot(SimConfig::default());
    let r = suspend_release::release_free(suspend_release::RESERVE_PAGES);
    sim(|s| {
        s.faults.populate_budget = Some(700);
        s.faults.no_2m = true;
    });
    restock::owe(Some(suspend_release::goal(&r)), false);
    run_until("the restock to give up", 10_000, || !restock::pending());
    assert_eq!(suspend::figures().last_repopulated_pages, 700);
    assert_eq!(ballooning::populated_pages(), 8192 - r.pages() + 700);
    assert!(xen::sim::console_text().contains("restock: Xen supplied no more pages"));
    assert_no_violations();
    assert_free_frames_backed();
}

#[test]
fn a_refused_decrease_keeps_every_frame() {
    let _g = boot(SimConfig::default());
    sim(|s| s.faults.decrease_budget = Some(1000));
    let free = ballooning::free_pages();
    let p = ballooning::inflate_frames(3000, 0);
    assert_eq!(p.pages, 1000);
    assert_eq!(ballooning::free_pages(), free - 1000);
    assert_no_violations();
    assert_free_frames_backed();
}

#[test]
fn grant_refs_are_bounds_checked_and_end_only_when_unmapped() {
    let _g = boot(SimConfig::default());
    let page = kernel_memory::with_frames(|f| f.alloc(0)).unwrap();
    let gref = grant::grant_access(0, page, false).unwrap();
    assert_eq!(grant::entry(100_000), Err(grant::GrantError::BadRef(100_000)));
    sim(|s| s.grant_set_flags(gref, GrantFlags::READING.bits(), true));
    assert_eq!(grant::end_access(gref), Err(grant::GrantError::InUse(gref)));
    sim(|s| s.grant_set_flags(gref, GrantFlags::READING.bits(), false));
    assert_eq!(grant::end_access(gref), Ok(()));
    assert_eq!(sim(|s| s.grant_entry(gref)).unwrap().0, 0);
    assert_eq!(grant::grant_access(0, page, false), Ok(gref), "an ended ref is handed out again");
}

#[test]
fn each_event_handler_runs_with_its_own_context() {
    use kernel::events::{self, Binding, EventError};
    use kernel::{Hv, Hypervisor};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let _g = boot(SimConfig { cmdline: "ballast.pattern=0 ballast.sleepers=0".into(), ..Default::default() });
    let counters: Vec<Arc<AtomicU32>> = (0..2).map(|_| Arc::new(AtomicU32::new(0))).collect();
    let ports: Vec<u32> = counters
        .iter()
        .map(|c| {
            let c = c.clone();
            events::bind(Binding::Ipi { vcpu: 0 }, "ipi", move |_| {
                c.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap()
        })
        .collect();
    let seen = || counters.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();

    // Xen delivers the upcall on the way back from the next hypercall.
    sim(|s| s.raise(ports[1]));
    Hv::yield_now();
    assert_eq!(seen(), [0, 1]);
    sim(|s| s.raise(ports[0]));
    Hv::yield_now();
    assert_eq!(seen(), [1, 1]);

    events::unbind(ports[1]);
    sim(|s| s.raise(ports[1]));
    Hv::yield_now();
    assert_eq!(seen(), [1, 1], "an unbound port reached its old handler");
    assert!(!sim(|s| s.ports()).iter().any(|&(p, _)| p == ports[1]), "the port was not closed");

    // A close Xen refuses still forgets the binding (the port stays masked)
    // and says so.
    let refused = Failure { call: "close_port", skip: 0, error: XenError::EINVAL };
    sim(|s| s.faults.fail = Some(refused));
    events::unbind(ports[0]);
    assert_eq!(sim(|s| s.faults.failures_returned), 1);
    sim(|s| s.raise(ports[0]));
    Hv::yield_now();
    assert_eq!(seen(), [1, 1], "a port whose close was refused reached its old handler");
    let warning = format!("event: closing port {} failed", ports[0]);
    assert!(xen::sim::console_text().contains(&warning), "no line says the close was refused");

    // The table is bounded; a refused insert closes the port it bound.
    let mut open = sim(|s| s.ports().len());
    loop {
        match events::bind(Binding::Ipi { vcpu: 0 }, "filler", |_| {}) {
            Ok(_) => open += 1,
            Err(e) => {
                assert_eq!(e, EventError::TableFull);
                break;
            }
        }
    }
    assert_eq!(sim(|s| s.ports().len()), open, "the refused bind left its port open");
}
