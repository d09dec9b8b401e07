//! Kernel tasks and a cooperative scheduler for every vCPU.
//!
//! A task runs until it sleeps, waits, yields or exits. Every one of those
//! is a preemption point and a freezer safe point. Event handlers never
//! switch tasks; they only make tasks runnable, and the switch happens at
//! the next preemption point or when an idle loop wakes from
//! `SCHEDOP_block`. Long-running loops (the memory self-test) call
//! `yield_now` regularly.
//!
//! One run queue serves every vCPU: a vCPU takes the first task it may run.
//! A task pinned to an online vCPU runs only there; any other task runs on
//! any vCPU that takes tasks (a vCPU being parked or taken offline takes
//! none, and tasks pinned to an offline vCPU run elsewhere until it is
//! back). Making a task runnable wakes, by IPI, a vCPU blocked in Xen that
//! may run it. One lock, taken with events masked, guards the queue and
//! every task: cooperative tasks switch rarely, so it is seldom contended.
//!
//! Each vCPU's boot context becomes its idle task: it runs only when that
//! vCPU has nothing else to do, arms Xen's one-shot timer (per vCPU) for
//! the earliest sleeper that last ran there, and blocks.

mod freezer;
mod switch;
mod wait;
mod watch;

pub use freezer::{freeze, thaw, try_to_freeze, FreezeRefused};
pub use switch::STACK_SIZE;
use switch::{Entry, SwitchFrame};
pub use wait::WaitQueue;
pub use watch::{deepest_stack, for_each_task, log_deepest_stack, task_count, tasks_per_vcpu};

use crate::percpu::{self, PerVcpu, VcpuId};
use crate::{events_mask, smp, time};
use crate::{Hv, Hypervisor};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

pub type TaskId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Runnable,
    Running,
    /// Waiting for a wake-up or for `wake_at`.
    Blocked,
    /// Parked by the freezer.
    Frozen,
    Dead,
}

struct Task {
    id: TaskId,
    name: &'static str,
    state: State,
    /// Where the stack pointer is saved while the task is not running.
    frame: Box<SwitchFrame>,
    /// Owned here so that reaping the task frees it; read only to measure
    /// how deep it has been (`deepest_stack`).
    stack: Option<Box<[u8]>>,
    /// Sleep deadline (monotonic ns) while blocked in `sleep`.
    wake_at: Option<u64>,
    /// A wake-up that came before the task blocked; consumed by `block`.
    wake_pending: bool,
    /// Freezable tasks park when the freezer asks; a task that is not is
    /// one the suspend path itself depends on.
    freezable: bool,
    /// A vCPU's idle task (its boot context): never queued.
    idle: bool,
    switches: u64,
    /// The vCPU it must run on, while that vCPU is online.
    pin: Option<VcpuId>,
    /// The vCPU it last ran on: its sleep deadline is armed there.
    last_vcpu: VcpuId,
    /// Switched out at a freezer safe point: when it runs again it parks
    /// before anything else if the freezer asks, so while it waits in the
    /// queue it counts as parked (it may be pinned to a vCPU that is busy).
    safe: bool,
}

impl Task {
    fn new(id: TaskId, name: &'static str, state: State, frame: Box<SwitchFrame>, idle: bool) -> Self {
        Task {
            id,
            name,
            state,
            frame,
            stack: None,
            wake_at: None,
            wake_pending: false,
            freezable: !idle,
            idle,
            switches: 0,
            pin: None,
            last_vcpu: 0,
            safe: true,
        }
    }

    /// Whether vCPU `v` may run it now.
    fn may_run_on(&self, v: VcpuId, online: u64) -> bool {
        match self.pin {
            Some(p) if online & (1 << p) != 0 => p == v,
            _ => true,
        }
    }
}

/// What one vCPU is doing.
#[derive(Clone, Copy)]
struct VcpuState {
    /// The task running on it.
    current: TaskId,
    /// Its idle task: runs when nothing else is runnable, never queued.
    idle: TaskId,
    /// The deadline its Xen timer is armed for, to avoid re-arming it.
    armed: Option<u64>,
    /// Blocked in Xen with nothing to run: a new task for it needs an IPI.
    blocked_in_xen: bool,
}

