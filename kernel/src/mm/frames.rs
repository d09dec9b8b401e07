//! The physical frame allocator: which of the guest's pseudo-physical
//! frames (pfns) are free.
//!
//! The model: the guest owns pfns `0..total_pfns()`. Each pfn is in one of
//! three states, but only one of them is recorded per frame:
//!
//! - *free*: its bit in the bitmap is set; `alloc` may hand it out;
//! - *in use*: allocated, or never added (kernel image, boot structures);
//! - *ballooned out*: handed back to Xen, so no memory backs it.
//!
//! In-use and ballooned frames both have a clear bit; the allocator only
//! counts how many are ballooned (`ballooned_count`), and the balloon driver
//! remembers which. One bit per frame keeps the whole map of a 2 GiB guest in
//! 64 KiB of caller-provided storage.
//!
//! The balloon returns memory to Xen best as whole 2 MiB extents (512
//! frames aligned to 512), so the allocator keeps such extents whole for as
//! long as it can: the bitmap is looked at as a row of 2 MiB *regions*, and
//! an allocation smaller than a region is served from the lowest region that
//! is already partly used before it breaks up a wholly free one (and then
//! the lowest such). The balloon takes from the top, so the two ends meet
//! as late as possible.
//!
//! Two hints keep allocation cheap: no region below `lowest_maybe_partial`
//! is partly free, and no region below `lowest_maybe_whole` is wholly free.
//! Every change to a region lowers the hint it now qualifies for, and
//! searches raise them past what they found not to qualify, so a run of
//! order-0 allocations looks at one region (8 words) each.

use core::ops::Range;

/// Frames in a 2 MiB extent, the unit the balloon prefers.
pub const FRAMES_PER_2M: u64 = 512;
/// The largest order `alloc` serves: one whole 2 MiB extent.
pub const MAX_ORDER: u32 = 9;

const BITS_PER_WORD: u64 = u64::BITS as u64;
const WORDS_PER_REGION: usize = (FRAMES_PER_2M / BITS_PER_WORD) as usize;

/// Why a request to change the frame map was refused. A refused request
/// changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The order is above `MAX_ORDER`.
    OrderTooLarge,
    /// The first pfn is not a multiple of 2^order.
    Misaligned,
    /// The range reaches past `total_pfns()`.
    OutOfRange,
    /// A frame in the range is already free: a double free, or an
    /// overlapping `add_free_range`.
    AlreadyFree,
    /// `give_back` of more frames than are recorded as ballooned out.
    NotBallooned,
}

/// A bitmap of free pfns plus the counts the balloon and sysrq report.
pub struct FrameAllocator {
    /// Bit `pfn % 64` of word `pfn / 64` is set when `pfn` is free. Bits for
    /// pfns at or past `nr_pfns` are always clear.
    free_bitmap: &'static mut [u64],
    nr_pfns: u64,
    nr_regions: usize,
    free_frames: u64,
    ballooned_frames: u64,
    whole_free_regions: usize,
    lowest_maybe_partial: usize,
    lowest_maybe_whole: usize,
}

impl FrameAllocator {
    /// How many `u64` words of storage `new` needs for `nr_pfns` frames
    /// (rounded up to whole 2 MiB regions, so every region has 8 words).
    pub const fn words_needed(nr_pfns: u64) -> usize {
        (nr_pfns.div_ceil(FRAMES_PER_2M) as usize) * WORDS_PER_REGION
    }

    /// An allocator for pfns `0..nr_pfns` over `storage`, with every frame in
    /// use; `add_free_range` then frees what the guest may hand out.
    ///
    /// Panics if `storage` is shorter than `words_needed(nr_pfns)`: that is a
    /// sizing mistake at boot, not a condition to recover from.
    pub fn new(storage: &'static mut [u64], nr_pfns: u64) -> Self {
        let words = Self::words_needed(nr_pfns);
        assert!(storage.len() >= words, "frame bitmap: {} words given, {} needed", storage.len(), words);
        let free_bitmap = &mut storage[..words];
        free_bitmap.fill(0);
        Self {
            free_bitmap,
            nr_pfns,
            nr_regions: words / WORDS_PER_REGION,
            free_frames: 0,
            ballooned_frames: 0,
            whole_free_regions: 0,
            lowest_maybe_partial: 0,
            lowest_maybe_whole: 0,
        }
    }

