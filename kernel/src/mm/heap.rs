//! The kernel heap: `GlobalAlloc` over a source of whole pages.
//!
//! The model: a request is either *small* or *large*.
//!
//! - Small requests (size and alignment both at most 2048 bytes) are
//!   rounded up to a power-of-two size class from 16 to 2048 bytes. Each
//!   class keeps an intrusive free list: a free block holds the pointer to
//!   the next one in its own first bytes. An empty class takes one page from
//!   the source and cuts it into blocks of its size; since pages are
//!   page-aligned and sizes are powers of two, every block is aligned to its
//!   own size, which covers the alignment asked for. Freed small blocks go
//!   back onto their list and the pages stay with the heap.
//! - Large requests take 2^order whole pages straight from the source,
//!   enough for the size and aligned to at least the alignment, and give
//!   them back on `dealloc`.
//!
//! `dealloc` gets the same `Layout` as `alloc`, so it recomputes the same
//! class or order; no header is stored next to the memory.
//!
//! Locking: a `spin::Mutex`, because the kernel has no scheduler to sleep
//! on and the lock is held only for a few list operations (or one call to
//! the page source). A spin lock alone would deadlock if the event upcall
//! allocated while the code it interrupted held the lock, so every
//! operation runs with events masked through the `mask`/`restore` pair
//! given to `Heap::new`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use spin::Mutex;

/// Size of a page, the unit of the page source.
pub const PAGE_SIZE: usize = 4096;

const SMALLEST_CLASS_SIZE: usize = 16;
const LARGEST_CLASS_SIZE: usize = 2048;
const NR_CLASSES: usize = (LARGEST_CLASS_SIZE / SMALLEST_CLASS_SIZE).trailing_zeros() as usize + 1;
/// Largest order the heap asks a page source for (1 GiB); bigger requests
/// fail without asking.
pub const MAX_LARGE_ORDER: u32 = 18;

/// Where the heap gets its memory: blocks of 2^order contiguous pages.
pub trait PageSource {
    /// Returns 2^`order` contiguous, writable pages, aligned to
    /// `PAGE_SIZE << order`, or `None` if there are none. (The heap checks
    /// the alignment and treats a misaligned block as a failure.)
    fn alloc_pages(&self, order: u32) -> Option<*mut u8>;

    /// Returns pages to the source.
    ///
    /// # Safety
    ///
    /// `ptr` must have come from `alloc_pages(order)` on this source, with
    /// the same `order`, and not have been freed since; nothing may use the
    /// pages afterwards.
    unsafe fn free_pages(&self, ptr: *mut u8, order: u32);

    /// Called, without the heap's lock, when a request for 2^`order` pages
    /// could not be met: the source may find more memory (the kernel's
    /// takes it back from Xen). True if a second try may succeed.
    fn replenish(&self, _order: u32) -> bool {
        false
    }
}

/// Figures for the sysrq memory report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed, counted as rounded up to the
    /// class size or to whole pages.
    pub bytes_in_use: usize,
    /// Pages the heap holds from the source: small-class pages (kept for
    /// good) and live large allocations.
    pub pages_held: usize,
    /// Allocations handed out and not yet freed.
    pub live_allocations: usize,
    /// Requests answered with null since boot.
    pub failed_allocations: usize,
}

/// The kernel heap over page source `S`.
pub struct Heap<S> {
    source: S,
    state: Mutex<HeapState>,
    mask_events: fn() -> bool,
    restore_events: fn(bool),
}

/// A free small block; the link lives inside the free memory itself.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct HeapState {
    /// Head of each size class's free list; class `i` holds blocks of
    /// `SMALLEST_CLASS_SIZE << i` bytes.
    free_lists: [*mut FreeBlock; NR_CLASSES],
    stats: HeapStats,
}

// SAFETY: the free-list pointers point into pages the heap owns exclusively;
// they are only followed with the state's mutex held, whichever CPU holds it.
unsafe impl Send for HeapState {}

/// How a layout is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    Small {
        class: usize,
    },
    Large {
        order: u32,
    },
    /// More than `MAX_LARGE_ORDER` pages, or an impossible size.
    TooBig,
}

