//! A fresh vCPU's first instructions: the register state `VCPUOP_initialise`
//! gives it, and the stub it starts in.

use crate::percpu::{self, VcpuId, MAX_VCPUS};
use crate::{Hv, Hypervisor, XenError};
use alloc::boxed::Box;
use core::arch::global_asm;
use spin::Mutex;
use xen::abi::{vcpu, vcpu_guest_context, FLAT_KERNEL_CS, FLAT_KERNEL_DS, FLAT_KERNEL_SS};

/// A vCPU's boot stack: its idle task lives on it.
const STACK_SIZE: usize = 64 * 1024;

/// Each vCPU's boot stack top, allocated on its first start and kept for
/// good: a fresh start in a new domain reuses it (the idle task it held
/// starts over). Locked because only vCPU 0 starts vCPUs, but any may read.
static STACKS: Mutex<[u64; MAX_VCPUS]> = Mutex::new([0; MAX_VCPUS]);

global_asm!(
    r#"
    .globl ballast_secondary_entry
    /* Xen starts the vCPU here with rsp at its stack top, events masked. */
    ballast_secondary_entry:
        and $-16, %rsp
        call ballast_secondary_main
        ud2
    "#,
    options(att_syntax)
);

extern "C" {
    fn ballast_secondary_entry();
    fn ballast_event_upcall();
    fn ballast_failsafe();
}

#[no_mangle]
extern "C" fn ballast_secondary_main() -> ! {
    super::secondary_main()
}

fn stack_top(v: VcpuId) -> u64 {
    let mut stacks = crate::events_mask::without_events(|| *STACKS.lock());
    if stacks[v as usize] == 0 {
        let stack: Box<[u8]> = alloc::vec![0u8; STACK_SIZE].into_boxed_slice();
        let top = (Box::leak(stack).as_ptr() as u64 + STACK_SIZE as u64) & !15;
        stacks[v as usize] = top;
        crate::events_mask::without_events(|| STACKS.lock()[v as usize] = top);
    }
    stacks[v as usize]
}

/// `VCPUOP_initialise` for vCPU `v`, down and without a context: once
/// `VCPUOP_up`, it starts in `ballast_secondary_entry` on its own stack, with
/// the kernel's page tables, Xen's flat kernel segments (no GDT of its
/// own, like vCPU 0), and its GS base on its per-vCPU area.
pub(super) fn initialise(v: VcpuId) -> Result<(), XenError> {
    let top = stack_top(v);
    // SAFETY: vcpu_guest_context is plain integers; all-zero is a valid value.
    let mut ctx: Box<vcpu_guest_context> = Box::new(unsafe { core::mem::zeroed() });
    ctx.flags = vcpu::VGCF_IN_KERNEL;
    ctx.user_regs.__bindgen_anon_8.rip = ballast_secondary_entry as *const () as u64;
    ctx.user_regs.__bindgen_anon_10.rsp = top;
    ctx.user_regs.cs = FLAT_KERNEL_CS;
    ctx.user_regs.ss = FLAT_KERNEL_SS;
    ctx.user_regs.ds = FLAT_KERNEL_DS;
    ctx.user_regs.es = FLAT_KERNEL_DS;
    ctx.user_regs.__bindgen_anon_9.rflags = 0x1000; // IOPL 1, as Xen expects of a PV kernel
    ctx.kernel_ss = FLAT_KERNEL_SS as u64;
    ctx.kernel_sp = top;
    ctx.ctrlreg[3] = crate::mm::aspace::kernel_root_mfn() << 12;
    ctx.event_callback_eip = ballast_event_upcall as *const () as u64;
    ctx.failsafe_callback_eip = ballast_failsafe as *const () as u64;
    ctx.gs_base_kernel = percpu::area_address(v);
    // SAFETY: the entry stub is written for this start, the stack is v's
    // alone, the root is the kernel's (pinned by Xen since boot) and the GS
    // base is v's area.
    unsafe { Hv::vcpu_initialise(v, &ctx) }
}