    /// Extends the allocator to `new_nr_pfns` over a larger `storage` (the
    /// old bitmap is copied over). The new pfns are not backed by Xen yet:
    /// they count as ballooned out until `give_back`. Used when the guest's
    /// pfn space grows toward static-max.
    ///
    /// Panics if `storage` is too short, as `new` does.
    pub fn grow(&mut self, storage: &'static mut [u64], new_nr_pfns: u64) {
        if new_nr_pfns <= self.nr_pfns {
            return;
        }
        let words = Self::words_needed(new_nr_pfns);
        assert!(storage.len() >= words, "frame bitmap: {} words given, {} needed", storage.len(), words);
        let old_words = self.free_bitmap.len();
        storage[..old_words].copy_from_slice(self.free_bitmap);
        storage[old_words..words].fill(0);
        self.free_bitmap = &mut storage[..words];
        self.ballooned_frames += new_nr_pfns - self.nr_pfns;
        self.nr_pfns = new_nr_pfns;
        self.nr_regions = words / WORDS_PER_REGION;
    }

    /// Number of pfns the allocator covers.
    pub fn total_pfns(&self) -> u64 {
        self.nr_pfns
    }

    /// Number of free frames.
    pub fn free_count(&self) -> u64 {
        self.free_frames
    }

    /// Number of frames recorded as ballooned out (not backed by Xen).
    pub fn ballooned_count(&self) -> u64 {
        self.ballooned_frames
    }

    /// Frames neither free nor ballooned: allocated or reserved at boot.
    pub fn used_count(&self) -> u64 {
        self.nr_pfns - self.free_frames - self.ballooned_frames
    }

    /// Number of aligned 2 MiB regions whose 512 frames are all free.
    pub fn free_extents_2m(&self) -> usize {
        self.whole_free_regions
    }

    /// Whether `pfn` is free (false for pfns out of range).
    pub fn is_free(&self, pfn: u64) -> bool {
        pfn < self.nr_pfns && self.free_bitmap[word_of(pfn)] & bit_of(pfn) != 0
    }

    /// Marks `count` frames from `start` free. Used at boot for the memory
    /// the kernel does not occupy. Refuses ranges that overlap free frames.
    pub fn add_free_range(&mut self, start: u64, count: u64) -> Result<(), FrameError> {
        self.check_range(start, count)?;
        if !self.all_in_state(start, count, false) {
            return Err(FrameError::AlreadyFree);
        }
        self.set_state(start, count, true);
        Ok(())
    }

    /// Records `count` in-use frames from `start` as ballooned out: pfns the
    /// guest may have but Xen does not back (e.g. above the boot allocation).
    /// They stay out of the free pool until `give_back`.
    pub fn add_unbacked_range(&mut self, start: u64, count: u64) -> Result<(), FrameError> {
        self.check_range(start, count)?;
        if !self.all_in_state(start, count, false) {
            return Err(FrameError::AlreadyFree);
        }
        self.ballooned_frames += count;
        Ok(())
    }

    /// Allocates 2^`order` contiguous free frames whose first pfn is a
    /// multiple of 2^`order`, and returns that pfn. `None` if the order is
    /// above `MAX_ORDER` or no such block is free.
    pub fn alloc(&mut self, order: u32) -> Option<u64> {
        if order > MAX_ORDER || self.free_frames < 1 << order {
            return None;
        }
        let pfn = match self.find_in_partial_region(order) {
            Some(pfn) => pfn,
            None => self.lowest_whole_region()? as u64 * FRAMES_PER_2M,
        };
        self.set_state(pfn, 1 << order, false);
        Some(pfn)
    }

    /// Frees the block of 2^`order` frames at `pfn` (the same order it was
    /// allocated with, or any aligned piece of it).
    pub fn free(&mut self, pfn: u64, order: u32) -> Result<(), FrameError> {
        let count = self.check_block(pfn, order)?;
        if !self.all_in_state(pfn, count, false) {
            return Err(FrameError::AlreadyFree);
        }
        self.set_state(pfn, count, true);
        Ok(())
    }

