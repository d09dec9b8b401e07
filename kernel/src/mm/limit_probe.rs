//! How cheap releasing and repopulating memory can be on this host: the
//! hypervisor's own cost, measured by issuing nothing but the hypercalls
//! the suspend-time release and the restock issue, with every request
//! built beforehand, and then ballast's own mechanism over the same
//! amount, back to back in the same guest (`ballast.hvlimit=1`). The
//! bench reports ballast's time over the bare time.
//!
//! Bare release of one 2 MiB extent: one `mmu_update` clearing its 512
//! kernel mapping entries, a local TLB flush, one order-9
//! `decrease_reservation`. Bare repopulation: `populate_physmap` of up to
//! 8 order-9 extents, then one `mmu_update` of 512 mapping entries per
//! extent. Exactly what `reservation` sends for the same extents.

use super::frames::FRAMES_PER_2M;
use super::kernel_memory::with_frames;
use super::pagetable::{data_entry, indices, update_ptr};
use super::physmap::{self, pfn_to_mfn, set_p2m};
use super::reservation::{EXTENT_BATCH, EXTENT_ORDER};
use super::{ballooning, suspend_release};
use crate::platform::pfn_to_va;
use crate::{time, Hv, Hypervisor};
use alloc::vec::Vec;
use xen::abi::{mmu, mmu_update, INVALID_MFN};
use xen::seam::MmuExtOp;

/// One probe's figures (pages and microseconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitFigures {
    pub bare_pages: u64,
    pub bare_release_us: u64,
    pub bare_populate_us: u64,
    pub ballast_pages: u64,
    pub ballast_release_us: u64,
    pub ballast_populate_us: u64,
}

/// Free, machine-contiguous 2 MiB extents taken from the allocator (the
/// others go straight back), keeping `reserve` pages free.
fn take_contiguous_extents(reserve: u64) -> Vec<u64> {
    let mut taken = Vec::new();
    let mut scattered = Vec::new();
    while let Some(pfn) =
        with_frames(|f| (f.free_count() >= reserve + FRAMES_PER_2M).then(|| f.take_free_extent_2m_from_top()).flatten())
    {
        let first = pfn_to_mfn(pfn);
        let contiguous = first != INVALID_MFN && (1..FRAMES_PER_2M).all(|i| pfn_to_mfn(pfn + i) == first + i);
        if contiguous && physmap::l1_of(pfn).is_some() {
            taken.push(pfn);
        } else {
            scattered.push(pfn);
        }
    }
    give_back(&scattered);
    taken
}

fn give_back(extents: &[u64]) {
    with_frames(|f| {
        for &pfn in extents {
            if let Err(e) = f.give_back(pfn, EXTENT_ORDER) {
                log::error!("limit: returning extent {:#x} failed: {:?}", pfn, e);
            }
        }
    });
}

/// The 512 mapping entries of the extent at `pfn`, each set to `val(i)`.
fn mapping_requests(pfn: u64, l1: u64, val: impl Fn(u64) -> u64) -> Vec<mmu_update> {
    (0..FRAMES_PER_2M)
        .map(|i| mmu_update { ptr: update_ptr(l1, indices(pfn_to_va(pfn + i))[3]), val: val(i) })
        .collect()
}

