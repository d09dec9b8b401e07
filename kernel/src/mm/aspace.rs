//! Extra address spaces: page-table trees besides the kernel's own, for
//! tasks that need mappings of their own, and the registry of every root
//! ballast owns.
//!
//! A new tree shares the kernel half (L4 slot 511, the kernel mapping) and
//! maps its own pages in the lower half. While it is being built it is not
//! pinned: its tables are ordinary writable pages. Pinning maps every table
//! frame read-only and asks Xen to validate the tree. The suspend path pins
//! every unpinned tree (the toolstack translates frame numbers only in
//! pages typed as page tables) and unpins them again afterwards, which is
//! why the registry exists.

use super::kernel_memory::with_frames;
use super::pagetable::{data_entry, entry_mfn, indices, is_present, table_entry, update_ptr};
use super::physmap::{pfn_to_mfn, set_writable};
use crate::events_mask;
use crate::platform::{self, pfn_to_va};
use crate::{Hv, Hypervisor, XenError};
use alloc::vec::Vec;
use spin::Mutex;
use xen::abi::{mmu, mmu_update};
use xen::seam::MmuExtOp;

pub type SpaceId = u32;

/// Why an address-space operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AspaceError {
    /// No space with that id (in the state the operation needs).
    NoSuchSpace(SpaceId),
    /// The address is in the kernel's upper half.
    KernelHalf(u64),
    /// No free frame for a page table.
    OutOfFrames,
    /// Xen refused an update, a pin or a root switch.
    Refused(XenError),
}

impl From<XenError> for AspaceError {
    fn from(e: XenError) -> Self {
        AspaceError::Refused(e)
    }
}

struct Space {
    id: SpaceId,
    /// The L4 and every lower table, as pfns.
    l4: u64,
    tables: Vec<u64>,
    pinned: bool,
}

/// Every address space. A lock because any task may create one while the
/// suspend path walks them; only taken with events masked.
static REGISTRY: Mutex<Vec<Space>> = Mutex::new(Vec::new());
static NEXT_ID: Mutex<SpaceId> = Mutex::new(1);

fn with_registry<R>(f: impl FnOnce(&mut Vec<Space>) -> R) -> R {
    events_mask::without_events(|| f(&mut REGISTRY.lock()))
}

fn alloc_table() -> Option<u64> {
    let pfn = with_frames(|f| f.alloc(0))?;
    // SAFETY: a fresh frame from the allocator, mapped writable.
    unsafe { core::ptr::write_bytes(pfn_to_va(pfn) as *mut u8, 0, 4096) };
    super::pagetable::count_tables(1);
    Some(pfn)
}

/// The kernel's own root (pt_base).
pub(crate) fn kernel_root_mfn() -> u64 {
    pfn_to_mfn(platform::va_to_pfn(platform::with_start_info(|si| si.pt_base)))
}

fn read(pfn: u64, i: usize) -> u64 {
    // SAFETY: table frames are mapped (read-only once pinned).
    unsafe { (pfn_to_va(pfn) as *const u64).add(i).read_volatile() }
}

/// Creates an empty tree that shares the kernel half.
pub fn create() -> Option<SpaceId> {
    let l4 = alloc_table()?;
    let kernel_l4 = pfn_to_va(platform::mfn_to_pfn(kernel_root_mfn())) as *const u64;
    // SAFETY: `l4` is a fresh writable page; the kernel L4 is mapped.
    unsafe { (pfn_to_va(l4) as *mut u64).add(511).write(kernel_l4.add(511).read_volatile()) };
    let id = {
        let mut n = NEXT_ID.lock();
        *n += 1;
        *n - 1
    };
    with_registry(|r| r.push(Space { id, l4, tables: Vec::new(), pinned: false }));
    Some(id)
}

/// Maps `pfn` writable at `va` (lower half) in space `id`, adding tables as
/// needed. Works on an unpinned tree by writing entries directly, and on a
/// pinned one through Xen.
pub fn map(id: SpaceId, va: u64, pfn: u64) -> Result<(), AspaceError> {
    let idx = indices(va);
    if idx[0] >= 256 {
        return Err(AspaceError::KernelHalf(va));
    }
    let (l4, pinned) = with_registry(|r| r.iter().find(|s| s.id == id).map(|s| (s.l4, s.pinned)))
        .ok_or(AspaceError::NoSuchSpace(id))?;
    let mut table = l4;
    for &index in &idx[..3] {
        let e = read(table, index);
        table = if is_present(e) {
            platform::mfn_to_pfn(entry_mfn(e))
        } else {
            let t = alloc_table().ok_or(AspaceError::OutOfFrames)?;
            if pinned {
                // SAFETY: `t` was just allocated for this space.
                unsafe { set_writable(t, false) }?;
            }
            write_entry(table, index, table_entry(pfn_to_mfn(t)), pinned)?;
            with_registry(|r| r.iter_mut().find(|s| s.id == id).map(|s| s.tables.push(t)));
            t
        };
    }
    write_entry(table, idx[3], data_entry(pfn_to_mfn(pfn), true), pinned)
}

