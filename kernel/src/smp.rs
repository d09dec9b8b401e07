//! Several vCPUs: which the domain has, starting them, IPIs, and stopping
//! them for the suspend rendezvous and for hotplug.
//!
//! A vCPU stops itself: asked to, it takes no more tasks, and once its
//! running task reaches a schedule point its idle loop masks events and
//! calls `VCPUOP_down` on itself, holding no lock. vCPU 0 restarts it with
//! `VCPUOP_up`, and it goes on where it stopped. The Xen tools save only
//! vCPUs that are up, so in a new domain a stopped vCPU has no context at
//! all: vCPU 0 starts it afresh (`VCPUOP_initialise` on its own stack,
//! then up), and its idle task begins again. Its timer and IPI ports are in
//! the bindings table, rebound with every other port.
//!
//! Every change of a vCPU's state is made by vCPU 0 (boot, suspend,
//! hotplug) except the step a vCPU takes itself from "asked to stop" to
//! "stopped", done with a compare-and-swap so that a request withdrawn at a
//! timeout and a vCPU arriving late never both win.

use crate::events::{self, Binding};
use crate::percpu::{self, VcpuId, MAX_VCPUS};
use crate::{events_mask, sched, time};
use crate::{Hv, Hypervisor, XenError};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use xen::abi::evtchn::VIRQ_TIMER;

#[cfg(target_os = "none")]
mod start;

/// Where a vCPU is. Kept in an atomic per vCPU: the scheduler reads it
/// from every vCPU to know who takes tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// The domain has no such vCPU.
    Absent = 0,
    /// Down, with no context in this domain: never started, or lost in
    /// the move to a new domain. Starting it means a fresh start.
    Fresh = 1,
    /// Running and taking tasks.
    Running = 2,
    /// Asked to stop: takes no tasks, stops at its idle loop.
    StopRequested = 3,
    /// Stopped itself with `VCPUOP_down`; `VCPUOP_up` resumes it.
    Stopped = 4,
}

impl VcpuState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Fresh,
            2 => Self::Running,
            3 => Self::StopRequested,
            4 => Self::Stopped,
            _ => Self::Absent,
        }
    }
}

static STATE: [AtomicU8; MAX_VCPUS] = [const { AtomicU8::new(VcpuState::Absent as u8) }; MAX_VCPUS];
/// The hotplug online set (dom0's `cpu/<n>/availability`): a bit per vCPU.
/// A vCPU parked for a suspend stays online; an offline one is stopped and
/// its pinned tasks run elsewhere.
static ONLINE: AtomicU64 = AtomicU64::new(1);
/// Each vCPU's IPI port, refreshed when the ports change (0: none).
static IPI_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Ticks each vCPU gave itself (`data/vcpu/<n>/ticks`).
static TICKS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// How many vCPUs the domain has (`maxvcpus`).
static POSSIBLE: AtomicU32 = AtomicU32::new(1);

/// How long vCPU 0 waits for a stopped vCPU to be down before upping it.
const DOWN_WAIT_NS: u64 = 1_000_000_000;

/// Why a vCPU could not be started or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmpError {
    /// The domain has no such vCPU (or it is vCPU 0, which never stops).
    NoSuchVcpu(VcpuId),
    /// It was not in a state this change starts from.
    WrongState(VcpuId, VcpuState),
    /// It did not stop within the time given.
    DidNotStop(VcpuId),
    /// The caller runs on it, and would wait for itself: stopping is done
    /// from vCPU 0, which never stops.
    StopsItself(VcpuId),
    /// Xen refused to start it.
    Refused(VcpuId, XenError),
    /// Its timer or IPI could not be bound: it is not started.
    NoPorts(VcpuId, events::EventError),
}

pub fn state(v: VcpuId) -> VcpuState {
    VcpuState::from_u8(STATE[v as usize].load(Ordering::Acquire))
}

fn set_state(v: VcpuId, s: VcpuState) {
    STATE[v as usize].store(s as u8, Ordering::Release);
}