/// Releases and repopulates `extents` with bare hypercalls; returns the
/// two durations (us), or None if Xen refused anything (then the probe
/// stops and says so; the extents it could not restore stay ballooned).
///
/// # Safety
/// The extents must be free frames the caller took from the allocator.
unsafe fn bare_cycle(extents: &[u64]) -> Option<(u64, u64)> {
    let l1s: Vec<u64> = extents.iter().map(|&p| physmap::l1_of(p).unwrap_or(0)).collect();
    let unmaps: Vec<Vec<mmu_update>> =
        extents.iter().zip(&l1s).map(|(&p, &l1)| mapping_requests(p, l1, |_| 0)).collect();
    let mfns: Vec<u64> = extents.iter().map(|&p| pfn_to_mfn(p)).collect();
    let flush = [MmuExtOp { cmd: mmu::EXT_TLB_FLUSH_LOCAL, arg1: 0, arg2: 0 }];

    let t0 = time::now_ns();
    let mut unmap_ns = 0;
    for (reqs, &mfn) in unmaps.iter().zip(&mfns) {
        let u0 = time::now_ns();
        // SAFETY: the caller's extents are free: nothing uses their mappings or frames.
        let unmapped = unsafe { Hv::mmu_update(reqs).is_ok() && Hv::mmuext_op(&flush).is_ok() };
        unmap_ns += time::now_ns() - u0;
        // SAFETY: just unmapped, and free.
        let ok = unmapped && unsafe { Hv::decrease_reservation(&[mfn], EXTENT_ORDER) } == Ok(1);
        if !ok {
            log::error!("limit: Xen refused a bare release; probe stopped");
            return None;
        }
    }
    let released_us = (time::now_ns() - t0) / 1000;
    log::info!(
        "limit: of the bare release, unmapping took {} us, the decreases {} us",
        unmap_ns / 1000,
        released_us - unmap_ns / 1000
    );
    for &pfn in extents {
        (pfn..pfn + FRAMES_PER_2M).for_each(|p| set_p2m(p, INVALID_MFN));
    }

    let mut got = extents.to_vec();
    let t1 = time::now_ns();
    for (chunk, l1s) in got.chunks_mut(EXTENT_BATCH).zip(l1s.chunks(EXTENT_BATCH)) {
        let pfns: Vec<u64> = chunk.to_vec();
        if Hv::populate_physmap(chunk, EXTENT_ORDER) != Ok(chunk.len()) {
            log::error!("limit: Xen refused a bare populate; probe stopped");
            return None;
        }
        for ((&pfn, &mfn), &l1) in pfns.iter().zip(chunk.iter()).zip(l1s) {
            let reqs = mapping_requests(pfn, l1, |i| data_entry(mfn + i, true));
            // SAFETY: maps frames Xen just gave at pfns nothing refers to.
            if unsafe { Hv::mmu_update(&reqs) }.is_err() {
                log::error!("limit: mapping a populated extent failed; probe stopped");
                return None;
            }
        }
    }
    let populated_us = (time::now_ns() - t1) / 1000;
    for (&pfn, &mfn) in extents.iter().zip(&got) {
        (0..FRAMES_PER_2M).for_each(|i| set_p2m(pfn + i, mfn + i));
    }
    Some((released_us, populated_us))
}

/// Runs the probe: the bare cycle, then ballast's release and deflate over
/// the same free memory. Logs one line with both and returns them.
pub fn run() -> Option<LimitFigures> {
    let reserve = suspend_release::RESERVE_PAGES;
    let extents = take_contiguous_extents(reserve);
    // SAFETY: the extents were just taken from the allocator. On a refusal
    // they stay out of it: half released, they are no frames to hand out.
    let (bare_release_us, bare_populate_us) = unsafe { bare_cycle(&extents) }?;
    give_back(&extents);
    let bare_pages = extents.len() as u64 * FRAMES_PER_2M;

    let t0 = time::now_ns();
    let released = suspend_release::release_free(reserve);
    let ballast_release_us = (time::now_ns() - t0) / 1000;
    let t1 = time::now_ns();
    let back = ballooning::deflate(released.pages());
    let ballast_populate_us = (time::now_ns() - t1) / 1000;
    let f = LimitFigures {
        bare_pages,
        bare_release_us,
        bare_populate_us,
        ballast_pages: back.pages.min(released.pages()),
        ballast_release_us,
        ballast_populate_us,
    };
    log::info!(
        "limit: bare hypercalls: {} pages released in {} us, repopulated in {} us; ballast: {} pages released in {} us, repopulated in {} us",
        f.bare_pages,
        f.bare_release_us,
        f.bare_populate_us,
        f.ballast_pages,
        f.ballast_release_us,
        f.ballast_populate_us
    );
    Some(f)
}