    /// For the balloon: takes the highest wholly free aligned 2 MiB region
    /// and returns its first pfn; its frames count as ballooned out.
    pub fn take_free_extent_2m_from_top(&mut self) -> Option<u64> {
        if self.whole_free_regions == 0 {
            return None;
        }
        let region = (0..self.nr_regions).rev().find(|&r| self.region_is_whole(r))?;
        let pfn = region as u64 * FRAMES_PER_2M;
        self.set_state(pfn, FRAMES_PER_2M, false);
        self.ballooned_frames += FRAMES_PER_2M;
        Some(pfn)
    }

    /// For the balloon: takes up to `out.len()` single free frames, writes
    /// their pfns to `out` and returns how many. Frames come highest first
    /// from regions that are already broken up; wholly free 2 MiB regions
    /// are only broken (again from the top) when those run out, since they
    /// are worth more as extents. Taken frames count as ballooned out.
    pub fn take_free_frames_from_top(&mut self, out: &mut [u64]) -> usize {
        let mut taken = 0;
        for spare_whole_regions in [true, false] {
            for region in (0..self.nr_regions).rev() {
                if taken == out.len() {
                    break;
                }
                if spare_whole_regions && self.region_is_whole(region) {
                    continue;
                }
                let first_word = region * WORDS_PER_REGION;
                for word in (first_word..first_word + WORDS_PER_REGION).rev() {
                    while taken < out.len() && self.free_bitmap[word] != 0 {
                        let bit = BITS_PER_WORD - 1 - self.free_bitmap[word].leading_zeros() as u64;
                        let pfn = word as u64 * BITS_PER_WORD + bit;
                        self.set_state(pfn, 1, false);
                        out[taken] = pfn;
                        taken += 1;
                    }
                }
            }
        }
        self.ballooned_frames += taken as u64;
        taken
    }

    /// For the balloon: puts 2^`order` ballooned-out frames at `pfn`, now
    /// backed by Xen again, back into the free pool.
    pub fn give_back(&mut self, pfn: u64, order: u32) -> Result<(), FrameError> {
        let count = self.check_block(pfn, order)?;
        if self.ballooned_frames < count {
            return Err(FrameError::NotBallooned);
        }
        if !self.all_in_state(pfn, count, false) {
            return Err(FrameError::AlreadyFree);
        }
        self.set_state(pfn, count, true);
        self.ballooned_frames -= count;
        Ok(())
    }