/// The online set, a bit per vCPU.
pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

pub fn is_online(v: VcpuId) -> bool {
    online_mask() & (1 << v) != 0
}

/// vCPUs the domain has.
pub fn possible() -> u32 {
    POSSIBLE.load(Ordering::Acquire)
}

/// Whether vCPU `v` may be given tasks now.
pub fn takes_tasks(v: VcpuId) -> bool {
    state(v) == VcpuState::Running
}

/// Whether the running vCPU has been asked to stop.
pub fn stop_requested_here() -> bool {
    state(percpu::current()) == VcpuState::StopRequested
}

/// vCPU `v`'s tick count.
pub fn ticks(v: VcpuId) -> u64 {
    TICKS[v as usize].load(Ordering::Relaxed)
}

/// Sends vCPU `v` an IPI (its idle loop wakes and looks for work or for a
/// stop request).
pub fn send_ipi(v: VcpuId) {
    match IPI_PORT[v as usize].load(Ordering::Acquire) {
        0 => {}
        port => Hv::send(port),
    }
}

/// Learns which vCPUs the domain has; vCPU 0 is running. Called once at
/// boot, on vCPU 0.
pub fn init() {
    percpu::init_boot_vcpu();
    for v in 0..MAX_VCPUS {
        set_state(v as VcpuId, VcpuState::Absent);
        IPI_PORT[v].store(0, Ordering::Relaxed);
        TICKS[v].store(0, Ordering::Relaxed);
    }
    set_state(0, VcpuState::Running);
    ONLINE.store(1, Ordering::Release);
    STARTED_ONCE.store(1, Ordering::Release);
    let mut n = 1;
    while (n as usize) < MAX_VCPUS {
        match Hv::vcpu_is_up(n) {
            Ok(false) => set_state(n, VcpuState::Fresh),
            Ok(true) => {
                log::warn!("smp: vCPU {} is up at boot, before ballast started it; left alone", n);
                break;
            }
            Err(_) => break,
        }
        n += 1;
    }
    POSSIBLE.store(n, Ordering::Release);
    stop_periodic_timer_here();
    // Without its timer vCPU 0 would never wake a sleeper: nothing to run on.
    bind_vcpu_ports(0).expect("binding vCPU 0's timer and IPI");
    log::info!("smp: the domain has {} vCPUs; vCPU 0 runs", n);
}

/// Stops Xen's 100 Hz periodic timer on the running vCPU. Xen starts one
/// on every PV vCPU, in every new domain too; left on, each vCPU wakes 100
/// times a second for nothing (four of them kept a lab's dom0 from running).
/// The one-shot timer (`set_timer_op`) serves every sleeper.
pub fn stop_periodic_timer_here() {
    let v = percpu::current();
    if let Err(e) = Hv::stop_periodic_timer(v) {
        log::warn!("smp: vCPU {} keeps Xen's periodic timer: {:?}", v, e);
    }
}

/// Binds vCPU `v`'s timer VIRQ and IPI, from any vCPU, before `v` runs
/// (once: the bindings table carries them into every new domain). A vCPU
/// without both could sleep through its deadlines or never be woken to
/// stop, so a refusal keeps it from starting; what did bind stays for the
/// next try.
fn bind_vcpu_ports(v: VcpuId) -> Result<(), SmpError> {
    let timer = Binding::Virq { virq: VIRQ_TIMER, vcpu: v };
    if events::port_bound_to(timer).is_none() {
        events::bind(timer, "timer", |_| sched::on_timer()).map_err(|e| SmpError::NoPorts(v, e))?;
    }
    if events::port_bound_to(Binding::Ipi { vcpu: v }).is_none() {
        let port =
            events::bind(Binding::Ipi { vcpu: v }, "ipi", |_| sched::on_ipi()).map_err(|e| SmpError::NoPorts(v, e))?;
        IPI_PORT[v as usize].store(port, Ordering::Release);
    }
    Ok(())
}

