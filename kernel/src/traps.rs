//! Exception and event entry points.
//!
//! Xen delivers both to the 64-bit PV kernel on its current stack with rcx
//! and r11 pushed on top of the hardware-style frame (rip, cs, rflags, rsp,
//! ss). Exceptions are fatal in ballast: the handler reports the vector,
//! error code and registers and panics. The event upcall saves every
//! register, runs the dispatcher, and returns through the `iret` hypercall.

/// Register state saved by the trap entry stubs, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[cfg(target_os = "none")]
mod entry;

/// Installs the exception handlers and the event callback.
pub fn init() {
    #[cfg(target_os = "none")]
    entry::install();
    // The simulated Xen runs the upcall as a plain function call.
    #[cfg(not(target_os = "none"))]
    // SAFETY: the simulated Xen's contract: the event callback is the
    // address of an `extern "C" fn()`; the failsafe callback is unused.
    unsafe {
        use crate::{Hv, Hypervisor};
        Hv::set_callbacks(ballast_handle_upcall as *const () as u64, 0).expect("set_callbacks");
    }
}

#[no_mangle]
extern "C" fn ballast_trap_handler(frame: &TrapFrame) -> ! {
    let cr2 = {
        let v = crate::platform::this_vcpu_info();
        // SAFETY: vcpu_info is mapped when non-null; Xen stores the faulting
        // address of a page fault in arch.cr2.
        if v.is_null() {
            0
        } else {
            unsafe { core::ptr::addr_of!((*v).arch.cr2).read_volatile() }
        }
    };
    let name = match frame.vector {
        0 => "divide error",
        3 => "breakpoint",
        6 => "invalid opcode",
        8 => "double fault",
        13 => "general protection fault",
        14 => "page fault",
        255 => "failsafe callback (bad segment on return)",
        _ => "exception",
    };
    let (task, task_name) =
        crate::sched::current_for_report().unwrap_or((crate::sched::TaskId::MAX, "(scheduler locked)"));
    panic!(
        "{} (vector {}, error {:#x}) in task {} ({}) at rip {:#x}, rsp {:#x}, cr2 {:#x}, rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x} r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
        name, frame.vector, frame.error_code, task, task_name, frame.rip, frame.rsp, cr2,
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp,
        frame.r12, frame.r13, frame.r14, frame.r15
    );
}

#[no_mangle]
extern "C" fn ballast_handle_upcall() {
    crate::events::handle_upcall();
}