    /// The maximal runs of free frames, lowest first.
    pub fn iter_free_runs(&self) -> FreeRuns<'_> {
        FreeRuns { frames: self, next_pfn: 0 }
    }

    /// Length of the longest run of contiguous free frames.
    pub fn largest_free_run(&self) -> u64 {
        self.iter_free_runs().map(|run| run.end - run.start).max().unwrap_or(0)
    }

    // --- searching -------------------------------------------------------

    /// The lowest block of the order inside a partly used region, moving
    /// `lowest_maybe_partial` up to the first partly free region seen.
    fn find_in_partial_region(&mut self, order: u32) -> Option<u64> {
        if order >= MAX_ORDER {
            return None; // a partly used region cannot hold a whole-region block
        }
        let mut first_partial = None;
        let mut found = None;
        for region in self.lowest_maybe_partial..self.nr_regions {
            if !self.region_has_free(region) || self.region_is_whole(region) {
                continue;
            }
            first_partial.get_or_insert(region);
            found = self.find_in_region(region, order);
            if found.is_some() {
                break;
            }
        }
        self.lowest_maybe_partial = first_partial.unwrap_or(self.nr_regions);
        found
    }

    /// The lowest wholly free region, moving `lowest_maybe_whole` up to it.
    fn lowest_whole_region(&mut self) -> Option<usize> {
        let region = (self.lowest_maybe_whole..self.nr_regions).find(|&r| self.region_is_whole(r));
        self.lowest_maybe_whole = region.unwrap_or(self.nr_regions);
        region
    }

    /// The lowest aligned free block of 2^`order` frames in `region`.
    fn find_in_region(&self, region: usize, order: u32) -> Option<u64> {
        let first_word = region * WORDS_PER_REGION;
        let words = &self.free_bitmap[first_word..first_word + WORDS_PER_REGION];
        let pfn_of = |index: usize, bit: u32| (first_word + index) as u64 * BITS_PER_WORD + bit as u64;
        if (1u64 << order) <= BITS_PER_WORD {
            words.iter().enumerate().find_map(|(index, &word)| {
                let starts = aligned_free_block_starts(word, order);
                (starts != 0).then(|| pfn_of(index, starts.trailing_zeros()))
            })
        } else {
            let words_per_block = 1usize << (order - 6);
            (0..WORDS_PER_REGION)
                .step_by(words_per_block)
                .find(|&index| words[index..index + words_per_block].iter().all(|&w| w == u64::MAX))
                .map(|index| pfn_of(index, 0))
        }
    }

    fn region_words(&self, region: usize) -> &[u64] {
        let first_word = region * WORDS_PER_REGION;
        &self.free_bitmap[first_word..first_word + WORDS_PER_REGION]
    }

    fn region_is_whole(&self, region: usize) -> bool {
        self.region_words(region).iter().all(|&w| w == u64::MAX)
    }

    fn region_has_free(&self, region: usize) -> bool {
        self.region_words(region).iter().any(|&w| w != 0)
    }

    /// The first free pfn at or after `pfn`.
    fn next_free_from(&self, pfn: u64) -> Option<u64> {
        self.next_bit_from(pfn, 0)
    }

    /// The first in-use pfn at or after `pfn`, or `nr_pfns`.
    fn next_used_from(&self, pfn: u64) -> u64 {
        self.next_bit_from(pfn, u64::MAX).unwrap_or(self.nr_pfns).min(self.nr_pfns)
    }

    /// The first pfn at or after `pfn` whose bit differs from the bits of
    /// `flip` (0: find a set bit; all ones: find a clear bit).
    fn next_bit_from(&self, pfn: u64, flip: u64) -> Option<u64> {
        let mut word = word_of(pfn);
        let mut candidates = (self.free_bitmap.get(word)? ^ flip) & (u64::MAX << (pfn % BITS_PER_WORD));
        loop {
            if candidates != 0 {
                return Some(word as u64 * BITS_PER_WORD + candidates.trailing_zeros() as u64);
            }
            word += 1;
            candidates = self.free_bitmap.get(word)? ^ flip;
        }
    }

    // --- changing --------------------------------------------------------

    fn check_range(&self, start: u64, count: u64) -> Result<(), FrameError> {
        match start.checked_add(count) {
            Some(end) if end <= self.nr_pfns => Ok(()),
            _ => Err(FrameError::OutOfRange),
        }
    }

    /// Checks a block argument and returns its length in frames.
    fn check_block(&self, pfn: u64, order: u32) -> Result<u64, FrameError> {
        if order > MAX_ORDER {
            return Err(FrameError::OrderTooLarge);
        }
        let count = 1u64 << order;
        if !pfn.is_multiple_of(count) {
            return Err(FrameError::Misaligned);
        }
        self.check_range(pfn, count)?;
        Ok(count)
    }

    /// Whether every frame in the (checked) range is free (`free`) or
    /// every one is not.
    fn all_in_state(&self, start: u64, count: u64, free: bool) -> bool {
        let mut all = true;
        for_each_word_mask(start, start + count, |word, mask| {
            let bits = self.free_bitmap[word] & mask;
            all &= if free { bits == mask } else { bits == 0 };
        });
        all
    }

    /// Sets the (checked) range free or in use, keeping the counts and the
    /// hints true. The caller has checked every frame is in the other state.
    fn set_state(&mut self, start: u64, count: u64, free: bool) {
        let end = start + count;
        let mut pfn = start;
        while pfn < end {
            let region = (pfn / FRAMES_PER_2M) as usize;
            let region_end = ((region as u64 + 1) * FRAMES_PER_2M).min(end);
            let was_whole = self.region_is_whole(region);
            let bitmap = &mut *self.free_bitmap;
            for_each_word_mask(pfn, region_end, |word, mask| {
                if free {
                    bitmap[word] |= mask;
                } else {
                    bitmap[word] &= !mask;
                }
            });
            let is_whole = self.region_is_whole(region);
            match (was_whole, is_whole) {
                (false, true) => self.whole_free_regions += 1,
                (true, false) => self.whole_free_regions -= 1,
                _ => {}
            }
            if is_whole {
                self.lowest_maybe_whole = self.lowest_maybe_whole.min(region);
            } else if self.region_has_free(region) {
                self.lowest_maybe_partial = self.lowest_maybe_partial.min(region);
            }
            pfn = region_end;
        }
        if free {
            self.free_frames += count;
        } else {
            self.free_frames -= count;
        }
    }
}

