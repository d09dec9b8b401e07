//! 2-level event channels: dispatch from shared_info's pending bitmaps to a
//! handler per port, and a table of every binding so that a resumed domain
//! (where all ports are gone) can bind them all again.

use crate::percpu::{self, VcpuId, MAX_VCPUS};
use crate::platform;
use crate::{Hv, Hypervisor, XenError};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// A handler runs in the upcall, with events masked: it must be short and
/// must not block (typically it wakes a task). It carries its own context
/// (a device's state) in what it captures.
pub type Handler = Arc<dyn Fn(u32) + Send + Sync>;

/// What a port is bound to, enough to bind it again after a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Virq {
        virq: u32,
        vcpu: u32,
    },
    Ipi {
        vcpu: u32,
    },
    Unbound {
        remote_dom: u16,
    },
    /// Ports Xen hands over in start_info (console, xenstore): the new
    /// port comes from the new start_info, not from a rebind.
    FromStartInfo,
}

impl Binding {
    /// The vCPU Xen delivers the port to: VIRQs and IPIs name theirs, every
    /// other port is delivered to vCPU 0.
    pub fn vcpu(&self) -> VcpuId {
        match *self {
            Binding::Virq { vcpu, .. } | Binding::Ipi { vcpu } => vcpu,
            _ => 0,
        }
    }
}

#[derive(Clone)]
struct Slot {
    /// Stays the same across rebinds, when the port changes.
    id: u64,
    port: u32,
    binding: Binding,
    handler: Handler,
    name: &'static str,
}

const MAX_BINDINGS: usize = 64;

/// Ids of bindings, for [`Channel`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Every bound port with its handler. A lock because tasks bind while the
/// upcall reads; it is only taken with events masked.
static TABLE: Mutex<Vec<Slot>> = Mutex::new(Vec::new());

/// Per vCPU, the ports delivered to it (a bit per port, as in
/// `evtchn_pending`). Two vCPUs can share a pending word: each handles only
/// its own ports, so a VIRQ is never run on the wrong vCPU. Atomic words
/// because the upcall reads them on every vCPU while a bind writes them.
static DELIVERED_TO: [[AtomicU64; 64]; MAX_VCPUS] = [const { [const { AtomicU64::new(0) }; 64] }; MAX_VCPUS];

fn set_owner(port: u32, vcpu: VcpuId, owned: bool) {
    let (w, bit) = bit_word(port);
    let word = &DELIVERED_TO[vcpu as usize][w];
    if owned {
        word.fetch_or(bit, Ordering::SeqCst);
    } else {
        word.fetch_and(!bit, Ordering::SeqCst);
    }
}

/// Events delivered, for the figures sysrq prints.
pub static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// Why a binding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventError {
    /// Xen refused the bind.
    Refused(XenError),
    /// start_info-provided ports are attached, never bound.
    FromStartInfo,
    /// Every slot of the binding table is taken.
    TableFull,
    /// A port beyond what 2-level event channels can address.
    BadPort(u32),
}

/// Ports the 2-level ABI addresses: 64 words of 64 bits.
pub const MAX_PORTS: u32 = 64 * 64;

fn bind_raw(binding: Binding) -> Result<u32, EventError> {
    match binding {
        Binding::Virq { virq, vcpu } => Hv::bind_virq(virq, vcpu),
        Binding::Ipi { vcpu } => Hv::bind_ipi(vcpu),
        Binding::Unbound { remote_dom } => Hv::alloc_unbound(remote_dom),
        Binding::FromStartInfo => return Err(EventError::FromStartInfo),
    }
    .map_err(EventError::Refused)
}

fn insert(slot: Slot) -> Result<(), EventError> {
    if slot.port >= MAX_PORTS {
        return Err(EventError::BadPort(slot.port));
    }
    let port = slot.port;
    crate::events_mask::without_events(|| {
        let mut t = TABLE.lock();
        if t.len() >= MAX_BINDINGS {
            return Err(EventError::TableFull);
        }
        set_owner(slot.port, slot.binding.vcpu(), true);
        t.push(slot);
        Ok(())
    })?;
    unmask(port);
    Ok(())
}

