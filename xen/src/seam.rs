//! The one seam between ballast and the hypervisor.
//!
//! Everything the kernel needs from Xen goes through `Hypervisor`: the
//! hypercalls, where guest memory is addressed, and the machine-to-physical
//! table. It is implemented twice: by `hv::Xen` (a zero-sized type issuing
//! real hypercalls, bare-metal target only) and by `sim::SimXen` (one
//! simulated Xen, for host tests). The kernel names the implementation
//! through a single alias, `kernel::Hv`, the way Hubris's kernel names its
//! architecture only through `ArchImpl`.
//!
//! Calls are associated functions, not methods: there is one hypervisor
//! per guest, and a handle threaded through every layer would say nothing
//! more. What can corrupt memory when misused is `unsafe fn` with its
//! contract under `# Safety`.

use crate::abi::{mmu_update, trap_info, vcpu_guest_context};

/// A negative errno returned by Xen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenError(pub i64);

impl XenError {
    pub const EPERM: XenError = XenError(-1);
    pub const ENOENT: XenError = XenError(-2);
    pub const ENOMEM: XenError = XenError(-12);
    pub const EBUSY: XenError = XenError(-16);
    pub const EEXIST: XenError = XenError(-17);
    pub const EINVAL: XenError = XenError(-22);
    pub const ENOSPC: XenError = XenError(-28);

    /// `rc` as a result: Xen's negative errno values are errors.
    pub fn check(rc: i64) -> Result<u64, XenError> {
        if rc < 0 {
            Err(XenError(rc))
        } else {
            Ok(rc as u64)
        }
    }
}

/// One `mmuext_op` (pin, unpin, new base pointer, TLB flush).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuExtOp {
    pub cmd: u32,
    pub arg1: u64,
    pub arg2: u64,
}

/// What ballast asks of the hypervisor.
pub trait Hypervisor {
    /// Where pseudo-physical memory is addressed: pfn N is at
    /// `direct_map_base() + N * 4096` (2 MiB aligned).
    fn direct_map_base() -> u64;

    /// `(major, minor)` of the running hypervisor.
    fn version() -> (u32, u32);
    /// The extra version string, e.g. ".5+72-g01140da4e8".
    fn extraversion(buf: &mut [u8; 16]) -> &str;

    /// Ends the domain with `reason` (poweroff, reboot, crash).
    fn shutdown(reason: u32) -> !;
    /// Suspends the domain: 0 when running again in a new domain, 1 when
    /// the suspend was cancelled and the old domain continues.
    ///
    /// # Safety
    /// The caller must have brought the guest into the state the toolstack
    /// expects (tasks frozen, roots pinned, start_info canonical,
    /// shared_info unmapped); `start_info_mfn` must be start_info's frame.
    unsafe fn suspend(start_info_mfn: u64) -> i64;
    /// Gives up the CPU until an event is pending (Xen unmasks event
    /// delivery atomically with blocking).
    fn block();
    /// Lets Xen run someone else for a moment.
    fn yield_now();
    /// A cheap hypercall, on whose way back Xen delivers pending events.
    fn force_event_delivery();
    /// Arms this vCPU's one-shot timer for system time `deadline_ns` (0 cancels).
    fn set_timer(deadline_ns: u64) -> Result<(), XenError>;
    /// Installs the virtual IDT.
    ///
    /// # Safety
    /// `table` must end with a zero entry and name handlers that follow
    /// Xen's PV exception frame conventions.
    unsafe fn set_trap_table(table: &[trap_info]) -> Result<(), XenError>;
    /// Registers the event upcall and failsafe entry points.
    ///
    /// # Safety
    /// Both addresses must be entry points written for Xen's callback frames.
    unsafe fn set_callbacks(event: u64, failsafe: u64) -> Result<(), XenError>;

    /// Sets this vCPU's kernel GS base, through which the kernel finds its
    /// per-vCPU data.
    ///
    /// # Safety
    /// `base` must be the address of this vCPU's own per-vCPU area, which
    /// must stay valid for as long as the vCPU runs.
    unsafe fn set_kernel_gs_base(base: u64) -> Result<(), XenError>;

