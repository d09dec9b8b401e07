//! The pages Xen shares with the guest: start_info, shared_info, and the
//! machine-to-physical table, plus the kernel's view of pseudo-physical
//! memory (pfn N lives at `Hv::direct_map_base() + N * 4096`).

use crate::percpu::{self, VcpuId};
use crate::{Hv, Hypervisor};
use core::ptr::{addr_of_mut, null_mut};
use core::sync::atomic::{AtomicPtr, Ordering};
use xen::abi::{self, shared_info, start_info, vcpu_info};

static START_INFO: AtomicPtr<start_info> = AtomicPtr::new(null_mut());
static SHARED_INFO: AtomicPtr<shared_info> = AtomicPtr::new(null_mut());

#[repr(C, align(4096))]
struct PageSlot([u8; 4096]);

/// The virtual page where shared_info is mapped. It is a page of the image
/// set aside for this: a slot of its own, so that the suspend path can clear
/// exactly this entry (a page-table entry still naming shared_info's frame
/// at suspend time wrecks the restore).
static mut SHARED_INFO_SLOT: PageSlot = PageSlot([0; 4096]);

/// Records the start_info page Xen passed at entry.
///
/// # Safety
/// `si` must be the start_info pointer from `_start`.
pub unsafe fn init(si: *mut start_info) {
    START_INFO.store(si, Ordering::Release);
}

/// The start_info page. The suspend path rewrites some of its fields and
/// the toolstack rewrites others across a restore, so it is handed out as a
/// raw pointer; readers copy what they need.
pub fn start_info_ptr() -> *mut start_info {
    START_INFO.load(Ordering::Acquire)
}

/// Reads a field of start_info.
pub fn with_start_info<R>(f: impl FnOnce(&start_info) -> R) -> R {
    // SAFETY: set once at boot to a page that stays mapped.
    f(unsafe { &*start_info_ptr() })
}

fn shared_info_slot_va() -> u64 {
    addr_of_mut!(SHARED_INFO_SLOT) as u64
}

/// Maps the shared_info frame that start_info names into its slot.
pub fn map_shared_info() {
    let maddr = with_start_info(|si| si.shared_info);
    let entry = crate::mm::pagetable::data_entry(maddr >> 12, true);
    // SAFETY: the slot is shared_info's own page of the image.
    unsafe { Hv::update_va_mapping(shared_info_slot_va(), entry, abi::mmu::UVMF_INVLPG) }
        .expect("Xen refused to map shared_info");
    SHARED_INFO.store(shared_info_slot_va() as *mut shared_info, Ordering::Release);
}

/// Clears the shared_info mapping (before suspending).
pub fn unmap_shared_info() {
    SHARED_INFO.store(null_mut(), Ordering::Release);
    // SAFETY: SHARED_INFO is cleared first; readers check it for null.
    unsafe { Hv::update_va_mapping(shared_info_slot_va(), 0, abi::mmu::UVMF_INVLPG) }
        .expect("Xen refused to unmap shared_info");
}

/// shared_info, or null while it is not mapped.
pub fn shared_info() -> *mut shared_info {
    SHARED_INFO.load(Ordering::Acquire)
}

/// `vcpu`'s vcpu_info inside shared_info, or null while it is not mapped.
pub fn vcpu_info(vcpu: VcpuId) -> *mut vcpu_info {
    let si = shared_info();
    if si.is_null() || vcpu as usize >= percpu::MAX_VCPUS {
        return null_mut();
    }
    // SAFETY: shared_info is mapped and holds MAX_VCPUS vcpu_info slots.
    unsafe { addr_of_mut!((*si).vcpu_info[vcpu as usize]) }
}

/// The running vCPU's vcpu_info, or null while shared_info is not mapped.
pub fn this_vcpu_info() -> *mut vcpu_info {
    vcpu_info(percpu::current())
}

/// The pfn Xen's m2p table gives for machine frame `mfn`.
pub fn mfn_to_pfn(mfn: u64) -> u64 {
    Hv::mfn_to_pfn(mfn)
}

/// The kernel virtual address of pfn `pfn`.
pub fn pfn_to_va(pfn: u64) -> u64 {
    Hv::direct_map_base() + (pfn << abi::PAGE_SHIFT)
}

/// The pfn behind a kernel virtual address.
pub fn va_to_pfn(va: u64) -> u64 {
    (va - Hv::direct_map_base()) >> abi::PAGE_SHIFT
}