/// Reads every vCPU's IPI port again from the bindings table (after they
/// were all rebound in a new domain).
pub fn refresh_ports() {
    for v in 0..possible() {
        let port = events::port_bound_to(Binding::Ipi { vcpu: v }).unwrap_or(0);
        IPI_PORT[v as usize].store(port, Ordering::Release);
    }
}

/// Brings vCPU `v` online (hotplug, or boot): starts it and lets tasks
/// pinned to it come back.
pub fn bring_online(v: VcpuId) -> Result<(), SmpError> {
    if v == 0 || v >= possible() {
        return Err(SmpError::NoSuchVcpu(v));
    }
    start(v)?;
    ONLINE.fetch_or(1 << v, Ordering::AcqRel);
    let first_start = STARTED_ONCE.fetch_or(1 << v, Ordering::AcqRel) & (1 << v) == 0;
    if first_start {
        spawn_vcpu_tasks(v);
    }
    sched::kick_idle();
    log::info!("smp: vCPU {} online ({} online)", v, online_mask().count_ones());
    Ok(())
}

/// vCPUs that have run once: their own tasks exist.
static STARTED_ONCE: AtomicU64 = AtomicU64::new(1);

/// Takes vCPU `v` offline (hotplug): it stops, and its tasks run on the
/// other vCPUs until it is back.
pub fn take_offline(v: VcpuId, timeout_ns: u64) -> Result<(), SmpError> {
    if v == 0 || v >= possible() {
        return Err(SmpError::NoSuchVcpu(v));
    }
    ONLINE.fetch_and(!(1 << v), Ordering::AcqRel);
    if let Err(e) = stop(&[v], timeout_ns) {
        ONLINE.fetch_or(1 << v, Ordering::AcqRel);
        return Err(e);
    }
    // Its sleepers are served by vCPU 0's timer now, its pinned tasks by anyone.
    sched::rearm_timer();
    sched::kick_idle();
    log::info!("smp: vCPU {} offline ({} online)", v, online_mask().count_ones());
    Ok(())
}

/// The running vCPUs other than vCPU 0.
pub fn running_others() -> alloc::vec::Vec<VcpuId> {
    (1..possible()).filter(|&v| state(v) == VcpuState::Running).collect()
}

