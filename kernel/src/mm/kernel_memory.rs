//! The kernel's memory on the real Xen: the one frame allocator, the heap
//! on top of it, and boot-time setup.

use super::frames::FrameAllocator;
use super::heap::{Heap, HeapStats, PageSource};
use super::physmap;
use crate::events_mask;
use crate::platform::{pfn_to_va, va_to_pfn};
use crate::{Hv, Hypervisor};
use spin::Mutex;

/// Every pfn's state. A lock because tasks, the heap and the balloon all
/// take frames; it is only taken with events masked (the heap masks them
/// before calling its page source).
pub static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Runs `f` on the frame allocator with events masked.
pub fn with_frames<R>(f: impl FnOnce(&mut FrameAllocator) -> R) -> R {
    events_mask::without_events(|| f(FRAMES.lock().as_mut().expect("frame allocator not ready")))
}

/// The heap's page source: frames from `FRAMES`, addressed through the
/// kernel mapping (KERNEL_BASE is 2 MiB aligned, so an order-n block of
/// pfns is an order-n aligned block of addresses).
pub struct KernelPages;

impl PageSource for KernelPages {
    fn alloc_pages(&self, order: u32) -> Option<*mut u8> {
        // Events are already masked by the heap.
        let pfn = FRAMES.lock().as_mut()?.alloc(order)?;
        Some(pfn_to_va(pfn) as *mut u8)
    }

    unsafe fn free_pages(&self, ptr: *mut u8, order: u32) {
        if let Some(f) = FRAMES.lock().as_mut() {
            if let Err(e) = f.free(va_to_pfn(ptr as u64), order) {
                log::error!("heap: freeing {:p} (order {}) failed: {:?}", ptr, order, e);
            }
        }
    }

    fn replenish(&self, order: u32) -> bool {
        super::pressure::replenish_without_waiting(1 << order) >= 1 << order
    }
}

// Host builds (tests) keep the host's allocator.
#[cfg_attr(target_os = "none", global_allocator)]
static HEAP: Heap<KernelPages> = Heap::new(KernelPages, events_mask::mask, events_mask::restore);

pub fn heap_stats() -> HeapStats {
    HEAP.stats()
}

/// Memory figures in pages.
#[derive(Debug, Clone, Copy)]
pub struct MemoryFigures {
    pub total: u64,
    pub free: u64,
    pub ballooned: u64,
    pub free_2m_extents: usize,
}

pub fn figures() -> MemoryFigures {
    with_frames(|f| MemoryFigures {
        total: f.total_pfns(),
        free: f.free_count(),
        ballooned: f.ballooned_count(),
        free_2m_extents: f.free_extents_2m(),
    })
}

/// Maps all RAM, builds the p2m, starts the frame allocator and the heap.
pub fn init() {
    let nr_pages = crate::platform::with_start_info(|si| si.nr_pages);
    // Without maxmem the physmap covers only the boot pages: the guest runs,
    // but the balloon can never grow past them.
    let max_pages = Hv::maximum_reservation().unwrap_or_else(|e| {
        log::error!(
            "memory: Xen refused maximum_reservation ({:?}); the balloon stays within the {} boot pages",
            e,
            nr_pages
        );
        nr_pages
    });
    let mut info = physmap::init(max_pages);
    let words = FrameAllocator::words_needed(info.max_pfn);
    let pages = (words * 8).div_ceil(4096);
    let first = info.boot.next;
    for _ in 0..pages {
        info.boot.take();
    }
    // SAFETY: these boot frames are contiguous, mapped, zeroed and never
    // handed out again (the allocator's free range starts after them).
    let storage = unsafe { core::slice::from_raw_parts_mut(pfn_to_va(first) as *mut u64, words) };
    let mut frames = FrameAllocator::new(storage, info.max_pfn);
    let reserved = info.boot.next;
    frames.add_free_range(reserved, info.nr_pages - reserved).expect("free range");
    if info.max_pfn > info.nr_pages {
        frames.add_unbacked_range(info.nr_pages, info.max_pfn - info.nr_pages).expect("unbacked range");
    }
    let free = frames.free_count();
    events_mask::without_events(|| *FRAMES.lock() = Some(frames));
    log::info!(
        "mm: {} pages mapped ({} newly), p2m for {} pfns, {} reserved at boot, {} free ({} MiB)",
        info.nr_pages,
        info.newly_mapped,
        info.max_pfn,
        reserved,
        free,
        free / 256
    );
}

/// Grows the guest's pfn space to `pages` (static-max, read by the balloon
/// once xenstore is up): a longer p2m, republished frame lists, and a
/// larger frame bitmap whose new pfns count as ballooned out until the
/// balloon populates them. Returns the pfn space now in effect.
pub fn grow_pfn_space(pages: u64) -> Result<u64, physmap::GrowError> {
    let old = physmap::max_pfn() as u64;
    if pages <= old {
        return Ok(old);
    }
    let new = physmap::grow(pages, &mut || with_frames(|f| f.alloc(0)))?;
    let words = FrameAllocator::words_needed(new);
    let mut storage = alloc::vec::Vec::new();
    storage.try_reserve_exact(words).map_err(|_| physmap::GrowError::OutOfMemory)?;
    storage.resize(words, 0u64);
    let storage: &'static mut [u64] = alloc::boxed::Box::leak(storage.into_boxed_slice());
    with_frames(|f| f.grow(storage, new));
    log::info!("mm: pfn space grown from {} to {} pages ({} MiB)", old, new, new / 256);
    Ok(new)
}
