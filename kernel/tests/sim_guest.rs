//! The kernel's memory, event, grant and PM layers against the one
//! simulated Xen: release and repopulation through the balloon's
//! mechanism, a simulated save and restore in which every machine frame
//! and port changes, a migration, and a cancelled suspend.

use core::sync::atomic::{AtomicU32, Ordering};
use kernel::events::{self, Binding};
use kernel::grant::{self, GrantDevice, GrantFlags};
use kernel::mm::{ballooning, kernel_memory, physmap, suspend_release};
use kernel::pm::Device;
use kernel::testing::{assert_no_violations, boot, sim};
use kernel::{platform, Hv, Hypervisor};
use xen::abi::INVALID_MFN;
use xen::sim::{SimConfig, SuspendPlan};

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
fn release_and_repopulate_go_through_the_balloon_mechanism() {
    let _g = boot(SimConfig::default());
    let (owned, free) = (sim(|s| s.owned_pages()), ballooning::free_pages());
    let r = suspend_release::release_free(suspend_release::RESERVE_PAGES);
    assert!(r.pages() > 4096, "released only {}", r.pages());
    assert!(r.moved.extents_2m > 0, "no 2 MiB extent went in one piece");
    assert_eq!(ballooning::free_pages(), suspend_release::RESERVE_PAGES);
    assert_eq!(sim(|s| s.owned_pages()), owned - r.pages());
    assert_no_violations();

    let back = suspend_release::repopulate(&r);
    assert_eq!((back.wanted, back.got), (r.pages(), r.pages()));
    assert_eq!(sim(|s| s.owned_pages()), owned);
    assert_eq!(ballooning::free_pages(), free);
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
    let back = suspend_release::repopulate(&r);
    assert_eq!((back.wanted, back.got), (r.pages(), 700));
    assert_eq!(ballooning::populated_pages(), 8192 - r.pages() + 700);
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

static TIMER_EVENTS: AtomicU32 = AtomicU32::new(0);

/// The guest side of a suspend at the memory, event and grant layers, in
/// the order the suspend sequence runs them.
fn suspend(plan: SuspendPlan) -> i64 {
    sim(|s| s.plan_suspend(plan));
    GrantDevice.suspend().expect("grant table suspends");
    let si = platform::start_info_ptr();
    // SAFETY: the simulated start_info page; nothing else runs.
    let (store_pfn, console_pfn) = unsafe {
        let store = platform::mfn_to_pfn((*si).store_mfn);
        let console = platform::mfn_to_pfn((*si).console.domU.mfn);
        (*si).store_mfn = store;
        (*si).console.domU.mfn = console;
        (store, console)
    };
    platform::unmap_shared_info();
    let si_mfn = physmap::pfn_to_mfn(platform::va_to_pfn(si as u64));
    // SAFETY: start_info canonical, shared_info and the grant table unmapped.
    let rc = unsafe { Hv::suspend(si_mfn) };
    if rc == 0 {
        platform::map_shared_info();
        physmap::publish_frame_lists();
        // SAFETY: a domU's start_info carries the domU console variant.
        let (console, store) = platform::with_start_info(|si| (unsafe { si.console.domU.evtchn }, si.store_evtchn));
        events::rebind_all(|name| match name {
            "console" => Some(console),
            "xenstore" => Some(store),
            _ => None,
        });
        GrantDevice.resume();
    } else {
        // SAFETY: as above.
        unsafe {
            (*si).store_mfn = physmap::pfn_to_mfn(store_pfn);
            (*si).console.domU.mfn = physmap::pfn_to_mfn(console_pfn);
        }
        platform::map_shared_info();
        GrantDevice.cancel();
    }
    rc
}

#[test]
fn restore_renumbers_every_frame_and_rebinds_every_port() {
    let _g = boot(SimConfig::default());
    let timer = events::bind(Binding::Virq { virq: 0, vcpu: 0 }, "timer", |_| {
        TIMER_EVENTS.fetch_add(1, Ordering::Relaxed);
    })
    .expect("timer bound");
    let (store, console) = sim(|s| (s.store_port(), s.console_port()));
    events::attach(store, "xenstore", |_| {}).unwrap();
    events::attach(console, "console", |_| {}).unwrap();
    let page = kernel_memory::with_frames(|f| f.alloc(0)).unwrap();
    // SAFETY: a frame just allocated for this test.
    unsafe { (platform::pfn_to_va(page) as *mut u64).write(0x5a5a_1234) };
    let gref = grant::grant_access(0, page, true).unwrap();
    let before: Vec<u64> = (0..8192).map(physmap::pfn_to_mfn).collect();

    assert_eq!(suspend(SuspendPlan::Restore), 0);
    assert_no_violations();
    let after: Vec<u64> = (0..8192).map(physmap::pfn_to_mfn).collect();
    assert!(before.iter().zip(&after).all(|(b, a)| b != a), "a machine frame survived the restore");
    assert!(after.iter().all(|&m| sim(|s| s.owns(m))), "the p2m names frames the new domain does not own");
    assert_free_frames_backed();
    // SAFETY: as above.
    assert_eq!(unsafe { (platform::pfn_to_va(page) as *const u64).read() }, 0x5a5a_1234);

    let ports = sim(|s| s.ports());
    let new_timer = events::port_of("timer").unwrap();
    assert_ne!(new_timer, timer);
    assert!(ports.contains(&(new_timer, xen::sim::PortKind::Virq { virq: 0, vcpu: 0 })));
    assert_eq!(events::port_of("xenstore"), Some(sim(|s| s.store_port())));
    assert_ne!(events::port_of("xenstore"), Some(store));
    let seen = TIMER_EVENTS.load(Ordering::Relaxed);
    sim(|s| s.raise(new_timer));
    events::handle_upcall();
    assert_eq!(TIMER_EVENTS.load(Ordering::Relaxed), seen + 1, "the rebound timer port does not reach its handler");

    let (flags, domid, frame) = sim(|s| s.grant_entry(gref)).unwrap();
    assert_eq!(GrantFlags::from_bits_retain(flags), GrantFlags::PERMIT_ACCESS | GrantFlags::READONLY);
    assert_eq!((domid, frame as u64), (0, physmap::pfn_to_mfn(page)), "grant not rewritten with the new frame");
}

#[test]
fn a_cancelled_suspend_keeps_frames_ports_and_grants() {
    let _g = boot(SimConfig::default());
    let page = kernel_memory::with_frames(|f| f.alloc(0)).unwrap();
    let gref = grant::grant_access(0, page, false).unwrap();
    let timer = events::bind(Binding::Virq { virq: 0, vcpu: 0 }, "timer", |_| {}).unwrap();
    let before: Vec<u64> = (0..8192).map(physmap::pfn_to_mfn).collect();
    assert_eq!(suspend(SuspendPlan::Cancel), 1);
    assert_no_violations();
    assert_eq!(before, (0..8192).map(physmap::pfn_to_mfn).collect::<Vec<_>>());
    assert_eq!(events::port_of("timer"), Some(timer));
    assert_eq!(grant::entry(gref).unwrap().frame as u64, physmap::pfn_to_mfn(page));
    assert_eq!(sim(|s| s.grant_entry(gref)).unwrap().2 as u64, physmap::pfn_to_mfn(page));
}

#[test]
fn migration_brings_released_pages_back_and_the_kernel_adopts_them() {
    let _g = boot(SimConfig::default());
    let r = suspend_release::release_free(suspend_release::RESERVE_PAGES);
    assert_eq!(suspend(SuspendPlan::Migrate), 0);
    assert_no_violations();
    let adopted = kernel::mm::reservation::adopt_backed_unmapped();
    assert_eq!(adopted, r.pages(), "every released page came back populated");
    let back = suspend_release::repopulate(&r);
    assert_eq!((back.wanted, back.got), (0, 0), "nothing left to ask Xen for");
    assert_eq!(sim(|s| s.owned_pages()), 8192);
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
