//! Raw hypercalls through the hypercall page.
//!
//! Xen fills `HYPERCALL_PAGE` at domain build time (the ELF note
//! HYPERCALL_PAGE names it); hypercall N is a `call` to offset N*32.
//! Arguments go in rdi, rsi, rdx, r10, r8 and the result comes back in rax.
//! Only the bare-metal build has the page; host tests use the simulator.

use core::arch::{asm, global_asm};

// The page lives in .text so it is mapped executable; Xen writes it through
// its own mapping. The name is also the symbol `xen-sys` expects.
global_asm!(
    ".pushsection .text.hypercall_page, \"ax\"",
    ".balign 4096",
    ".globl HYPERCALL_PAGE",
    "HYPERCALL_PAGE:",
    ".fill 4096, 1, 0xcc",
    ".popsection",
);

extern "C" {
    static HYPERCALL_PAGE: [u8; 4096];
}

/// Address of the stub for hypercall `nr`.
pub fn entry(nr: u32) -> usize {
    core::ptr::addr_of!(HYPERCALL_PAGE) as usize + nr as usize * 32
}

/// Issues hypercall `nr` with up to five arguments.
///
/// # Safety
/// The arguments must be valid for `nr` as the Xen ABI defines it: pointers
/// must name live, correctly laid out memory for the duration of the call.
#[inline]
pub unsafe fn hypercall5(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: the stub is Xen's; it preserves everything but the registers
    // listed as clobbered here. The stack is ABI-aligned for the `call`
    // because `nostack` is not given.
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) entry(nr),
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// # Safety
/// As [`hypercall5`].
#[inline]
pub unsafe fn hypercall3(nr: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, a3, 0, 0) }
}

/// # Safety
/// As [`hypercall5`].
#[inline]
pub unsafe fn hypercall2(nr: u32, a1: u64, a2: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, 0, 0, 0) }
}
