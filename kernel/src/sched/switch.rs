//! The context switch itself: a task's saved stack pointer, the switch
//! between two tasks' stacks, and the first frame of a new task.

use crate::events_mask;
use alloc::boxed::Box;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

/// A task's stack. Unoptimised host builds (`cargo test`) need several
/// times what the kernel does.
pub const STACK_SIZE: usize = if cfg!(target_os = "none") { 32 * 1024 } else { 256 * 1024 };

/// A switched-out task's stack pointer, in an allocation of its own so the
/// address `ballast_switch` writes to stays valid whatever happens to the
/// task list. The task is queued before it is switched out; `saved` is set
/// by `ballast_switch` only after the stack pointer is stored, and nobody
/// resumes the task before that (on one vCPU it always is by then; with
/// several, another vCPU may pick the task while its switch is under way).
#[repr(C)]
pub(super) struct SwitchFrame {
    rsp: u64,
    pub(super) saved: AtomicBool,
}

impl SwitchFrame {
    pub(super) fn new(rsp: u64) -> Box<Self> {
        Box::new(Self { rsp, saved: AtomicBool::new(true) })
    }

    /// Marks the stack pointer as about to be overwritten by a switch away.
    pub(super) fn begin_save(&self) {
        self.saved.store(false, Ordering::Relaxed);
    }
}

global_asm!(
    r#"
    .globl ballast_switch
    /* ballast_switch(save_rsp: *mut u64 [rdi], next_rsp: u64 [rsi],
                         saved: *mut u8 [rdx]) */
    ballast_switch:
        push %rbp
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, (%rdi)
        /* x86 keeps stores in order: the flag is seen after the rsp. */
        movb $1, (%rdx)
        mov %rsi, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        pop %rbp
        ret

    .globl ballast_task_trampoline
    ballast_task_trampoline:
        mov %r12, %rdi
        call ballast_task_start
        ud2
    "#,
    options(att_syntax)
);

extern "C" {
    fn ballast_switch(save_rsp: *mut u64, next_rsp: u64, saved: *mut u8);
    fn ballast_task_trampoline();
}

pub(super) type Entry = Box<dyn FnOnce() + Send + 'static>;

#[no_mangle]
extern "C" fn ballast_task_start(entry: *mut Entry) -> ! {
    // A new task starts with events masked from the switch that ran it.
    events_mask::unmask();
    // Its start is a safe point: a task queued before a freeze parks here.
    super::try_to_freeze();
    // SAFETY: `new_task_stack` leaked this box for exactly this call.
    let f = unsafe { Box::from_raw(entry) };
    (*f)();
    super::exit()
}

/// A zeroed stack for a new task running `f`, and the stack pointer that
/// makes `ballast_switch` start it in `ballast_task_start`.
pub(super) fn new_task_stack(f: Entry) -> (Box<[u8]>, u64) {
    let mut stack = alloc::vec![0u8; STACK_SIZE].into_boxed_slice();
    let top = (stack.as_mut_ptr() as u64 + STACK_SIZE as u64) & !15;
    let entry = Box::into_raw(Box::new(f));
    // Six callee-saved registers (r12 carries the entry), then the return
    // address into the trampoline, placed so that the trampoline's `call`
    // sees an ABI-aligned stack.
    let ret_slot = top - 24;
    let rsp = ret_slot - 6 * 8;
    // SAFETY: all slots lie inside the freshly allocated stack.
    unsafe {
        let frame = rsp as *mut u64;
        for i in 0..6 {
            frame.add(i).write(0);
        }
        frame.add(3).write(entry as u64); // r12
        (ret_slot as *mut u64).write(ballast_task_trampoline as *const () as u64);
    }
    (stack, rsp)
}

/// Saves the running context's stack pointer in `save` and resumes the
/// task whose stack pointer is in `next`, once it has been saved. Returns
/// when something switches back to `save`.
///
/// # Safety
/// Events are masked. Both frames stay allocated until this returns.
/// `save` is the running context's and its `saved` flag was cleared under
/// the scheduler lock, before any other vCPU could take it. `next` is a
/// task no other vCPU runs: its stack pointer was stored by
/// `ballast_switch` or built by `new_task_stack`, and that stack is alive.
pub(super) unsafe fn switch_to(save: *mut SwitchFrame, next: *const SwitchFrame) {
    // SAFETY: the caller keeps both frames alive; `next`'s stack pointer is
    // read only after its `saved` flag says the store finished.
    unsafe {
        while !(*next).saved.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        ballast_switch(core::ptr::addr_of_mut!((*save).rsp), (*next).rsp, (*save).saved.as_ptr() as *mut u8)
    }
}
