//! The whole guest (kernel, drivers, self-tests) on the one simulated Xen,
//! driven the way the toolstack drives it: `control/shutdown` = suspend,
//! then a restore in a new domain where every machine frame and port is
//! new, a migration, a cancelled suspend (checkpoint), and refusals from
//! every step that can refuse, each unwound with nothing lost.

use kernel::grant::{self, GrantFlags};
use kernel::mm::{ballooning, kernel_memory, physmap};
use kernel::pm::{self, Device};
use kernel::suspend::{self, Figures};
use kernel::testing::{assert_no_violations, boot, request_suspend, run_for, run_until, sim, store, Guest};
use kernel::{events, smp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use xen::sim::{PortKind, SimConfig, SuspendPlan};

const PAGES: u64 = 8192;

/// Boots the kernel and starts the drivers, then runs until the control
/// driver watches `control/shutdown` and the self-tests have passed once.
fn start(cmdline: &str) -> Guest {
    start_vcpus(1, 1, cmdline)
}

/// `start` with `vcpus` online of `max_vcpus`.
fn start_vcpus(vcpus: u32, max_vcpus: u32, cmdline: &str) -> Guest {
    let g = boot(SimConfig {
        cmdline: format!("ballast.pattern=4 ballast.sleepers=2 {cmdline}"),
        vcpus,
        max_vcpus,
        ..Default::default()
    });
    drivers::start(&g.opts);
    run_until("the control driver to watch control/shutdown", 10_000, || {
        sim(|s| s.xenstore.value("control/feature-suspend").is_some())
            && console().contains("watching control/shutdown")
    });
    run_until("a pattern pass", 60_000, || kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed) > 0);
    g
}

fn console() -> String {
    xen::sim::console_text()
}

fn p2m() -> Vec<u64> {
    (0..PAGES).map(physmap::pfn_to_mfn).collect()
}

/// The machine frames of the pages in use (not free in the allocator).
fn frames_in_use() -> Vec<(u64, u64)> {
    let free: Vec<bool> = kernel_memory::with_frames(|f| (0..PAGES).map(|p| f.is_free(p)).collect());
    (0..PAGES).filter(|&p| !free[p as usize]).map(|p| (p, physmap::pfn_to_mfn(p))).collect()
}

/// How many pfns have a different frame in `after` than in `before`.
fn moved(before: &[u64], after: &[u64]) -> usize {
    before.iter().zip(after).filter(|(a, b)| a != b).count()
}

/// The guest still answers through xenstore (its data publisher writes the
/// suspend count), its self-tests pass again with no error, and Xen saw
/// no mistake.
fn assert_guest_healthy(suspends: u64) {
    run_until("the publisher to report the suspend", 10_000, || {
        store("data/suspend/count") == Some(suspends.to_string())
    });
    let passes = kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed);
    run_until("another pattern pass", 60_000, || kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed) > passes);
    let wakeups = kernel::selftest::SLEEPER_WAKEUPS.load(Ordering::Relaxed);
    run_until("a sleeper to wake", 10_000, || kernel::selftest::SLEEPER_WAKEUPS.load(Ordering::Relaxed) > wakeups);
    assert_eq!(kernel::selftest::PATTERN_ERRORS.load(Ordering::Relaxed), 0, "the memory pattern changed");
    let errors: Vec<String> = console().lines().filter(|l| l.contains("] ERROR")).map(String::from).collect();
    assert!(errors.is_empty(), "the guest logged errors:\n{}", errors.join("\n"));
    assert_no_violations();
}

/// Every bound port is one the simulated Xen has, bound to what the
/// kernel's table says.
fn assert_ports_match_xen() {
    let ports = sim(|s| s.ports());
    let timer = events::port_of("timer").expect("timer bound");
    assert!(ports.contains(&(timer, PortKind::Virq { virq: 0, vcpu: 0 })), "timer port {timer} not in {ports:?}");
    assert_eq!(events::port_of("xenstore"), Some(sim(|s| s.store_port())));
    assert_eq!(events::port_of("console"), Some(sim(|s| s.console_port())));
}