    /// Gives down vCPU `vcpu`, never started in this domain, its first
    /// register state; `vcpu_up` then starts it there.
    ///
    /// # Safety
    /// `ctx` must name an entry point, a stack nothing else uses, the
    /// kernel's own page-table root and a GS base as `set_kernel_gs_base`
    /// wants: the vCPU runs the kernel's code from there on its own.
    unsafe fn vcpu_initialise(vcpu: u32, ctx: &vcpu_guest_context) -> Result<(), XenError>;
    /// Starts (or restarts, where it stopped) vCPU `vcpu`.
    fn vcpu_up(vcpu: u32) -> Result<(), XenError>;
    /// Stops vCPU `vcpu` (the calling one included) until `vcpu_up`.
    fn vcpu_down(vcpu: u32) -> Result<(), XenError>;
    /// Whether vCPU `vcpu` runs; `ENOENT` when the domain has no such vCPU.
    fn vcpu_is_up(vcpu: u32) -> Result<bool, XenError>;
    /// Stops the 100 Hz periodic timer Xen gives every PV vCPU (in every
    /// new domain too): the guest's one-shot timer is all it needs.
    fn stop_periodic_timer(vcpu: u32) -> Result<(), XenError>;

    /// Points the page-table entry for `va` at `pte` (0 unmaps).
    ///
    /// # Safety
    /// Changing what `va` maps changes what every reference into that page
    /// sees: the caller must own the page at `va` (or be unmapping a page
    /// nothing refers to any more) and the frame `pte` names.
    unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<(), XenError>;
    /// Applies a batch of page-table entry or m2p updates.
    ///
    /// # Safety
    /// As `update_va_mapping`, for every entry the batch writes.
    unsafe fn mmu_update(reqs: &[mmu_update]) -> Result<(), XenError>;
    /// Pins, unpins, switches page-table roots, flushes TLBs.
    ///
    /// # Safety
    /// A new base pointer must map the running kernel; a table unpinned
    /// must not be in use as a root.
    unsafe fn mmuext_op(ops: &[MmuExtOp]) -> Result<(), XenError>;
    /// Gives machine frames (extents of 2^`order`) back to Xen; returns how
    /// many extents it took, from the front.
    ///
    /// # Safety
    /// No mapping of those frames may remain and nothing may use them.
    unsafe fn decrease_reservation(mfns: &[u64], order: u32) -> Result<usize, XenError>;
    /// Backs the pfns in `extents` (first pfn of each 2^`order` block) and
    /// overwrites each with its first machine frame; returns how many
    /// extents were backed, from the front.
    fn populate_physmap(extents: &mut [u64], order: u32) -> Result<usize, XenError>;
    /// The most pages the domain may hold (`maxmem`).
    fn maximum_reservation() -> Result<u64, XenError>;
    /// The pfn Xen's machine-to-physical table names for `mfn`.
    fn mfn_to_pfn(mfn: u64) -> u64;

    /// Binds virtual IRQ `virq` on `vcpu` to a new port.
    fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, XenError>;
    /// A new inter-processor event channel delivered to `vcpu`.
    fn bind_ipi(vcpu: u32) -> Result<u32, XenError>;
    /// A new port that `remote_dom` may bind to.
    fn alloc_unbound(remote_dom: u16) -> Result<u32, XenError>;
    /// Closes `port`.
    fn close_port(port: u32) -> Result<(), XenError>;
    /// Clears `port`'s mask bit; Xen re-raises it if it is pending.
    fn unmask_port(port: u32);
    /// Notifies the other end of `port`.
    fn send(port: u32);

    /// Sets up the grant table with `frames.len()` frames, writing their
    /// machine frame numbers into `frames`.
    fn grant_setup_table(frames: &mut [u64]) -> Result<(), XenError>;
    /// `(frames now, frames Xen allows)`.
    fn grant_query_size() -> Result<(u32, u32), XenError>;
}
