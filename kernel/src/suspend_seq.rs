//! The suspend sequence itself, written once against `SuspendSteps` so that
//! it runs on the real Xen (`suspend.rs`) and under `cargo test` against a
//! recording fake that can fail any step.
//!
//! Before the hypercall: freeze, suspend devices, quiesce vCPUs, pin,
//! release free memory, canonicalise. After it, the exact mirror image:
//! 0 means a new domain (reconnect shared_info, clock and event channels),
//! 1 means cancelled (undo the canonicalisation); then the released memory
//! is owed back (taken in the background once tasks run, `restock`),
//! unpin, wake vCPUs, resume (new domain) or continue (cancelled) devices,
//! thaw. A failure before the hypercall runs the same unwinding (`unwind`)
//! from the step it reached.

use crate::mm::aspace::{AspaceError, SpaceId};
use crate::{pm, sched::TaskId};
use core::fmt;

/// Why a suspend was refused: a step before the hypercall failed, the
/// steps before it were undone, and the guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A task stayed out of every safe point through all freeze attempts.
    TaskDidNotFreeze { task: &'static str, id: TaskId, attempts: u32, attempt_ms: u64 },
    /// A device would not quiesce.
    Device(pm::Refusal),
    /// A vCPU did not reach the rendezvous in time.
    VcpuDidNotArrive { vcpu: u32 },
    /// Xen would not pin an address space's root.
    PinFailed { space: SpaceId, error: AspaceError },
    /// A request arrived while another suspend was running.
    AlreadySuspending,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Refusal::TaskDidNotFreeze { task, id, attempts, attempt_ms } => {
                write!(f, "task {} ({}) did not freeze in {} attempts of {} ms", task, id, attempts, attempt_ms)
            }
            Refusal::Device(r) => write!(f, "{}", r),
            Refusal::VcpuDidNotArrive { vcpu } => write!(f, "vCPU {} did not reach the rendezvous", vcpu),
            Refusal::PinFailed { space, error } => write!(f, "pinning address space {} failed: {:?}", space, error),
            Refusal::AlreadySuspending => write!(f, "another suspend is running"),
        }
    }
}

/// What the sequence needs from the kernel, one method per step.
pub trait SuspendSteps {
    /// Monotonic ns, for the per-step durations.
    fn now_ns(&self) -> u64;
    /// One log line per step.
    fn report(&mut self, line: core::fmt::Arguments);

    fn freeze_tasks(&mut self) -> Result<usize, Refusal>;
    fn thaw_tasks(&mut self);
    fn suspend_devices(&mut self) -> Result<usize, Refusal>;
    fn resume_devices(&mut self);
    fn cancel_devices(&mut self);
    /// Other vCPUs down; returns how many were stopped.
    fn quiesce_vcpus(&mut self) -> Result<usize, Refusal>;
    fn wake_vcpus(&mut self);
    /// Pins every unpinned root; returns (pinned now, roots in all).
    fn pin_roots(&mut self) -> Result<(usize, usize), Refusal>;
    /// Unpins exactly what `pin_roots` pinned.
    fn unpin_roots(&mut self);
    /// Gives free frames back to Xen so the image is small; returns how
    /// many pages, or None when switched off.
    fn release_free_memory(&mut self) -> Option<u64>;
    /// Records that what `release_free_memory` gave is owed back, to be
    /// taken once tasks run (adopting first what a new domain brought back
    /// populated); returns the pages owed.
    fn owe_memory(&mut self, new_domain: bool) -> u64;
    /// start_info MFNs to PFNs, shared_info unmapped, events masked.
    fn canonicalise(&mut self);
    /// The suspend hypercall: 0 resumed in a new domain, 1 cancelled.
    fn hypercall(&mut self) -> i64;
    /// New domain: shared_info, p2m frame lists, clock, event channels.
    fn reconnect_new_domain(&mut self) -> usize;
    /// Cancelled: undo `canonicalise` in the same domain.
    fn undo_canonicalise(&mut self);
    fn rearm_timer(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Running in a new domain (after restore or migration).
    Resumed,
    /// The old domain continues (checkpoint, or the save failed).
    Cancelled,
    /// Never suspended: a step before the hypercall failed.
    Refused(Refusal),
}

/// Durations of the last run, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// From the first freeze attempt to the thaw, less the time between
    /// the hypercall and the clock's return (a checkpoint's pause).
    pub total_us: u64,
    /// From the moment every task was parked to the thaw: how long the
    /// guest's own work stood still.
    pub frozen_us: u64,
    /// Guest-side work before the hypercall.
    pub before_us: u64,
    /// Guest-side work after the hypercall.
    pub after_us: u64,
}

