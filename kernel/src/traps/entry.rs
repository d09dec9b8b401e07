//! The entry stubs Xen jumps to: one per exception vector, the event
//! upcall and the failsafe callback, all written for Xen's PV frames (the
//! upcall returns through the `iret` hypercall in the hypercall page).

use crate::{Hv, Hypervisor};
use core::arch::global_asm;
use xen::abi::{trap_info, FLAT_KERNEL_CS};

macro_rules! save_all {
    () => {
        "push %rax; push %rbx; push %rcx; push %rdx; push %rsi; push %rdi; push %rbp;
         push %r8; push %r9; push %r10; push %r11; push %r12; push %r13; push %r14; push %r15"
    };
}
macro_rules! restore_all {
    () => {
        "pop %r15; pop %r14; pop %r13; pop %r12; pop %r11; pop %r10; pop %r9; pop %r8;
         pop %rbp; pop %rdi; pop %rsi; pop %rdx; pop %rcx; pop %rbx; pop %rax"
    };
}

// One stub per vector: restore the rcx/r11 Xen pushed (so the saved frame
// holds the real values), push a zero error code where the CPU has none,
// push the vector, and join the common path.
global_asm!(
    r#"
    .macro trap_stub vec, has_error
    .globl ballast_trap_\vec
    ballast_trap_\vec:
        pop %rcx
        pop %r11
        .if \has_error == 0
        push $0
        .endif
        push $\vec
        jmp ballast_trap_common
    .endm
    trap_stub 0, 0
    trap_stub 1, 0
    trap_stub 2, 0
    trap_stub 3, 0
    trap_stub 4, 0
    trap_stub 5, 0
    trap_stub 6, 0
    trap_stub 7, 0
    trap_stub 8, 1
    trap_stub 9, 0
    trap_stub 10, 1
    trap_stub 11, 1
    trap_stub 12, 1
    trap_stub 13, 1
    trap_stub 14, 1
    trap_stub 16, 0
    trap_stub 17, 1
    trap_stub 18, 0
    trap_stub 19, 0

    ballast_trap_common:
    "#,
    save_all!(),
    r#"
        mov %rsp, %rdi
        and $-16, %rsp
        call ballast_trap_handler
        ud2

    .globl ballast_event_upcall
    ballast_event_upcall:
        pop %rcx
        pop %r11
    "#,
    save_all!(),
    r#"
        mov %rsp, %rbx
        and $-16, %rsp
        call ballast_handle_upcall
        mov %rbx, %rsp
    "#,
    restore_all!(),
    r#"
        /* iret hypercall: the stub pushes rcx, r11, rax on top of flags. */
        push $0
        jmp HYPERCALL_PAGE + 23 * 32

    .globl ballast_failsafe
    ballast_failsafe:
        pop %rcx
        pop %r11
        push $0
        push $255
        jmp ballast_trap_common
    "#,
    options(att_syntax)
);

extern "C" {
    fn ballast_event_upcall();
    fn ballast_failsafe();
}

const VECTORS: [u8; 19] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19];

fn stub_address(vector: u8) -> u64 {
    extern "C" {
        fn ballast_trap_0();
        fn ballast_trap_1();
        fn ballast_trap_2();
        fn ballast_trap_3();
        fn ballast_trap_4();
        fn ballast_trap_5();
        fn ballast_trap_6();
        fn ballast_trap_7();
        fn ballast_trap_8();
        fn ballast_trap_9();
        fn ballast_trap_10();
        fn ballast_trap_11();
        fn ballast_trap_12();
        fn ballast_trap_13();
        fn ballast_trap_14();
        fn ballast_trap_16();
        fn ballast_trap_17();
        fn ballast_trap_18();
        fn ballast_trap_19();
    }
    let f: unsafe extern "C" fn() = match vector {
        0 => ballast_trap_0,
        1 => ballast_trap_1,
        2 => ballast_trap_2,
        3 => ballast_trap_3,
        4 => ballast_trap_4,
        5 => ballast_trap_5,
        6 => ballast_trap_6,
        7 => ballast_trap_7,
        8 => ballast_trap_8,
        9 => ballast_trap_9,
        10 => ballast_trap_10,
        11 => ballast_trap_11,
        12 => ballast_trap_12,
        13 => ballast_trap_13,
        14 => ballast_trap_14,
        16 => ballast_trap_16,
        17 => ballast_trap_17,
        18 => ballast_trap_18,
        _ => ballast_trap_19,
    };
    f as usize as u64
}

/// Installs the trap table and the event/failsafe callbacks.
pub(super) fn install() {
    let mut table = [trap_info { vector: 0, flags: 0, cs: 0, address: 0 }; VECTORS.len() + 1];
    for (slot, &v) in table.iter_mut().zip(VECTORS.iter()) {
        // int3 (3) and into (4) may be raised by an `int` instruction: DPL 3.
        let dpl = if v == 3 || v == 4 { 3 } else { 0 };
        *slot = trap_info { vector: v, flags: dpl, cs: FLAT_KERNEL_CS, address: stub_address(v) };
    }
    // SAFETY: the table ends with a zero entry and names stubs written for
    // Xen's PV exception frame; the callbacks follow the upcall frame.
    unsafe {
        Hv::set_trap_table(&table).expect("set_trap_table");
        Hv::set_callbacks(ballast_event_upcall as *const () as u64, ballast_failsafe as *const () as u64)
            .expect("set_callbacks");
    }
}
