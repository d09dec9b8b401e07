//! The one simulated Xen: `Hypervisor` for host tests.
//!
//! A single guest domain with: memory in an arena with Xen's m2p, frame
//! ownership, validated page tables and Xen-owned pages (`memory`);
//! reservations with `max_pages`, a host pool and failure injection; event
//! channels whose ports all change in a new domain; grant frames; a
//! xenstore daemon on the store ring and the console ring's output; a
//! suspend that returns 1 (cancelled) or 0 in a new domain where every
//! machine frame number is new (`domain`); virtual time that moves only
//! when the guest blocks or a test says so; block and network backends in
//! dom0 (`blkback`, `netback`, on the shared backend pieces of `backend`).
//!
//! Kernel state is global, like the guest's memory, so tests that boot a
//! simulated guest run one at a time: `SimXen::boot` returns a session
//! that holds the test lock until dropped.

mod arena;
mod backend;
mod blkback;
mod device;
mod domain;
mod memory;
mod netback;
#[cfg(test)]
mod test_support;
mod vcpus;

use crate::abi::{mmu_update, shared_info, trap_info, vcpu_guest_context};
use crate::seam::{Hypervisor, MmuExtOp, XenError};
use crate::xenstore::sim::SimXenstored;
use arena::Arena;
use memory::Memory;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::string::String;
use std::sync::{Mutex, MutexGuard};

pub use blkback::{BlkFault, DiskFeatures, DiskFigures, IoRecord, SimDisk};
pub use domain::{SimConfig, SuspendPlan};
pub use netback::{mac_text, Fatal, NetFault, NetFigures, NetRing, SimVif, RX_QUEUE_MAX, SENT_MAX};
pub use vcpus::current_vcpu;
use vcpus::SimVcpu;

/// What a port is bound to in the simulated domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Store,
    Console,
    Virq { virq: u32, vcpu: u32 },
    Ipi { vcpu: u32 },
    Interdomain { remote_dom: u16, remote_port: u32 },
    Unbound { remote_dom: u16 },
}

/// Knobs that make Xen fall short.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Pages Xen will still populate (None: as many as the host has).
    pub populate_budget: Option<u64>,
    /// Pages Xen will still take back (None: any number).
    pub decrease_budget: Option<u64>,
    /// Whether the host has 2 MiB runs to hand out.
    pub no_2m: bool,
    /// Event-channel binds that fail from now on.
    pub refuse_binds: bool,
    /// Pinning page tables fails from now on.
    pub refuse_pins: bool,
    /// One call Xen refuses, chosen by the test.
    pub fail: Option<Failure>,
    /// How many chosen failures Xen has returned.
    pub failures_returned: u64,
}

/// The `skip`+1-th call of hypercall `call` (from now on) returns `error`,
/// once. `call` is the name the sim counts calls by; only calls that Xen
/// may refuse for reasons outside the guest (memory, ports, vCPUs, grant
/// frames, the suspend itself) can be chosen: a refused page-table update
/// means the guest broke a rule, which the sim reports as a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub call: &'static str,
    pub skip: u32,
    pub error: XenError,
}

impl Faults {
    /// The hypercalls a [`Failure`] may name.
    pub const FALLIBLE: [&'static str; 15] = [
        "set_timer",
        "vcpu_initialise",
        "vcpu_up",
        "stop_periodic_timer",
        "mmuext_op",
        "decrease_reservation",
        "populate_physmap",
        "maximum_reservation",
        "bind_virq",
        "bind_ipi",
        "alloc_unbound",
        "close_port",
        "grant_setup_table",
        "grant_query_size",
        "suspend",
    ];

    /// Whether this call of `call` is the one to refuse, and with what.
    fn refuse(&mut self, call: &'static str) -> Option<XenError> {
        let f = self.fail.as_mut().filter(|f| f.call == call)?;
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        let error = f.error;
        self.fail = None;
        self.failures_returned += 1;
        Some(error)
    }
}

/// System time: it runs with the host's TSC, scaled up so that timeouts
/// of seconds cost milliseconds, and jumps ahead when the guest blocks
/// until its timer. The guest reads it through the same pvclock formula
/// as on Xen. With several vCPUs it runs at about the host's speed: they
/// are host threads, and a loaded host could otherwise starve one through
/// many seconds of guest time (every vCPU idle still makes it jump).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    base_ns: u64,
    base_tsc: u64,
    shift: i8,
}

