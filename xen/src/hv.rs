//! `Hypervisor` on the real Xen: each call builds the argument structure
//! the ABI wants, issues the hypercall through the hypercall page, and
//! turns Xen's negative errno results into `Err(XenError)`. This file and
//! `hypercall.rs` are the only places ballast issues hypercalls.

use crate::abi::{self, evtchn, hc, mem, mmu, sched, vcpu};
use crate::hypercall::{hypercall2, hypercall3, hypercall5};
use crate::seam::{Hypervisor, MmuExtOp, XenError};

/// The running hypervisor. Zero-sized: all of Xen's state is Xen's.
pub struct Xen;

#[repr(C)]
struct SchedShutdown {
    reason: u32,
}

#[repr(C)]
struct BindVirq {
    virq: u32,
    vcpu: u32,
    port: u32,
}

#[repr(C)]
struct BindIpi {
    vcpu: u32,
    port: u32,
}

#[repr(C)]
struct AllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

#[repr(C)]
struct GntSetupTable {
    dom: u16,
    nr_frames: u32,
    status: i16,
    frame_list: *mut u64,
}

#[repr(C)]
struct GntQuerySize {
    dom: u16,
    nr_frames: u32,
    max_nr_frames: u32,
    status: i16,
}

const GNTTABOP_SETUP_TABLE: u32 = 2;
const GNTTABOP_QUERY_SIZE: u32 = 6;

/// Where Xen loads the image; ballast keeps every pfn mapped from here.
pub const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

/// `event_channel_op(cmd, arg)`.
///
/// # Safety
/// `arg` must be the structure `cmd` expects.
unsafe fn event_channel_op<T>(cmd: u32, arg: &mut T) -> Result<u64, XenError> {
    // SAFETY: forwarded contract.
    XenError::check(unsafe { hypercall2(hc::EVENT_CHANNEL_OP, cmd as u64, arg as *mut T as u64) })
}

/// `grant_table_op(cmd, arg, 1)`, with the operation's own status folded in.
///
/// # Safety
/// `arg` must be the structure `cmd` expects, any handle in it naming live memory.
unsafe fn grant_table_op<T>(cmd: u32, arg: &mut T) -> Result<u64, XenError> {
    // SAFETY: forwarded contract; a count of one operation.
    XenError::check(unsafe { hypercall3(hc::GRANT_TABLE_OP, cmd as u64, arg as *mut T as u64, 1) })
}

/// `mmu_update` and `mmuext_op` share one calling convention: a list, its
/// length, a count of what was done, and the domain.
///
/// # Safety
/// `T` must be the structure hypercall `nr` takes, and what the batch
/// changes must be the caller's to change.
unsafe fn batch_op<T>(nr: u32, batch: &[T]) -> Result<(), XenError> {
    let mut done: u32 = 0;
    // SAFETY: `batch` is live for the call and `done` is written; the rest
    // is the caller's contract.
    XenError::check(unsafe {
        hypercall5(
            nr,
            batch.as_ptr() as u64,
            batch.len() as u64,
            &mut done as *mut u32 as u64,
            mmu::DOMID_SELF as u64,
            0,
        )
    })
    .map(drop)
}

fn memory_op_domid(cmd: u32) -> Result<u64, XenError> {
    let domid: u16 = mmu::DOMID_SELF;
    // SAFETY: the argument is a domid_t that lives for the call.
    XenError::check(unsafe { hypercall2(hc::MEMORY_OP, cmd as u64, &domid as *const u16 as u64) })
}

fn memory_reservation(cmd: u32, extents: *mut u64, nr: usize, order: u32) -> Result<usize, XenError> {
    let mut res = abi::MemoryReservation {
        extent_start: extents,
        nr_extents: nr as u64,
        extent_order: order,
        mem_flags: 0,
        domid: mmu::DOMID_SELF,
    };
    // SAFETY: `res` and the `nr` extents it names live for the call.
    XenError::check(unsafe { hypercall2(hc::MEMORY_OP, cmd as u64, &mut res as *mut _ as u64) }).map(|n| n as usize)
}

impl Hypervisor for Xen {
    fn direct_map_base() -> u64 {
        KERNEL_BASE
    }

    fn version() -> (u32, u32) {
        // SAFETY: XENVER_version takes no buffer.
        let v = unsafe { hypercall2(hc::XEN_VERSION, abi::version::VERSION as u64, 0) } as u32;
        (v >> 16, v & 0xffff)
    }

