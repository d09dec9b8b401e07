//! Model-based runs of the whole guest on the simulated Xen: a seeded
//! random sequence of what dom0 and the host can do — mem-set (good,
//! impossible, garbage), save + restore, checkpoint, live migration, vCPU
//! hotplug (good and garbage), a host short of memory either way, no
//! 2 MiB runs, and any of those with one hypercall refused by Xen — with
//! the invariants checked after every step:
//!
//! - the balloon ends at the goal the model computes (the target clamped
//!   to the floor and the ceiling it publishes), or, when the host fell
//!   short, says so and stays between where it was and the goal;
//! - a garbage target is logged and changes nothing;
//! - a refused hypercall is logged (a warning or an error) — a refused
//!   balloon step is tried again in smaller pieces, and the balloon
//!   converges or says why — and what it stopped is left consistent; once
//!   Xen complies again, the same request gets there;
//! - every suspend completes once, the vCPU set is what dom0 asked for,
//!   the ports match Xen's, the memory pattern is intact, the frame
//!   allocator's counts add up, and the simulated Xen saw no mistake.
//!
//! `BALLAST_MODEL_SEEDS="1 2 3"` and `BALLAST_MODEL_STEPS=N` run more.

use kernel::mm::{ballooning, kernel_memory};
use kernel::testing::{assert_no_violations, boot, request_suspend, run_until, sim, store, Rng};
use kernel::{events, smp};
use std::sync::atomic::Ordering;
use xen::seam::XenError;
use xen::sim::{Failure, Faults, SimConfig, SuspendPlan};

const PAGES: u64 = 8192;
const VCPUS: u32 = 4;

#[derive(Debug, Clone, Copy)]
enum Step {
    MemSet {
        kb: u64,
    },
    MemSetGarbage(usize),
    Suspend(SuspendPlan),
    Vcpu {
        v: u32,
        online: Option<bool>,
    },
    HostShort {
        populate: bool,
        kb: u64,
    },
    No2m,
    /// The `skip`+1-th call of `Faults::FALLIBLE[call]` fails during `then`.
    Refuse {
        call: usize,
        skip: u32,
        then: &'static Step,
    },
}

const GARBAGE: [&str; 6] = ["abc", "-5", "99999999999999999999999", "", "12abc", "0x1000"];

fn pick(rng: &mut Rng) -> Step {
    if rng.below(4) == 0 {
        let call = rng.below(Faults::FALLIBLE.len() as u64) as usize;
        // The suspend hypercall comes once per step.
        let skip = if Faults::FALLIBLE[call] == "suspend" { 0 } else { rng.below(3) as u32 };
        // Mostly a step that makes the call; sometimes any step.
        let then = match rng.below(4) {
            0 => pick_plain(rng),
            _ => making(Faults::FALLIBLE[call], rng),
        };
        // Leaked: a handful per run, and it keeps Step Copy.
        let then = Box::leak(Box::new(then));
        return Step::Refuse { call, skip, then };
    }
    pick_plain(rng)
}

/// A step during which the guest makes hypercall `call`.
fn making(call: &str, rng: &mut Rng) -> Step {
    let online = Step::Vcpu { v: 1 + rng.below(u64::from(VCPUS) - 1) as u32, online: Some(true) };
    let new_domain = Step::Suspend([SuspendPlan::Restore, SuspendPlan::Migrate][rng.below(2) as usize]);
    match call {
        "vcpu_initialise" | "vcpu_up" | "bind_ipi" | "bind_virq" | "stop_periodic_timer" if rng.below(2) == 0 => online,
        "decrease_reservation" => Step::MemSet { kb: 8192 + rng.below(4096) * 4 },
        "populate_physmap" => Step::MemSet { kb: PAGES * 4 - rng.below(1024) * 4 },
        "mmuext_op" | "suspend" => Step::Suspend(SuspendPlan::Cancel),
        _ => new_domain,
    }
}

fn pick_plain(rng: &mut Rng) -> Step {
    let kb = |rng: &mut Rng| match rng.below(6) {
        0 => 1024,          // below any floor
        1 => PAGES * 4 * 4, // above what the guest can hold
        _ => (8192 + rng.below(PAGES * 4 - 8192)) & !3,
    };
    match rng.below(10) {
        0 | 1 => Step::MemSet { kb: kb(rng) },
        2 => Step::MemSetGarbage(rng.below(GARBAGE.len() as u64) as usize),
        3 => Step::Suspend(SuspendPlan::Restore),
        4 => Step::Suspend(SuspendPlan::Cancel),
        5 => Step::Suspend(SuspendPlan::Migrate),
        6 | 7 => Step::Vcpu {
            v: 1 + rng.below(u64::from(VCPUS) - 1) as u32,
            online: [Some(true), Some(false), None][rng.below(3) as usize],
        },
        8 => Step::HostShort { populate: rng.below(2) == 0, kb: kb(rng) },
        _ => Step::No2m,
    }
}

