//! Several vCPUs on the simulated Xen.
//!
//! vCPU 0 is the test's own thread. Every other vCPU is a host thread,
//! started by `VCPUOP_up` at the entry `VCPUOP_initialise` gave it (on the
//! simulated Xen, the address of an `extern "C" fn() -> !`), on its own
//! host stack. The guest's code runs on them in parallel, as on Xen, so its
//! locks, IPIs and rendezvous are exercised for real.
//!
//! Each vCPU has its own vcpu_info (shared_info's legacy array), one-shot
//! timer and periodic timer; an event reaches the vCPU its port is bound to
//! (VIRQs and IPIs), or vCPU 0. Time jumps to the earliest timer only when
//! every vCPU is blocked or down; otherwise a blocked vCPU waits in real
//! time, which the simulated clock runs through quickly.
//!
//! A vCPU that downs itself (`VCPUOP_down`) waits in the hypercall until
//! it is upped. A new domain has no context for any vCPU but 0: the
//! threads of the old ones stay in `VCPUOP_down` for good, on their own
//! stacks, and `VCPUOP_up` after a fresh `VCPUOP_initialise` starts new
//! ones. So does a new test: its boot retires every thread of the last.

use super::{with, PortKind, Sim, STATE};
use crate::abi::vcpu_info;
use crate::seam::XenError;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, MutexGuard};
use std::time::Duration;

/// Xen's default periodic timer period for a PV vCPU (100 Hz).
const PERIODIC_NS: u64 = 10_000_000;

/// Woken whenever a vCPU may have something to do: an event raised, a
/// vCPU upped or blocked (which may let time jump).
static WAKE: Condvar = Condvar::new();

/// How long a blocked vCPU waits before it looks again.
const BLOCK_SLICE: Duration = Duration::from_millis(1);

