//! Typed wrappers around the hypercalls ballast issues on the real Xen.
//!
//! Each wrapper builds the argument structure the ABI wants and turns
//! Xen's negative errno results into `Err(XenError)`.

use crate::abi::{self, hc, sched};
use crate::hypercall::{hypercall2, hypercall3, hypercall5};

/// A negative errno returned by Xen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenError(pub i64);

fn check(rc: i64) -> Result<i64, XenError> {
    if rc < 0 {
        Err(XenError(rc))
    } else {
        Ok(rc)
    }
}

#[repr(C)]
struct SchedShutdown {
    reason: u32,
}

/// Ends the domain with `reason` (poweroff, reboot, crash). Xen does not
/// return from this for those reasons; if it ever did, we block forever.
pub fn shutdown(reason: u32) -> ! {
    let arg = SchedShutdown { reason };
    loop {
        // SAFETY: `arg` is a valid sched_shutdown for the call's duration.
        unsafe { hypercall2(hc::SCHED_OP, sched::SHUTDOWN as u64, &arg as *const _ as u64) };
        block();
    }
}

/// Suspends the domain. Returns 0 when resumed in a new domain, 1 when the
/// suspend was cancelled and the old domain continues.
///
/// # Safety
/// The caller must have canonicalised start_info and quiesced everything
/// the suspend path requires; `start_info_mfn` must be start_info's frame.
pub unsafe fn suspend(start_info_mfn: u64) -> i64 {
    let arg = SchedShutdown { reason: sched::REASON_SUSPEND };
    // SAFETY: the caller upholds the suspend preconditions; `arg` is valid.
    unsafe { hypercall3(hc::SCHED_OP, sched::SHUTDOWN as u64, &arg as *const _ as u64, start_info_mfn) }
}

/// Gives up the CPU until an event is pending. Xen unmasks event delivery
/// atomically with blocking, so a wake-up cannot be lost in between.
pub fn block() {
    // SAFETY: SCHEDOP_block takes no argument.
    unsafe { hypercall2(hc::SCHED_OP, sched::BLOCK as u64, 0) };
}

/// Lets Xen run someone else for a moment.
pub fn yield_now() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { hypercall2(hc::SCHED_OP, sched::YIELD as u64, 0) };
}

/// `(major, minor)` of the running hypervisor.
pub fn version() -> (u32, u32) {
    // SAFETY: XENVER_version takes no buffer.
    let v = unsafe { hypercall2(hc::XEN_VERSION, abi::version::VERSION as u64, 0) } as u32;
    (v >> 16, v & 0xffff)
}

/// The extra version string, e.g. ".7+13-g2445b30a44-pre" (at most 16 bytes).
pub fn extraversion(buf: &mut [u8; 16]) -> &str {
    // SAFETY: XENVER_extraversion writes 16 bytes to `buf`.
    unsafe { hypercall2(hc::XEN_VERSION, abi::version::EXTRAVERSION as u64, buf.as_mut_ptr() as u64) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    core::str::from_utf8(&buf[..len]).unwrap_or("?")
}

/// Maps `va` to the page-table entry `pte` (0 unmaps).
pub fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), XenError> {
    // SAFETY: Xen validates the new entry; a bad one is refused with an error.
    check(unsafe { hypercall3(hc::UPDATE_VA_MAPPING, va, pte, flags) }).map(|_| ())
}

/// Applies a batch of page-table or m2p updates; returns how many succeeded.
pub fn mmu_update(reqs: &[abi::mmu_update]) -> Result<(), XenError> {
    let mut done: u32 = 0;
    // SAFETY: `reqs` is a live slice of mmu_update structs; `done` is written.
    let rc = unsafe {
        hypercall5(
            hc::MMU_UPDATE,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            &mut done as *mut u32 as u64,
            abi::mmu::DOMID_SELF as u64,
            0,
        )
    };
    check(rc).map(|_| ())
}

/// One `mmuext_op` (pin, unpin, new base pointer, TLB flush).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmuExtOp {
    pub cmd: u32,
    pub arg1: u64,
    pub arg2: u64,
}