#[test]
fn save_and_restore_renumber_every_frame_and_port_and_lose_nothing() {
    let _g = start("");
    let (frames, timer, owned) = (p2m(), events::port_of("timer").unwrap(), sim(|s| s.owned_pages()));
    let page = kernel_memory::with_frames(|f| f.alloc(0)).unwrap();
    let gref = grant::grant_access(0, page, true).unwrap();

    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.cancels, f.refused), (1, 0, 0));
    assert!(f.last_released_pages > 1000, "released only {} pages", f.last_released_pages);
    assert_eq!(f.last_repopulated_pages, f.last_released_pages, "not everything came back");
    assert_eq!(moved(&frames, &p2m()), PAGES as usize, "a machine frame survived the restore");
    assert!(p2m().iter().all(|&m| sim(|s| s.owns(m))), "the p2m names frames the new domain does not own");
    assert_ne!(events::port_of("timer"), Some(timer));
    assert_ports_match_xen();
    assert_eq!(sim(|s| s.owned_pages()), owned);
    assert!(console().contains("xenstore: reconnected"));
    let (flags, domid, frame) = sim(|s| s.grant_entry(gref)).expect("grant entry");
    assert_eq!(GrantFlags::from_bits_retain(flags), GrantFlags::PERMIT_ACCESS | GrantFlags::READONLY);
    assert_eq!((domid, frame as u64), (0, physmap::pfn_to_mfn(page)), "grant not rewritten with the new frame");
    assert_guest_healthy(1);

    // And once more from the new domain.
    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.refused), (2, 0));
    assert_ports_match_xen();
    assert_guest_healthy(2);
}

#[test]
fn a_checkpoint_cancels_in_the_same_domain() {
    let _g = start("");
    let (in_use, timer) = (frames_in_use(), events::port_of("timer").unwrap());
    let released_before = ballooning::populated_pages();
    let f = request_suspend(Some(SuspendPlan::Cancel));
    assert_eq!((f.suspends, f.cancels, f.refused), (1, 1, 0));
    // Free pages were given back and taken again (new frames); no page in
    // use moved.
    assert!(f.last_released_pages > 1000);
    assert_eq!(frames_in_use(), in_use, "a cancelled suspend moved memory in use");
    assert_eq!(events::port_of("timer"), Some(timer));
    assert_eq!(ballooning::populated_pages(), released_before, "released memory did not come back");
    assert_guest_healthy(1);
}

/// The port the guest offers in `device/suspend/event-channel`, once
/// written and bound as it says: unbound, open to dom0.
fn offered_suspend_port() -> Option<u32> {
    let port = store(drivers::suspend_channel::NODE)?.parse::<u32>().ok()?;
    let open_to_dom0 = sim(|s| s.ports()).contains(&(port, PortKind::Unbound { remote_dom: 0 }));
    (open_to_dom0 && events::port_of(drivers::suspend_channel::BINDING) == Some(port)).then_some(port)
}

/// Asks for a suspend as libxl does when the guest offers the channel:
/// one notification, no xenstore write.
fn request_suspend_by_channel(plan: SuspendPlan) -> Figures {
    let before = suspend::figures();
    run_until("the suspend channel to be offered", 10_000, || offered_suspend_port().is_some());
    let port = offered_suspend_port().unwrap();
    sim(|s| {
        s.plan_suspend(plan);
        s.raise(port);
    });
    run_until("the suspend to finish", 120_000, || suspend::figures().suspends > before.suspends);
    run_until("the released memory to come back", 60_000, || !kernel::restock::pending());
    suspend::figures()
}

#[test]
fn the_suspend_channel_asks_without_xenstore_and_is_offered_again_in_every_domain() {
    let _g = start("");
    let f = request_suspend_by_channel(SuspendPlan::Cancel);
    assert_eq!((f.suspends, f.cancels, f.refused), (1, 1, 0));
    let port = offered_suspend_port().expect("offered after the checkpoint");
    assert!(console().contains(&format!("suspend requested through the event channel (port {port})")));
    assert_ne!(store("control/shutdown").as_deref(), Some("suspend"));

    // A new domain has no ports and an empty node: a new port is offered.
    let f = request_suspend_by_channel(SuspendPlan::Restore);
    assert_eq!((f.suspends, f.cancels, f.refused), (2, 1, 0));
    run_until("a port offered in the new domain", 10_000, || offered_suspend_port().is_some());
    assert_ports_match_xen();
    // The xenstore handshake still works next to it.
    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.refused), (3, 0));
    run_until("a port offered after the xenstore-asked suspend", 10_000, || offered_suspend_port().is_some());
    assert_guest_healthy(3);
}

#[test]
fn no_suspend_channel_is_offered_when_switched_off() {
    let _g = start("ballast.suspend_evtchn=0");
    run_for(500);
    assert_eq!(store(drivers::suspend_channel::NODE).as_deref(), Some(""));
    assert_eq!(events::port_of(drivers::suspend_channel::BINDING), None);
    let f = request_suspend(Some(SuspendPlan::Cancel));
    assert_eq!((f.suspends, f.cancels), (1, 1));
    assert_guest_healthy(1);
}