struct Scheduler {
    tasks: Vec<Task>,
    run_queue: VecDeque<TaskId>,
    next_id: TaskId,
    vcpus: PerVcpu<VcpuState>,
}

/// The scheduler state. Locked only with events masked: the timer handler
/// takes it from the upcall to wake sleepers.
static SCHED: Mutex<Option<Scheduler>> = Mutex::new(None);

pub static CONTEXT_SWITCHES: AtomicU64 = AtomicU64::new(0);

fn with_sched<R>(f: impl FnOnce(&mut Scheduler) -> R) -> R {
    events_mask::without_events(|| f(SCHED.lock().as_mut().expect("scheduler not started")))
}

impl Scheduler {
    fn is_idle(&self, id: TaskId) -> bool {
        self.tasks.iter().any(|t| t.id == id && t.idle)
    }

    fn task(&mut self, id: TaskId) -> Option<&mut Task> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    fn make_runnable(&mut self, id: TaskId) {
        let Some(t) = self.task(id) else { return };
        match t.state {
            State::Blocked => {
                t.state = State::Runnable;
                t.wake_at = None;
                if !self.is_idle(id) {
                    self.run_queue.push_back(id);
                    self.kick_for(id);
                }
            }
            State::Runnable | State::Running => t.wake_pending = true,
            State::Frozen | State::Dead => {}
        }
    }

    /// Wakes vCPU `v` if it is blocked in Xen (not the running one: it is
    /// awake).
    fn kick(&mut self, v: VcpuId) {
        if v != percpu::current() && self.vcpus.get(v).blocked_in_xen {
            self.vcpus.get_mut(v).blocked_in_xen = false;
            smp::send_ipi(v);
        }
    }

    /// Wakes a vCPU that may run the newly queued task `id`: its pinned
    /// vCPU, else the one it last ran on, else any idle one.
    fn kick_for(&mut self, id: TaskId) {
        let online = smp::online_mask();
        let Some(t) = self.tasks.iter().find(|t| t.id == id) else { return };
        let (pin, last) = (t.pin, t.last_vcpu);
        let here = percpu::current();
        // The running vCPU is awake: it gets to the task at its next switch.
        let idle = |s: &Self, v: VcpuId| v != here && s.vcpus.get(v).blocked_in_xen && smp::takes_tasks(v);
        let target = match pin {
            Some(p) if online & (1 << p) != 0 => Some(p),
            _ if idle(self, last) => Some(last),
            _ => (0..percpu::MAX_VCPUS as VcpuId).find(|&v| idle(self, v)),
        };
        if let Some(v) = target {
            self.kick(v);
        }
    }

    /// Wakes every vCPU blocked in Xen (after a thaw: work for all).
    fn kick_idle_vcpus(&mut self) {
        for v in 0..percpu::MAX_VCPUS as VcpuId {
            self.kick(v);
        }
    }

    /// The earliest sleep deadline this vCPU's timer serves: sleepers that
    /// last ran here, and on vCPU 0 those whose vCPU is offline.
    fn earliest_deadline(&self) -> Option<u64> {
        let here = percpu::current();
        let online = smp::online_mask();
        let serves = |v: VcpuId| v == here || (here == 0 && online & (1 << v) == 0);
        self.tasks.iter().filter(|t| t.state == State::Blocked && serves(t.last_vcpu)).filter_map(|t| t.wake_at).min()
    }

    /// Whether the running vCPU has a queued task it may run.
    fn has_work_here(&self) -> bool {
        let here = percpu::current();
        smp::takes_tasks(here) && {
            let online = smp::online_mask();
            self.run_queue.iter().any(|&id| {
                self.tasks.iter().any(|t| t.id == id && t.state == State::Runnable && self.may_take(t, here, online))
            })
        }
    }