impl SimClock {
    /// A multiplier of almost 1.0: the shift sets the rate, 16 ns per TSC
    /// tick (about 50 times faster than a 3 GHz host) or a quarter of one
    /// (about the host's own speed).
    const MUL: u32 = u32::MAX;
    const FAST_SHIFT: i8 = 4;
    const HOST_SPEED_SHIFT: i8 = -2;

    fn starting_at(ns: u64, vcpus: u32) -> Self {
        let shift = if vcpus > 1 { Self::HOST_SPEED_SHIFT } else { Self::FAST_SHIFT };
        Self { base_ns: ns, base_tsc: tsc(), shift }
    }

    fn now(&self) -> u64 {
        let ticks = tsc().saturating_sub(self.base_tsc);
        let delta = if self.shift >= 0 { ticks << self.shift } else { ticks >> -self.shift };
        self.base_ns + ((delta as u128 * Self::MUL as u128) >> 32) as u64
    }

    /// The same rate, from `ns` now.
    fn restarted_at(&self, ns: u64) -> Self {
        Self { base_ns: ns, base_tsc: tsc(), shift: self.shift }
    }
}

fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64 hosts.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The simulated hypervisor's state.
pub struct Sim {
    arena: Arena,
    /// `mfn_of_pfn`'s last answers (pfn, mfn), rechecked before use.
    recent_lookups: std::cell::Cell<[(u64, u64); 4]>,
    mem: Memory,
    pub faults: Faults,
    pub max_pages: u64,
    /// Frames the host can still hand out.
    pub host_free: u64,
    ports: BTreeMap<u32, PortKind>,
    next_port: u32,
    generation: u32,
    start_info_pfn: u64,
    store_pfn: u64,
    console_pfn: u64,
    shared_info_mfn: u64,
    grant_frames: Vec<u64>,
    /// Each vCPU's state, timers included (Xen gives every PV vCPU a
    /// 100 Hz periodic timer until the guest stops it).
    vcpus: Vec<SimVcpu>,
    /// Which boot of the simulator this is: vCPU threads of older ones
    /// never run again.
    boot: u64,
    /// Periodic timer ticks delivered, on any vCPU.
    pub periodic_ticks: u64,
    clock: SimClock,
    /// The guest's event callback (`set_callbacks`): on the simulated Xen,
    /// the address of an `extern "C" fn()`.
    event_callback: Option<u64>,
    /// Blocks with nothing pending and no timer armed: a real domain would
    /// sleep until someone outside sends it an event.
    pub idle_blocks: u64,
    plans: VecDeque<SuspendPlan>,
    pub xenstore: SimXenstored,
    /// Bytes the guest wrote to its console.
    pub console_out: Vec<u8>,
    /// Hypercalls made, by name.
    pub calls: HashMap<&'static str, u64>,
    /// Notifications sent, by port.
    pub sends: HashMap<u32, u64>,
    /// Reason of a shutdown the guest asked for.
    pub shutdown: Option<u32>,
    backends: backend::Backends,
}