/// Binds `binding` to a new port with `handler` and unmasks it.
pub fn bind(
    binding: Binding,
    name: &'static str,
    handler: impl Fn(u32) + Send + Sync + 'static,
) -> Result<u32, EventError> {
    bind_with_id(binding, name, Arc::new(handler)).map(|(port, _)| port)
}

fn bind_with_id(binding: Binding, name: &'static str, handler: Handler) -> Result<(u32, u64), EventError> {
    let port = bind_raw(binding)?;
    let id = next_id();
    if let Err(e) = insert(Slot { id, port, binding, handler, name }) {
        let _ = Hv::close_port(port);
        return Err(e);
    }
    log::info!("event: bound {} ({:?}) to port {}", name, binding, port);
    Ok((port, id))
}

/// A device's own event channel. Its port changes when the domain resumes
/// somewhere new (every binding is made again then), so the channel is
/// named by a binding id and the port looked up when needed; dropping it
/// closes the port.
pub struct Channel {
    id: u64,
}

impl Channel {
    /// Binds `binding` with `handler` (which carries the device's context).
    pub fn bind(
        binding: Binding,
        name: &'static str,
        handler: impl Fn(u32) + Send + Sync + 'static,
    ) -> Result<Channel, EventError> {
        bind_with_id(binding, name, Arc::new(handler)).map(|(_, id)| Channel { id })
    }

    /// The port now (None if a rebind after a resume failed).
    pub fn port(&self) -> Option<u32> {
        crate::events_mask::without_events(|| TABLE.lock().iter().find(|s| s.id == self.id).map(|s| s.port))
    }

    /// Notifies the other end.
    pub fn notify(&self) {
        if let Some(p) = self.port() {
            Hv::send(p);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        if let Some(p) = self.port() {
            unbind(p);
        }
    }
}

/// Attaches `handler` to a port Xen gave us in start_info.
pub fn attach(port: u32, name: &'static str, handler: impl Fn(u32) + Send + Sync + 'static) -> Result<(), EventError> {
    insert(Slot { id: next_id(), port, binding: Binding::FromStartInfo, handler: Arc::new(handler), name })?;
    log::info!("event: {} on port {}", name, port);
    Ok(())
}

/// Closes `port` and forgets its binding.
pub fn unbind(port: u32) {
    crate::events_mask::without_events(|| {
        let mut t = TABLE.lock();
        for s in t.iter().filter(|s| s.port == port) {
            set_owner(port, s.binding.vcpu(), false);
        }
        t.retain(|s| s.port != port)
    });
    mask_port(port);
    if let Err(e) = Hv::close_port(port) {
        log::warn!("event: closing port {} failed: {:?}", port, e);
    }
}

/// Re-creates every binding after a resume in a new domain, where all old
/// ports are gone. `start_info_port(name)` names the new port of the
/// start_info-provided channels. Returns how many were rebound.
pub fn rebind_all(start_info_port: impl Fn(&str) -> Option<u32>) -> usize {
    let old: Vec<Slot> = crate::events_mask::without_events(|| core::mem::take(&mut *TABLE.lock()));
    clear_owners();
    let mut fresh = Vec::with_capacity(old.len());
    for mut s in old {
        let port = match s.binding {
            Binding::FromStartInfo => start_info_port(s.name),
            b => match crate::transient::retry(format_args!("event: rebinding {:?}", b), || bind_raw(b)) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::error!("event: rebinding {} ({:?}) failed: {:?}; it gets no events", s.name, b, e);
                    None
                }
            },
        };
        if let Some(p) = port {
            s.port = p;
            fresh.push(s);
        }
    }
    let ports: Vec<u32> = fresh.iter().map(|s| s.port).collect();
    for s in &fresh {
        set_owner(s.port, s.binding.vcpu(), true);
    }
    crate::events_mask::without_events(|| *TABLE.lock() = fresh);
    for &p in &ports {
        unmask(p);
    }
    ports.len()
}

