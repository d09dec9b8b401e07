//! Numbers and layouts from Xen's public headers that ballast uses.
//!
//! Structs that `xen-sys` carries (start_info, shared_info, vcpu_info, ...)
//! are re-exported from there; the few it lacks or gets awkward are
//! declared here with their C layout.

pub use xen_sys::{mmu_update, shared_info, start_info, trap_info, vcpu_guest_context, vcpu_info, vcpu_time_info};

/// Hypercall numbers (`xen.h`).
pub mod hc {
    pub const SET_TRAP_TABLE: u32 = 0;
    pub const MMU_UPDATE: u32 = 1;
    pub const SET_CALLBACKS: u32 = 4;
    pub const MEMORY_OP: u32 = 12;
    pub const UPDATE_VA_MAPPING: u32 = 14;
    pub const SET_TIMER_OP: u32 = 15;
    pub const XEN_VERSION: u32 = 17;
    pub const CONSOLE_IO: u32 = 18;
    pub const GRANT_TABLE_OP: u32 = 20;
    pub const VM_ASSIST: u32 = 21;
    pub const IRET: u32 = 23;
    pub const VCPU_OP: u32 = 24;
    pub const SET_SEGMENT_BASE: u32 = 25;
    pub const MMUEXT_OP: u32 = 26;
    pub const SCHED_OP: u32 = 29;
    pub const EVENT_CHANNEL_OP: u32 = 32;
}

/// `sched_op` commands and shutdown reasons (`sched.h`).
pub mod sched {
    pub const YIELD: u32 = 0;
    pub const BLOCK: u32 = 1;
    pub const SHUTDOWN: u32 = 2;
    pub const POLL: u32 = 3;

    pub const REASON_POWEROFF: u32 = 0;
    pub const REASON_REBOOT: u32 = 1;
    pub const REASON_SUSPEND: u32 = 2;
    pub const REASON_CRASH: u32 = 3;
}

/// `xen_version` commands (`version.h`).
pub mod version {
    pub const VERSION: u32 = 0;
    pub const EXTRAVERSION: u32 = 1;
}

/// `mmu_update` commands (low bits of `ptr`) and `mmuext_op` commands (`xen.h`).
pub mod mmu {
    pub const NORMAL_PT_UPDATE: u64 = 0;
    pub const MACHPHYS_UPDATE: u64 = 1;

    pub const EXT_PIN_L1_TABLE: u32 = 0;
    pub const EXT_PIN_L2_TABLE: u32 = 1;
    pub const EXT_PIN_L3_TABLE: u32 = 2;
    pub const EXT_PIN_L4_TABLE: u32 = 3;
    pub const EXT_UNPIN_TABLE: u32 = 4;
    pub const EXT_NEW_BASEPTR: u32 = 5;
    pub const EXT_TLB_FLUSH_LOCAL: u32 = 6;
    pub const EXT_INVLPG_LOCAL: u32 = 7;
    pub const EXT_TLB_FLUSH_ALL: u32 = 10;
    pub const EXT_INVLPG_ALL: u32 = 11;

    /// `update_va_mapping` flags.
    pub const UVMF_NONE: u64 = 0;
    pub const UVMF_TLB_FLUSH: u64 = 1;
    pub const UVMF_INVLPG: u64 = 2;
    /// Or'ed in: flush on every vCPU of the domain, not only this one.
    pub const UVMF_ALL: u64 = 4;

    pub const DOMID_SELF: u16 = 0x7FF0;
}

/// `memory_op` commands (`memory.h`).
pub mod mem {
    pub const INCREASE_RESERVATION: u32 = 0;
    pub const DECREASE_RESERVATION: u32 = 1;
    pub const CURRENT_RESERVATION: u32 = 3;
    pub const MAXIMUM_RESERVATION: u32 = 4;
    pub const POPULATE_PHYSMAP: u32 = 6;
}

/// `struct xen_memory_reservation`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MemoryReservation {
    pub extent_start: *mut u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
}

/// `event_channel_op` commands (`event_channel.h`) and VIRQ numbers.
pub mod evtchn {
    pub const BIND_INTERDOMAIN: u32 = 0;
    pub const BIND_VIRQ: u32 = 1;
    pub const CLOSE: u32 = 3;
    pub const SEND: u32 = 4;
    pub const ALLOC_UNBOUND: u32 = 6;
    pub const BIND_IPI: u32 = 7;
    pub const UNMASK: u32 = 9;

    pub const VIRQ_TIMER: u32 = 0;
    pub const VIRQ_DEBUG: u32 = 1;
}

/// `vcpu_op` commands (`vcpu.h`) and the context flag they need.
pub mod vcpu {
    pub const INITIALISE: u32 = 0;
    pub const UP: u32 = 1;
    pub const DOWN: u32 = 2;
    pub const IS_UP: u32 = 3;
    pub const STOP_PERIODIC_TIMER: u32 = 7;
    /// `vcpu_guest_context.flags`: the vCPU starts in kernel mode.
    pub const VGCF_IN_KERNEL: u64 = 1 << 2;
    /// `set_segment_base`: the kernel's GS base.
    pub const SEGBASE_GS_KERNEL: u32 = 2;
}

/// Flat segment selectors Xen sets up for a 64-bit PV guest.
pub const FLAT_KERNEL_CS: u16 = 0xe033;
pub const FLAT_KERNEL_SS: u16 = 0xe02b;
pub const FLAT_KERNEL_DS: u16 = 0xe02b;

/// Where Xen maps its read-only machine-to-physical table in every PV guest.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;

/// The `iret` hypercall's flag for "return as from a syscall"; ballast never uses it.
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// A p2m entry that names no machine frame (a ballooned-out pfn).
pub const INVALID_MFN: u64 = !0;