static STATE: Mutex<Option<Sim>> = Mutex::new(None);
static TEST_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` on the booted simulation.
pub fn with<R>(f: impl FnOnce(&mut Sim) -> R) -> R {
    let mut g = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.as_mut().expect("sim: no guest booted (SimXen::boot)"))
}

/// One test's hold on the simulated machine.
pub struct SimSession {
    _lock: MutexGuard<'static, ()>,
}

/// The simulated hypervisor.
pub struct SimXen;

impl SimXen {
    /// Builds a new domain as Xen's domain builder does and returns the
    /// session (hold it for the test) and the start_info page.
    pub fn boot(cfg: SimConfig) -> (SimSession, *mut crate::abi::start_info) {
        let lock = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = STATE.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None; // the old arena goes before the new one is made
        let (sim, si) = domain::build(cfg);
        *slot = Some(sim);
        (SimSession { _lock: lock }, si)
    }
}

impl Sim {
    fn count(&mut self, name: &'static str) {
        *self.calls.entry(name).or_default() += 1;
    }

    /// Guest mistakes Xen let pass; tests expect none.
    pub fn violations(&self) -> &[String] {
        &self.mem.violations
    }

    /// Frames the domain holds.
    pub fn owned_pages(&self) -> u64 {
        self.mem.owned.len() as u64
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// System time now, as the guest's pvclock reads it.
    pub fn now_ns(&self) -> u64 {
        self.clock.now()
    }

    /// dom0 writes a node, as `xl` or `xenstore-write` would: xenstored
    /// fires the guest's watches into its ring at once and notifies it.
    pub fn toolstack_write(&mut self, path: &str, value: &[u8]) {
        self.xenstore.toolstack_write(path, value);
        self.serve_store();
    }

    /// Queues what the next suspend hypercall does.
    pub fn plan_suspend(&mut self, plan: SuspendPlan) {
        self.plans.push_back(plan);
    }

    /// The toolstack gives up on the suspends it planned (the guest
    /// refused them before reaching Xen).
    pub fn forget_plans(&mut self) {
        self.plans.clear();
    }

    pub fn store_port(&self) -> u32 {
        self.port_of(PortKind::Store)
    }

    pub fn console_port(&self) -> u32 {
        self.port_of(PortKind::Console)
    }

    fn port_of(&self, kind: PortKind) -> u32 {
        self.ports.iter().find(|(_, &k)| k == kind).map(|(&p, _)| p).unwrap_or(0)
    }

    /// Bound ports and what they are.
    pub fn ports(&self) -> Vec<(u32, PortKind)> {
        self.ports.iter().map(|(&p, &k)| (p, k)).collect()
    }

    /// The machine frame of `pfn` as Xen's m2p sees it (reverse lookup).
    /// The ring pages are looked up on every xenstore and console request,
    /// so the last few answers are kept and checked before a full scan.
    pub fn mfn_of_pfn(&self, pfn: u64) -> Option<u64> {
        let still_true =
            |&(p, m): &(u64, u64)| p == pfn && self.mem.m2p.get(&m) == Some(&pfn) && self.mem.owned.contains(&m);
        let recent = self.recent_lookups.get();
        if let Some(&(_, m)) = recent.iter().find(|e| still_true(e)) {
            return Some(m);
        }
        let found = self.mem.m2p.iter().find(|(m, &p)| p == pfn && self.mem.owned.contains(m)).map(|(&m, _)| m)?;
        let mut recent = recent;
        recent.rotate_right(1);
        recent[0] = (pfn, found);
        self.recent_lookups.set(recent);
        Some(found)
    }

    /// Whether `mfn` is mapped anywhere the guest can reach it.
    pub fn mfn_mapped(&self, mfn: u64) -> bool {
        self.mem.is_mapped(&self.arena, mfn)
    }

    /// Whether the domain owns machine frame `mfn`.
    pub fn owns(&self, mfn: u64) -> bool {
        self.mem.is_ram(mfn)
    }

    /// Whether the guest's page at `pfn` is mapped at its place.
    pub fn pfn_mapped(&self, pfn: u64) -> bool {
        self.mfn_of_pfn(pfn).is_some_and(|m| self.mem.is_mapped(&self.arena, m))
    }

    fn shared_info(&self) -> Option<*mut shared_info> {
        self.mem.frame_ptr(&self.arena, self.shared_info_mfn).map(|p| p as *mut shared_info)
    }

    /// Marks `port` pending and, unless masked, signals the vCPU it is
    /// bound to.
    pub fn raise(&mut self, port: u32) {
        let (Some(si), Some(v)) = (self.shared_info(), self.vcpu_info(self.vcpu_of_port(port))) else { return };
        if port >= 4096 || !self.ports.contains_key(&port) {
            return;
        }
        let (w, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        // SAFETY: shared_info's bytes are live. The guest writes them too,
        // from any vCPU; these bit updates are Xen's side of that protocol
        // (a host test tolerates the same races Xen's guests do).
        unsafe {
            (*si).evtchn_pending[w] |= bit;
            if (*si).evtchn_mask[w] & bit == 0 {
                (*v).evtchn_pending_sel |= 1 << w;
                (*v).evtchn_upcall_pending = 1;
            }
        }
        vcpus::wake_all();
    }

    /// Starts an upcall on the calling vCPU if one is due: masks its
    /// events and returns the callback.
    fn begin_upcall(&mut self) -> Option<u64> {
        let entry = self.event_callback?;
        let v = self.vcpu_info(current_vcpu())?;
        // SAFETY: as in `raise`.
        unsafe {
            if (*v).evtchn_upcall_pending == 0 || (*v).evtchn_upcall_mask != 0 {
                return None;
            }
            (*v).evtchn_upcall_mask = 1;
        }
        Some(entry)
    }

    /// The guest's `iret` from the upcall: events unmasked again.
    fn end_upcall(&mut self) {
        if let Some(v) = self.vcpu_info(current_vcpu()) {
            // SAFETY: as in `raise`.
            unsafe { (*v).evtchn_upcall_mask = 0 };
        }
    }

    /// Whether anything is pending for vCPU `v`.
    pub fn upcall_pending(&self, v: u32) -> bool {
        // SAFETY: as in `raise`.
        self.vcpu_info(v).is_some_and(|v| unsafe { (*v).evtchn_upcall_pending != 0 })
    }

    /// Moves virtual time on by `ns` at once (a block until the timer),
    /// firing any timer that is due.
    pub fn advance(&mut self, ns: u64) {
        self.clock = self.clock.restarted_at(self.clock.now().saturating_add(ns));
        self.publish_time();
        self.fire_timer_if_due();
    }

    /// Publishes the clock in every vCPU's pvclock, which the guest reads
    /// without asking Xen.
    fn publish_time(&mut self) {
        for v in 0..self.vcpu_count() {
            let Some(v) = self.vcpu_info(v) else { return };
            // SAFETY: as in `raise`.
            unsafe {
                let t = core::ptr::addr_of_mut!((*v).time);
                (*t).version = (*t).version.wrapping_add(2) & !1;
                (*t).tsc_timestamp = self.clock.base_tsc;
                (*t).system_time = self.clock.base_ns;
                (*t).tsc_to_system_mul = SimClock::MUL;
                (*t).tsc_shift = self.clock.shift;
            }
        }
    }

    /// The grant entry `gref` as a backend sees it: (flags, domid, frame).
    pub fn grant_entry(&self, gref: u32) -> Option<(u16, u16, u32)> {
        let frame = *self.grant_frames.get(gref as usize / 512)?;
        let p = self.mem.frame_ptr(&self.arena, frame)? as *const u64;
        // SAFETY: a live grant frame; 512 entries of 8 bytes.
        let e = unsafe { p.add(gref as usize % 512).read_volatile() };
        Some((e as u16, (e >> 16) as u16, (e >> 32) as u32))
    }

    /// Sets flag bits in a grant entry, as Xen does while a backend maps it.
    pub fn grant_set_flags(&mut self, gref: u32, bits: u16, set: bool) {
        let Some(&frame) = self.grant_frames.get(gref as usize / 512) else { return };
        let Some(p) = self.mem.frame_ptr(&self.arena, frame) else { return };
        // SAFETY: as in `grant_entry`; the flags are the entry's first 2 bytes.
        unsafe {
            let f = (p as *mut u16).add((gref as usize % 512) * 4);
            f.write_volatile(if set { f.read_volatile() | bits } else { f.read_volatile() & !bits });
        }
    }

    /// The machine frames Xen gave the grant table in this domain.
    pub fn grant_frames(&self) -> &[u64] {
        &self.grant_frames
    }

    fn alloc_port(&mut self, kind: PortKind) -> Result<u32, XenError> {
        if self.faults.refuse_binds && !matches!(kind, PortKind::Store | PortKind::Console) {
            return Err(XenError::ENOSPC);
        }
        let port = self.next_port;
        self.next_port += 1;
        self.ports.insert(port, kind);
        Ok(port)
    }

    /// xenstored serves the ring; then every backend answers what the
    /// guest wrote, and what the backends wrote goes out in turn.
    fn serve_store(&mut self) {
        self.serve_store_ring();
        for _ in 0..8 {
            if !self.step_backends() {
                break;
            }
            self.serve_store_ring();
        }
    }

    fn serve_store_ring(&mut self) {
        let Some(page) = self.mfn_of_pfn(self.store_pfn).and_then(|m| self.mem.frame_ptr(&self.arena, m)) else {
            return;
        };
        // SAFETY: the store page is the guest's, live in the arena; the
        // guest is not running while the simulator serves it.
        if unsafe { self.xenstore.serve_ring(page as *mut _) } {
            self.raise(self.store_port());
        }
    }

    fn drain_console(&mut self) {
        let Some(page) = self.mfn_of_pfn(self.console_pfn).and_then(|m| self.mem.frame_ptr(&self.arena, m)) else {
            return;
        };
        let ring = page as *mut crate::console::ConsoleInterface;
        // SAFETY: as in `serve_store`; indexes are reduced modulo the ring.
        unsafe {
            let cons = (*ring).out_cons;
            let prod = (*ring).out_prod;
            let n = prod.wrapping_sub(cons).min(crate::console::OUT_SIZE as u32);
            for i in 0..n {
                self.console_out.push((*ring).output[(cons.wrapping_add(i) as usize) % crate::console::OUT_SIZE]);
            }
            (*ring).out_cons = cons.wrapping_add(n);
        }
    }

    fn memory_op_frames(&mut self, extents: &mut [u64], order: u32) -> usize {
        let frames = 1u64 << order;
        let mut done = 0;
        for e in extents.iter_mut() {
            let pfn = *e;
            let budget_ok = self.faults.populate_budget.is_none_or(|b| b >= frames);
            if !budget_ok
                || (order > 0 && self.faults.no_2m)
                || self.host_free < frames
                || self.mem.owned.len() as u64 + frames > self.max_pages
            {
                break;
            }
            if let Some(b) = self.faults.populate_budget.as_mut() {
                *b -= frames;
            }
            self.mem.next_mfn = self.mem.next_mfn.next_multiple_of(frames);
            let mfn = self.mem.new_frames(frames);
            for i in 0..frames {
                self.mem.owned.insert(mfn + i);
                self.mem.m2p.insert(mfn + i, pfn + i);
                self.mem.released_pfns.remove(&(pfn + i));
            }
            self.host_free -= frames;
            *e = mfn;
            done += 1;
        }
        done
    }

    fn decrease(&mut self, mfns: &[u64], order: u32) -> usize {
        let frames = 1u64 << order;
        let mut done = 0;
        for &mfn in mfns {
            if self.faults.decrease_budget.is_some_and(|b| b < frames)
                || !(mfn..mfn + frames).all(|m| self.mem.is_ram(m))
            {
                break;
            }
            if let Some(b) = self.faults.decrease_budget.as_mut() {
                *b -= frames;
            }
            for m in mfn..mfn + frames {
                if self.mem.is_mapped(&self.arena, m) {
                    self.mem.violations.push(format!("frame {m:#x} given back while still mapped"));
                }
                self.mem.owned.remove(&m);
                if let Some(pfn) = self.mem.m2p.remove(&m) {
                    self.mem.released_pfns.insert(pfn);
                }
            }
            self.host_free += frames;
            done += 1;
        }
        done
    }
}

/// One hypercall: `f` on the state, then, as Xen does on the way back to
/// the guest, the timer if due and the event upcall if anything is pending
/// and unmasked.
fn sim<R>(name: &'static str, f: impl FnOnce(&mut Sim) -> R) -> R {
    let r = with(|s| {
        s.count(name);
        let r = f(s);
        s.fire_timer_if_due();
        r
    });
    deliver_upcalls();
    r
}

/// A hypercall Xen may refuse: `f`, unless the test chose this call to fail.
fn fallible<T>(name: &'static str, f: impl FnOnce(&mut Sim) -> Result<T, XenError>) -> Result<T, XenError> {
    sim(name, |s| match s.faults.refuse(name) {
        Some(e) => Err(e),
        None => f(s),
    })
}

/// Runs the guest's event callback while vCPU 0 has an event pending and
/// unmasked: Xen masks events on entry, and the guest's `iret` unmasks them
/// again, after which anything raised meanwhile is delivered in turn.
fn deliver_upcalls() {
    while let Some(entry) = with(|s| s.begin_upcall()) {
        // SAFETY: on the simulated Xen, `set_callbacks` takes the address
        // of an `extern "C" fn()` (its contract); it runs on the caller's
        // stack as Xen's upcall runs on the guest's.
        let callback: extern "C" fn() = unsafe { core::mem::transmute::<usize, extern "C" fn()>(entry as usize) };
        callback();
        with(|s| s.end_upcall());
    }
}

impl Hypervisor for SimXen {
    fn direct_map_base() -> u64 {
        with(|s| s.arena.base())
    }

    fn version() -> (u32, u32) {
        (4, 17)
    }

    fn extraversion(buf: &mut [u8; 16]) -> &str {
        let s = b"-sim";
        buf[..s.len()].copy_from_slice(s);
        core::str::from_utf8(&buf[..s.len()]).unwrap_or("?")
    }

    fn shutdown(reason: u32) -> ! {
        sim("shutdown", |s| s.shutdown = Some(reason));
        panic!("sim: the guest shut down (reason {reason})");
    }

    unsafe fn suspend(start_info_mfn: u64) -> i64 {
        sim("suspend", |s| match s.faults.refuse("suspend") {
            // Xen did not suspend: the toolstack's plan for it goes too.
            Some(e) => {
                s.plans.pop_front();
                e.0
            }
            None => domain::suspend(s, start_info_mfn),
        })
    }

    fn block() {
        vcpus::block()
    }

    fn yield_now() {
        sim("yield", |s| s.run_backends());
        // Other vCPUs are host threads: let them run.
        std::thread::yield_now();
    }

    fn force_event_delivery() {
        sim("force_event_delivery", |_| {})
    }

    fn set_timer(deadline_ns: u64) -> Result<(), XenError> {
        vcpus::set_timer(deadline_ns)
    }

    unsafe fn set_trap_table(_table: &[trap_info]) -> Result<(), XenError> {
        sim("set_trap_table", |_| Ok(()))
    }

    /// On the simulated Xen `event` is the address of an `extern "C" fn()`
    /// and `failsafe` is unused.
    unsafe fn set_callbacks(event: u64, _failsafe: u64) -> Result<(), XenError> {
        sim("set_callbacks", |s| {
            s.event_callback = Some(event);
            Ok(())
        })
    }

    unsafe fn set_kernel_gs_base(_base: u64) -> Result<(), XenError> {
        sim("set_kernel_gs_base", |_| Ok(()))
    }

    /// On the simulated Xen the context's `rip` is the address of an
    /// `extern "C" fn() -> !`; the rest of the context is unused (the vCPU
    /// runs on a host thread of its own).
    unsafe fn vcpu_initialise(vcpu: u32, ctx: &vcpu_guest_context) -> Result<(), XenError> {
        vcpus::initialise(vcpu, ctx.user_regs.__bindgen_anon_8.rip)
    }

    fn vcpu_up(vcpu: u32) -> Result<(), XenError> {
        vcpus::up(vcpu)
    }

    fn vcpu_down(vcpu: u32) -> Result<(), XenError> {
        vcpus::down(vcpu)
    }

    fn vcpu_is_up(vcpu: u32) -> Result<bool, XenError> {
        vcpus::is_up(vcpu)
    }

    fn stop_periodic_timer(vcpu: u32) -> Result<(), XenError> {
        vcpus::stop_periodic_timer(vcpu)
    }

    unsafe fn update_va_mapping(va: u64, pte: u64, _flags: u64) -> Result<(), XenError> {
        sim("update_va_mapping", |s| s.mem.update_va_mapping(&s.arena, va, pte).map_err(|_| XenError::EINVAL))
    }

    unsafe fn mmu_update(reqs: &[mmu_update]) -> Result<(), XenError> {
        sim("mmu_update", |s| {
            for r in reqs {
                s.mem.mmu_update(&s.arena, r.ptr, r.val).map_err(|_| XenError::EINVAL)?;
            }
            Ok(())
        })
    }

    unsafe fn mmuext_op(ops: &[MmuExtOp]) -> Result<(), XenError> {
        use crate::abi::mmu;
        fallible("mmuext_op", |s| {
            for op in ops {
                match op.cmd {
                    mmu::EXT_PIN_L4_TABLE if s.faults.refuse_pins => return Err(XenError::ENOMEM),
                    mmu::EXT_PIN_L4_TABLE if s.mem.is_ram(op.arg1) => {
                        s.mem.register_table(&s.arena, op.arg1, 4);
                        s.mem.pinned.insert(op.arg1);
                    }
                    mmu::EXT_UNPIN_TABLE if s.mem.pinned.remove(&op.arg1) => {}
                    mmu::EXT_NEW_BASEPTR if s.mem.pinned.contains(&op.arg1) => {}
                    mmu::EXT_TLB_FLUSH_LOCAL | mmu::EXT_INVLPG_LOCAL | mmu::EXT_TLB_FLUSH_ALL | mmu::EXT_INVLPG_ALL => {
                    }
                    _ => return Err(XenError::EINVAL),
                }
            }
            Ok(())
        })
    }

    unsafe fn decrease_reservation(mfns: &[u64], order: u32) -> Result<usize, XenError> {
        fallible("decrease_reservation", |s| Ok(s.decrease(mfns, order)))
    }

    fn populate_physmap(extents: &mut [u64], order: u32) -> Result<usize, XenError> {
        fallible("populate_physmap", |s| Ok(s.memory_op_frames(extents, order)))
    }

    fn maximum_reservation() -> Result<u64, XenError> {
        fallible("maximum_reservation", |s| Ok(s.max_pages))
    }

    fn mfn_to_pfn(mfn: u64) -> u64 {
        with(|s| s.mem.m2p.get(&mfn).copied().unwrap_or(!0))
    }

    fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, XenError> {
        fallible("bind_virq", |s| s.alloc_port(PortKind::Virq { virq, vcpu }))
    }

    fn bind_ipi(vcpu: u32) -> Result<u32, XenError> {
        fallible("bind_ipi", |s| s.alloc_port(PortKind::Ipi { vcpu }))
    }

    fn alloc_unbound(remote_dom: u16) -> Result<u32, XenError> {
        fallible("alloc_unbound", |s| s.alloc_port(PortKind::Unbound { remote_dom }))
    }

    fn close_port(port: u32) -> Result<(), XenError> {
        fallible("close_port", |s| s.ports.remove(&port).map(drop).ok_or(XenError::EINVAL))
    }

    fn unmask_port(port: u32) {
        sim("unmask_port", |s| {
            let (Some(si), Some(v)) = (s.shared_info(), s.vcpu_info(s.vcpu_of_port(port))) else { return };
            if port >= 4096 {
                return;
            }
            let (w, bit) = ((port / 64) as usize, 1u64 << (port % 64));
            // SAFETY: as in `Sim::raise`.
            unsafe {
                (*si).evtchn_mask[w] &= !bit;
                if (*si).evtchn_pending[w] & bit != 0 {
                    (*v).evtchn_pending_sel |= 1 << w;
                    (*v).evtchn_upcall_pending = 1;
                }
            }
            vcpus::wake_all();
        })
    }

    fn send(port: u32) {
        sim("send", |s| {
            *s.sends.entry(port).or_default() += 1;
            match s.ports.get(&port) {
                Some(PortKind::Store) => s.serve_store(),
                Some(PortKind::Console) => s.drain_console(),
                // An IPI: the port is pending on the vCPU it is bound to.
                Some(PortKind::Ipi { .. }) => s.raise(port),
                Some(&PortKind::Interdomain { remote_dom: backend::BACKEND_DOMID, remote_port }) => {
                    s.backend_kicked(remote_port)
                }
                _ => {}
            }
        })
    }

    fn grant_setup_table(frames: &mut [u64]) -> Result<(), XenError> {
        fallible("grant_setup_table", |s| {
            while s.grant_frames.len() < frames.len() {
                let f = s.mem.new_xen_page();
                s.grant_frames.push(f);
            }
            frames.copy_from_slice(&s.grant_frames[..frames.len()]);
            Ok(())
        })
    }

    fn grant_query_size() -> Result<(u32, u32), XenError> {
        fallible("grant_query_size", |s| Ok((s.grant_frames.len() as u32, 64)))
    }
}

/// The console output so far, as text.
pub fn console_text() -> String {
    with(|s| String::from_utf8_lossy(&s.console_out).into_owned())
}