impl Placement {
    fn of(layout: Layout) -> Placement {
        let size = layout.size().max(layout.align()).max(SMALLEST_CLASS_SIZE);
        if size <= LARGEST_CLASS_SIZE {
            let class_size = size.next_power_of_two();
            let class = (class_size / SMALLEST_CLASS_SIZE).trailing_zeros() as usize;
            return Placement::Small { class };
        }
        // `size` covers the alignment too, and 2^order pages are aligned to
        // their own size.
        match size.div_ceil(PAGE_SIZE).checked_next_power_of_two() {
            Some(pages) if pages.trailing_zeros() <= MAX_LARGE_ORDER => {
                Placement::Large { order: pages.trailing_zeros() }
            }
            _ => Placement::TooBig,
        }
    }

    /// The bytes this placement hands out.
    fn bytes(self) -> usize {
        match self {
            Placement::Small { class } => SMALLEST_CLASS_SIZE << class,
            Placement::Large { order } => PAGE_SIZE << order,
            Placement::TooBig => 0,
        }
    }
}

impl<S: PageSource> Heap<S> {
    /// A heap over `source`. `mask_events` masks event delivery and returns
    /// whether it was masked before; `restore_events` puts that back. The
    /// kernel passes `events_mask::{mask, restore}`; host tests pass no-ops.
    pub const fn new(source: S, mask_events: fn() -> bool, restore_events: fn(bool)) -> Self {
        Self {
            source,
            state: Mutex::new(HeapState {
                free_lists: [ptr::null_mut(); NR_CLASSES],
                stats: HeapStats { bytes_in_use: 0, pages_held: 0, live_allocations: 0, failed_allocations: 0 },
            }),
            mask_events,
            restore_events,
        }
    }

    /// A copy of the current figures.
    pub fn stats(&self) -> HeapStats {
        self.with_state(|state| state.stats)
    }

    /// Runs `f` on the state with events masked and the lock held.
    fn with_state<R>(&self, f: impl FnOnce(&mut HeapState) -> R) -> R {
        let was_masked = (self.mask_events)();
        let result = f(&mut self.state.lock());
        (self.restore_events)(was_masked);
        result
    }

    fn alloc_small(&self, state: &mut HeapState, class: usize) -> *mut u8 {
        if state.free_lists[class].is_null() {
            let Some(page) = self.source.alloc_pages(0) else {
                return ptr::null_mut();
            };
            if !(page as usize).is_multiple_of(PAGE_SIZE) {
                // SAFETY: `page` came from `alloc_pages(0)` and is unused.
                unsafe { self.source.free_pages(page, 0) };
                return ptr::null_mut();
            }
            state.stats.pages_held += 1;
            let block_size = SMALLEST_CLASS_SIZE << class;
            // Push from the top so the lowest block is handed out first.
            for offset in (0..PAGE_SIZE).step_by(block_size).rev() {
                // SAFETY: `offset` is inside the page we now own alone; the
                // block is aligned to at least 16, enough for a pointer.
                unsafe { push(&mut state.free_lists[class], page.add(offset)) };
            }
        }
        let block = state.free_lists[class];
        // SAFETY: a non-null head is a free block of this class, linked by
        // `push`, and nothing else refers to it.
        state.free_lists[class] = unsafe { (*block).next };
        block.cast()
    }

    fn alloc_large(&self, order: u32) -> *mut u8 {
        let Some(pages) = self.source.alloc_pages(order) else {
            return ptr::null_mut();
        };
        if !(pages as usize).is_multiple_of(PAGE_SIZE << order) {
            // SAFETY: `pages` came from `alloc_pages(order)` and is unused.
            unsafe { self.source.free_pages(pages, order) };
            return ptr::null_mut();
        }
        pages
    }
}

/// Puts `block` at the head of `list`.
///
/// # Safety
///
/// `block` must be valid for writes of a pointer, aligned for one, owned
/// by the heap and on no list.
unsafe fn push(list: &mut *mut FreeBlock, block: *mut u8) {
    let block = block.cast::<FreeBlock>();
    // SAFETY: the caller guarantees `block` is writable, aligned and unused.
    unsafe { block.write(FreeBlock { next: *list }) };
    *list = block;
}