pub fn mmuext_op(ops: &[MmuExtOp]) -> Result<(), XenError> {
    let mut done: u32 = 0;
    // SAFETY: `ops` is a live slice laid out as `struct mmuext_op`.
    let rc = unsafe {
        hypercall5(
            hc::MMUEXT_OP,
            ops.as_ptr() as u64,
            ops.len() as u64,
            &mut done as *mut u32 as u64,
            abi::mmu::DOMID_SELF as u64,
            0,
        )
    };
    check(rc).map(|_| ())
}

/// `memory_op` on a reservation; returns how many extents Xen handled.
pub fn memory_reservation(cmd: u32, extents: &mut [u64], order: u32) -> Result<usize, XenError> {
    let mut res = abi::MemoryReservation {
        extent_start: extents.as_mut_ptr(),
        nr_extents: extents.len() as u64,
        extent_order: order,
        mem_flags: 0,
        domid: abi::mmu::DOMID_SELF,
    };
    // SAFETY: `res` and the extent list are live for the call.
    check(unsafe { hypercall2(hc::MEMORY_OP, cmd as u64, &mut res as *mut _ as u64) }).map(|n| n as usize)
}

/// `memory_op` queries that take a domain id (current/maximum reservation).
pub fn memory_query(cmd: u32) -> Result<u64, XenError> {
    let domid: u16 = abi::mmu::DOMID_SELF;
    // SAFETY: the argument is a domid_t.
    check(unsafe { hypercall2(hc::MEMORY_OP, cmd as u64, &domid as *const u16 as u64) }).map(|n| n as u64)
}

/// Installs the virtual IDT.
///
/// # Safety
/// `table` must end with a zero entry and name handlers that follow Xen's
/// PV exception frame conventions.
pub unsafe fn set_trap_table(table: &[abi::trap_info]) -> Result<(), XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { hypercall2(hc::SET_TRAP_TABLE, table.as_ptr() as u64, 0) }).map(|_| ())
}

/// Registers the event upcall and failsafe entry points.
///
/// # Safety
/// Both addresses must be entry points written for Xen's callback frames.
pub unsafe fn set_callbacks(event: u64, failsafe: u64) -> Result<(), XenError> {
    // SAFETY: forwarded contract; no syscall entry (ballast has no user mode).
    check(unsafe { hypercall3(hc::SET_CALLBACKS, event, failsafe, 0) }).map(|_| ())
}

/// Arms the one-shot timer for system time `deadline_ns` (0 cancels).
pub fn set_timer(deadline_ns: u64) -> Result<(), XenError> {
    // SAFETY: plain integer argument.
    check(unsafe { hypercall2(hc::SET_TIMER_OP, deadline_ns, 0) }).map(|_| ())
}

/// `event_channel_op(cmd, arg)`.
///
/// # Safety
/// `arg` must point to the structure `cmd` expects.
pub unsafe fn event_channel_op<T>(cmd: u32, arg: &mut T) -> Result<(), XenError> {
    // SAFETY: forwarded contract.
    check(unsafe { hypercall2(hc::EVENT_CHANNEL_OP, cmd as u64, arg as *mut T as u64) }).map(|_| ())
}

/// Notifies the other end of `port`.
pub fn evtchn_send(port: u32) {
    let mut p = port;
    // SAFETY: evtchn_send is a single u32 port.
    let _ = unsafe { event_channel_op(abi::evtchn::SEND, &mut p) };
}

/// `vm_assist(cmd, type)`.
pub fn vm_assist(cmd: u32, kind: u32) -> Result<(), XenError> {
    // SAFETY: integer arguments.
    check(unsafe { hypercall2(hc::VM_ASSIST, cmd as u64, kind as u64) }).map(|_| ())
}

/// Any cheap hypercall: on its way back Xen delivers pending events.
pub fn force_event_delivery() {
    let _ = version();
}

/// `grant_table_op(cmd, arg, 1)`: one grant-table operation.
///
/// # Safety
/// `arg` must point to the structure `cmd` expects, with any guest handles
/// in it naming live memory.
pub unsafe fn grant_table_op<T>(cmd: u32, arg: &mut T) -> Result<(), XenError> {
    // SAFETY: forwarded contract; a count of one operation.
    check(unsafe { hypercall3(hc::GRANT_TABLE_OP, cmd as u64, arg as *mut T as u64, 1) }).map(|_| ())
}