    fn extraversion(buf: &mut [u8; 16]) -> &str {
        // SAFETY: XENVER_extraversion writes 16 bytes to `buf`.
        unsafe { hypercall2(hc::XEN_VERSION, abi::version::EXTRAVERSION as u64, buf.as_mut_ptr() as u64) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        core::str::from_utf8(&buf[..len]).unwrap_or("?")
    }

    fn shutdown(reason: u32) -> ! {
        let arg = SchedShutdown { reason };
        loop {
            // SAFETY: `arg` is a valid sched_shutdown for the call's duration.
            unsafe { hypercall2(hc::SCHED_OP, sched::SHUTDOWN as u64, &arg as *const _ as u64) };
            Self::block();
        }
    }

    unsafe fn suspend(start_info_mfn: u64) -> i64 {
        let arg = SchedShutdown { reason: sched::REASON_SUSPEND };
        // SAFETY: the caller upholds the suspend preconditions; `arg` is valid.
        unsafe { hypercall3(hc::SCHED_OP, sched::SHUTDOWN as u64, &arg as *const _ as u64, start_info_mfn) }
    }

    fn block() {
        // SAFETY: SCHEDOP_block takes no argument.
        unsafe { hypercall2(hc::SCHED_OP, sched::BLOCK as u64, 0) };
    }

    fn yield_now() {
        // SAFETY: SCHEDOP_yield takes no argument.
        unsafe { hypercall2(hc::SCHED_OP, sched::YIELD as u64, 0) };
    }

    fn force_event_delivery() {
        let _ = Self::version();
    }

    fn set_timer(deadline_ns: u64) -> Result<(), XenError> {
        // SAFETY: plain integer argument.
        XenError::check(unsafe { hypercall2(hc::SET_TIMER_OP, deadline_ns, 0) }).map(drop)
    }

    unsafe fn set_trap_table(table: &[abi::trap_info]) -> Result<(), XenError> {
        // SAFETY: forwarded contract.
        XenError::check(unsafe { hypercall2(hc::SET_TRAP_TABLE, table.as_ptr() as u64, 0) }).map(drop)
    }

    unsafe fn set_callbacks(event: u64, failsafe: u64) -> Result<(), XenError> {
        // SAFETY: forwarded contract; no syscall entry (ballast has no user mode).
        XenError::check(unsafe { hypercall3(hc::SET_CALLBACKS, event, failsafe, 0) }).map(drop)
    }

    unsafe fn set_kernel_gs_base(base: u64) -> Result<(), XenError> {
        // SAFETY: plain integer arguments; what %gs then names is the caller's contract.
        XenError::check(unsafe { hypercall2(hc::SET_SEGMENT_BASE, vcpu::SEGBASE_GS_KERNEL as u64, base) }).map(drop)
    }

    unsafe fn vcpu_initialise(v: u32, ctx: &abi::vcpu_guest_context) -> Result<(), XenError> {
        // SAFETY: `ctx` is a vcpu_guest_context that lives for the call; what
        // it starts is the caller's contract.
        XenError::check(unsafe { hypercall3(hc::VCPU_OP, vcpu::INITIALISE as u64, v as u64, ctx as *const _ as u64) })
            .map(drop)
    }

    fn vcpu_up(v: u32) -> Result<(), XenError> {
        // SAFETY: VCPUOP_up takes no argument.
        XenError::check(unsafe { hypercall3(hc::VCPU_OP, vcpu::UP as u64, v as u64, 0) }).map(drop)
    }

    fn vcpu_down(v: u32) -> Result<(), XenError> {
        // SAFETY: VCPUOP_down takes no argument.
        XenError::check(unsafe { hypercall3(hc::VCPU_OP, vcpu::DOWN as u64, v as u64, 0) }).map(drop)
    }

    fn vcpu_is_up(v: u32) -> Result<bool, XenError> {
        // SAFETY: VCPUOP_is_up takes no argument.
        XenError::check(unsafe { hypercall3(hc::VCPU_OP, vcpu::IS_UP as u64, v as u64, 0) }).map(|r| r != 0)
    }

    fn stop_periodic_timer(v: u32) -> Result<(), XenError> {
        // SAFETY: VCPUOP_stop_periodic_timer takes no argument.
        XenError::check(unsafe { hypercall3(hc::VCPU_OP, vcpu::STOP_PERIODIC_TIMER as u64, v as u64, 0) }).map(drop)
    }

    unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), XenError> {
        // SAFETY: the caller owns the page; Xen validates the entry itself.
        XenError::check(unsafe { hypercall3(hc::UPDATE_VA_MAPPING, va, pte, flags) }).map(drop)
    }

