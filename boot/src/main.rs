//! ballast's entry point.
//!
//! Xen loads this ELF at VIRT_BASE as the notes below describe, maps the
//! start_info page and a bootstrap stack, and jumps to `_start` with the
//! start_info address in rsi and event delivery masked. `_start` moves to a
//! stack of ballast's own and hands over to the kernel.

#![no_std]
#![no_main]

use core::arch::global_asm;
use core::panic::PanicInfo;

// Xen ELF notes (`elfnote.h`). Each note: name size, descriptor size, type,
// the name "Xen", then the descriptor, every part padded to 4 bytes.
global_asm!(
    r#"
    .macro xen_note type, desctype, descdata:vararg
        .balign 4
        .long 4
        .long 6f - 5f
        .long \type
        .asciz "Xen"
    5:  \desctype \descdata
    6:  .balign 4
    .endm

    .pushsection .note.Xen, "a", @note
    xen_note 6,  .asciz, "ballast"                /* GUEST_OS */
    xen_note 7,  .asciz, "0.1.0"                  /* GUEST_VERSION */
    xen_note 5,  .asciz, "xen-3.0"                /* XEN_VERSION */
    xen_note 8,  .asciz, "generic"                /* LOADER */
    xen_note 3,  .quad,  0xffffffff80000000       /* VIRT_BASE */
    xen_note 4,  .quad,  0xffffffff80000000       /* PADDR_OFFSET */
    xen_note 1,  .quad,  _start                   /* ENTRY */
    xen_note 2,  .quad,  HYPERCALL_PAGE           /* HYPERCALL_PAGE */
    xen_note 10, .asciz, "!writable_page_tables"  /* FEATURES */
    xen_note 9,  .asciz, "yes"                    /* PAE_MODE */
    xen_note 14, .long,  1                        /* SUSPEND_CANCEL */
    .popsection

    .pushsection .text.boot, "ax"
    .globl _start
    _start:
        lea boot_stack_top(%rip), %rsp
        mov %rsi, %rdi
        call boot_main
        ud2
    .popsection

    .pushsection .bss.boot_stack, "aw", @nobits
    .balign 4096
    boot_stack:
        .skip 65536
    boot_stack_top:
    .popsection
    "#,
    options(att_syntax)
);

/// Called from `_start` on the boot stack.
#[no_mangle]
extern "C" fn boot_main(start_info: *mut xen::abi::start_info) -> ! {
    // SAFETY: Xen passes the address of the start_info page, which stays
    // mapped in the bootstrap region for the life of the domain.
    let opts = unsafe { kernel::start::kmain(start_info) };
    drivers::start(&opts);
    kernel::sched::idle()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    kernel::panic::report_and_crash(info)
}
