//! Pseudo-physical memory on the real Xen: the p2m table, the p2m frame
//! lists the toolstack reads to save the domain, and the kernel mapping of
//! every pfn at `KERNEL_BASE + pfn * 4096`.
//!
//! At boot Xen maps only the bootstrap region. `init` extends that mapping
//! to all of RAM, moves the p2m into an array of ballast's own sized for the
//! domain's maximum (so memory can grow up to static-max), and publishes the
//! frame lists in shared_info.

use super::pagetable::{self, data_entry, entry_mfn, indices, is_present, table_entry, update_ptr};
use crate::platform::{self, pfn_to_va};
use crate::{Hv, Hypervisor, XenError};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;
use xen::abi::{mmu, mmu_update, INVALID_MFN};

/// The p2m array (pfn -> mfn) and its size. Written at boot; afterwards
/// only by the balloon and the resume path, which serialise through
/// `P2M_LOCK`.
static P2M_BASE: AtomicU64 = AtomicU64::new(0);
static MAX_PFN: AtomicUsize = AtomicUsize::new(0);
static P2M_LOCK: Mutex<()> = Mutex::new(());

/// The frame-list pages (pfns), kept for rebuilding after a restore.
static FRAME_LIST_LIST_PFN: AtomicU64 = AtomicU64::new(0);
static FRAME_LIST_FIRST_PFN: AtomicU64 = AtomicU64::new(0);

/// The highest pfn the kernel mapping can reach: KERNEL_BASE + 2 GiB ends
/// the address space; the last 64 MiB hold the p2m.
pub const MAX_SUPPORTED_PFN: usize = (2048 - 64) * 256;

/// The p2m lives in a virtual region of its own, right after the pfn
/// mapping, so that it can grow page by page (toward static-max) while
/// staying one array. Its pages are ordinary frames; `P2M_PAGES` names them.
const P2M_VA_SLOT: u64 = MAX_SUPPORTED_PFN as u64;
const MAX_P2M_PAGES: usize = MAX_SUPPORTED_PFN * 8 / 4096;
/// Frame-list pages kept for the largest p2m (512 p2m pages per list page).
const FRAME_LIST_PAGES: u64 = MAX_P2M_PAGES.div_ceil(512) as u64;

/// The pfn of each p2m page, for the frame lists. Written at boot and when
/// the p2m grows (serialised by `P2M_LOCK`).
static P2M_PAGES: Mutex<[u64; MAX_P2M_PAGES]> = Mutex::new([0; MAX_P2M_PAGES]);

/// A bump allocator for boot-time frames, used before the frame allocator
/// exists. Only pfns inside the current kernel mapping are handed out.
pub struct BootFrames {
    pub next: u64,
    pub mapped_end: u64,
}

impl BootFrames {
    pub fn take(&mut self) -> u64 {
        assert!(self.next < self.mapped_end, "boot frames exhausted the mapped region");
        let pfn = self.next;
        self.next += 1;
        // SAFETY: pfn is mapped and unused (above everything Xen placed).
        unsafe { core::ptr::write_bytes(pfn_to_va(pfn) as *mut u8, 0, 4096) };
        pfn
    }
}

pub fn max_pfn() -> usize {
    MAX_PFN.load(Ordering::Acquire)
}

fn p2m_ptr() -> *mut u64 {
    P2M_BASE.load(Ordering::Acquire) as *mut u64
}

/// The machine frame behind `pfn` (INVALID_MFN if ballooned out).
pub fn pfn_to_mfn(pfn: u64) -> u64 {
    let p = p2m_ptr();
    if p.is_null() {
        // Before `init`, Xen's own list covers nr_pages.
        let list = platform::with_start_info(|si| si.mfn_list) as *const u64;
        // SAFETY: Xen's mfn_list is mapped and has nr_pages entries.
        return unsafe { list.add(pfn as usize).read_volatile() };
    }
    if pfn as usize >= max_pfn() {
        return INVALID_MFN;
    }
    // SAFETY: p2m has max_pfn entries.
    unsafe { p.add(pfn as usize).read_volatile() }
}