/// Iterator over the maximal runs of free frames, as pfn ranges.
pub struct FreeRuns<'a> {
    frames: &'a FrameAllocator,
    next_pfn: u64,
}

impl Iterator for FreeRuns<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        let start = self.frames.next_free_from(self.next_pfn)?;
        let end = self.frames.next_used_from(start);
        self.next_pfn = end;
        Some(start..end)
    }
}

fn word_of(pfn: u64) -> usize {
    (pfn / BITS_PER_WORD) as usize
}

fn bit_of(pfn: u64) -> u64 {
    1 << (pfn % BITS_PER_WORD)
}

/// Calls `f(word index, mask)` for each bitmap word that `start..end`
/// touches, with the mask of the bits inside the range.
fn for_each_word_mask(start: u64, end: u64, mut f: impl FnMut(usize, u64)) {
    let mut pfn = start;
    while pfn < end {
        let first_bit = pfn % BITS_PER_WORD;
        let bits_here = (BITS_PER_WORD - first_bit).min(end - pfn);
        let mask = if bits_here == BITS_PER_WORD { u64::MAX } else { ((1 << bits_here) - 1) << first_bit };
        f(word_of(pfn), mask);
        pfn += bits_here;
    }
}

/// For one bitmap word and an order of at most 6: the bits at which a
/// 2^order-aligned block of all-free frames starts.
fn aligned_free_block_starts(word: u64, order: u32) -> u64 {
    // Fold so that bit i stays set only if bits i..i + 2^order are all set.
    let mut runs = word;
    let mut span = 1;
    while span < 1 << order {
        runs &= runs >> span;
        span <<= 1;
    }
    runs & block_start_pattern(order)
}