/// How far the sequence got before the hypercall; unwinding undoes every
/// step up to and including it, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    Nothing,
    Frozen,
    DevicesSuspended,
    Quiesced,
    Pinned,
}

/// What the devices do when the sequence unwinds past them.
#[derive(Clone, Copy)]
enum DeviceUndo {
    /// New domain: reconnect to new backends and rings.
    Resume,
    /// Same domain (refused before the hypercall, or cancelled after it).
    Cancel,
}

/// The mirror image of the steps before the hypercall, from `reached` down.
fn unwind<S: SuspendSteps>(s: &mut S, reached: Reached, devices: DeviceUndo) {
    if reached >= Reached::Pinned {
        s.unpin_roots();
    }
    if reached >= Reached::Quiesced {
        s.wake_vcpus();
    }
    if reached >= Reached::DevicesSuspended {
        match devices {
            DeviceUndo::Resume => s.resume_devices(),
            DeviceUndo::Cancel => s.cancel_devices(),
        }
    }
    if reached >= Reached::Frozen {
        s.thaw_tasks();
    }
}

/// Runs the whole sequence.
pub fn run<S: SuspendSteps>(s: &mut S) -> (Outcome, Timings) {
    let start = s.now_ns();
    // Each step's duration runs from the end of the previous one.
    let lap = core::cell::Cell::new(start);
    let step = |s: &mut S, what: core::fmt::Arguments| {
        let now = s.now_ns();
        s.report(format_args!("{} ({} us)", what, (now - lap.get()) / 1000));
        lap.set(now);
    };
    let refuse = |s: &mut S, reached: Reached, why: Refusal| {
        s.report(format_args!("refused: {}; all tasks thawed, guest runs on", why));
        unwind(s, reached, DeviceUndo::Cancel);
        (Outcome::Refused(why), Timings::default())
    };

    // The freezer thaws what it parked when it gives up.
    let n = match s.freeze_tasks() {
        Ok(n) => n,
        Err(why) => return refuse(s, Reached::Nothing, why),
    };
    let frozen_at = s.now_ns();
    step(s, format_args!("froze {} tasks", n));

    let n = match s.suspend_devices() {
        Ok(n) => n,
        Err(why) => return refuse(s, Reached::Frozen, why),
    };
    step(s, format_args!("suspended {} devices", n));

    let n = match s.quiesce_vcpus() {
        Ok(n) => n,
        Err(why) => return refuse(s, Reached::DevicesSuspended, why),
    };
    step(s, format_args!("quiesced {} other vCPUs", n));

    let (n, all) = match s.pin_roots() {
        Ok(counts) => counts,
        Err(why) => return refuse(s, Reached::Quiesced, why),
    };
    step(s, format_args!("pinned {} of {} address spaces", n, all));

    match s.release_free_memory() {
        Some(pages) => step(s, format_args!("released {} free pages ({} MiB) to Xen", pages, pages / 256)),
        None => step(s, format_args!("releasing free memory is switched off")),
    }

    s.canonicalise();
    let hypercall_at = s.now_ns();
    let before_us = (hypercall_at - start) / 1000;
    let rc = s.hypercall();

    // From here on, the mirror image: canonicalise, release, pin,
    // quiesce, devices, freeze, each undone in turn. The clock reads
    // shared_info, so the time after the hypercall starts once it is back:
    // read before, a cancelled suspend would count the checkpoint's pause.
    let (outcome, devices, after) = if rc == 0 {
        let ports = s.reconnect_new_domain();
        let after = s.now_ns();
        lap.set(after);
        s.rearm_timer();
        step(s, format_args!("resumed in a new domain: {} event channels rebound", ports));
        (Outcome::Resumed, DeviceUndo::Resume, after)
    } else {
        if rc < 0 {
            // Xen did not suspend at all: the same domain runs on, as after a cancel.
            log::warn!("suspend: Xen refused the suspend (rc {}); continuing as after a cancel", rc);
        }
        s.undo_canonicalise();
        let after = s.now_ns();
        lap.set(after);
        s.rearm_timer();
        step(s, format_args!("cancelled (checkpoint): same domain"));
        (Outcome::Cancelled, DeviceUndo::Cancel, after)
    };
    let owed = s.owe_memory(outcome == Outcome::Resumed);
    if owed > 0 {
        step(s, format_args!("{} pages owed, taken back in the background", owed));
    }
    unwind(s, Reached::Pinned, devices);
    let end = s.now_ns();
    step(
        s,
        format_args!(
            "unpinned, vCPUs woken, devices {}, tasks thawed",
            if outcome == Outcome::Resumed { "resumed" } else { "continued" }
        ),
    );
    let t = Timings {
        total_us: before_us + (end - after) / 1000,
        frozen_us: (end - frozen_at).saturating_sub(after - hypercall_at) / 1000,
        before_us,
        after_us: (end - after) / 1000,
    };
    (outcome, t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    /// Records every step; fails the one named in `fail`.
    #[derive(Default)]
    struct Fake {
        log: Vec<&'static str>,
        fail: Option<&'static str>,
        rc: i64,
        clock: u64,
        lines: Vec<String>,
    }

    impl Fake {
        fn step(&mut self, name: &'static str) -> Result<usize, Refusal> {
            self.log.push(name);
            if self.fail == Some(name) {
                Err(Refusal::Device(pm::Refusal { device: name, reason: "failed on purpose" }))
            } else {
                Ok(1)
            }
        }
    }

    impl SuspendSteps for Fake {
        fn now_ns(&self) -> u64 {
            self.clock
        }
        fn report(&mut self, line: core::fmt::Arguments) {
            self.clock += 1000;
            self.lines.push(alloc::format!("{}", line));
        }
        fn freeze_tasks(&mut self) -> Result<usize, Refusal> {
            self.clock += 2_000_000; // parking takes time: frozen_us excludes it
            self.step("freeze")
        }
        fn thaw_tasks(&mut self) {
            self.log.push("thaw");
        }
        fn suspend_devices(&mut self) -> Result<usize, Refusal> {
            self.step("devices")
        }
        fn resume_devices(&mut self) {
            self.log.push("resume-devices");
        }
        fn cancel_devices(&mut self) {
            self.log.push("cancel-devices");
        }
        fn quiesce_vcpus(&mut self) -> Result<usize, Refusal> {
            self.step("quiesce")
        }
        fn wake_vcpus(&mut self) {
            self.log.push("wake-vcpus");
        }
        fn pin_roots(&mut self) -> Result<(usize, usize), Refusal> {
            self.step("pin").map(|n| (n, 2))
        }
        fn unpin_roots(&mut self) {
            self.log.push("unpin");
        }
        fn release_free_memory(&mut self) -> Option<u64> {
            self.log.push("release");
            Some(100)
        }
        fn owe_memory(&mut self, _new_domain: bool) -> u64 {
            self.log.push("owe");
            100
        }
        fn canonicalise(&mut self) {
            self.log.push("canonicalise");
        }
        fn hypercall(&mut self) -> i64 {
            self.log.push("hypercall");
            self.clock += 5_000_000;
            self.rc
        }
        fn reconnect_new_domain(&mut self) -> usize {
            self.log.push("reconnect");
            3
        }
        fn undo_canonicalise(&mut self) {
            self.log.push("undo-canonicalise");
        }
        fn rearm_timer(&mut self) {
            self.log.push("rearm-timer");
        }
    }

    /// The step before the hypercall that `undo` undoes, if it is an undo.
    fn undone_by(undo: &str) -> Option<&'static str> {
        Some(match undo {
            "reconnect" | "undo-canonicalise" => "canonicalise",
            "owe" => "release",
            "unpin" => "pin",
            "wake-vcpus" => "quiesce",
            "resume-devices" | "cancel-devices" => "devices",
            "thaw" => "freeze",
            _ => return None,
        })
    }

    /// Checks that what follows the hypercall undoes what preceded it, in
    /// exactly the reverse order.
    fn assert_mirrored(log: &[&'static str]) {
        let at = log.iter().position(|&x| x == "hypercall").unwrap();
        let mut before: Vec<&str> = log[..at].to_vec();
        before.reverse();
        let after: Vec<&str> = log[at + 1..].iter().filter_map(|x| undone_by(x)).collect();
        assert_eq!(after, before, "log {:?}", log);
    }

    #[test]
    fn resume_in_a_new_domain_mirrors_the_suspend() {
        let mut f = Fake { rc: 0, ..Default::default() };
        let (o, t) = run(&mut f);
        assert_eq!(o, Outcome::Resumed);
        assert_mirrored(&f.log);
        assert!(f.log.contains(&"owe") && f.log.contains(&"rearm-timer"));
        // The 5 ms inside the hypercall (a pause) count in no figure.
        assert!(t.total_us < 5000 && t.before_us < t.total_us, "{t:?}");
        // Frozen from the moment the freeze succeeded, not from its start.
        assert!(t.frozen_us < t.total_us);
    }

    #[test]
    fn cancel_mirrors_the_suspend_in_the_same_domain() {
        let mut f = Fake { rc: 1, ..Default::default() };
        assert_eq!(run(&mut f).0, Outcome::Cancelled);
        assert_mirrored(&f.log);
    }

    #[test]
    fn cancel_undoes_canonicalisation_and_never_reconnects() {
        let mut f = Fake { rc: 1, ..Default::default() };
        assert_eq!(run(&mut f).0, Outcome::Cancelled);
        assert!(f.log.contains(&"undo-canonicalise") && f.log.contains(&"cancel-devices"));
        assert!(!f.log.contains(&"reconnect") && !f.log.contains(&"resume-devices"));
        // Memory given away for the image is owed back on the cancel path too.
        assert!(f.log.contains(&"owe"));
        assert_eq!(f.log.last(), Some(&"thaw"));
    }

    #[test]
    fn each_failure_unwinds_exactly_what_was_done() {
        let cases: [(&str, &[&str]); 4] = [
            ("freeze", &["freeze"]),
            ("devices", &["freeze", "devices", "thaw"]),
            ("quiesce", &["freeze", "devices", "quiesce", "cancel-devices", "thaw"]),
            ("pin", &["freeze", "devices", "quiesce", "pin", "wake-vcpus", "cancel-devices", "thaw"]),
        ];
        for (fail, expected) in cases {
            let mut f = Fake { fail: Some(fail), ..Default::default() };
            let why = Refusal::Device(pm::Refusal { device: fail, reason: "failed on purpose" });
            assert_eq!(run(&mut f).0, Outcome::Refused(why), "{}", fail);
            assert_eq!(f.log, expected, "failing {}", fail);
            assert!(f.lines.last().unwrap().starts_with("refused"), "{:?}", f.lines);
        }
    }
}
