//! Which vCPU code runs on, and state kept per vCPU.
//!
//! Everything Xen keeps per vCPU (vcpu_info with its event mask, pending
//! bits and pvclock; the one-shot timer; the timer VIRQ) and everything the
//! scheduler keeps per vCPU (the running task, the idle task, the armed
//! deadline) is indexed by vCPU through this module.
//!
//! On Xen each vCPU's kernel GS base points at its own `VcpuArea`, so
//! `current` is one load through %gs. Tasks move between vCPUs only at a
//! schedule point and event handlers never switch tasks, so the answer
//! stays true until the caller next sleeps, waits or yields.

use core::sync::atomic::{AtomicBool, Ordering};

/// vCPUs ballast can run: vcpu_info lives in shared_info's legacy array,
/// which holds 32, and the online set is one 64-bit word.
pub const MAX_VCPUS: usize = 32;

/// A vCPU number.
pub type VcpuId = u32;

/// What %gs points at on each vCPU. The id is the first field: `current`
/// reads it at offset 0.
#[repr(C, align(64))]
pub struct VcpuArea {
    id: VcpuId,
}

static AREAS: [VcpuArea; MAX_VCPUS] = {
    let mut a = [const { VcpuArea { id: 0 } }; MAX_VCPUS];
    let mut i = 0;
    while i < MAX_VCPUS {
        a[i].id = i as VcpuId;
        i += 1;
    }
    a
};

/// Set once vCPU 0's GS base names its area; before that only vCPU 0 runs
/// and %gs names nothing.
static GS_READY: AtomicBool = AtomicBool::new(false);

/// The address a vCPU's kernel GS base must hold.
pub fn area_address(vcpu: VcpuId) -> u64 {
    &AREAS[vcpu as usize] as *const VcpuArea as u64
}

/// Points vCPU 0's GS base at its area (first thing at boot).
pub fn init_boot_vcpu() {
    use crate::{Hv, Hypervisor};
    // SAFETY: AREAS[0] is vCPU 0's area and a static.
    unsafe { Hv::set_kernel_gs_base(area_address(0)) }.expect("Xen refused vCPU 0's GS base");
    GS_READY.store(true, Ordering::Release);
}

/// The vCPU running this code.
#[cfg(target_os = "none")]
pub fn current() -> VcpuId {
    if !GS_READY.load(Ordering::Acquire) {
        return 0;
    }
    let id: u32;
    // SAFETY: every running vCPU's GS base names its `VcpuArea` (set at
    // boot for vCPU 0, in the start context of the others), whose first
    // field is the id.
    unsafe { core::arch::asm!("mov {0:e}, gs:[0]", out(reg) id, options(nostack, readonly, preserves_flags)) };
    id
}

/// The vCPU running this code (the simulated Xen knows).
#[cfg(not(target_os = "none"))]
pub fn current() -> VcpuId {
    let _ = &GS_READY;
    xen::sim::current_vcpu()
}

/// One `T` per vCPU.
pub struct PerVcpu<T> {
    slots: [T; MAX_VCPUS],
}

impl<T: Copy> PerVcpu<T> {
    pub const fn new(initial: T) -> Self {
        Self { slots: [initial; MAX_VCPUS] }
    }
}

impl<T> PerVcpu<T> {
    /// `vcpu`'s slot. Panics for a vCPU beyond `MAX_VCPUS`: vCPU numbers come
    /// from the kernel itself, never from outside.
    pub fn get(&self, vcpu: VcpuId) -> &T {
        &self.slots[vcpu as usize]
    }

    pub fn get_mut(&mut self, vcpu: VcpuId) -> &mut T {
        &mut self.slots[vcpu as usize]
    }

    /// The running vCPU's slot.
    pub fn here(&self) -> &T {
        self.get(current())
    }

    pub fn here_mut(&mut self) -> &mut T {
        self.get_mut(current())
    }
}