/// Records `pfn -> mfn` in the p2m (and the m2p when `mfn` is valid).
pub fn set_p2m(pfn: u64, mfn: u64) {
    let _g = P2M_LOCK.lock();
    // SAFETY: p2m has max_pfn entries; checked by the assert.
    assert!((pfn as usize) < max_pfn());
    unsafe { p2m_ptr().add(pfn as usize).write_volatile(mfn) };
}

/// Points the m2p entries of `pairs` (pfn, mfn) at their pfns.
pub fn update_m2p(pairs: &[(u64, u64)]) -> Result<(), XenError> {
    let mut batch = [mmu_update { ptr: 0, val: 0 }; 128];
    for chunk in pairs.chunks(batch.len()) {
        for (slot, &(pfn, mfn)) in batch.iter_mut().zip(chunk) {
            *slot = mmu_update { ptr: (mfn << 12) | mmu::MACHPHYS_UPDATE, val: pfn };
        }
        // SAFETY: m2p entries are Xen's bookkeeping; they change no mapping.
        unsafe { Hv::mmu_update(&batch[..chunk.len()]) }?;
    }
    Ok(())
}

/// Reads entry `index` of the page table in machine frame `mfn`.
fn read_entry(table_mfn: u64, index: usize) -> u64 {
    let va = pfn_to_va(platform::mfn_to_pfn(table_mfn));
    // SAFETY: page tables are mapped (read-only) in the kernel mapping.
    unsafe { (va as *const u64).add(index).read_volatile() }
}

/// The L1 table (mfn) that maps `va`, if the upper levels are present.
fn l1_for(va: u64) -> Option<u64> {
    let root = platform::with_start_info(|si| si.pt_base);
    let mut table = pfn_to_mfn(platform::va_to_pfn(root));
    let idx = indices(va);
    for &i in &idx[..3] {
        let e = read_entry(table, i);
        if !is_present(e) {
            return None;
        }
        table = entry_mfn(e);
    }
    Some(table)
}

/// Whether `pfn`'s kernel mapping entry in the L1 table `l1_mfn` (from
/// `l1_of`) is present.
pub fn is_mapped_in(l1_mfn: u64, pfn: u64) -> bool {
    is_present(read_entry(l1_mfn, indices(pfn_to_va(pfn))[3]))
}

/// The L1 table (mfn) that holds `pfn`'s kernel mapping entry, if it exists.
pub fn l1_of(pfn: u64) -> Option<u64> {
    l1_for(pfn_to_va(pfn))
}

/// Makes sure the kernel mapping of `pfn` has its L2 and L1 tables, for
/// memory above the boot allocation that the balloon populates later. A
/// missing table is made from a frame `take_frame` hands over (free, mapped
/// writable, owned by the caller): zeroed, mapped read-only, then linked
/// with `mmu_update` (Xen validates it then). Returns the L1's mfn; `None`
/// if a frame was needed and `take_frame` had none, or Xen refused a link.
pub fn ensure_l1(pfn: u64, mut take_frame: impl FnMut() -> Option<u64>) -> Option<u64> {
    let va = pfn_to_va(pfn);
    let [i4, i3, i2, _] = indices(va);
    let root_mfn = pfn_to_mfn(platform::va_to_pfn(platform::with_start_info(|si| si.pt_base)));
    let l4e = read_entry(root_mfn, i4);
    if !is_present(l4e) {
        return None; // ballast lives under one L4 slot set up at boot
    }
    let mut table = entry_mfn(l4e);
    for index in [i3, i2] {
        let e = read_entry(table, index);
        table = if is_present(e) { entry_mfn(e) } else { link_new_table(table, index, take_frame()?)? };
    }
    Some(table)
}

