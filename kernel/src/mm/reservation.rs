//! The guest side of Xen's reservation operations: handing frames back to
//! Xen (`XENMEM_decrease_reservation`) and getting frames again
//! (`XENMEM_populate_physmap`), for the balloon driver.
//!
//! The model. A pfn is *backed* while the p2m names a machine frame for it
//! and the kernel mapping (`KERNEL_BASE + pfn * 4096`) maps that frame
//! writable; it is *ballooned out* while its p2m entry is `INVALID_MFN` and
//! its mapping entry is empty. The p2m is therefore the record of which pfns
//! are ballooned (`is_backed`). These functions only move pfns between the
//! two states; which pfns may move (free ones, never memory a task holds) is
//! the frame allocator's and the balloon's business.
//!
//! Giving frames back, in this order: clear every kernel mapping of them in
//! one batched `mmu_update` on their L1 entries, flush the TLB once, mark
//! the p2m entries invalid, then tell Xen. Whatever Xen did not take is
//! restored (p2m entry, mapping) before returning, so a caller only has to
//! look at the count. Getting frames: Xen turns the pfn list into machine
//! frames and, for a PV guest, writes their m2p entries itself
//! (`guest_physmap_add_page`; the toolstack's restore populates the same
//! way); each frame then gets its p2m entry and its mapping, the mappings
//! in one batched `mmu_update`.
//!
//! Cost: a 2 MiB extent is four hypercalls (unmap 512 entries, flush,
//! decrease one order-9 extent; or populate plus one update batch), never
//! one per page. The p2m array does not move, so the frame lists published
//! in shared_info stay valid whatever entries change.

use super::kernel_memory;
use super::pagetable::{data_entry, indices, update_ptr};
use super::physmap::{self, pfn_to_mfn, set_p2m};
use crate::platform::pfn_to_va;
use crate::rejects::RateLimit;
use crate::warn_limited;
use crate::{Hv, Hypervisor, XenError};
use alloc::vec::Vec;
use xen::abi::{mmu_update, INVALID_MFN};
use xen::seam::MmuExtOp;

/// Frames in one 2 MiB extent, and its order.
pub const EXTENT_FRAMES: u64 = 512;
pub const EXTENT_ORDER: u32 = 9;
/// Order-0 frames per decrease/populate hypercall.
pub const FRAME_BATCH: usize = 512;
/// Order-9 extents per populate hypercall.
pub const EXTENT_BATCH: usize = 8;

/// Whether Xen backs `pfn` (its p2m entry names a machine frame).
pub fn is_backed(pfn: u64) -> bool {
    (pfn as usize) < physmap::max_pfn() && pfn_to_mfn(pfn) != INVALID_MFN
}

/// The L1 tables of the 2 MiB regions a batch touches, looked up once per
/// region rather than once per pfn.
struct L1Cache {
    region: u64,
    l1: Option<u64>,
}

impl L1Cache {
    fn new() -> Self {
        Self { region: u64::MAX, l1: None }
    }

    /// The L1 table (mfn) of `pfn`'s kernel mapping entry.
    fn l1(&mut self, pfn: u64) -> Option<u64> {
        let region = pfn / EXTENT_FRAMES;
        if region != self.region {
            self.region = region;
            self.l1 = physmap::l1_of(pfn);
        }
        self.l1
    }

    /// Drops what was looked up (a table was just made).
    fn forget(&mut self) {
        self.region = u64::MAX;
    }

    /// The `mmu_update` pointer of `pfn`'s kernel mapping entry.
    fn entry_ptr(&mut self, pfn: u64) -> Option<u64> {
        Some(update_ptr(self.l1(pfn)?, indices(pfn_to_va(pfn))[3]))
    }
}

fn flush_tlb() -> Result<(), XenError> {
    // SAFETY: a TLB flush changes no mapping.
    unsafe { Hv::mmuext_op(&[MmuExtOp { cmd: crate::smp::tlb_flush_cmd(), arg1: 0, arg2: 0 }]) }
}