#[test]
fn a_migration_brings_released_memory_back_and_the_guest_adopts_it() {
    let _g = start("");
    let f = request_suspend(Some(SuspendPlan::Migrate));
    assert_eq!((f.suspends, f.refused), (1, 0));
    assert_eq!(f.last_adopted_pages, f.last_released_pages);
    assert_eq!(f.last_repopulated_pages, 0, "asked Xen for pages that came back populated");
    assert_eq!(ballooning::populated_pages(), PAGES);
    assert_ports_match_xen();
    assert_guest_healthy(1);
}

#[test]
fn a_task_that_never_freezes_refuses_the_suspend_and_the_next_one_works() {
    // Stays out of safe points through all 5 freeze attempts of one suspend.
    let _g = start("ballast.stubborn=5");
    let frames = p2m();
    let f = request_suspend(None);
    assert_eq!((f.suspends, f.refused, f.freeze_retries), (0, 1, 4));
    assert!(
        console().contains("did not freeze in 5 attempts of 2000 ms; all tasks thawed, guest runs on"),
        "no refusal line"
    );
    assert_eq!(moved(&frames, &p2m()), 0);
    assert_eq!(sim(|s| s.calls.get("suspend").copied()), None, "the hypercall ran");
    assert_guest_healthy(0);

    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.refused), (1, 1));
    assert_guest_healthy(1);
}

/// A device that records what was asked of it and refuses when told to.
struct Probe {
    name: &'static str,
    refuse: AtomicBool,
    log: Arc<Mutex<Vec<String>>>,
}

impl Device for Probe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn suspend(&self) -> Result<(), &'static str> {
        self.log.lock().unwrap().push(format!("{} suspend", self.name));
        if self.refuse.load(Ordering::Relaxed) {
            Err("refusing on purpose")
        } else {
            Ok(())
        }
    }
    fn resume(&self) {
        self.log.lock().unwrap().push(format!("{} resume", self.name));
    }
    fn cancel(&self) {
        self.log.lock().unwrap().push(format!("{} cancel", self.name));
    }
}

#[test]
fn a_refusing_device_or_a_failed_pin_unwinds_every_step_before_it() {
    let _g = start("");
    let log = Arc::new(Mutex::new(Vec::new()));
    let probe = |name, refuse| Arc::new(Probe { name, refuse: AtomicBool::new(refuse), log: log.clone() });
    let first = pm::register(probe("first", false));
    let second = probe("second", true);
    let second_id = pm::register(second.clone());
    let frames = p2m();

    // Device step: the one before is cancelled, nobody is resumed.
    let f = request_suspend(None);
    assert_eq!((f.suspends, f.refused), (0, 1));
    assert_eq!(*log.lock().unwrap(), ["first suspend", "second suspend", "first cancel"]);
    assert!(console().contains("device second could not suspend: refusing on purpose"));
    assert_eq!(moved(&frames, &p2m()), 0);
    assert_guest_healthy(0);

    // Pin step (an address space under construction must be pinned for
    // the toolstack): every device is cancelled, in reverse, tasks thaw.
    let space = kernel::mm::aspace::create().expect("an address space");
    log.lock().unwrap().clear();
    second.refuse.store(false, Ordering::Relaxed);
    sim(|s| s.faults.refuse_pins = true);
    let f = request_suspend(None);
    assert_eq!((f.suspends, f.refused), (0, 2));
    assert_eq!(*log.lock().unwrap(), ["first suspend", "second suspend", "second cancel", "first cancel"]);
    assert!(console().contains("refused: pinning address space"));
    sim(|s| s.faults.refuse_pins = false);
    assert_guest_healthy(0);
    kernel::mm::aspace::destroy(space);

    // Unregistered devices are left alone; the rest resume in a new domain.
    log.lock().unwrap().clear();
    assert!(pm::unregister(second_id));
    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.refused), (1, 2));
    assert_eq!(*log.lock().unwrap(), ["first suspend", "first resume"]);
    assert!(pm::unregister(first) && !pm::unregister(first));
    assert_guest_healthy(1);
}

#[test]
fn the_guest_keeps_time_and_sleeps_across_idle_periods() {
    let _g = start("");
    let t0 = kernel::time::now_ns();
    run_for(5_000);
    assert!(kernel::time::now_ns() >= t0 + 5_000_000_000);
    assert!(sim(|s| s.calls.get("block").copied().unwrap_or(0)) > 0, "the idle task never blocked in Xen");
    assert_guest_healthy(0);
}

#[test]
fn xen_periodic_timer_is_stopped_at_boot_and_in_every_new_domain() {
    let _g = start("");
    let idle_ticks = || {
        let before = sim(|s| s.periodic_ticks);
        run_for(2_000);
        sim(|s| s.periodic_ticks) - before
    };
    assert_eq!(idle_ticks(), 0, "an idle guest was woken by Xen's 100 Hz periodic timer");
    request_suspend(Some(SuspendPlan::Restore));
    assert_eq!(idle_ticks(), 0, "the new domain's periodic timer kept running");
    assert_guest_healthy(1);
}