/// A word with every (2^order)-th bit set, starting at bit 0.
fn block_start_pattern(order: u32) -> u64 {
    let stride = 1u32 << order;
    let mut pattern = 0u64;
    let mut bit = 0;
    while bit < u64::BITS {
        pattern |= 1 << bit;
        bit += stride;
    }
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator(nr_pfns: u64) -> FrameAllocator {
        let storage = vec![0u64; FrameAllocator::words_needed(nr_pfns)].leak();
        FrameAllocator::new(storage, nr_pfns)
    }

    fn all_free(nr_pfns: u64) -> FrameAllocator {
        let mut frames = allocator(nr_pfns);
        frames.add_free_range(0, nr_pfns).unwrap();
        frames
    }

    #[test]
    fn starts_all_used_and_counts_added_ranges() {
        let mut frames = allocator(1000);
        assert_eq!((frames.total_pfns(), frames.free_count(), frames.used_count()), (1000, 0, 1000));
        assert_eq!(frames.alloc(0), None);
        frames.add_free_range(10, 600).unwrap();
        assert_eq!(frames.free_count(), 600);
        assert_eq!(frames.free_extents_2m(), 0, "no aligned region is wholly free");
        assert_eq!(frames.add_free_range(500, 20), Err(FrameError::AlreadyFree));
        assert_eq!(frames.add_free_range(990, 20), Err(FrameError::OutOfRange));
        assert_eq!(frames.free_count(), 600);
        assert_eq!(frames.iter_free_runs().collect::<Vec<_>>(), vec![10..610]);
    }

    #[test]
    fn blocks_are_aligned_to_their_order() {
        // Pfns 1 and 3 stay in use, so region 0 starts out fragmented.
        let mut frames = allocator(8 * FRAMES_PER_2M);
        for (start, count) in [(0, 1), (2, 1), (4, 8 * FRAMES_PER_2M - 4)] {
            frames.add_free_range(start, count).unwrap();
        }
        for order in (0..=MAX_ORDER).chain((0..=MAX_ORDER).rev()) {
            let pfn = frames.alloc(order).unwrap();
            assert_eq!(pfn % (1 << order), 0, "order {order} at {pfn}");
        }
        assert_eq!(frames.alloc(MAX_ORDER + 1), None);
    }

    #[test]
    fn exhaustion_and_recovery() {
        let mut frames = all_free(2 * FRAMES_PER_2M);
        let mut got: Vec<u64> = (0..1024).map(|_| frames.alloc(0).unwrap()).collect();
        assert_eq!(frames.alloc(0), None);
        assert_eq!(frames.free_count(), 0);
        got.sort_unstable();
        assert_eq!(got, (0..1024).collect::<Vec<_>>());
        frames.free(7, 0).unwrap();
        assert_eq!(frames.alloc(1), None, "a single free frame is not an order-1 block");
        assert_eq!(frames.alloc(0), Some(7));
    }

    #[test]
    fn small_allocations_keep_whole_regions_whole() {
        // Regions 0, 1 and 3 wholly free; region 2 partly used at boot.
        let mut frames = allocator(4 * FRAMES_PER_2M);
        frames.add_free_range(0, 2 * FRAMES_PER_2M).unwrap();
        frames.add_free_range(2 * FRAMES_PER_2M + 100, 4 * FRAMES_PER_2M - (2 * FRAMES_PER_2M + 100)).unwrap();
        assert_eq!(frames.free_extents_2m(), 3);
        // Small blocks come from the partly used region while it has room.
        assert_eq!(frames.alloc(0), Some(1024 + 100));
        assert_eq!(frames.alloc(2), Some(1024 + 104));
        for _ in 0..100 {
            let pfn = frames.alloc(0).unwrap();
            assert!((1024..1536).contains(&pfn));
        }
        assert_eq!(frames.free_extents_2m(), 3);
        // Use up region 2; the next small block breaks the *lowest* region.
        while frames.free_count() > 3 * FRAMES_PER_2M {
            frames.alloc(0).unwrap();
        }
        assert_eq!(frames.alloc(3), Some(0));
        assert_eq!(frames.free_extents_2m(), 2);
        // A frame freed in a used-up region is taken before another whole
        // region is broken, once the lower broken region is used up.
        frames.free(1030, 0).unwrap();
        while frames.free_count() > 2 * FRAMES_PER_2M + 1 {
            assert!(frames.alloc(0).unwrap() < 512);
        }
        assert_eq!(frames.alloc(0), Some(1030));
        assert_eq!(frames.alloc(0), Some(512));
        assert_eq!(frames.alloc(MAX_ORDER), Some(1536));
        assert_eq!(frames.free_extents_2m(), 0);
    }

    #[test]
    fn balloon_takes_from_the_top() {
        let mut frames = all_free(4 * FRAMES_PER_2M + 100);
        assert_eq!(frames.free_extents_2m(), 4, "the partial tail region is not an extent");
        assert_eq!(frames.take_free_extent_2m_from_top(), Some(3 * FRAMES_PER_2M));
        assert_eq!(frames.take_free_extent_2m_from_top(), Some(2 * FRAMES_PER_2M));
        assert_eq!(frames.ballooned_count(), 2 * FRAMES_PER_2M);
        // Single frames: first the broken tail region, top down...
        let mut out = [0u64; 102];
        assert_eq!(frames.take_free_frames_from_top(&mut out), 102);
        let tail: Vec<u64> = (2048..2148).rev().collect();
        assert_eq!(&out[..100], &tail[..]);
        // ...then the highest whole region.
        assert_eq!(&out[100..], &[1023, 1022]);
        assert_eq!(frames.free_extents_2m(), 1);
        assert_eq!(frames.ballooned_count(), 1024 + 102);
        // Repopulated frames come back as free.
        frames.give_back(2 * FRAMES_PER_2M, MAX_ORDER).unwrap();
        frames.give_back(1022, 1).unwrap();
        assert_eq!(frames.free_extents_2m(), 3);
        assert_eq!(frames.give_back(1022, 0), Err(FrameError::AlreadyFree));
        assert_eq!(frames.ballooned_count(), 512 + 100);
        assert_eq!(frames.largest_free_run(), 3 * FRAMES_PER_2M);
    }

    #[test]
    fn give_back_needs_ballooned_frames() {
        let mut frames = allocator(FRAMES_PER_2M);
        assert_eq!(frames.give_back(0, 0), Err(FrameError::NotBallooned));
        frames.add_unbacked_range(256, 256).unwrap();
        assert_eq!(frames.ballooned_count(), 256);
        frames.give_back(256, 8).unwrap();
        assert_eq!((frames.free_count(), frames.ballooned_count()), (256, 0));
    }

    #[test]
    fn bad_frees_are_refused_without_changing_counts() {
        let mut frames = all_free(FRAMES_PER_2M);
        let pfn = frames.alloc(2).unwrap();
        frames.free(pfn, 2).unwrap();
        let before = (frames.free_count(), frames.free_extents_2m());
        assert_eq!(frames.free(pfn, 2), Err(FrameError::AlreadyFree));
        assert_eq!(frames.free(pfn + 1, 0), Err(FrameError::AlreadyFree));
        assert_eq!(frames.free(FRAMES_PER_2M, 0), Err(FrameError::OutOfRange));
        assert_eq!(frames.free(u64::MAX - 3, 2), Err(FrameError::OutOfRange));
        assert_eq!(frames.free(2, 2), Err(FrameError::Misaligned));
        assert_eq!(frames.free(0, 10), Err(FrameError::OrderTooLarge));
        assert_eq!((frames.free_count(), frames.free_extents_2m()), before);
        // A partly free block is refused as a whole.
        let a = frames.alloc(1).unwrap();
        frames.free(a, 0).unwrap();
        assert_eq!(frames.free(a, 1), Err(FrameError::AlreadyFree));
        frames.free(a + 1, 0).unwrap();
        assert_eq!(frames.free_count(), FRAMES_PER_2M);
    }

    #[test]
    fn order_zero_allocations_stay_cheap_on_a_large_map() {
        // Quadratic rescans would take seconds here; the hints make it linear.
        let nr_pfns = 64 * 1024;
        let mut frames = all_free(nr_pfns);
        for expected in 0..nr_pfns {
            assert_eq!(frames.alloc(0), Some(expected));
        }
        assert_eq!(frames.alloc(0), None);
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Model {
        Used,
        Free,
        Ballooned,
    }

    #[test]
    fn random_operations_match_a_model() {
        let nr_pfns = 9 * FRAMES_PER_2M + 77;
        let mut frames = allocator(nr_pfns);
        let mut model = vec![Model::Used; nr_pfns as usize];
        let mut rng = crate::testing::Rng(0x9e37_79b9_7f4a_7c15);
        // Boot: everything free except a few reserved holes.
        for (start, count) in [(0, 40), (600, 3000), (3700, nr_pfns - 3700)] {
            frames.add_free_range(start, count).unwrap();
            model[start as usize..(start + count) as usize].fill(Model::Free);
        }
        let mut allocated: Vec<(u64, u32)> = Vec::new();
        let mut ballooned: Vec<u64> = Vec::new();
        let mut freed: Vec<(u64, u32)> = Vec::new();

        for step in 0..2400usize {
            match rng.below(100) {
                0..=49 => {
                    let order = [0, 0, 0, 0, 1, 2, 3, 5, 7, 9][rng.below(10) as usize];
                    if let Some(pfn) = frames.alloc(order) {
                        assert_eq!(pfn % (1 << order), 0);
                        for m in &mut model[pfn as usize..(pfn + (1 << order)) as usize] {
                            assert_eq!(*m, Model::Free, "step {step}: alloc handed out a non-free frame");
                            *m = Model::Used;
                        }
                        allocated.push((pfn, order));
                    }
                }
                50..=84 if !allocated.is_empty() => {
                    let (pfn, order) = allocated.swap_remove(rng.below(allocated.len() as u64) as usize);
                    frames.free(pfn, order).unwrap();
                    model[pfn as usize..(pfn + (1 << order)) as usize].fill(Model::Free);
                    freed.push((pfn, order));
                }
                85..=87 if !freed.is_empty() => {
                    // A double free; skipped if all of it was handed out again.
                    let (pfn, order) = freed[rng.below(freed.len() as u64) as usize];
                    let range = pfn as usize..(pfn + (1 << order)) as usize;
                    if model[range].contains(&Model::Free) {
                        assert_eq!(frames.free(pfn, order), Err(FrameError::AlreadyFree));
                    }
                }
                88..=90 => {
                    if let Some(pfn) = frames.take_free_extent_2m_from_top() {
                        let range = pfn as usize..(pfn + FRAMES_PER_2M) as usize;
                        assert!(model[range.clone()].iter().all(|&m| m == Model::Free));
                        model[range].fill(Model::Ballooned);
                        ballooned.extend(pfn..pfn + FRAMES_PER_2M);
                    }
                }
                91..=94 => {
                    let mut out = [0u64; 37];
                    let n = frames.take_free_frames_from_top(&mut out);
                    for &pfn in &out[..n] {
                        assert_eq!(model[pfn as usize], Model::Free);
                        model[pfn as usize] = Model::Ballooned;
                    }
                    ballooned.extend_from_slice(&out[..n]);
                }
                _ if !ballooned.is_empty() => {
                    let pfn = ballooned.swap_remove(rng.below(ballooned.len() as u64) as usize);
                    frames.give_back(pfn, 0).unwrap();
                    model[pfn as usize] = Model::Free;
                }
                _ => {}
            }
            if step.is_multiple_of(8) {
                check_against_model(&frames, &model, step);
            }
        }
        check_against_model(&frames, &model, usize::MAX);
    }

    fn check_against_model(frames: &FrameAllocator, model: &[Model], step: usize) {
        let count = |state| model.iter().filter(|&&m| m == state).count() as u64;
        assert_eq!(frames.free_count(), count(Model::Free), "step {step}");
        assert_eq!(frames.ballooned_count(), count(Model::Ballooned), "step {step}");
        for (pfn, &m) in model.iter().enumerate() {
            assert_eq!(frames.is_free(pfn as u64), m == Model::Free, "step {step} pfn {pfn}");
        }
        let whole = model.chunks_exact(FRAMES_PER_2M as usize).filter(|r| r.iter().all(|&m| m == Model::Free)).count();
        assert_eq!(frames.free_extents_2m(), whole, "step {step}");
        if step.is_multiple_of(64) {
            let mut longest = 0;
            let mut run = 0;
            for &m in model {
                run = if m == Model::Free { run + 1 } else { 0 };
                longest = longest.max(run);
            }
            assert_eq!(frames.largest_free_run(), longest, "step {step}");
            let runs: u64 = frames.iter_free_runs().map(|r| r.end - r.start).sum();
            assert_eq!(runs, count(Model::Free));
        }
    }

    #[test]
    fn growing_adds_ballooned_pfns_and_keeps_state() {
        let storage: &'static mut [u64] = Box::leak(vec![0u64; FrameAllocator::words_needed(1000)].into_boxed_slice());
        let mut f = FrameAllocator::new(storage, 1000);
        f.add_free_range(10, 990).unwrap();
        let a = f.alloc(0).unwrap();
        let bigger: &'static mut [u64] = Box::leak(vec![0u64; FrameAllocator::words_needed(3000)].into_boxed_slice());
        f.grow(bigger, 3000);
        assert_eq!(f.total_pfns(), 3000);
        assert_eq!(f.ballooned_count(), 2000);
        assert_eq!(f.free_count(), 989);
        assert!(!f.is_free(a) && !f.is_free(2500));
        // A grown pfn comes into use once Xen backs it.
        f.give_back(2048, 9).unwrap();
        assert_eq!(f.free_count(), 989 + 512);
        assert_eq!(f.ballooned_count(), 2000 - 512);
        assert_eq!(f.free_extents_2m(), 1); // only the grown region is wholly free
    }
}