/// Turns the free frame `pfn` into an empty page table and links it at
/// entry `index` of the table in `parent_mfn`; returns its mfn.
fn link_new_table(parent_mfn: u64, index: usize, pfn: u64) -> Option<u64> {
    // SAFETY: the caller hands over `pfn`: a free frame, mapped writable in
    // the kernel mapping, that nothing else refers to.
    unsafe { core::ptr::write_bytes(pfn_to_va(pfn) as *mut u8, 0, 4096) };
    let mfn = pfn_to_mfn(pfn);
    // SAFETY: the frame is the caller's and nothing else refers to it.
    unsafe { set_writable(pfn, false) }.ok()?;
    // SAFETY: links an empty table under the kernel mapping: maps nothing yet.
    if unsafe { Hv::mmu_update(&[mmu_update { ptr: update_ptr(parent_mfn, index), val: table_entry(mfn) }]) }.is_err() {
        // SAFETY: as above.
        let _ = unsafe { set_writable(pfn, true) };
        return None;
    }
    super::pagetable::count_tables(1);
    Some(mfn)
}

/// Maps `pfn` to `mfn` writable in the kernel mapping (its L1 must exist).
///
/// # Safety
/// `pfn` must be the caller's (a ballooned pfn it is backing, or a frame
/// Xen kept back) and `mfn` the domain's frame for it: whatever `pfn`'s
/// address showed before is replaced.
pub unsafe fn map_pfn(pfn: u64, mfn: u64) -> Result<(), XenError> {
    // SAFETY: forwarded contract.
    unsafe { Hv::update_va_mapping(pfn_to_va(pfn), data_entry(mfn, true), crate::smp::invlpg_flags()) }
}

/// Removes the kernel mapping of `pfn` (before giving its frame away).
///
/// # Safety
/// Nothing may use `pfn`'s memory any more: a later access faults.
pub unsafe fn unmap_pfn(pfn: u64) -> Result<(), XenError> {
    // SAFETY: forwarded contract.
    unsafe { Hv::update_va_mapping(pfn_to_va(pfn), 0, crate::smp::invlpg_flags()) }
}

/// Maps a page read-only (it is about to become a page table) or writable again.
///
/// # Safety
/// `pfn` must be the caller's: a read-only page faults on the next write
/// of whoever else thought it was theirs.
pub unsafe fn set_writable(pfn: u64, writable: bool) -> Result<(), XenError> {
    // SAFETY: forwarded contract.
    unsafe { Hv::update_va_mapping(pfn_to_va(pfn), data_entry(pfn_to_mfn(pfn), writable), crate::smp::invlpg_flags()) }
}

/// Extends the kernel mapping to pfns `0..end`, taking table frames from
/// `boot`. Returns how many pfns were newly mapped.
fn map_all(end: u64, boot: &mut BootFrames) -> u64 {
    let mut newly = 0u64;
    let mut updates = [mmu_update { ptr: 0, val: 0 }; 64];
    let mut pending = 0usize;
    let flush = |updates: &[mmu_update]| {
        if !updates.is_empty() {
            // SAFETY: maps RAM pfns at their own addresses, as Xen's bootstrap does.
            unsafe { Hv::mmu_update(updates) }.expect("mmu_update while mapping RAM");
        }
    };
    let root_mfn = pfn_to_mfn(platform::va_to_pfn(platform::with_start_info(|si| si.pt_base)));
    let mut pfn = 0u64;
    while pfn < end {
        let va = pfn_to_va(pfn);
        let [i4, i3, i2, i1] = indices(va);
        // Upper levels: ballast lives under one L4 slot; add a missing L3
        // or L2 the same way as an L1.
        let l4e = read_entry(root_mfn, i4);
        assert!(is_present(l4e), "no L3 for the kernel mapping");
        let l3 = entry_mfn(l4e);
        let l3e = read_entry(l3, i3);
        let l2 = if is_present(l3e) {
            entry_mfn(l3e)
        } else {
            let t = boot.take();
            let t_mfn = pfn_to_mfn(t);
            // SAFETY: `t` is a fresh boot frame that becomes a table; linking
            // an empty table maps nothing yet.
            unsafe {
                set_writable(t, false).expect("map new L2 read-only");
                Hv::mmu_update(&[mmu_update { ptr: update_ptr(l3, i3), val: table_entry(t_mfn) }]).expect("link L2");
            }
            t_mfn
        };
        let l2e = read_entry(l2, i2);
        if is_present(l2e) {
            // An existing L1: fill in whatever it lacks, through Xen.
            let l1 = entry_mfn(l2e);
            if !is_present(read_entry(l1, i1)) {
                updates[pending] = mmu_update { ptr: update_ptr(l1, i1), val: data_entry(pfn_to_mfn(pfn), true) };
                pending += 1;
                if pending == updates.len() {
                    flush(&updates[..pending]);
                    pending = 0;
                }
                newly += 1;
            }
            pfn += 1;
        } else {
            // A new L1 for this whole 2 MiB: fill it while it is an ordinary
            // page, make it read-only, then link it.
            flush(&updates[..pending]);
            pending = 0;
            let t = boot.take();
            let table = pfn_to_va(t) as *mut u64;
            let first = pfn;
            let last = (first + (pagetable::ENTRIES - i1) as u64).min(end);
            for p in first..last {
                // SAFETY: `t` is a fresh, writable, mapped boot frame.
                unsafe { table.add(indices(pfn_to_va(p))[3]).write(data_entry(pfn_to_mfn(p), true)) };
            }
            // SAFETY: `t` is a fresh boot frame that becomes the L1 mapping RAM
            // pfns at their own addresses.
            unsafe {
                set_writable(t, false).expect("map new L1 read-only");
                Hv::mmu_update(&[mmu_update { ptr: update_ptr(l2, i2), val: table_entry(pfn_to_mfn(t)) }])
                    .expect("link L1");
            }
            newly += last - first;
            pfn = last;
            boot.mapped_end = boot.mapped_end.max(last);
        }
    }
    flush(&updates[..pending]);
    newly
}