/// Runs until exactly the vCPUs in `online` are online and up in Xen,
/// and those outside it are down.
fn settle_vcpus(online: u64) {
    let n = sim(|s| s.vcpu_count());
    run_until("the vCPU set to settle", 20_000, || {
        smp::online_mask() == online && (0..n).all(|v| sim(|s| s.vcpu_up(v)) == (online & (1 << v) != 0))
    });
}

/// `settle_vcpus`, then each online vCPU advances its ticks (run by a
/// task on that very vCPU) while the others' stand still.
fn assert_vcpus_work(online: u64) {
    settle_vcpus(online);
    let n = sim(|s| s.vcpu_count());
    let up = |v: u32| online & (1 << v) != 0;
    let before: Vec<u64> = (0..n).map(smp::ticks).collect();
    run_until("every online vCPU to tick", 20_000, || {
        (0..n).filter(|&v| up(v)).all(|v| smp::ticks(v) > before[v as usize])
    });
    run_for(1_000);
    for v in (0..n).filter(|&v| !up(v)) {
        assert_eq!(smp::ticks(v), before[v as usize], "offline vCPU {v} ticked");
    }
    // Each vCPU's timer VIRQ is bound to it in Xen.
    let ports = sim(|s| s.ports());
    for v in (0..n).filter(|&v| up(v)) {
        assert!(
            ports.iter().any(|&(_, k)| k == PortKind::Virq { virq: 0, vcpu: v }),
            "vCPU {v} has no timer in {ports:?}"
        );
    }
}

#[test]
fn four_vcpus_run_tasks_and_every_suspend_quiesces_them_from_vcpu_0() {
    let _g = start_vcpus(4, 4, "");
    assert_vcpus_work(0b1111);
    for (i, plan) in [SuspendPlan::Restore, SuspendPlan::Cancel, SuspendPlan::Migrate].into_iter().enumerate() {
        // The simulated Xen records a violation if a vCPU is up at the
        // suspend hypercall, and runs each vCPU on a host thread of its own.
        let f = request_suspend(Some(plan));
        assert_eq!((f.suspends, f.refused), (i as u64 + 1, 0), "{plan:?}");
        assert_vcpus_work(0b1111);
        assert_ports_match_xen();
        assert_guest_healthy(i as u64 + 1);
    }
    assert!(console().contains("suspend: deepest task stack"));
}

#[test]
fn a_vcpu_that_misses_the_rendezvous_refuses_the_suspend_and_the_next_one_works() {
    let _g = start_vcpus(4, 4, "ballast.holdvcpu=1:1");
    // The holder spins on vCPU 1 until the rendezvous has given up on it.
    settle_vcpus(0b1111);
    run_until("the holder to hold vCPU 1", 20_000, || console().contains("holder: keeping vCPU 1"));
    let frames = p2m();
    let f = request_suspend(None);
    assert_eq!((f.suspends, f.refused), (0, 1));
    assert!(console().contains("vCPU 1 did not reach the rendezvous"), "no refusal naming vCPU 1");
    assert_eq!(sim(|s| s.calls.get("suspend").copied()), None, "the hypercall ran");
    assert_eq!(moved(&frames, &p2m()), 0);
    assert_vcpus_work(0b1111);
    assert_guest_healthy(0);

    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.refused), (1, 1));
    assert_vcpus_work(0b1111);
    assert_guest_healthy(1);
}

#[test]
fn hotplug_takes_vcpus_down_and_back_and_the_set_survives_a_restore() {
    let _g = start_vcpus(2, 8, "");
    assert_vcpus_work(0b11);
    assert_eq!(smp::stop(&[0, 1], 1_000_000), Err(smp::SmpError::StopsItself(0)), "stopped the caller's own vCPU");
    let set = |v: u32, state: &str| sim(|s| s.toolstack_write(&format!("cpu/{v}/availability"), state.as_bytes()));
    for v in 2..8 {
        set(v, "online");
    }
    assert_vcpus_work(0xff);
    for v in [1, 3, 5, 6, 7] {
        set(v, "offline");
    }
    assert_vcpus_work(0b1_0101);
    let f = request_suspend(Some(SuspendPlan::Restore));
    assert_eq!((f.suspends, f.refused), (1, 0));
    assert_vcpus_work(0b1_0101);
    set(1, "online");
    set(2, "sideways");
    assert_vcpus_work(0b1_0111);
    assert!(console().contains("cpu/2/availability = \"sideways\" is neither online nor offline; ignored"));
    assert_guest_healthy(1);
}