/// Stops every vCPU in `vcpus` (each running): asks, wakes, and waits
/// until each is down. On timeout the request is withdrawn from those that
/// had not stopped, the ones that had are started again, and the first
/// laggard is named.
pub fn stop(vcpus: &[VcpuId], timeout_ns: u64) -> Result<(), SmpError> {
    let here = percpu::current();
    if vcpus.contains(&here) {
        return Err(SmpError::StopsItself(here));
    }
    for &v in vcpus {
        if STATE[v as usize]
            .compare_exchange(
                VcpuState::Running as u8,
                VcpuState::StopRequested as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Err(SmpError::WrongState(v, state(v)));
        }
        send_ipi(v);
    }
    let deadline = time::now_ns() + timeout_ns;
    loop {
        if vcpus.iter().all(|&v| state(v) == VcpuState::Stopped && Hv::vcpu_is_up(v) == Ok(false)) {
            return Ok(());
        }
        if time::now_ns() >= deadline {
            break;
        }
        Hv::yield_now();
    }
    let mut laggard = None;
    for &v in vcpus {
        let withdrawn = STATE[v as usize]
            .compare_exchange(
                VcpuState::StopRequested as u8,
                VcpuState::Running as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if withdrawn {
            laggard.get_or_insert(v);
        }
    }
    let arrived: alloc::vec::Vec<VcpuId> = vcpus.iter().copied().filter(|&v| state(v) == VcpuState::Stopped).collect();
    for v in arrived {
        if let Err(e) = start(v) {
            log::error!("smp: vCPU {} stopped but cannot be restarted: {:?}", v, e);
        }
    }
    Err(SmpError::DidNotStop(laggard.unwrap_or(vcpus[0])))
}

/// After a resume in a new domain: every stopped vCPU lost its context
/// (the tools save only vCPUs that are up); starting one means a fresh start.
pub fn forget_contexts() {
    for v in 1..possible() {
        if state(v) == VcpuState::Stopped {
            match Hv::vcpu_is_up(v) {
                // The tools brought it back with its context: it goes on stopped.
                Ok(true) => log::warn!("smp: vCPU {} is up in the new domain", v),
                _ => set_state(v, VcpuState::Fresh),
            }
        }
    }
}

/// Starts vCPU `v`: up again where it stopped, or afresh.
pub fn start(v: VcpuId) -> Result<(), SmpError> {
    match state(v) {
        VcpuState::Stopped => {
            // It marks itself stopped just before it goes down: wait for the
            // down, or the up below would come first and be lost.
            let deadline = time::now_ns() + DOWN_WAIT_NS;
            while Hv::vcpu_is_up(v) == Ok(true) && time::now_ns() < deadline {
                Hv::yield_now();
            }
            set_state(v, VcpuState::Running);
            Hv::vcpu_up(v).map_err(|e| {
                set_state(v, VcpuState::Stopped);
                SmpError::Refused(v, e)
            })
        }
        VcpuState::Fresh => {
            bind_vcpu_ports(v)?;
            set_state(v, VcpuState::Running);
            start_fresh(v).inspect_err(|_| set_state(v, VcpuState::Fresh))
        }
        s => Err(SmpError::WrongState(v, s)),
    }
}

/// Starts vCPU `v`, online before a suspend, again after it (a few
/// tries: see `transient`). If Xen keeps refusing, `v` counts as offline
/// (its tasks run elsewhere) until dom0 asks for it again.
pub fn restart(v: VcpuId) -> Result<(), SmpError> {
    crate::transient::retry(format_args!("smp: restarting vCPU {}", v), || start(v)).inspect_err(|_| {
        ONLINE.fetch_and(!(1 << v), Ordering::AcqRel);
        sched::rearm_timer();
        sched::kick_idle();
    })
}

fn start_fresh(v: VcpuId) -> Result<(), SmpError> {
    // Events masked from its first instruction until its idle loop.
    let vi = crate::platform::vcpu_info(v);
    if !vi.is_null() {
        // SAFETY: vcpu_info is mapped; the vCPU is down, so nobody else writes its mask.
        unsafe { core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask).write_volatile(1) };
    }
    match initialise_context(v) {
        // An earlier try got this far and was refused at VCPUOP_up: its
        // context stands (Xen takes one only once per domain).
        Ok(()) | Err(XenError::EEXIST) => {}
        Err(e) => return Err(SmpError::Refused(v, e)),
    }
    Hv::vcpu_up(v).map_err(|e| SmpError::Refused(v, e))
}

#[cfg(target_os = "none")]
fn initialise_context(v: VcpuId) -> Result<(), XenError> {
    start::initialise(v)
}

/// On the simulated Xen a vCPU is a host thread with a stack of its own:
/// the context names only where it starts.
#[cfg(not(target_os = "none"))]
fn initialise_context(v: VcpuId) -> Result<(), XenError> {
    extern "C" fn entry() -> ! {
        secondary_main()
    }
    // SAFETY: vcpu_guest_context is plain integers; all-zero is a valid value.
    let mut ctx: alloc::boxed::Box<xen::abi::vcpu_guest_context> =
        alloc::boxed::Box::new(unsafe { core::mem::zeroed() });
    ctx.user_regs.__bindgen_anon_8.rip = entry as *const () as u64;
    // SAFETY: on the simulated Xen the context only names the entry, a
    // function that never returns, as its contract asks.
    unsafe { Hv::vcpu_initialise(v, &ctx) }
}