    /// Whether vCPU `here` may take the runnable task `t` now: its pin
    /// allows it, and no other vCPU is still on it. A task that sets itself
    /// Blocked or Frozen is woken (queued, Runnable) by another vCPU before
    /// its own switch away has saved its stack pointer; taken then, it would
    /// run on two vCPUs at once from a stale stack pointer.
    fn may_take(&self, t: &Task, here: VcpuId, online: u64) -> bool {
        t.may_run_on(here, online)
            && (0..percpu::MAX_VCPUS as VcpuId).all(|v| v == here || self.vcpus.get(v).current != t.id)
    }

    /// Takes the first queued task the running vCPU may run (dropping
    /// stale entries on the way).
    fn pick_here(&mut self) -> Option<TaskId> {
        let here = percpu::current();
        if !smp::takes_tasks(here) {
            return None;
        }
        self.pick_for(here, smp::online_mask())
    }

    /// `pick_here` for vCPU `here` with online set `online`.
    fn pick_for(&mut self, here: VcpuId, online: u64) -> Option<TaskId> {
        let mut i = 0;
        while i < self.run_queue.len() {
            let id = self.run_queue[i];
            match self.tasks.iter().find(|t| t.id == id) {
                Some(t) if t.state == State::Runnable && self.may_take(t, here, online) => {
                    self.run_queue.remove(i);
                    return Some(id);
                }
                Some(t) if t.state == State::Runnable => i += 1,
                _ => {
                    self.run_queue.remove(i);
                }
            }
        }
        None
    }