fn data(node: &str) -> Option<u64> {
    store(&format!("data/balloon/{node}")).and_then(|v| v.parse().ok())
}

struct Model {
    target_kb: Option<u64>,
    online: u64,
    suspends: u64,
}

/// Waits for the balloon to publish `target_kb` and stop moving, and
/// returns (current, floor, ceiling) in KiB.
fn settled_balloon(target_kb: u64) -> (u64, u64) {
    run_until("the balloon to take the target", 60_000, || data("target_kb") == Some(target_kb));
    let mut last = (0, 0);
    run_until("the balloon to settle", 120_000, || {
        let now = (data("current_kb").unwrap_or(0), ballooning::populated_pages() * 4);
        let still = now == last && now.0 == now.1;
        last = now;
        kernel::testing::run_for(200);
        still
    });
    (last.0, data("floor_kb").unwrap_or(0))
}

fn check_balloon(model: &Model, short: bool, before_kb: u64) {
    let Some(target) = model.target_kb else { return };
    let (current, floor) = settled_balloon(target);
    let ceiling = ballooning::max_pages() * 4;
    let goal = target.max(floor.min(ceiling)).min(ceiling);
    if short {
        // The host ran short: somewhere between where it was and the goal,
        // and the console says why unless it got there anyway.
        assert!(
            current >= before_kb.min(goal) && current <= before_kb.max(goal),
            "{before_kb} -> {current}, goal {goal}"
        );
        if current != goal {
            let c = xen::sim::console_text();
            assert!(c.contains("balloon: giving up at") || c.contains("balloon: short of the goal"), "no word why");
        }
    } else {
        assert_eq!(current, goal, "target {target} KiB, floor {floor}, ceiling {ceiling}");
    }
}

/// Every invariant; the console is checked for errors from `clean_from`.
fn check_everything(model: &Model, clean_from: usize) {
    let (free, ballooned, total) =
        kernel_memory::with_frames(|f| (f.free_count(), f.ballooned_count(), f.total_pfns()));
    assert!(free + ballooned <= total);
    assert_eq!(total - ballooned, ballooning::populated_pages(), "the allocator and the balloon disagree");
    let n = sim(|s| s.vcpu_count());
    run_until("the vCPU set to settle", 20_000, || {
        smp::online_mask() == model.online && (0..n).all(|v| sim(|s| s.vcpu_up(v)) == (model.online & (1 << v) != 0))
    });
    assert_eq!(events::port_of("xenstore"), Some(sim(|s| s.store_port())));
    assert_eq!(events::port_of("console"), Some(sim(|s| s.console_port())));
    assert_eq!(kernel::suspend::figures().suspends, model.suspends);
    let passes = kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed);
    run_until("another pattern pass", 60_000, || kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed) > passes);
    assert_eq!(kernel::selftest::PATTERN_ERRORS.load(Ordering::Relaxed), 0, "the memory pattern changed");
    let errors: Vec<String> =
        xen::sim::console_text()[clean_from..].lines().filter(|l| l.contains("] ERROR")).map(String::from).collect();
    assert!(errors.is_empty(), "the guest logged errors:\n{}", errors.join("\n"));
    assert_no_violations();
}

fn write(node: &str, v: &str) {
    sim(|s| s.toolstack_write(node, v.as_bytes()))
}

/// Does `step`, with Xen complying, and checks where the balloon ends.
fn plain_step(model: &mut Model, step: Step) {
    let (before_kb, suspends) = (ballooning::populated_pages() * 4, model.suspends);
    request(model, step);
    settle(model, step, before_kb, suspends);
}

/// Checks that `step`, asked for when the balloon held `before_kb` and
/// the guest had done `suspends`, got where it should.
fn settle(model: &mut Model, step: Step, before_kb: u64, suspends: u64) {
    if let Step::Suspend(plan) = step {
        assert_eq!(kernel::suspend::figures().suspends, suspends + 1, "{plan:?}");
    }
    let short = matches!(step, Step::HostShort { .. });
    check_balloon(model, short, before_kb);
    if short {
        // The host recovers; the same target again is then reached.
        sim(|s| {
            s.faults.populate_budget = None;
            s.faults.decrease_budget = None;
        });
        let kb = model.target_kb.unwrap();
        write("memory/target", "0");
        write("memory/target", &kb.to_string());
        check_balloon(model, false, 0);
    }
}