    unsafe fn mmu_update(reqs: &[abi::mmu_update]) -> Result<(), XenError> {
        // SAFETY: `reqs` are mmu_update structs; what they change is the
        // caller's contract.
        unsafe { batch_op(hc::MMU_UPDATE, reqs) }
    }

    unsafe fn mmuext_op(ops: &[MmuExtOp]) -> Result<(), XenError> {
        // SAFETY: `MmuExtOp` is laid out as `struct mmuext_op`; what the ops
        // change is the caller's contract.
        unsafe { batch_op(hc::MMUEXT_OP, ops) }
    }

    unsafe fn decrease_reservation(mfns: &[u64], order: u32) -> Result<usize, XenError> {
        // Xen only reads the list for a decrease.
        memory_reservation(mem::DECREASE_RESERVATION, mfns.as_ptr() as *mut u64, mfns.len(), order)
    }

    fn populate_physmap(extents: &mut [u64], order: u32) -> Result<usize, XenError> {
        memory_reservation(mem::POPULATE_PHYSMAP, extents.as_mut_ptr(), extents.len(), order)
    }

    fn maximum_reservation() -> Result<u64, XenError> {
        memory_op_domid(mem::MAXIMUM_RESERVATION)
    }

    fn mfn_to_pfn(mfn: u64) -> u64 {
        // SAFETY: Xen maps the m2p read-only at MACH2PHYS_VIRT_START in every
        // PV guest; reading an entry for a frame the guest owns is valid.
        unsafe { ((abi::MACH2PHYS_VIRT_START as *const u64).add(mfn as usize)).read_volatile() }
    }

    fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, XenError> {
        let mut a = BindVirq { virq, vcpu, port: 0 };
        // SAFETY: `a` is an evtchn_bind_virq.
        unsafe { event_channel_op(evtchn::BIND_VIRQ, &mut a) }.map(|_| a.port)
    }

    fn bind_ipi(vcpu: u32) -> Result<u32, XenError> {
        let mut a = BindIpi { vcpu, port: 0 };
        // SAFETY: `a` is an evtchn_bind_ipi.
        unsafe { event_channel_op(evtchn::BIND_IPI, &mut a) }.map(|_| a.port)
    }

    fn alloc_unbound(remote_dom: u16) -> Result<u32, XenError> {
        let mut a = AllocUnbound { dom: mmu::DOMID_SELF, remote_dom, port: 0 };
        // SAFETY: `a` is an evtchn_alloc_unbound.
        unsafe { event_channel_op(evtchn::ALLOC_UNBOUND, &mut a) }.map(|_| a.port)
    }

    fn close_port(port: u32) -> Result<(), XenError> {
        let mut p = port;
        // SAFETY: evtchn_close is a single port.
        unsafe { event_channel_op(evtchn::CLOSE, &mut p) }.map(drop)
    }

    fn unmask_port(port: u32) {
        let mut p = port;
        // SAFETY: evtchn_unmask is a single port.
        let _ = unsafe { event_channel_op(evtchn::UNMASK, &mut p) };
    }

    fn send(port: u32) {
        let mut p = port;
        // SAFETY: evtchn_send is a single port.
        let _ = unsafe { event_channel_op(evtchn::SEND, &mut p) };
    }

    fn grant_setup_table(frames: &mut [u64]) -> Result<(), XenError> {
        let mut a = GntSetupTable {
            dom: mmu::DOMID_SELF,
            nr_frames: frames.len() as u32,
            status: 0,
            frame_list: frames.as_mut_ptr(),
        };
        // SAFETY: `a` is a gnttab_setup_table whose list holds nr_frames entries.
        unsafe { grant_table_op(GNTTABOP_SETUP_TABLE, &mut a) }?;
        match a.status {
            0 => Ok(()),
            s => Err(XenError(s as i64)),
        }
    }

    fn grant_query_size() -> Result<(u32, u32), XenError> {
        let mut q = GntQuerySize { dom: mmu::DOMID_SELF, nr_frames: 0, max_nr_frames: 0, status: 0 };
        // SAFETY: `q` is a gnttab_query_size.
        unsafe { grant_table_op(GNTTABOP_QUERY_SIZE, &mut q) }?;
        match q.status {
            0 => Ok((q.nr_frames, q.max_nr_frames)),
            s => Err(XenError(s as i64)),
        }
    }
}
