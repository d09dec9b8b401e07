//! Moving memory between the guest and Xen, whole: free frames taken from
//! the allocator and given to Xen (inflating), ballooned pfns backed again
//! and handed to the allocator (deflating). The one mechanism the balloon
//! driver and the suspend-time release both use; `reservation` does the
//! page-table and hypercall work underneath.
//!
//! Every function is safe: the frames given away are taken from the
//! allocator here, so nothing else can hold them, and only pfns Xen does
//! not back are populated. One move runs at a time (`exclusive`): a task
//! short of memory may deflate on one vCPU while the balloon inflates on
//! another, and both pick pfns by what Xen backs.

use super::frames::{FrameAllocator, FRAMES_PER_2M, MAX_ORDER};
use super::kernel_memory::with_frames;
use super::reservation::{self, FRAME_BATCH};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

/// The vCPU moving memory now, plus one (0: nobody). Not a lock guard
/// because a move that allocates may itself be short of memory and ask for
/// a nested deflate, which must be refused rather than wait for itself.
static MOVER: AtomicU32 = AtomicU32::new(0);

/// Whether a caller of [`exclusive`] waits for a move on another vCPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Moves never sleep, so one on another vCPU ends soon.
    ForOthers,
    /// The caller may hold a spin lock with events masked (the heap's page
    /// source on an allocation made under the scheduler's lock): the mover
    /// could be waiting for that lock in an event handler, so never wait.
    Never,
}

/// Clears `MOVER` when a move ends, even by a panic (host tests).
struct Moving;

impl Drop for Moving {
    fn drop(&mut self) {
        MOVER.store(0, Ordering::Release);
    }
}

/// Runs `f` as the only move in progress; None if this vCPU is already
/// moving memory (a nested request from inside a move), or another vCPU
/// is and `wait` is `Never`.
fn exclusive<R>(wait: Wait, f: impl FnOnce() -> R) -> Option<R> {
    let me = crate::percpu::current() + 1;
    loop {
        match MOVER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(holder) if holder == me || wait == Wait::Never => return None,
            Err(_) => core::hint::spin_loop(),
        }
    }
    let _moving = Moving;
    Some(f())
}

/// Pages moved by one operation, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub pages: u64,
    pub extents_2m: u64,
    pub frames: u64,
}

impl core::ops::AddAssign for Progress {
    fn add_assign(&mut self, o: Progress) {
        self.pages += o.pages;
        self.extents_2m += o.extents_2m;
        self.frames += o.frames;
    }
}

impl Progress {
    fn extents(n: u64) -> Self {
        Progress { pages: n * FRAMES_PER_2M, extents_2m: n, frames: 0 }
    }
    fn frames(n: u64) -> Self {
        Progress { pages: n, extents_2m: 0, frames: n }
    }
}

/// Pages Xen backs now.
pub fn populated_pages() -> u64 {
    with_frames(|f| f.total_pfns() - f.ballooned_count())
}

/// Pages allocated to the kernel and its tasks.
pub fn used_pages() -> u64 {
    with_frames(|f| f.used_count())
}

/// Free pages in the allocator.
pub fn free_pages() -> u64 {
    with_frames(|f| f.free_count())
}

/// The pfn space: the most the guest can hold.
pub fn max_pages() -> u64 {
    with_frames(|f| f.total_pfns())
}

/// Puts frames Xen did not take back into the free pool.
fn keep(pfns: &[u64]) {
    give_to_allocator(pfns, 0, "returning a frame Xen kept");
}

fn give_to_allocator(pfns: &[u64], order: u32, what: &str) {
    if pfns.is_empty() {
        return;
    }
    with_frames(|f: &mut FrameAllocator| {
        for &pfn in pfns {
            if let Err(e) = f.give_back(pfn, order) {
                log::error!("ballooning: {} (pfn {:#x}, order {}) failed: {:?}", what, pfn, order, e);
            }
        }
    });
}

/// Gives single frames `pfns`, just taken from the allocator, to Xen;
/// keeps what Xen refuses. Returns how many went.
fn release_taken(pfns: &[u64]) -> u64 {
    // SAFETY: the caller took every pfn from the allocator just now, so
    // nothing refers to its memory.
    let n = unsafe { reservation::release_frames(pfns) }.min(pfns.len());
    keep(&pfns[n..]);
    n as u64
}

/// Gives up to `max_extents` free 2 MiB extents (highest first) to Xen,
/// each in one piece when machine-contiguous, else frame by frame, while
/// at least `keep_free` pages stay free.
pub fn inflate_2m(max_extents: u64, keep_free: u64) -> Progress {
    exclusive(Wait::ForOthers, || inflate_2m_now(max_extents, keep_free)).unwrap_or_default()
}

