//! What the scheduler tells sysrq, the console and `data/`: tasks, their
//! vCPUs, and how deep their stacks have gone.

use super::{with_sched, State, TaskId};
use crate::percpu;
use alloc::vec::Vec;

/// One line per task for sysrq and the console.
pub fn for_each_task(mut f: impl FnMut(TaskId, &'static str, State, Option<u64>, u64)) {
    let snapshot: Vec<(TaskId, &'static str, State, Option<u64>, u64)> =
        with_sched(|s| s.tasks.iter().map(|t| (t.id, t.name, t.state, t.wake_at, t.switches)).collect());
    for (id, name, st, w, sw) in snapshot {
        f(id, name, st, w, sw);
    }
}

pub fn task_count() -> usize {
    with_sched(|s| s.tasks.iter().filter(|t| t.state != State::Dead).count())
}

/// Live tasks per vCPU they last ran on (idle tasks not counted).
pub fn tasks_per_vcpu() -> [u32; percpu::MAX_VCPUS] {
    with_sched(|s| {
        let mut n = [0u32; percpu::MAX_VCPUS];
        for t in s.tasks.iter().filter(|t| !t.idle && t.state != State::Dead) {
            n[t.last_vcpu as usize] += 1;
        }
        n
    })
}

/// Bytes of a task stack ever used: stacks start zeroed and grow down, so
/// the lowest non-zero word marks the deepest point reached.
fn stack_used(stack: &[u8]) -> usize {
    let untouched = stack.chunks_exact(8).position(|w| w != [0u8; 8]).unwrap_or(stack.len() / 8);
    stack.len() - untouched * 8
}

/// Logs the deepest task stack, as `<who>: deepest task stack N of SIZE
/// bytes (task)`, if there is a task.
pub fn log_deepest_stack(who: &str) {
    if let Some((name, used)) = deepest_stack() {
        log::info!("{}: deepest task stack {} of {} bytes ({})", who, used, super::STACK_SIZE, name);
    }
}

/// The task whose stack has gone deepest: its name and the bytes used, of
/// `STACK_SIZE`. A stack has no guard page: this figure is the warning.
/// Each stack is measured under the lock on its own, so other vCPUs wait
/// for at most one stack's scan, and a task reaped meanwhile is skipped.
pub fn deepest_stack() -> Option<(&'static str, usize)> {
    let ids: Vec<TaskId> = with_sched(|s| s.tasks.iter().filter(|t| t.stack.is_some()).map(|t| t.id).collect());
    ids.into_iter()
        .filter_map(|id| with_sched(|s| s.task(id).and_then(|t| Some((t.name, stack_used(t.stack.as_deref()?))))))
        .max_by_key(|&(_, used)| used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_use_is_measured_from_the_deepest_written_word() {
        let mut stack = alloc::vec![0u8; 4096];
        assert_eq!(stack_used(&stack), 0);
        stack[4095] = 1;
        assert_eq!(stack_used(&stack), 8);
        stack[1000] = 7; // word 125: everything from it to the top counts
        assert_eq!(stack_used(&stack), 4096 - 125 * 8);
    }
}