/// Does `then` with `failure` armed. If Xen returned it, the console must
/// say something, the guest's state is taken as it is (checked for
/// consistency by `check_everything`), and `then` again, with Xen
/// complying, must get where it would have.
fn refused_step(model: &mut Model, failure: Failure, then: &Step) {
    let (returned, text) = (sim(|s| s.faults.failures_returned), xen::sim::console_text().len());
    let (before_kb, suspended) = (ballooning::populated_pages() * 4, kernel::suspend::figures());
    sim(|s| s.faults.fail = Some(failure));
    request(model, *then);
    // Let whatever the request set off run into the refusal, if it will.
    kernel::testing::run_for(500);
    sim(|s| s.faults.fail = None);
    if sim(|s| s.faults.failures_returned) == returned {
        eprintln!("  ({} was not called)", failure.call);
        return settle(model, *then, before_kb, suspended.suspends);
    }
    if matches!(failure.call, "populate_physmap" | "decrease_reservation") {
        // The balloon falls back to smaller extents and tries again: it
        // converges, or says why not.
        check_balloon(model, true, before_kb);
        return plain_step(model, *then);
    }
    // A line that names the refusal: Xen's error, or the word.
    let said: Vec<String> = xen::sim::console_text()[text..]
        .lines()
        .filter(|l| (l.contains("] WARN") || l.contains("] ERROR")) && (l.contains("-12") || l.contains("refused")))
        .map(String::from)
        .collect();
    eprintln!("  {} refused; the guest said: {said:?}", failure.call);
    assert!(
        !said.is_empty(),
        "{} refused and the guest said nothing:\n{}",
        failure.call,
        &xen::sim::console_text()[text..]
    );
    let now = kernel::suspend::figures();
    if now.refused > suspended.refused {
        sim(|s| s.forget_plans());
    }
    model.suspends = now.suspends;
    plain_step(model, *then);
}

/// Asks for what `step` does, and updates the model to what should follow.
fn request(model: &mut Model, step: Step) {
    match step {
        Step::MemSet { kb } => {
            write("memory/target", &kb.to_string());
            model.target_kb = Some(kb);
        }
        Step::MemSetGarbage(i) => {
            let lines = xen::sim::console_text().matches("balloon: ignoring memory/target").count();
            write("memory/target", GARBAGE[i]);
            run_until("the garbage target to be refused", 10_000, || {
                xen::sim::console_text().matches("balloon: ignoring memory/target").count() > lines
            });
        }
        Step::Suspend(plan) => {
            request_suspend(Some(plan));
            model.suspends += 1;
        }
        Step::Vcpu { v, online } => {
            let value = match online {
                Some(true) => "online",
                Some(false) => "offline",
                None => "sideways",
            };
            write(&format!("cpu/{v}/availability"), value);
            match online {
                Some(true) => model.online |= 1 << v,
                Some(false) => model.online &= !(1 << v),
                None => run_until("the garbage availability to be refused", 10_000, || {
                    xen::sim::console_text().contains(&format!("cpu/{v}/availability = \"sideways\""))
                }),
            }
        }
        Step::HostShort { populate, kb } => {
            sim(|s| {
                if populate {
                    s.faults.populate_budget = Some(100);
                } else {
                    s.faults.decrease_budget = Some(100);
                }
            });
            write("memory/target", &kb.to_string());
            model.target_kb = Some(kb);
        }
        Step::No2m => sim(|s| s.faults.no_2m = !s.faults.no_2m),
        Step::Refuse { .. } => unreachable!("a refusal is armed around a plain step"),
    }
}

fn run_seed(seed: u64, steps: usize) {
    let g = boot(SimConfig {
        cmdline: "ballast.pattern=4 ballast.sleepers=1".into(),
        vcpus: 2,
        max_vcpus: VCPUS,
        ..Default::default()
    });
    drivers::start(&g.opts);
    run_until("the control driver to watch control/shutdown", 10_000, || {
        xen::sim::console_text().contains("watching control/shutdown")
    });
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut model = Model { target_kb: None, online: 0b11, suspends: 0 };
    let mut clean_from = 0;
    for i in 0..steps {
        let step = pick(&mut rng);
        eprintln!("model seed {seed} step {i}: {step:?}");
        if let Step::Refuse { call, skip, then } = step {
            refused_step(&mut model, Failure { call: Faults::FALLIBLE[call], skip, error: XenError::ENOMEM }, then);
            // Errors logged for the refusal are its log lines, not faults.
            clean_from = xen::sim::console_text().len();
        } else {
            plain_step(&mut model, step);
        }
        check_everything(&model, clean_from);
    }
    drop(g);
}

#[test]
fn random_sequences_of_what_dom0_and_the_host_do_keep_every_invariant() {
    let seeds: Vec<u64> = std::env::var("BALLAST_MODEL_SEEDS")
        .ok()
        .map(|s| s.split_whitespace().filter_map(|w| w.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    let steps = std::env::var("BALLAST_MODEL_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    for seed in seeds {
        run_seed(seed, steps);
    }
}