/// Where a vCPU asked to stop does so (its idle loop, events masked,
/// holding nothing). Returns once vCPU 0 has upped it again.
pub fn stop_here() {
    let v = percpu::current();
    if STATE[v as usize]
        .compare_exchange(VcpuState::StopRequested as u8, VcpuState::Stopped as u8, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return; // withdrawn meanwhile
    }
    if let Err(e) = Hv::vcpu_down(v) {
        log::error!("smp: vCPU {} cannot stop itself: {:?}", v, e);
        set_state(v, VcpuState::Running);
        return;
    }
    // Upped again in the same domain (a cancelled suspend, a refusal, or
    // hotplug): the timer may have been missed.
    sched::rearm_timer();
}

/// A fresh vCPU's first Rust code (from `start`'s entry stub), on its own
/// stack with events masked.
pub fn secondary_main() -> ! {
    crate::traps::init();
    stop_periodic_timer_here();
    sched::adopt_idle_here();
    sched::rearm_timer();
    events_mask::unmask();
    sched::idle()
}

/// `ballast.holdvcpu=V:N`, encoded as `V << 32 | N` (0: none).
static HOLD: AtomicU64 = AtomicU64::new(0);

/// Self-tests that start with the vCPUs they run on.
pub fn configure_selftests(hold: Option<(VcpuId, u32)>) {
    HOLD.store(hold.map_or(0, |(v, n)| (v as u64) << 32 | n as u64), Ordering::Relaxed);
}

/// Per-vCPU tasks, started with the vCPU the first time it comes online:
/// the ticker (`data/vcpu/<n>/ticks`) and, with several vCPUs, a pinned
/// pattern (and the rendezvous holder where the command line asks).
fn spawn_vcpu_tasks(v: VcpuId) {
    if possible() > 1 {
        crate::selftest::spawn_vcpu_pattern(v);
    }
    let hold = HOLD.load(Ordering::Relaxed);
    if hold != 0 && (hold >> 32) as VcpuId == v && v != 0 {
        crate::selftest::spawn_rendezvous_holder(v, hold as u32);
    }
    sched::spawn_pinned("vcpu-ticker", v, move || loop {
        // Counted only when run where it belongs: an offline vCPU's ticker
        // runs elsewhere and must not make it look alive.
        if percpu::current() == v {
            TICKS[v as usize].fetch_add(1, Ordering::Relaxed);
        }
        sched::sleep_ms(500);
    });
}

/// Spawns vCPU 0's ticker (the others get theirs when they first start).
pub fn spawn_boot_vcpu_tasks() {
    spawn_vcpu_tasks(0);
}

/// Set while a hotplug change or a suspend runs: they exclude each other.
static HOTPLUG_BUSY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static HOTPLUG_WAITERS: sched::WaitQueue = sched::WaitQueue::new();

/// Held while the set of running vCPUs changes (hotplug) or must not
/// (a suspend): a suspend that arrives during a hotplug waits for it.
pub struct HotplugExclusive(());

/// Waits until no hotplug change or suspend runs, and holds them off.
pub fn hotplug_exclusive() -> HotplugExclusive {
    HOTPLUG_WAITERS.wait_until(|| {
        HOTPLUG_BUSY
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| HotplugExclusive(()))
    })
}

impl Drop for HotplugExclusive {
    fn drop(&mut self) {
        HOTPLUG_BUSY.store(false, Ordering::Release);
        HOTPLUG_WAITERS.wake_all();
    }
}

/// `update_va_mapping` flags for a change to the kernel's shared mappings:
/// with other vCPUs, Xen flushes the entry on all of them (a TLB shootdown
/// done by the hypervisor, which knows where the domain ran).
pub fn invlpg_flags() -> u64 {
    use xen::abi::mmu;
    if possible() > 1 {
        mmu::UVMF_INVLPG | mmu::UVMF_ALL
    } else {
        mmu::UVMF_INVLPG
    }
}

/// The `mmuext_op` that flushes the TLB after a batch of kernel mapping
/// changes: on every vCPU of the domain when it has several.
pub fn tlb_flush_cmd() -> u32 {
    use xen::abi::mmu;
    if possible() > 1 {
        mmu::EXT_TLB_FLUSH_ALL
    } else {
        mmu::EXT_TLB_FLUSH_LOCAL
    }
}