/// Maps each `(pfn, mfn)` writable again and restores its p2m entry: the
/// undo of an unmap for frames Xen did not take. Frames are remapped one at
/// a time if the batch is refused, so one bad frame does not strand the rest.
fn restore(pairs: &[(u64, u64)]) {
    let mut l1s = L1Cache::new();
    let mut reqs = Vec::with_capacity(pairs.len());
    for &(pfn, mfn) in pairs {
        set_p2m(pfn, mfn);
        if let Some(ptr) = l1s.entry_ptr(pfn) {
            reqs.push(mmu_update { ptr, val: data_entry(mfn, true) });
        }
    }
    // SAFETY: maps frames Xen kept back at their own pfns, as before the unmap.
    if unsafe { Hv::mmu_update(&reqs) }.is_err() {
        // SAFETY: the frames are Xen's answer to our own decrease: still ours, at their own pfns.
        let failed = pairs.iter().filter(|&&(pfn, mfn)| unsafe { physmap::map_pfn(pfn, mfn) }.is_err()).count();
        log::error!("reservation: remapping {} frames Xen kept: {} could not be mapped", pairs.len(), failed);
    }
}

/// Clears the kernel mappings of `pairs` in one batch and flushes the TLB,
/// then marks their p2m entries invalid. On failure everything is restored
/// and false returned.
fn unmap_and_invalidate(pairs: &[(u64, u64)]) -> bool {
    let mut l1s = L1Cache::new();
    let mut reqs = Vec::with_capacity(pairs.len());
    for &(pfn, _) in pairs {
        match l1s.entry_ptr(pfn) {
            Some(ptr) => reqs.push(mmu_update { ptr, val: 0 }),
            None => return false, // not mapped through an L1 of ours: not a frame to give
        }
    }
    // SAFETY: the caller hands over these free frames; nothing refers to them.
    let unmapped = unsafe { Hv::mmu_update(&reqs) }.and_then(|()| flush_tlb());
    if let Err(e) = unmapped {
        // Xen refuses these only when it is short itself: keep the frames.
        static REFUSED: RateLimit = RateLimit::new();
        warn_limited!(REFUSED, "reservation: unmapping {} frames refused ({:?}); they stay", pairs.len(), e);
        restore(pairs);
        return false;
    }
    for &(pfn, _) in pairs {
        set_p2m(pfn, INVALID_MFN);
    }
    true
}

/// Gives the 2 MiB extent at `pfn` (512 free frames, `pfn` aligned to 512)
/// back to Xen as one order-9 extent. Only possible when the 512 frames are
/// machine-contiguous per the p2m; returns false (and changes nothing) when
/// they are not or Xen refuses, so the caller can fall back to
/// `release_frames`.
///
/// # Safety
/// The 512 frames must be free frames the caller took from the allocator:
/// nothing may refer to their memory.
pub unsafe fn release_2m(pfn: u64) -> bool {
    if !pfn.is_multiple_of(EXTENT_FRAMES) || (pfn + EXTENT_FRAMES) as usize > physmap::max_pfn() {
        return false;
    }
    let first_mfn = pfn_to_mfn(pfn);
    if first_mfn == INVALID_MFN || (1..EXTENT_FRAMES).any(|i| pfn_to_mfn(pfn + i) != first_mfn + i) {
        return false;
    }
    let pairs: Vec<(u64, u64)> = (0..EXTENT_FRAMES).map(|i| (pfn + i, first_mfn + i)).collect();
    if !unmap_and_invalidate(&pairs) {
        return false;
    }
    let extent = [first_mfn];
    // SAFETY: the extent's mappings are gone and its frames were free.
    match unsafe { Hv::decrease_reservation(&extent, EXTENT_ORDER) } {
        Ok(1) => true,
        other => {
            // Xen stops at the first page it cannot remove, so part of the
            // extent may be gone: remap what is still ours, one by one (a
            // frame that cannot be mapped again is no longer ours and stays
            // ballooned; `is_backed` tells the caller which).
            let mut gone = 0;
            for &(p, m) in &pairs {
                set_p2m(p, m);
                // SAFETY: the pfn was ours before the refused decrease.
                if unsafe { physmap::map_pfn(p, m) }.is_err() {
                    set_p2m(p, INVALID_MFN);
                    gone += 1;
                }
            }
            log::warn!(
                "reservation: order-9 decrease at pfn {:#x} failed ({:?}); {} of 512 frames gone",
                pfn,
                other,
                gone
            );
            false
        }
    }
}

