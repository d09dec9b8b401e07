//! The freezer: parks every freezable task, on whichever vCPU it runs, at
//! its next safe point, and lets them all run again.

use super::{current, switch_away, with_sched, yield_now, State, TaskId};
use crate::time;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// Set while the freezer wants tasks to park.
static FREEZING: AtomicBool = AtomicBool::new(false);

/// The task running a freeze and whether it was freezable before.
static FREEZER: Mutex<Option<(TaskId, bool)>> = Mutex::new(None);

/// Nothing frozen (a simulated guest boots again in the same process).
pub(super) fn reset() {
    FREEZING.store(false, Ordering::Release);
    *FREEZER.lock() = None;
}

/// Parks the current task if the freezer asks; returns when thawed.
pub fn try_to_freeze() {
    if !FREEZING.load(Ordering::Acquire) {
        return;
    }
    let parked = with_sched(|s| {
        let cur = s.vcpus.here().current;
        let t = s.task(cur).unwrap();
        if t.freezable && FREEZING.load(Ordering::Acquire) {
            t.state = State::Frozen;
            true
        } else {
            false
        }
    });
    if parked {
        switch_away(true);
    }
}

/// Why a freeze failed.
#[derive(Debug)]
pub struct FreezeRefused {
    pub task: &'static str,
    pub id: TaskId,
}

/// Asks every freezable task to park, giving them `timeout_ns`. A task
/// blocked in a wait, or queued after a safe point, counts as parked: it
/// parks as soon as it runs again, before any of its own code. The caller (the suspend coordinator) is
/// exempt until `thaw`. On timeout every parked task is thawed and the
/// first task that did not park is named.
pub fn freeze(timeout_ns: u64) -> Result<usize, FreezeRefused> {
    let me = current();
    let was_freezable = with_sched(|s| core::mem::replace(&mut s.task(me).unwrap().freezable, false));
    *FREEZER.lock() = Some((me, was_freezable));
    FREEZING.store(true, Ordering::Release);
    let deadline = time::now_ns() + timeout_ns;
    loop {
        let laggard = with_sched(|s| {
            s.tasks
                .iter()
                .find(|t| t.freezable && (t.state == State::Running || (t.state == State::Runnable && !t.safe)))
                .map(|t| (t.name, t.id))
        });
        match laggard {
            None => return Ok(with_sched(|s| s.tasks.iter().filter(|t| t.freezable).count())),
            Some((task, id)) if time::now_ns() >= deadline => {
                thaw();
                return Err(FreezeRefused { task, id });
            }
            Some(_) => yield_now(),
        }
    }
}

/// Lets every frozen task run again, on whichever vCPU may take it.
pub fn thaw() {
    FREEZING.store(false, Ordering::Release);
    let owner = FREEZER.lock().take();
    with_sched(|s| {
        if let Some((id, was)) = owner {
            if let Some(t) = s.task(id) {
                t.freezable = was;
            }
        }
        let frozen: Vec<TaskId> = s.tasks.iter().filter(|t| t.state == State::Frozen).map(|t| t.id).collect();
        for id in frozen {
            s.task(id).unwrap().state = State::Runnable;
            s.run_queue.push_back(id);
        }
        s.kick_idle_vcpus();
    });
}