    fn wake_sleepers(&mut self, now: u64) {
        let due: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|t| t.state == State::Blocked && t.wake_at.is_some_and(|d| d <= now))
            .map(|t| t.id)
            .collect();
        for id in due {
            self.make_runnable(id);
        }
    }

    /// Arms Xen's one-shot timer for the earliest deadline. If Xen refuses,
    /// nothing counts as armed: the next call tries again, and meanwhile
    /// `timer_missing` keeps the vCPU from blocking without a wake-up.
    fn arm_timer(&mut self) {
        let want = self.earliest_deadline();
        let armed = &mut self.vcpus.here_mut().armed;
        if want != *armed {
            *armed = want;
            if let Some(d) = want {
                if Hv::set_timer(time::clock().to_system(d)).is_err() {
                    *armed = None;
                    TIMER_REFUSALS.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A deadline is due to come but Xen's timer is not armed for it.
    fn timer_missing(&self) -> bool {
        self.vcpus.here().armed.is_none() && self.earliest_deadline().is_some()
    }
}

/// Times Xen refused `set_timer_op` since the idle loop last said so: the
/// refusal happens under the scheduler's lock, where nothing may log.
static TIMER_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// No vCPU runs this task id (a vCPU's slot before it starts).
const NO_TASK: TaskId = TaskId::MAX;

/// Turns the boot context into vCPU 0's idle task (any earlier tasks are
/// forgotten: a simulated guest boots again in the same process).
pub fn init() {
    freezer::reset();
    events_mask::without_events(|| {
        let mut vcpus = PerVcpu::new(VcpuState { current: NO_TASK, idle: NO_TASK, armed: None, blocked_in_xen: false });
        *vcpus.get_mut(0) = VcpuState { current: 0, idle: 0, armed: None, blocked_in_xen: false };
        *SCHED.lock() = Some(Scheduler {
            tasks: alloc::vec![Task::new(0, "idle", State::Running, SwitchFrame::new(0), true)],
            run_queue: VecDeque::new(),
            next_id: 1,
            vcpus,
        });
    });
}

/// Makes the running context (a secondary vCPU's start) its idle task: a
/// new one the first time, the same one again when the vCPU starts afresh
/// in a new domain (its old stack is gone, nothing on it mattered).
pub fn adopt_idle_here() {
    let here = percpu::current();
    with_sched(|s| {
        let id = match s.vcpus.get(here).idle {
            NO_TASK => {
                let id = s.next_id;
                s.next_id += 1;
                let mut t = Task::new(id, "idle", State::Running, SwitchFrame::new(0), true);
                t.last_vcpu = here;
                s.tasks.push(t);
                id
            }
            id => id,
        };
        s.task(id).unwrap().state = State::Running;
        *s.vcpus.get_mut(here) = VcpuState { current: id, idle: id, armed: None, blocked_in_xen: false };
    });
}

/// Starts a task running `f`, on any vCPU. Freezable unless
/// `spawn_unfreezable` is used.
pub fn spawn(name: &'static str, f: impl FnOnce() + Send + 'static) -> TaskId {
    spawn_inner(name, true, None, Box::new(f))
}

/// A task that runs on vCPU `vcpu` while it is online.
pub fn spawn_pinned(name: &'static str, vcpu: VcpuId, f: impl FnOnce() + Send + 'static) -> TaskId {
    spawn_inner(name, true, Some(vcpu), Box::new(f))
}

/// A task the freezer leaves alone. It runs on vCPU 0, which never parks,
/// so that it can never keep another vCPU from the suspend rendezvous.
pub fn spawn_unfreezable(name: &'static str, f: impl FnOnce() + Send + 'static) -> TaskId {
    spawn_inner(name, false, Some(0), Box::new(f))
}

/// An unfreezable task on another vCPU: only for the self-test that keeps
/// a vCPU from the rendezvous on purpose.
pub fn spawn_unfreezable_pinned(name: &'static str, vcpu: VcpuId, f: impl FnOnce() + Send + 'static) -> TaskId {
    spawn_inner(name, false, Some(vcpu), Box::new(f))
}

fn spawn_inner(name: &'static str, freezable: bool, pin: Option<VcpuId>, f: Entry) -> TaskId {
    let (stack, rsp) = switch::new_task_stack(f);
    with_sched(|s| {
        let id = s.next_id;
        s.next_id += 1;
        let mut t = Task::new(id, name, State::Runnable, SwitchFrame::new(rsp), false);
        t.stack = Some(stack);
        t.freezable = freezable;
        t.pin = pin;
        t.last_vcpu = pin.unwrap_or(percpu::current());
        s.tasks.push(t);
        s.run_queue.push_back(id);
        s.kick_for(id);
        id
    })
}

pub fn current() -> TaskId {
    with_sched(|s| s.vcpus.here().current)
}

/// The running task's id and name for a fault report: never waits for
/// the lock (the faulting code may hold it), so None when it is taken.
pub fn current_for_report() -> Option<(TaskId, &'static str)> {
    let guard = SCHED.try_lock()?;
    let s = guard.as_ref()?;
    let cur = s.vcpus.here().current;
    s.tasks.iter().find(|t| t.id == cur).map(|t| (t.id, t.name))
}

/// Switches to the next runnable task, then parks if the freezer asks.
fn schedule() {
    switch_away(true);
    try_to_freeze();
}

/// Switches to the next runnable task, if any. The caller has already set
/// its own state (Runnable to be queued again, or Blocked/Frozen/Dead) and
/// says whether it parks, if asked, before it runs any code of its own
/// (`safe`).
fn switch_away(safe: bool) {
    let was = events_mask::mask();
    let switch = {
        let mut guard = SCHED.lock();
        let s = guard.as_mut().expect("scheduler not started");
        let cur = s.vcpus.here().current;
        // Reap dead tasks no vCPU is on: not current anywhere, and their
        // last switch away finished (their stack is no longer in use).
        let running: Vec<TaskId> = (0..percpu::MAX_VCPUS as VcpuId).map(|v| s.vcpus.get(v).current).collect();
        s.tasks.retain(|t| t.state != State::Dead || running.contains(&t.id) || !t.frame.saved.load(Ordering::Acquire));
        let next = s.pick_here().unwrap_or(s.vcpus.here().idle);
        if next == cur {
            s.task(cur).unwrap().state = State::Running;
            None
        } else {
            if let Some(t) = s.task(cur) {
                t.safe = safe;
            }
            let cur_state = s.task(cur).map(|t| t.state);
            if cur_state == Some(State::Running) {
                s.task(cur).unwrap().state = State::Runnable;
            }
            // The idle task is never queued: it runs when the queue is empty.
            if matches!(cur_state, Some(State::Runnable | State::Running)) && !s.is_idle(cur) {
                s.run_queue.push_back(cur);
                s.kick_for(cur);
            }
            let n = s.task(next).unwrap();
            n.state = State::Running;
            n.switches += 1;
            n.last_vcpu = percpu::current();
            let next_frame = &*n.frame as *const SwitchFrame;
            s.vcpus.here_mut().current = next;
            s.arm_timer();
            let cur_frame = &mut *s.task(cur).unwrap().frame;
            // Before the lock is released: from then on another vCPU may
            // take `cur`, and must wait for this switch to save it.
            cur_frame.begin_save();
            Some((cur_frame as *mut SwitchFrame, next_frame))
        }
    };
    if let Some((save, next)) = switch {
        CONTEXT_SWITCHES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: events are masked. Both frames are boxed and owned by
        // tasks that are not reaped while this switch runs (reaping skips
        // the current task and any whose save has not finished, and `next`
        // is Running). `save`'s flag was cleared above under the lock, and
        // `next` runs nowhere else (`may_take`).
        unsafe { switch::switch_to(save, next) };
    }
    events_mask::restore(was);
}

/// Lets other runnable tasks run; a preemption point.
pub fn yield_now() {
    schedule();
}

/// Yields without being a freezer safe point: only for the self-test task
/// that plays a task stuck outside any safe point.
pub fn yield_without_freezing() {
    switch_away(false);
}

/// Blocks the current task until `wake` is called for it (or its
/// `wake_at` deadline passes). Returns at once if a wake-up is pending.
fn block_current(deadline: Option<u64>) {
    let blocked = with_sched(|s| {
        let cur = s.vcpus.here().current;
        let t = s.task(cur).unwrap();
        if t.wake_pending {
            t.wake_pending = false;
            return false;
        }
        t.state = State::Blocked;
        t.wake_at = deadline;
        true
    });
    if blocked {
        schedule();
    } else {
        try_to_freeze();
    }
}

/// Makes task `id` runnable (or records the wake-up if it is running).
pub fn wake(id: TaskId) {
    with_sched(|s| s.make_runnable(id));
}

/// The vCPU the running task is pinned to.
pub fn current_pin() -> Option<VcpuId> {
    with_sched(|s| {
        let cur = s.vcpus.here().current;
        s.task(cur).unwrap().pin
    })
}

/// Pins the running task to `vcpu` (None: any vCPU) and moves it there.
/// Returns whether it now runs on `vcpu` (it cannot while `vcpu` is
/// offline; it goes there once it is back).
pub fn pin_current(vcpu: Option<VcpuId>) -> bool {
    with_sched(|s| {
        let cur = s.vcpus.here().current;
        s.task(cur).unwrap().pin = vcpu;
    });
    let Some(v) = vcpu else { return true };
    if percpu::current() != v && smp::online_mask() & (1 << v) != 0 {
        // Not runnable here any more: the switch queues it for `v`.
        schedule();
    }
    percpu::current() == v
}

/// Sleeps for at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let deadline = time::now_ns().saturating_add(ns);
    while time::now_ns() < deadline {
        block_current(Some(deadline));
    }
}

pub fn sleep_ms(ms: u64) {
    sleep_ns(ms * 1_000_000);
}

/// Ends the current task.
pub fn exit() -> ! {
    with_sched(|s| {
        let cur = s.vcpus.here().current;
        s.task(cur).unwrap().state = State::Dead;
    });
    schedule();
    unreachable!("a dead task was scheduled");
}

/// Wakes every vCPU blocked in Xen (new work, or new vCPUs to share it).
pub fn kick_idle() {
    with_sched(|s| s.kick_idle_vcpus());
}

/// Arms Xen's timer again from scratch (after a resume: the new domain
/// has no timer armed, and its system time differs).
pub fn rearm_timer() {
    with_sched(|s| {
        s.vcpus.here_mut().armed = None;
        s.arm_timer();
    });
}

/// Called from the VIRQ_TIMER handler (events masked).
pub fn on_timer() {
    let now = time::now_ns();
    if let Some(s) = SCHED.lock().as_mut() {
        s.vcpus.here_mut().armed = None;
        s.wake_sleepers(now);
        s.arm_timer();
    }
}

/// Called from a vCPU's IPI handler (events masked): the vCPU is awake now;
/// its idle loop looks for work (or parks) on the way back.
pub fn on_ipi() {
    if let Some(s) = SCHED.lock().as_mut() {
        s.vcpus.here_mut().blocked_in_xen = false;
        s.arm_timer();
    }
}

/// The idle loop: run whatever is runnable, else block in Xen until an
/// event arrives.
pub fn idle() -> ! {
    loop {
        idle_once();
    }
}

/// One round of the idle loop: lets every runnable task run, then wakes
/// due sleepers, and blocks in Xen if there is still nothing to do.
pub fn idle_once() {
    schedule();
    events_mask::mask();
    // The suspend rendezvous and hotplug park vCPUs here, holding nothing.
    if smp::stop_requested_here() {
        smp::stop_here();
        events_mask::unmask();
        return;
    }
    let (nothing_to_do, timer_missing, refusals) = {
        let mut g = SCHED.lock();
        let s = g.as_mut().unwrap();
        s.wake_sleepers(time::now_ns());
        s.arm_timer();
        let missing = s.timer_missing();
        // A refusal is logged below with events unmasked, so this pass does
        // not block; nor does one without a timer (it could sleep past
        // every deadline).
        let refusals = TIMER_REFUSALS.swap(0, Ordering::Relaxed);
        let idle = !s.has_work_here() && !smp::stop_requested_here() && !missing && refusals == 0;
        s.vcpus.here_mut().blocked_in_xen = idle;
        (idle, missing, refusals)
    };
    if refusals > 0 || timer_missing {
        // Logging lets events run: the next pass looks for work again.
        events_mask::unmask();
        static REFUSED: crate::rejects::RateLimit = crate::rejects::RateLimit::new();
        let now = if timer_missing { "polling until it does" } else { "armed since" };
        crate::warn_limited!(REFUSED, "sched: Xen refused to arm the timer {} time(s); {}", refusals, now);
        if timer_missing {
            Hv::yield_now();
        }
        return;
    }
    if nothing_to_do {
        // SCHEDOP_block unmasks events atomically with blocking, and
        // returns at once if one is already pending (an IPI sent since).
        Hv::block();
        events_mask::mask();
        SCHED.lock().as_mut().unwrap().vcpus.here_mut().blocked_in_xen = false;
    }
    events_mask::unmask();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler with an idle task per vCPU in `vcpus` (ids 0..) and no
    /// other task.
    fn scheduler(vcpus: u32) -> Scheduler {
        let mut per = PerVcpu::new(VcpuState { current: NO_TASK, idle: NO_TASK, armed: None, blocked_in_xen: false });
        let mut tasks = Vec::new();
        for v in 0..vcpus {
            *per.get_mut(v) = VcpuState { current: v, idle: v, armed: None, blocked_in_xen: false };
            tasks.push(Task::new(v, "idle", State::Running, SwitchFrame::new(0), true));
        }
        Scheduler { tasks, run_queue: VecDeque::new(), next_id: vcpus, vcpus: per }
    }

    #[test]
    fn a_task_woken_before_its_vcpu_switched_away_waits_for_that_switch() {
        let mut s = scheduler(2);
        // Task 2 runs on vCPU 1, sets itself Blocked, and is woken from
        // vCPU 0 before vCPU 1 switches away from it.
        s.tasks.push(Task::new(2, "worker", State::Blocked, SwitchFrame::new(0x1000), false));
        s.vcpus.get_mut(1).current = 2;
        s.make_runnable(2);
        assert_eq!(s.tasks[2].state, State::Runnable);
        assert_eq!(s.pick_for(0, 0b11), None, "vCPU 0 must not take a task vCPU 1 is still on");
        assert_eq!(s.run_queue.len(), 1, "the task stays queued");
        // vCPU 1 itself may go on with it.
        assert_eq!(s.pick_for(1, 0b11), Some(2));
        // Once vCPU 1 has switched to something else, anyone may take it.
        s.run_queue.push_back(2);
        s.vcpus.get_mut(1).current = 1;
        assert_eq!(s.pick_for(0, 0b11), Some(2));
    }
}