fn bit_word(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

/// Stops delivery on `port` (the pending bit still latches).
pub fn mask_port(port: u32) {
    let si = platform::shared_info();
    if port >= MAX_PORTS || si.is_null() {
        return;
    }
    let (w, bit) = bit_word(port);
    // SAFETY: shared_info is mapped; the mask bitmap is shared with Xen, so
    // it is changed with an atomic read-modify-write.
    unsafe {
        let word = &*(core::ptr::addr_of_mut!((*si).evtchn_mask[w]) as *const AtomicU64);
        word.fetch_or(bit, Ordering::SeqCst);
    }
}

/// Allows delivery on `port`; Xen re-raises it if it is pending.
pub fn unmask(port: u32) {
    Hv::unmask_port(port);
}

/// Called from the upcall entry with events masked.
pub fn handle_upcall() {
    let si = platform::shared_info();
    let here = percpu::current();
    let v = platform::vcpu_info(here);
    if si.is_null() || v.is_null() {
        return;
    }
    loop {
        // SAFETY: shared_info and vcpu_info are mapped; pending words are
        // shared with Xen and taken with atomic operations.
        let sel = unsafe {
            core::ptr::addr_of_mut!((*v).evtchn_upcall_pending).write_volatile(0);
            let sel = &*(core::ptr::addr_of_mut!((*v).evtchn_pending_sel) as *const AtomicU64);
            sel.swap(0, Ordering::SeqCst)
        };
        if sel == 0 {
            break;
        }
        let mut words = sel;
        while words != 0 {
            let w = words.trailing_zeros() as usize;
            words &= words - 1;
            // SAFETY: as above.
            let (pending, mask) = unsafe {
                (
                    &*(core::ptr::addr_of_mut!((*si).evtchn_pending[w]) as *const AtomicU64),
                    &*(core::ptr::addr_of_mut!((*si).evtchn_mask[w]) as *const AtomicU64),
                )
            };
            let mine = DELIVERED_TO[here as usize][w].load(Ordering::SeqCst);
            let mut ready = pending.load(Ordering::SeqCst) & !mask.load(Ordering::SeqCst) & mine;
            while ready != 0 {
                let b = ready.trailing_zeros();
                ready &= ready - 1;
                pending.fetch_and(!(1u64 << b), Ordering::SeqCst);
                dispatch(w as u32 * 64 + b);
            }
        }
    }
}

fn dispatch(port: u32) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
    // The handler runs after the lock is dropped: it may bind or unbind.
    let handler = TABLE.lock().iter().find(|s| s.port == port).map(|s| s.handler.clone());
    if let Some(h) = handler {
        h(port);
    }
}

/// Starts with an empty binding table (a simulated guest boots again in
/// the same process; on Xen the table is empty at boot anyway).
pub fn init() {
    crate::events_mask::without_events(|| TABLE.lock().clear());
    clear_owners();
}

fn clear_owners() {
    for words in &DELIVERED_TO {
        for w in words {
            w.store(0, Ordering::SeqCst);
        }
    }
}

/// The port bound to `binding`, if any.
pub fn port_bound_to(binding: Binding) -> Option<u32> {
    crate::events_mask::without_events(|| TABLE.lock().iter().find(|s| s.binding == binding).map(|s| s.port))
}

/// The port bound or attached under `name`.
pub fn port_of(name: &str) -> Option<u32> {
    crate::events_mask::without_events(|| TABLE.lock().iter().find(|s| s.name == name).map(|s| s.port))
}

/// How many ports are bound.
pub fn count() -> usize {
    crate::events_mask::without_events(|| TABLE.lock().len())
}