/// Gives single frames back to Xen, up to `FRAME_BATCH` per hypercall.
/// Every pfn must be a free, backed frame. Returns how many were given: the
/// first `n` of `pfns`; the rest are still backed and mapped (Xen stopped
/// short, or a pfn was not backed), and the caller keeps them.
///
/// # Safety
/// Every pfn must be a free frame the caller took from the allocator:
/// nothing may refer to its memory.
pub unsafe fn release_frames(pfns: &[u64]) -> usize {
    let mut done = 0;
    for chunk in pfns.chunks(FRAME_BATCH) {
        let mut pairs = Vec::with_capacity(chunk.len());
        for &pfn in chunk {
            let mfn = if (pfn as usize) < physmap::max_pfn() { pfn_to_mfn(pfn) } else { INVALID_MFN };
            if mfn == INVALID_MFN {
                break;
            }
            pairs.push((pfn, mfn));
        }
        if pairs.is_empty() || !unmap_and_invalidate(&pairs) {
            return done;
        }
        let mfns: Vec<u64> = pairs.iter().map(|&(_, mfn)| mfn).collect();
        // SAFETY: unmapped and invalidated above; the frames were free.
        let taken = unsafe { Hv::decrease_reservation(&mfns, 0) }.unwrap_or(0).min(pairs.len());
        if taken < pairs.len() {
            restore(&pairs[taken..]);
        }
        done += taken;
        if taken < chunk.len() {
            return done;
        }
    }
    done
}

/// Asks Xen for memory behind `pfns` (each the first pfn of a block of
/// 2^`order` ballooned-out frames, aligned to it), then records and maps
/// what it gave. Returns how many blocks are now backed: the first `n`.
/// A block with a backed pfn in it ends the list there: backing it again
/// would replace memory somebody uses.
///
/// For pfns above the boot allocation the kernel mapping may lack its L1
/// table; one is made first from a free frame, and a pfn whose table cannot
/// be made (no free frame) ends the list there.
pub fn populate(pfns: &[u64], order: u32) -> usize {
    let per_call = if order == 0 { FRAME_BATCH } else { EXTENT_BATCH };
    let frames = 1u64 << order;
    let mut done = 0;
    for chunk in pfns.chunks(per_call) {
        // Tables first, so that nothing Xen hands over is left unmappable.
        let mappable = chunk
            .iter()
            .take_while(|&&pfn| {
                pfn.is_multiple_of(frames)
                    && (pfn + frames) as usize <= physmap::max_pfn()
                    && (pfn..pfn + frames).all(|p| !is_backed(p))
                    && (0..frames).step_by(EXTENT_FRAMES as usize).all(|o| has_l1(pfn + o))
            })
            .count();
        let mut extents: Vec<u64> = chunk[..mappable].to_vec();
        let got = match mappable {
            0 => 0,
            _ => Hv::populate_physmap(&mut extents, order).unwrap_or(0).min(mappable),
        };
        if got > 0 && !record_and_map(&chunk[..got], &extents[..got], frames) {
            return done;
        }
        done += got;
        if got < chunk.len() {
            return done;
        }
    }
    done
}