fn inflate_2m_now(max_extents: u64, keep_free: u64) -> Progress {
    let mut p = Progress::default();
    for _ in 0..max_extents {
        let take = |f: &mut FrameAllocator| {
            if f.free_count() >= keep_free + FRAMES_PER_2M {
                f.take_free_extent_2m_from_top()
            } else {
                None
            }
        };
        let Some(pfn) = with_frames(take) else { break };
        // SAFETY: the extent was taken from the allocator just now.
        if unsafe { reservation::release_2m(pfn) } {
            p += Progress::extents(1);
            continue;
        }
        // Not machine-contiguous (or refused part-way): frame by frame.
        let backed: Vec<u64> = (pfn..pfn + FRAMES_PER_2M).filter(|&q| reservation::is_backed(q)).collect();
        let gone = FRAMES_PER_2M - backed.len() as u64;
        let n = release_taken(&backed);
        p += Progress::frames(gone + n);
        if n < backed.len() as u64 {
            break;
        }
    }
    p
}

/// Gives up to `n` free single frames (highest first) to Xen, while at
/// least `keep_free` pages stay free.
pub fn inflate_frames(n: u64, keep_free: u64) -> Progress {
    exclusive(Wait::ForOthers, || inflate_frames_now(n, keep_free)).unwrap_or_default()
}

fn inflate_frames_now(n: u64, keep_free: u64) -> Progress {
    let mut p = Progress::default();
    let mut buf = alloc::vec![0u64; FRAME_BATCH];
    while p.pages < n {
        let spare = with_frames(|f| f.free_count()).saturating_sub(keep_free);
        let ask = ((n - p.pages).min(spare) as usize).min(FRAME_BATCH);
        if ask == 0 {
            break;
        }
        let got = with_frames(|f| f.take_free_frames_from_top(&mut buf[..ask]));
        if got == 0 {
            break;
        }
        let done = release_taken(&buf[..got]);
        p += Progress::frames(done);
        if done < got as u64 {
            break;
        }
    }
    p
}

fn region_wholly_ballooned(region: u64, total: u64) -> bool {
    let first = region * FRAMES_PER_2M;
    first + FRAMES_PER_2M <= total && (first..first + FRAMES_PER_2M).all(|p| !reservation::is_backed(p))
}

/// Populates single frames `pfns` (ballooned) and frees what Xen supplied.
fn populate_frames(pfns: &[u64]) -> u64 {
    let n = reservation::populate(pfns, 0).min(pfns.len());
    give_to_allocator(&pfns[..n], 0, "freeing a repopulated frame");
    n as u64
}

/// Gets up to `n` pages back from Xen: whole ballooned 2 MiB regions as
/// extents first (lowest first), then single frames, those of partly
/// ballooned regions before any others.
pub fn deflate(n: u64) -> Progress {
    deflate_if_idle(n).unwrap_or_default()
}

/// As [`deflate`], but None when this vCPU is already moving memory (the
/// caller is an allocation made inside a move).
pub fn deflate_if_idle(n: u64) -> Option<Progress> {
    exclusive(Wait::ForOthers, || deflate_now(n))
}

/// As [`deflate_if_idle`], but None too when another vCPU is moving memory:
/// for callers that may hold a spin lock with events masked.
pub fn deflate_without_waiting(n: u64) -> Option<Progress> {
    exclusive(Wait::Never, || deflate_now(n))
}

fn deflate_now(n: u64) -> Progress {
    if with_frames(|f| f.ballooned_count()) == 0 {
        return Progress::default(); // nothing to ask for: skip the scan
    }
    let total = max_pages();
    let regions = total.div_ceil(FRAMES_PER_2M);
    let mut p = Progress::default();
    let mut region = 0;
    let mut batch = Vec::new();
    while n - p.pages >= FRAMES_PER_2M && region < regions {
        batch.clear();
        while batch.len() < 8 && n - p.pages - batch.len() as u64 * FRAMES_PER_2M >= FRAMES_PER_2M && region < regions {
            if region_wholly_ballooned(region, total) {
                batch.push(region * FRAMES_PER_2M);
            }
            region += 1;
        }
        if batch.is_empty() {
            break;
        }
        let got = reservation::populate(&batch, MAX_ORDER).min(batch.len());
        give_to_allocator(&batch[..got], MAX_ORDER, "freeing a repopulated extent");
        p += Progress::extents(got as u64);
        if got < batch.len() {
            break; // no 2 MiB runs left in Xen: single frames below
        }
    }
    for partial_only in [true, false] {
        for region in 0..regions {
            if p.pages >= n {
                return p;
            }
            if partial_only && region_wholly_ballooned(region, total) {
                continue;
            }
            let first = region * FRAMES_PER_2M;
            let pfns: Vec<u64> = (first..(first + FRAMES_PER_2M).min(total))
                .filter(|&q| !reservation::is_backed(q))
                .take((n - p.pages) as usize)
                .collect();
            if pfns.is_empty() {
                continue;
            }
            let got = populate_frames(&pfns);
            p += Progress::frames(got);
            if got < pfns.len() as u64 {
                return p;
            }
        }
    }
    p
}