/// Figures from `init`, for the boot log.
pub struct PhysmapInfo {
    pub nr_pages: u64,
    pub max_pfn: u64,
    pub newly_mapped: u64,
    /// Where boot-time allocation stopped; the caller may take more.
    pub boot: BootFrames,
}

/// Maps all RAM, builds the p2m for `max_pfn` entries and publishes it.
pub fn init(max_pages: u64) -> PhysmapInfo {
    // Until the p2m is built, translations come from Xen's own list.
    P2M_BASE.store(0, Ordering::Release);
    MAX_PFN.store(0, Ordering::Release);
    let (nr_pages, pt_base, nr_pt_frames) = platform::with_start_info(|si| (si.nr_pages, si.pt_base, si.nr_pt_frames));
    // Xen placed, in order: image, p2m list, start_info, xenstore and
    // console pages, the bootstrap page tables, then one stack page; at
    // least 512 KiB after that is mapped.
    let first_free = platform::va_to_pfn(pt_base) + nr_pt_frames + 1;
    let mut boot = BootFrames { next: first_free, mapped_end: first_free + 128 };
    super::pagetable::count_boot_tables(nr_pt_frames);
    let max_pfn = max_pages.max(nr_pages).min(MAX_SUPPORTED_PFN as u64);
    if max_pages as usize > MAX_SUPPORTED_PFN {
        log::warn!(
            "mm: maximum of {} pages exceeds the supported {}; memory above is not used",
            max_pages,
            MAX_SUPPORTED_PFN
        );
    }

    let newly_mapped = map_all(nr_pages, &mut boot);
    boot.mapped_end = nr_pages;

    // Our own p2m, in its own region, for max_pfn entries.
    let p2m_pages = (max_pfn as usize * 8).div_ceil(4096);
    for i in 0..p2m_pages {
        let page = boot.take();
        add_p2m_page(i, page, &mut || Some(boot.take())).expect("mapping the p2m");
    }
    let p2m = pfn_to_va(P2M_VA_SLOT) as *mut u64;
    for pfn in 0..nr_pages {
        // SAFETY: the p2m region is mapped for max_pfn >= nr_pages entries.
        unsafe { p2m.add(pfn as usize).write(pfn_to_mfn(pfn)) };
    }
    P2M_BASE.store(p2m as u64, Ordering::Release);
    MAX_PFN.store(max_pfn as usize, Ordering::Release);

    FRAME_LIST_FIRST_PFN.store(boot.next, Ordering::Release);
    for _ in 0..FRAME_LIST_PAGES {
        boot.take();
    }
    FRAME_LIST_LIST_PFN.store(boot.take(), Ordering::Release);
    publish_frame_lists();

    PhysmapInfo { nr_pages, max_pfn, newly_mapped, boot }
}

