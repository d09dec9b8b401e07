//! Masking event delivery, the PV guest's "interrupts off".
//!
//! Xen delivers events through the upcall only while the vCPU's
//! `evtchn_upcall_mask` is clear. Code that takes a lock the upcall also
//! takes (the console, the scheduler's run queue) masks events first so the
//! upcall can never spin on a lock its own vCPU holds.

use crate::platform;
use crate::{Hv, Hypervisor};
use core::sync::atomic::{compiler_fence, Ordering};

/// Masks events and returns whether they were masked already.
pub fn mask() -> bool {
    let v = platform::this_vcpu_info();
    if v.is_null() {
        return true; // before shared_info is mapped, events are masked from entry
    }
    // SAFETY: vcpu_info is mapped; the mask byte is only written by this vCPU.
    unsafe {
        let m = core::ptr::addr_of_mut!((*v).evtchn_upcall_mask);
        let was = m.read_volatile();
        m.write_volatile(1);
        compiler_fence(Ordering::SeqCst);
        was != 0
    }
}

/// Unmasks events, and has anything already pending delivered now.
pub fn unmask() {
    let v = platform::this_vcpu_info();
    if v.is_null() {
        return;
    }
    // SAFETY: as in `mask`.
    unsafe {
        compiler_fence(Ordering::SeqCst);
        core::ptr::addr_of_mut!((*v).evtchn_upcall_mask).write_volatile(0);
        compiler_fence(Ordering::SeqCst);
        if core::ptr::addr_of!((*v).evtchn_upcall_pending).read_volatile() != 0 {
            Hv::force_event_delivery();
        }
    }
}

/// Restores the state `mask` returned.
pub fn restore(was_masked: bool) {
    if !was_masked {
        unmask();
    }
}

/// Runs `f` with events masked.
pub fn without_events<R>(f: impl FnOnce() -> R) -> R {
    let was = mask();
    let r = f();
    restore(was);
    r
}