// SAFETY: blocks handed out are at least `layout.size()` bytes, aligned to
// `layout.align()` (class blocks are aligned to their size, page blocks to
// theirs), and are never handed out twice until freed.
unsafe impl<S: PageSource> GlobalAlloc for Heap<S> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let placement = Placement::of(layout);
        let attempt = |last: bool| {
            self.with_state(|state| {
                let block = match placement {
                    Placement::Small { class } => self.alloc_small(state, class),
                    Placement::Large { order } => self.alloc_large(order),
                    Placement::TooBig => ptr::null_mut(),
                };
                if !block.is_null() {
                    state.stats.bytes_in_use += placement.bytes();
                    state.stats.live_allocations += 1;
                    if let Placement::Large { order } = placement {
                        state.stats.pages_held += 1 << order;
                    }
                } else if last {
                    state.stats.failed_allocations += 1;
                }
                block
            })
        };
        let source_order = match placement {
            Placement::Small { .. } => 0,
            Placement::Large { order } => order,
            Placement::TooBig => return attempt(true),
        };
        let block = attempt(false);
        if !block.is_null() {
            return block;
        }
        if self.source.replenish(source_order) {
            attempt(true)
        } else {
            self.with_state(|state| state.stats.failed_allocations += 1);
            ptr::null_mut()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let placement = Placement::of(layout);
        self.with_state(|state| {
            match placement {
                // SAFETY: `GlobalAlloc::dealloc`'s contract: `ptr` came from
                // `alloc` with this layout, so it is a block of this class
                // that nothing uses any more.
                Placement::Small { class } => unsafe { push(&mut state.free_lists[class], ptr) },
                Placement::Large { order } => {
                    // SAFETY: as above, `ptr` came from `alloc_pages(order)`.
                    unsafe { self.source.free_pages(ptr, order) };
                    state.stats.pages_held -= 1 << order;
                }
                Placement::TooBig => return, // never handed out
            }
            state.stats.bytes_in_use -= placement.bytes();
            state.stats.live_allocations -= 1;
        })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `realloc`'s contract makes `new_size` with this alignment a
        // valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if Placement::of(new_layout) == Placement::of(layout) {
            return ptr; // the block already fits, and dealloc will agree
        }
        // SAFETY: the caller upholds `alloc`'s contract for `new_layout`.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long;
            // the old block came from `alloc(layout)`.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Pages from std's allocator, counted.
    #[derive(Default)]
    struct StdPages {
        outstanding_pages: AtomicUsize,
    }

    impl PageSource for StdPages {
        fn alloc_pages(&self, order: u32) -> Option<*mut u8> {
            let layout = Layout::from_size_align(PAGE_SIZE << order, PAGE_SIZE << order).ok()?;
            // SAFETY: the layout has a non-zero size.
            let pages = unsafe { std::alloc::alloc(layout) };
            self.outstanding_pages.fetch_add(1 << order, Ordering::Relaxed);
            (!pages.is_null()).then_some(pages)
        }

        unsafe fn free_pages(&self, ptr: *mut u8, order: u32) {
            self.outstanding_pages.fetch_sub(1 << order, Ordering::Relaxed);
            // SAFETY: the caller passes back a block from `alloc_pages(order)`,
            // which used this layout.
            unsafe {
                std::alloc::dealloc(ptr, Layout::from_size_align_unchecked(PAGE_SIZE << order, PAGE_SIZE << order))
            }
        }
    }

    fn no_mask() -> bool {
        false
    }
    fn no_restore(_: bool) {}

    fn heap() -> Heap<StdPages> {
        Heap::new(StdPages::default(), no_mask, no_restore)
    }

    struct Prng(u64);
    impl Prng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    struct Live {
        ptr: *mut u8,
        layout: Layout,
        pattern: u8,
    }

    fn fill(live: &Live) {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes.
        unsafe { ptr::write_bytes(live.ptr, live.pattern, live.layout.size()) }
    }

    fn check(live: &Live) {
        // SAFETY: as in `fill`.
        let bytes = unsafe { std::slice::from_raw_parts(live.ptr, live.layout.size()) };
        assert!(bytes.iter().all(|&b| b == live.pattern), "allocation at {:p} was overwritten", live.ptr);
    }

    #[test]
    fn placement_of_layouts() {
        let place = |size, align| Placement::of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(place(1, 1), Placement::Small { class: 0 });
        assert_eq!(place(17, 8), Placement::Small { class: 1 });
        assert_eq!(place(8, 512), Placement::Small { class: 5 });
        assert_eq!(place(2048, 8), Placement::Small { class: 7 });
        assert_eq!(place(2049, 8), Placement::Large { order: 0 });
        assert_eq!(place(8, 4096), Placement::Large { order: 0 });
        assert_eq!(place(3 * PAGE_SIZE, 8), Placement::Large { order: 2 });
        assert_eq!(place(8, 2 << 20), Placement::Large { order: 9 });
        assert_eq!(place(8, PAGE_SIZE << (MAX_LARGE_ORDER + 1)), Placement::TooBig);
        assert_eq!(place(isize::MAX as usize - 4096, 1), Placement::TooBig);
    }

    #[test]
    fn mixed_allocations_do_not_overlap_and_keep_their_contents() {
        let heap = heap();
        let mut rng = Prng(0x1234_5678_9abc_def1);
        let mut live: Vec<Live> = Vec::new();
        let aligns = [1, 2, 8, 16, 64, 256, 4096, 16384];
        for round in 0..5 {
            for i in 0..400 {
                let size = match rng.below(10) {
                    0 => 2049 + rng.below(20_000) as usize,
                    _ => 1 + rng.below(2048) as usize,
                };
                let align = aligns[rng.below(aligns.len() as u64) as usize];
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: the layout has a non-zero size.
                let ptr = unsafe { heap.alloc(layout) };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % align, 0, "{layout:?}");
                let entry = Live { ptr, layout, pattern: (round * 400 + i) as u8 | 1 };
                fill(&entry);
                live.push(entry);
            }
            // Free about half, in random order, checking contents first.
            for _ in 0..200 {
                let entry = live.swap_remove(rng.below(live.len() as u64) as usize);
                check(&entry);
                // SAFETY: `entry` came from `heap.alloc(entry.layout)`.
                unsafe { heap.dealloc(entry.ptr, entry.layout) };
            }
        }
        live.iter().for_each(check);
        let mut ranges: Vec<(usize, usize)> =
            live.iter().map(|l| (l.ptr as usize, l.ptr as usize + l.layout.size())).collect();
        ranges.sort_unstable();
        assert!(ranges.windows(2).all(|pair| pair[0].1 <= pair[1].0), "allocations overlap");
        let stats = heap.stats();
        assert_eq!(stats.live_allocations, live.len());
        assert_eq!(stats.pages_held, heap.source.outstanding_pages.load(Ordering::Relaxed));

        for entry in live.drain(..) {
            check(&entry);
            // SAFETY: as above.
            unsafe { heap.dealloc(entry.ptr, entry.layout) };
        }
        let stats = heap.stats();
        assert_eq!((stats.live_allocations, stats.bytes_in_use, stats.failed_allocations), (0, 0, 0));
        assert_eq!(stats.pages_held, heap.source.outstanding_pages.load(Ordering::Relaxed));
    }

    #[test]
    fn large_allocations_return_to_baseline() {
        let heap = heap();
        let small = Layout::new::<[u64; 4]>();
        // SAFETY: non-zero size.
        let kept = unsafe { heap.alloc(small) };
        let baseline = heap.stats();
        let layouts = [(5000, 8), (PAGE_SIZE, PAGE_SIZE), (70_000, 64), (100, 1 << 16)];
        let blocks: Vec<_> = layouts
            .iter()
            .map(|&(size, align)| {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero size.
                (unsafe { heap.alloc(layout) }, layout)
            })
            .collect();
        assert_eq!(heap.stats().pages_held, baseline.pages_held + 2 + 1 + 32 + 16);
        for (ptr, layout) in blocks {
            assert_eq!(ptr as usize % layout.align(), 0);
            // SAFETY: from `heap.alloc(layout)` above.
            unsafe { heap.dealloc(ptr, layout) };
        }
        assert_eq!(heap.stats(), baseline);
        assert_eq!(heap.source.outstanding_pages.load(Ordering::Relaxed), baseline.pages_held);
        // SAFETY: from `heap.alloc(small)`.
        unsafe { heap.dealloc(kept, small) };
    }

    #[test]
    fn small_blocks_are_reused_and_too_big_fails() {
        let heap = heap();
        let layout = Layout::from_size_align(24, 8).unwrap();
        // SAFETY: non-zero sizes; each pointer is freed with its layout.
        unsafe {
            let a = heap.alloc(layout);
            let b = heap.alloc(layout);
            assert_eq!(b as usize - a as usize, 32, "one page is carved into 32-byte blocks");
            heap.dealloc(a, layout);
            assert_eq!(heap.alloc(layout), a);
            assert_eq!(heap.stats().pages_held, 1);
            let huge = Layout::from_size_align(8, PAGE_SIZE << (MAX_LARGE_ORDER + 1)).unwrap();
            assert!(heap.alloc(huge).is_null());
            assert_eq!(heap.stats().failed_allocations, 1);
            heap.dealloc(a, layout);
            heap.dealloc(b, layout);
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes() {
        let heap = heap();
        let layout = Layout::from_size_align(10, 2).unwrap();
        // SAFETY: non-zero sizes; every pointer is used within its size.
        unsafe {
            let p = heap.alloc(layout);
            ptr::copy_nonoverlapping(b"ballast!!!".as_ptr(), p, 10);
            assert_eq!(heap.realloc(p, layout, 14), p, "same class, same block");
            let q = heap.realloc(p, layout, 9000);
            assert_eq!(std::slice::from_raw_parts(q, 10), b"ballast!!!");
            heap.dealloc(q, Layout::from_size_align(9000, 2).unwrap());
        }
        assert_eq!(heap.stats().live_allocations, 0);
    }

    /// The kernel's `#[global_allocator]` is a static: `new` must be const
    /// and the heap `Sync` for a `Sync` source.
    #[test]
    fn heap_can_be_a_static() {
        struct NoPages;
        impl PageSource for NoPages {
            fn alloc_pages(&self, _order: u32) -> Option<*mut u8> {
                None
            }
            unsafe fn free_pages(&self, _ptr: *mut u8, _order: u32) {}
        }
        static HEAP: Heap<NoPages> = Heap::new(NoPages, no_mask, no_restore);
        // SAFETY: non-zero size.
        assert!(unsafe { HEAP.alloc(Layout::new::<u64>()) }.is_null());
        assert_eq!(HEAP.stats().failed_allocations, 1);
    }

    static MASKS: AtomicUsize = AtomicUsize::new(0);
    static RESTORES: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn events_are_masked_around_every_operation() {
        fn mask() -> bool {
            MASKS.fetch_add(1, Ordering::Relaxed);
            true
        }
        fn restore(was_masked: bool) {
            assert!(was_masked, "restore gets what mask returned");
            RESTORES.fetch_add(1, Ordering::Relaxed);
        }
        let heap = Heap::new(StdPages::default(), mask, restore);
        let layout = Layout::new::<u64>();
        // SAFETY: non-zero size; freed with its layout.
        unsafe { heap.dealloc(heap.alloc(layout), layout) };
        assert_eq!(MASKS.load(Ordering::Relaxed), 2);
        assert_eq!(RESTORES.load(Ordering::Relaxed), 2);
    }

    /// Pages from std's allocator while a budget lasts; `replenish` adds
    /// to the budget a given number of times, as the kernel's source takes
    /// memory back from Xen until Xen has none.
    struct Budgeted {
        inner: StdPages,
        budget: AtomicUsize,
        refills: AtomicUsize,
    }

    impl PageSource for Budgeted {
        fn alloc_pages(&self, order: u32) -> Option<*mut u8> {
            let need = 1usize << order;
            self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(need)).ok()?;
            self.inner.alloc_pages(order)
        }
        unsafe fn free_pages(&self, ptr: *mut u8, order: u32) {
            self.budget.fetch_add(1 << order, Ordering::Relaxed);
            // SAFETY: passed on from our own caller, under the same contract.
            unsafe { self.inner.free_pages(ptr, order) }
        }
        fn replenish(&self, order: u32) -> bool {
            if self.refills.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1)).is_err() {
                return false;
            }
            self.budget.fetch_add(1 << order, Ordering::Relaxed);
            true
        }
    }

    #[test]
    fn a_short_source_is_replenished_before_a_request_fails() {
        let h = Heap::new(
            Budgeted { inner: StdPages::default(), budget: AtomicUsize::new(0), refills: AtomicUsize::new(2) },
            no_mask,
            no_restore,
        );
        let big = Layout::from_size_align(3 * PAGE_SIZE, 8).unwrap(); // order 2
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: non-zero layouts; every block is freed with its layout.
        unsafe {
            let a = h.alloc(big);
            let b = h.alloc(small);
            assert!(!a.is_null() && !b.is_null(), "each met after one replenish");
            assert_eq!(h.stats().failed_allocations, 0);
            let c = h.alloc(big);
            assert!(c.is_null(), "no refill left: the request fails, nothing panics");
            assert_eq!(h.stats().failed_allocations, 1);
            h.dealloc(a, big);
            h.dealloc(b, small);
            let d = h.alloc(big);
            assert!(!d.is_null(), "freed pages serve the next request");
            h.dealloc(d, big);
        }
    }
}