/// Makes `page` (a free frame) p2m page `index`: every entry invalid, then
/// mapped at its place in the p2m region (adding page tables with
/// `take_frame` as needed).
fn add_p2m_page(index: usize, page: u64, take_frame: &mut dyn FnMut() -> Option<u64>) -> Option<()> {
    assert!(index < MAX_P2M_PAGES);
    // SAFETY: `page` is a free frame handed over by the caller, mapped writable.
    unsafe { core::slice::from_raw_parts_mut(pfn_to_va(page) as *mut u64, 512).fill(INVALID_MFN) };
    let slot = P2M_VA_SLOT + index as u64;
    ensure_l1(slot, take_frame)?;
    // SAFETY: the slot is the p2m region's own and `page` is handed over.
    unsafe { Hv::update_va_mapping(pfn_to_va(slot), data_entry(pfn_to_mfn(page), true), crate::smp::invlpg_flags()) }
        .ok()?;
    P2M_PAGES.lock()[index] = page;
    Some(())
}

/// Why the pfn space could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrowError {
    /// No free frame for a p2m page, a page table, or the frame bitmap.
    OutOfMemory,
    /// Xen refused to map a new p2m page.
    MapRefused,
}

/// Grows the p2m to `new_max_pfn` entries (new entries invalid) with frames
/// from `take_frame`, and republishes the frame lists. Returns the new size.
pub fn grow(new_max_pfn: u64, take_frame: &mut dyn FnMut() -> Option<u64>) -> Result<u64, GrowError> {
    let _g = P2M_LOCK.lock();
    let new_max_pfn = new_max_pfn.min(MAX_SUPPORTED_PFN as u64);
    let old = max_pfn() as u64;
    if new_max_pfn <= old {
        return Ok(old);
    }
    let have = (old * 8).div_ceil(4096) as usize;
    let want = (new_max_pfn * 8).div_ceil(4096) as usize;
    for i in have..want {
        let page = take_frame().ok_or(GrowError::OutOfMemory)?;
        add_p2m_page(i, page, take_frame).ok_or(GrowError::MapRefused)?;
    }
    MAX_PFN.store(new_max_pfn as usize, Ordering::Release);
    publish_frame_lists();
    Ok(new_max_pfn)
}

/// (Re)writes the frame lists from the p2m pages' current mfns and points
/// shared_info at them. Needed at boot, when the p2m grows, and after every
/// restore.
pub fn publish_frame_lists() {
    let max_pfn = max_pfn() as u64;
    let pages = *P2M_PAGES.lock();
    let p2m_pages = (max_pfn * 8).div_ceil(4096);
    let list_first = FRAME_LIST_FIRST_PFN.load(Ordering::Acquire);
    let list_pages = p2m_pages.div_ceil(512);
    let lol = FRAME_LIST_LIST_PFN.load(Ordering::Acquire);
    // SAFETY: the list pages are ours, mapped and writable.
    unsafe {
        for i in 0..p2m_pages {
            let page = pfn_to_va(list_first + i / 512) as *mut u64;
            page.add((i % 512) as usize).write_volatile(pfn_to_mfn(pages[i as usize]));
        }
        for j in 0..list_pages {
            (pfn_to_va(lol) as *mut u64).add(j as usize).write_volatile(pfn_to_mfn(list_first + j));
        }
    }
    let si = platform::shared_info();
    // SAFETY: shared_info is mapped while the kernel runs.
    unsafe {
        core::ptr::addr_of_mut!((*si).arch.max_pfn).write_volatile(max_pfn);
        core::ptr::addr_of_mut!((*si).arch.pfn_to_mfn_frame_list_list).write_volatile(pfn_to_mfn(lol));
    }
}