/// Takes Xen's word for what is backed, after a resume in a new domain.
///
/// A live migration sends, and the receiver populates, every page before
/// the final round; a frame the guest gave back after its page was sent
/// (at suspend, or by the balloon while the live rounds ran) therefore
/// comes back populated: the toolstack writes its new machine frame into
/// the p2m, while the kernel mapping still has no entry for it. Each such
/// pfn is adopted: its m2p entry and mapping are written (one batched
/// `mmu_update`) and the allocator takes it as free. Returns how many.
///
/// Only pfns that are not free, backed per the p2m and unmapped qualify:
/// every pfn the guest uses is mapped at its place in the kernel mapping.
pub fn adopt_backed_unmapped() -> u64 {
    let total = kernel_memory::with_frames(|f| f.total_pfns()).min(physmap::max_pfn() as u64);
    let mut adopted = 0u64;
    let mut pfns = Vec::with_capacity(FRAME_BATCH);
    let mut mfns = Vec::with_capacity(FRAME_BATCH);
    let mut l1s = L1Cache::new();
    for pfn in 0..total {
        let mfn = pfn_to_mfn(pfn);
        if mfn == INVALID_MFN {
            continue;
        }
        let l1 = match l1s.l1(pfn) {
            Some(l1) => l1,
            // Backed above every table made so far: make one (from a free
            // frame, never one of the pfns being adopted).
            None if has_l1(pfn) => {
                l1s.forget();
                match l1s.l1(pfn) {
                    Some(l1) => l1,
                    None => continue,
                }
            }
            None => continue,
        };
        if physmap::is_mapped_in(l1, pfn) || kernel_memory::with_frames(|f| f.is_free(pfn)) {
            continue;
        }
        pfns.push(pfn);
        mfns.push(mfn);
        if pfns.len() == FRAME_BATCH {
            adopted += adopt(&pfns, &mfns);
            pfns.clear();
            mfns.clear();
        }
    }
    adopted + adopt(&pfns, &mfns)
}

/// Maps `pfns` (backed by `mfns`, unmapped, not free) and hands them to the
/// allocator as free frames. Returns how many were adopted.
fn adopt(pfns: &[u64], mfns: &[u64]) -> u64 {
    if pfns.is_empty() || !record_and_map(pfns, mfns, 1) {
        return 0;
    }
    kernel_memory::with_frames(|f| {
        let mut n = 0;
        for &pfn in pfns {
            match f.give_back(pfn, 0) {
                Ok(()) => n += 1,
                Err(e) => log::error!("reservation: adopting pfn {:#x} failed: {:?}", pfn, e),
            }
        }
        n
    })
}

/// Whether `pfn`'s mapping has an L1 table, making one if needed from a
/// frame of the allocator.
fn has_l1(pfn: u64) -> bool {
    if physmap::l1_of(pfn).is_some() {
        return true;
    }
    let made = physmap::ensure_l1(pfn, || kernel_memory::with_frames(|f| f.alloc(0))).is_some();
    if made {
        log::info!(
            "reservation: new page table for pfns {:#x}..{:#x}",
            pfn & !(EXTENT_FRAMES - 1),
            (pfn | (EXTENT_FRAMES - 1)) + 1
        );
    } else {
        log::warn!("reservation: no page table for pfn {:#x} and none could be made", pfn);
    }
    made
}

/// Sets the p2m and the kernel mapping for blocks `pfns[i]` now backed by
/// machine frames `mfns[i]..+frames` (Xen already wrote their m2p). On a
/// refused update batch the blocks are handed back to Xen and false
/// returned.
fn record_and_map(pfns: &[u64], mfns: &[u64], frames: u64) -> bool {
    let mut l1s = L1Cache::new();
    let mut reqs = Vec::with_capacity(FRAME_BATCH);
    let mut ok = true;
    for (&pfn, &mfn) in pfns.iter().zip(mfns) {
        for i in 0..frames {
            set_p2m(pfn + i, mfn + i);
            match l1s.entry_ptr(pfn + i) {
                Some(ptr) => reqs.push(mmu_update { ptr, val: data_entry(mfn + i, true) }),
                None => ok = false,
            }
            if reqs.len() >= FRAME_BATCH {
                // SAFETY: maps frames Xen just gave at ballooned pfns nothing refers to.
                ok &= unsafe { Hv::mmu_update(&reqs) }.is_ok();
                reqs.clear();
            }
        }
    }
    if !reqs.is_empty() {
        // SAFETY: as above.
        ok &= unsafe { Hv::mmu_update(&reqs) }.is_ok();
    }
    if !ok {
        log::error!("reservation: mapping {} populated blocks failed; giving them back", pfns.len());
        for (&pfn, &mfn) in pfns.iter().zip(mfns) {
            for i in 0..frames {
                // SAFETY: populated just now; nothing has seen the pfn yet.
                let _ = unsafe { physmap::unmap_pfn(pfn + i) };
                set_p2m(pfn + i, INVALID_MFN);
            }
            // SAFETY: just unmapped; nothing else saw these frames.
            let _ = unsafe { Hv::decrease_reservation(&[mfn], frames.trailing_zeros()) };
        }
    }
    ok
}