/// Boots so far: a thread started in an older boot is retired.
static BOOTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The vCPU this host thread is, and which life of it (boot, context).
    static ME: Cell<Identity> = const { Cell::new(Identity { vcpu: 0, boot: 0, life: 0 }) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Identity {
    vcpu: u32,
    boot: u64,
    life: u64,
}

/// One vCPU as Xen keeps it.
#[derive(Debug, Default)]
pub(super) struct SimVcpu {
    up: bool,
    /// The entry `VCPUOP_initialise` gave: None while it has no context.
    entry: Option<u64>,
    /// Whether a host thread runs (or waits in `VCPUOP_down`) for this life.
    thread: bool,
    pub(super) timer_ns: Option<u64>,
    pub(super) periodic_next_ns: Option<u64>,
    /// In `SCHEDOP_block`: time may jump once every vCPU is blocked or down.
    blocked: bool,
    /// Bumped when the context is lost: threads of older lives never run again.
    life: u64,
}

/// The vCPUs of a domain being built: vCPU 0 up (the test's thread),
/// `n - 1` more down without a context.
pub(super) fn build(n: u32, now_ns: u64) -> (u64, Vec<SimVcpu>) {
    let boot = BOOTS.fetch_add(1, Ordering::AcqRel) + 1;
    ME.with(|m| m.set(Identity { vcpu: 0, boot, life: 0 }));
    let mut v: Vec<SimVcpu> = (0..n.max(1)).map(|_| SimVcpu::default()).collect();
    v[0] = SimVcpu { up: true, thread: true, periodic_next_ns: Some(now_ns + PERIODIC_NS), ..Default::default() };
    // Threads of the last boot see a new boot and stay retired.
    WAKE.notify_all();
    (boot, v)
}

/// The vCPU the calling code runs on.
pub fn current_vcpu() -> u32 {
    ME.with(|m| m.get().vcpu)
}

impl Sim {
    /// vCPU `v`'s vcpu_info in shared_info's legacy array.
    pub(super) fn vcpu_info(&self, v: u32) -> Option<*mut vcpu_info> {
        if v as usize >= self.vcpus.len() {
            return None;
        }
        // SAFETY: shared_info's bytes are live (mapped or Xen's copy), and
        // its array has 32 entries, more than the simulated domain's vCPUs.
        self.shared_info().map(|si| unsafe { core::ptr::addr_of_mut!((*si).vcpu_info[v as usize]) })
    }

    /// The vCPU an event on `port` goes to.
    pub(super) fn vcpu_of_port(&self, port: u32) -> u32 {
        match self.ports.get(&port) {
            Some(PortKind::Virq { vcpu, .. } | PortKind::Ipi { vcpu }) => *vcpu,
            _ => 0,
        }
    }

    /// The number of vCPUs the domain has.
    pub fn vcpu_count(&self) -> u32 {
        self.vcpus.len() as u32
    }

    /// Whether vCPU `v` is up.
    pub fn vcpu_up(&self, v: u32) -> bool {
        self.vcpus.get(v as usize).is_some_and(|c| c.up)
    }

    /// Whether any vCPU still has Xen's default periodic timer.
    pub fn periodic_timer_on(&self) -> bool {
        self.vcpus.iter().any(|c| c.periodic_next_ns.is_some())
    }

    /// Xen's default for a new PV vCPU (a new domain too).
    pub(super) fn start_periodic_timer(&mut self, v: u32) {
        let next = self.clock.now() + PERIODIC_NS;
        self.vcpus[v as usize].periodic_next_ns = Some(next);
    }

    /// Raises the timer VIRQ of every vCPU whose deadline has passed (Xen
    /// checks on the way back from every hypercall).
    pub(super) fn fire_timer_if_due(&mut self) {
        let now = self.clock.now();
        for v in 0..self.vcpus.len() {
            let c = &mut self.vcpus[v];
            let mut fire = false;
            if c.timer_ns.is_some_and(|d| d <= now) {
                c.timer_ns = None;
                fire = true;
            }
            if let Some(next) = c.periodic_next_ns.filter(|&n| n <= now) {
                c.periodic_next_ns = Some(next.max(now - now % PERIODIC_NS) + PERIODIC_NS);
                self.periodic_ticks += 1;
                fire = true;
            }
            if fire {
                self.raise(self.port_of(PortKind::Virq { virq: 0, vcpu: v as u32 }));
            }
        }
    }

    /// The earliest deadline of any vCPU's timers.
    fn earliest_timer(&self) -> Option<u64> {
        self.vcpus.iter().flat_map(|c| c.timer_ns.into_iter().chain(c.periodic_next_ns)).min()
    }

    /// Whether every vCPU is down or blocked with nothing pending: nothing
    /// runs until a timer fires.
    fn all_idle(&self) -> bool {
        (0..self.vcpus.len() as u32).all(|v| {
            let c = &self.vcpus[v as usize];
            !c.up || (c.blocked && !self.upcall_pending(v))
        })
    }

    /// Whether the calling thread belongs to an older boot or an older life
    /// of its vCPU (a context Xen dropped).
    fn retired(&self, me: Identity) -> bool {
        me.boot != self.boot || self.vcpus.get(me.vcpu as usize).is_none_or(|c| c.life != me.life)
    }

    /// The vCPUs of a new domain: no context kept but vCPU 0's (the tools
    /// save only vCPUs that are up, and the guest has downed the others),
    /// and vCPU 0's timers as Xen starts them.
    pub(super) fn vcpus_for_new_domain(&mut self) {
        for c in self.vcpus.iter_mut().skip(1) {
            *c = SimVcpu { life: c.life + 1, ..SimVcpu::default() };
        }
        self.vcpus[0].timer_ns = None;
        self.start_periodic_timer(0);
    }

    /// Suspending with another vCPU up means it was never quiesced.
    pub(super) fn vcpus_still_up(&self) -> Vec<u32> {
        (1..self.vcpus.len() as u32).filter(|&v| self.vcpus[v as usize].up).collect()
    }
}

/// Wakes blocked vCPUs to look again (an event was raised).
pub(super) fn wake_all() {
    WAKE.notify_all();
}

/// Waits on the simulator's lock until woken or a slice passes.
fn wait(g: MutexGuard<'static, Option<Sim>>) -> MutexGuard<'static, Option<Sim>> {
    WAKE.wait_timeout(g, BLOCK_SLICE).unwrap_or_else(|e| e.into_inner()).0
}

/// A thread whose vCPU life is over: it never returns to guest code.
fn retire(mut g: MutexGuard<'static, Option<Sim>>) -> ! {
    loop {
        g = WAKE.wait(g).unwrap_or_else(|e| e.into_inner());
    }
}

/// The calling vCPU waits in Xen: `enter` runs once under the simulator's
/// lock, then `done` each time the vCPU is woken (or a slice passes) until
/// it holds, then `leave`; pending upcalls are delivered on the way out.
/// A vCPU whose life ended meanwhile (a new boot, a dropped context)
/// retires instead and never returns to guest code.
fn wait_in_xen(enter: impl FnOnce(&mut Sim), mut done: impl FnMut(&mut Sim) -> bool, leave: impl FnOnce(&mut Sim)) {
    let me = ME.with(|m| m.get());
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    {
        let s = g.as_mut().expect("sim: no guest booted");
        if s.retired(me) {
            retire(g);
        }
        enter(s);
    }
    WAKE.notify_all();
    loop {
        let s = g.as_mut().expect("sim: no guest booted");
        if s.retired(me) {
            retire(g);
        }
        if done(s) {
            break;
        }
        g = wait(g);
    }
    if let Some(s) = g.as_mut() {
        leave(s);
    }
    drop(g);
    super::deliver_upcalls();
}

/// `SCHEDOP_block` on the calling vCPU: unmasks its events, returns once
/// one is pending for it. While every vCPU is idle time jumps to the
/// earliest timer; with none armed, vCPU 0 returns at once (counted in
/// `idle_blocks`: a real domain would sleep until someone outside sends
/// it an event) and any other vCPU waits for one.
pub(super) fn block() {
    let v = ME.with(|m| m.get()).vcpu;
    let enter = |s: &mut Sim| {
        s.count("block");
        if let Some(vi) = s.vcpu_info(v) {
            // SAFETY: as in `Sim::raise`; SCHEDOP_block enables delivery as it blocks.
            unsafe { (*vi).evtchn_upcall_mask = 0 };
        }
        s.vcpus[v as usize].blocked = true;
    };
    let woken = |s: &mut Sim| loop {
        // dom0's backends run while the guest waits.
        s.run_backends();
        s.fire_timer_if_due();
        if s.upcall_pending(v) {
            return true;
        }
        if !s.all_idle() {
            return false;
        }
        match s.earliest_timer() {
            Some(d) => s.advance(d.saturating_sub(s.clock.now())),
            None if v == 0 => {
                s.idle_blocks += 1;
                return true;
            }
            None => return false,
        }
    };
    wait_in_xen(enter, woken, |s| s.vcpus[v as usize].blocked = false);
}

/// `VCPUOP_initialise`: vCPU `v` gets a context to start from.
pub(super) fn initialise(v: u32, entry: u64) -> Result<(), XenError> {
    super::fallible("vcpu_initialise", |s| {
        let c = s.vcpus.get_mut(v as usize).filter(|_| v != 0).ok_or(XenError::ENOENT)?;
        if c.entry.is_some() {
            return Err(XenError::EEXIST);
        }
        c.entry = Some(entry);
        s.start_periodic_timer(v);
        Ok(())
    })
}

/// `VCPUOP_up`: runs vCPU `v` again where it downed itself, or starts it
/// at its entry on a new host thread.
pub(super) fn up(v: u32) -> Result<(), XenError> {
    let start = super::fallible("vcpu_up", |s| {
        let boot = s.boot;
        let c = s.vcpus.get_mut(v as usize).ok_or(XenError::ENOENT)?;
        if c.up {
            return Ok(None);
        }
        let entry = c.entry.ok_or(XenError::EINVAL)?;
        c.up = true;
        c.blocked = false;
        if c.thread {
            return Ok(None); // waiting in VCPUOP_down: woken below
        }
        c.thread = true;
        Ok(Some((entry, Identity { vcpu: v, boot, life: c.life })))
    })?;
    WAKE.notify_all();
    if let Some((entry, id)) = start {
        std::thread::Builder::new()
            .name(format!("sim-vcpu{v}"))
            .stack_size(8 << 20)
            .spawn(move || {
                ME.with(|m| m.set(id));
                // SAFETY: on the simulated Xen, `VCPUOP_initialise` takes
                // the address of an `extern "C" fn() -> !` (its contract).
                let f = unsafe { core::mem::transmute::<usize, extern "C" fn() -> !>(entry as usize) };
                f()
            })
            .expect("sim: cannot start a vCPU thread");
    }
    Ok(())
}

/// `VCPUOP_down` of the calling vCPU: it waits here until it is upped.
/// (Xen lets a vCPU down others too; the guest never does.)
pub(super) fn down(v: u32) -> Result<(), XenError> {
    if v != ME.with(|m| m.get()).vcpu || v == 0 {
        return with(|s| {
            s.count("vcpu_down");
            Err(if (v as usize) < s.vcpus.len() { XenError::EINVAL } else { XenError::ENOENT })
        });
    }
    let enter = |s: &mut Sim| {
        s.count("vcpu_down");
        s.vcpus[v as usize].up = false;
    };
    wait_in_xen(enter, |s| s.vcpus[v as usize].up, |_| {});
    Ok(())
}

/// `VCPUOP_is_up`.
pub(super) fn is_up(v: u32) -> Result<bool, XenError> {
    super::sim("vcpu_is_up", |s| s.vcpus.get(v as usize).map(|c| c.up).ok_or(XenError::ENOENT))
}

/// `VCPUOP_stop_periodic_timer`.
pub(super) fn stop_periodic_timer(v: u32) -> Result<(), XenError> {
    super::fallible("stop_periodic_timer", |s| {
        s.vcpus.get_mut(v as usize).ok_or(XenError::ENOENT)?.periodic_next_ns = None;
        Ok(())
    })
}

/// `set_timer_op` on the calling vCPU.
pub(super) fn set_timer(deadline_ns: u64) -> Result<(), XenError> {
    let v = current_vcpu();
    super::fallible("set_timer", |s| {
        s.vcpus[v as usize].timer_ns = (deadline_ns != 0).then_some(deadline_ns);
        s.advance(0);
        Ok(())
    })
}