fn write_entry(table: u64, i: usize, val: u64, pinned: bool) -> Result<(), AspaceError> {
    if pinned {
        // SAFETY: the entry is in a lower-half table of this space, which
        // maps only frames the space's owner handed over.
        Ok(unsafe { Hv::mmu_update(&[mmu_update { ptr: update_ptr(pfn_to_mfn(table), i), val }]) }?)
    } else {
        // SAFETY: an unpinned table is an ordinary writable page of ours.
        unsafe { (pfn_to_va(table) as *mut u64).add(i).write_volatile(val) };
        Ok(())
    }
}

fn pin_frames(l4: u64, tables: &[u64]) -> Result<(), XenError> {
    for &t in tables.iter().chain(core::iter::once(&l4)) {
        // SAFETY: the tables are this space's own frames.
        unsafe { set_writable(t, false) }?;
    }
    // SAFETY: pinning only has Xen validate the tree; no mapping changes.
    unsafe { Hv::mmuext_op(&[MmuExtOp { cmd: mmu::EXT_PIN_L4_TABLE, arg1: pfn_to_mfn(l4), arg2: 0 }]) }
}

fn unpin_frames(l4: u64, tables: &[u64]) -> Result<(), XenError> {
    // SAFETY: a space is never loaded as the root outside `with_space`,
    // which only runs on pinned spaces and switches back before returning.
    unsafe { Hv::mmuext_op(&[MmuExtOp { cmd: mmu::EXT_UNPIN_TABLE, arg1: pfn_to_mfn(l4), arg2: 0 }]) }?;
    for &t in tables.iter().chain(core::iter::once(&l4)) {
        // SAFETY: as in `pin_frames`.
        unsafe { set_writable(t, true) }?;
    }
    Ok(())
}

/// Pins space `id` (maps its tables read-only and has Xen validate them).
pub fn pin(id: SpaceId) -> Result<(), AspaceError> {
    let (l4, tables) = with_registry(|r| r.iter().find(|s| s.id == id && !s.pinned).map(|s| (s.l4, s.tables.clone())))
        .ok_or(AspaceError::NoSuchSpace(id))?;
    pin_frames(l4, &tables)?;
    with_registry(|r| r.iter_mut().find(|s| s.id == id).map(|s| s.pinned = true));
    Ok(())
}

/// Unpins space `id` so that it can be built on directly again.
pub fn unpin(id: SpaceId) -> Result<(), AspaceError> {
    let (l4, tables) = with_registry(|r| r.iter().find(|s| s.id == id && s.pinned).map(|s| (s.l4, s.tables.clone())))
        .ok_or(AspaceError::NoSuchSpace(id))?;
    unpin_frames(l4, &tables)?;
    with_registry(|r| r.iter_mut().find(|s| s.id == id).map(|s| s.pinned = false));
    Ok(())
}

/// Runs `f` with space `id` loaded as the page-table root (it must be
/// pinned), then switches back to the kernel's root.
pub fn with_space<R>(id: SpaceId, f: impl FnOnce() -> R) -> Result<R, AspaceError> {
    let l4 = with_registry(|r| r.iter().find(|s| s.id == id && s.pinned).map(|s| s.l4))
        .ok_or(AspaceError::NoSuchSpace(id))?;
    let was = events_mask::mask();
    // SAFETY: every space's L4 carries the kernel's upper-half entry
    // (copied at `create`), so the running kernel stays mapped.
    let switch = |mfn| unsafe { Hv::mmuext_op(&[MmuExtOp { cmd: mmu::EXT_NEW_BASEPTR, arg1: mfn, arg2: 0 }]) };
    let r = switch(pfn_to_mfn(l4)).map(|_| f()).map_err(AspaceError::from);
    switch(kernel_root_mfn()).expect("switching back to the kernel root");
    events_mask::restore(was);
    r
}

/// Frees space `id` and its tables (unpinning it first if needed).
pub fn destroy(id: SpaceId) {
    let Some(space) = with_registry(|r| r.iter().position(|s| s.id == id).map(|i| r.remove(i))) else { return };
    if space.pinned {
        let _ = unpin_frames(space.l4, &space.tables);
    }
    with_frames(|f| {
        for &t in space.tables.iter().chain(core::iter::once(&space.l4)) {
            let _ = f.free(t, 0);
        }
    });
    super::pagetable::uncount_tables(space.tables.len() as u64 + 1);
}

/// Suspend step: pins every space that is not pinned; returns their ids so
/// that exactly those are unpinned afterwards.
pub fn pin_all_unpinned() -> Result<Vec<SpaceId>, (SpaceId, AspaceError)> {
    let todo: Vec<SpaceId> = with_registry(|r| r.iter().filter(|s| !s.pinned).map(|s| s.id).collect());
    let mut done = Vec::new();
    for id in todo {
        if let Err(e) = pin(id) {
            unpin_list(&done);
            return Err((id, e));
        }
        done.push(id);
    }
    Ok(done)
}

/// Unpins the spaces in `ids` (the mirror of `pin_all_unpinned`).
pub fn unpin_list(ids: &[SpaceId]) {
    for &id in ids {
        if let Err(e) = unpin(id) {
            log::error!("aspace: unpinning space {} failed: {:?}", id, e);
        }
    }
}

/// (spaces, pinned) for the log.
pub fn counts() -> (usize, usize) {
    with_registry(|r| (r.len(), r.iter().filter(|s| s.pinned).count()))
}
