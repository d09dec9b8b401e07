//! Small save images: at suspend time give every free frame back to Xen
//! (the toolstack then copies only what the guest really uses) and take
//! the same number back right after the hypercall, before tasks thaw.
//!
//! Only frames the allocator holds free are released, never memory a task
//! owns. A reserve stays populated so that the resume path itself (rings,
//! re-sent xenstore requests, log lines) never needs a frame from Xen. If
//! Xen cannot supply everything afterwards, the guest thaws with what it
//! got and the balloon driver keeps asking, as after any short deflate.

use super::kernel_memory::with_frames;
use super::reservation;
use alloc::vec::Vec;

/// Frames kept populated through the suspend: 4 MiB.
pub const RESERVE_PAGES: u64 = 1024;

/// What was released, to be taken back.
#[derive(Default)]
pub struct Released {
    extents: Vec<u64>,
    frames: Vec<u64>,
}

impl Released {
    pub fn pages(&self) -> u64 {
        self.extents.len() as u64 * 512 + self.frames.len() as u64
    }
}

/// Gives free frames back until only `reserve` free pages remain: whole
/// 2 MiB extents first, then batches of single frames.
pub fn release_free(reserve: u64) -> Released {
    let mut out = Released::default();
    // Room for the bookkeeping itself, before anything is released.
    let free = with_frames(|f| f.free_count());
    out.extents.reserve((free / 512) as usize + 1);
    out.frames.reserve(free.saturating_sub(reserve).min(64 * 1024) as usize);

    let take_extent =
        || with_frames(|f| if f.free_count() >= reserve + 512 { f.take_free_extent_2m_from_top() } else { None });
    while let Some(pfn) = take_extent() {
        if reservation::release_2m(pfn) {
            out.extents.push(pfn);
        } else {
            // Not machine-contiguous: the same frames go one by one.
            let pfns: Vec<u64> = (pfn..pfn + 512).collect();
            let n = reservation::release_frames(&pfns);
            out.frames.extend_from_slice(&pfns[..n]);
            with_frames(|f| {
                for &p in &pfns[n..] {
                    let _ = f.give_back(p, 0);
                }
            });
            if n < pfns.len() {
                break;
            }
        }
    }
    let mut batch = [0u64; 512];
    loop {
        let want = with_frames(|f| f.free_count().saturating_sub(reserve)).min(batch.len() as u64) as usize;
        if want == 0 || out.frames.len() == out.frames.capacity() {
            break;
        }
        let want = want.min(out.frames.capacity() - out.frames.len());
        let got = with_frames(|f| f.take_free_frames_from_top(&mut batch[..want]));
        if got == 0 {
            break;
        }
        let n = reservation::release_frames(&batch[..got]);
        out.frames.extend_from_slice(&batch[..n]);
        if n < got {
            with_frames(|f| {
                for &p in &batch[n..got] {
                    let _ = f.give_back(p, 0);
                }
            });
            break;
        }
    }
    out
}

/// Takes back what `release_free` gave and is not backed already; returns
/// the pages populated again. After a live migration every released frame
/// comes back populated and was adopted before this runs
/// (`reservation::adopt_backed_unmapped`): asking Xen for it again would
/// orphan the frame the toolstack gave. Whatever Xen does not supply stays
/// ballooned for the balloon driver.
pub fn repopulate(r: &Released) -> Repopulated {
    let released = r.extents.iter().flat_map(|&p| p..p + 512).chain(r.frames.iter().copied());
    let wanted = released.filter(|&p| !reservation::is_backed(p)).count() as u64;
    Repopulated { wanted, got: repopulate_unbacked(r) }
}

/// What `repopulate` asked Xen for (released pages not backed already) and got.
pub struct Repopulated {
    pub wanted: u64,
    pub got: u64,
}

fn repopulate_unbacked(r: &Released) -> u64 {
    let mut pages = 0u64;
    let unbacked =
        |pfns: &[u64]| -> Vec<u64> { pfns.iter().copied().filter(|&p| !reservation::is_backed(p)).collect() };
    for &pfn in &r.extents {
        if (pfn..pfn + 512).any(reservation::is_backed) {
            let pfns: Vec<u64> = (pfn..pfn + 512).collect();
            pages += populate_frames(&unbacked(&pfns));
            continue;
        }
        if reservation::populate(&[pfn], 9) == 1 {
            with_frames(|f| f.give_back(pfn, 9)).ok();
            pages += 512;
        } else {
            // No contiguous 2 MiB: single frames for the same pfns.
            let pfns: Vec<u64> = (pfn..pfn + 512).collect();
            pages += populate_frames(&pfns);
        }
    }
    pages + populate_frames(&unbacked(&r.frames))
}

/// Populates single frames `pfns` (ballooned), in batches, and frees what
/// Xen supplied; stops at the first shortfall. Returns the pages populated.
fn populate_frames(pfns: &[u64]) -> u64 {
    let mut pages = 0;
    for chunk in pfns.chunks(reservation::FRAME_BATCH) {
        let n = reservation::populate(chunk, 0);
        with_frames(|f| {
            for &p in &chunk[..n] {
                let _ = f.give_back(p, 0);
            }
        });
        pages += n as u64;
        if n < chunk.len() {
            break;
        }
    }
    pages
}
