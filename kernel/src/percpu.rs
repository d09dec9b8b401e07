//! Which vCPU code runs on, and state kept per vCPU.
//!
//! Everything Xen keeps per vCPU (vcpu_info with its event mask, pending
//! bits and pvclock; the one-shot timer; the timer VIRQ) and everything the
//! scheduler keeps per vCPU (the running task, the idle task, the armed
//! deadline) is indexed by vCPU through this module. ballast brings up
//! vCPU 0 only, so `current` is 0; a second vCPU changes `current` and
//! starts more slots, not the code that uses them.

/// vCPUs whose vcpu_info lives in shared_info (the legacy array).
pub const MAX_VCPUS: usize = 32;

/// A vCPU number.
pub type VcpuId = u32;

/// The vCPU running this code.
pub fn current() -> VcpuId {
    0
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
