//! The frame allocator driven by arbitrary sequences of allocations,
//! frees, balloon takes and give-backs, and growth, checked against a
//! model that knows each frame's one owner.
//!
//! Checked: a frame handed out is free in the model (never owned twice);
//! an allocation fails only when the model has no aligned free block of
//! that order; every refused request changes nothing; the counts and
//! the bitmap agree with the model after every step (no frame lost).
#![no_main]

use arbitrary::Arbitrary;
use kernel::mm::frames::{FrameAllocator, FrameError, FRAMES_PER_2M, MAX_ORDER};
use libfuzzer_sys::fuzz_target;

/// Up to 8 regions of 2 MiB, before and after growing.
const MAX_PFNS: u64 = 8 * FRAMES_PER_2M;
const WORDS: usize = FrameAllocator::words_needed(MAX_PFNS);

/// The allocator's storage: `new` and `grow` want `'static` words, and a
/// fresh leak per input would read as a leak to the fuzzer. One input runs
/// at a time and each `FrameAllocator` is dropped before the next takes
/// the storage again.
static mut FIRST: [u64; WORDS] = [0; WORDS];
static mut GROWN: [u64; WORDS] = [0; WORDS];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Free,
    /// Allocated (by the allocation numbered so) or never added.
    Used,
    Ballooned,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc { order: u8 },
    Free { nth: u8 },
    FreeRaw { pfn: u16, order: u8 },
    TakeExtent,
    TakeFrames { n: u16 },
    GiveBack { nth: u16, whole: bool },
    GiveBackRaw { pfn: u16, order: u8 },
    Grow { regions: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    regions: u8,
    /// Frames added free at boot: (start, count) pairs.
    free: Vec<(u16, u16)>,
    unbacked: Option<(u16, u16)>,
    ops: Vec<Op>,
}

struct Model {
    owner: Vec<Owner>,
    allocations: Vec<(u64, u32)>,
    /// Ballooned blocks, as taken.
    ballooned: Vec<(u64, u32)>,
}

impl Model {
    fn count(&self, o: Owner) -> u64 {
        self.owner.iter().filter(|&&x| x == o).count() as u64
    }
    fn all(&self, pfn: u64, n: u64, o: Owner) -> bool {
        (pfn..pfn + n).all(|p| self.owner[p as usize] == o)
    }
    fn set(&mut self, pfn: u64, n: u64, o: Owner) {
        (pfn..pfn + n).for_each(|p| self.owner[p as usize] = o);
    }
    fn has_free_block(&self, order: u32) -> bool {
        let n = 1u64 << order;
        (0..self.owner.len() as u64 / n).any(|b| self.all(b * n, n, Owner::Free))
    }
}

fn expected_block_error(total: u64, pfn: u64, order: u32) -> Option<FrameError> {
    if order > MAX_ORDER {
        Some(FrameError::OrderTooLarge)
    } else if pfn % (1 << order) != 0 {
        Some(FrameError::Misaligned)
    } else if pfn + (1 << order) > total {
        Some(FrameError::OutOfRange)
    } else {
        None
    }
}

fn check(fa: &FrameAllocator, m: &Model) {
    assert_eq!(fa.total_pfns(), m.owner.len() as u64);
    assert_eq!(fa.free_count(), m.count(Owner::Free));
    assert_eq!(fa.ballooned_count(), m.count(Owner::Ballooned));
}

fn check_everything(fa: &FrameAllocator, m: &Model) {
    check(fa, m);
    for (pfn, o) in m.owner.iter().enumerate() {
        assert_eq!(fa.is_free(pfn as u64), *o == Owner::Free, "pfn {pfn}");
    }
    let whole = (0..m.owner.len() as u64 / FRAMES_PER_2M)
        .filter(|r| m.all(r * FRAMES_PER_2M, FRAMES_PER_2M, Owner::Free))
        .count();
    assert_eq!(fa.free_extents_2m(), whole);
    let runs: Vec<_> = fa.iter_free_runs().collect();
    assert_eq!(runs.iter().map(|r| r.end - r.start).sum::<u64>(), m.count(Owner::Free));
    assert!(runs.windows(2).all(|w| w[0].end < w[1].start), "runs not maximal or not ordered");
}

fuzz_target!(|input: Input| {
    let nr = u64::from(input.regions % 4 + 1) * FRAMES_PER_2M - u64::from(input.regions / 4 % 3) * 100;
    // SAFETY: one input at a time (see FIRST); no other reference to the
    // storage exists while this allocator lives.
    let mut fa = FrameAllocator::new(unsafe { &mut *core::ptr::addr_of_mut!(FIRST) }, nr);
    let mut m = Model { owner: vec![Owner::Used; nr as usize], allocations: Vec::new(), ballooned: Vec::new() };
    for (start, count) in input.free.into_iter().take(8) {
        let (start, count) = (u64::from(start) % nr, u64::from(count));
        let r = fa.add_free_range(start, count);
        if start + count <= nr && m.all(start, count, Owner::Used) {
            assert_eq!(r, Ok(()));
            m.set(start, count, Owner::Free);
        } else {
            assert!(r.is_err());
        }
    }
    if let Some((start, count)) = input.unbacked {
        let (start, count) = (u64::from(start) % nr, u64::from(count));
        if fa.add_unbacked_range(start, count).is_ok() {
            assert!(start + count <= nr && m.all(start, count, Owner::Used));
            m.set(start, count, Owner::Ballooned);
            (start..start + count).for_each(|p| m.ballooned.push((p, 0)));
        }
    }
    check(&fa, &m);
    let mut grown = false;
    for op in input.ops.into_iter().take(64) {
        let total = m.owner.len() as u64;
        match op {
            Op::Alloc { order } => {
                let order = u32::from(order % 12);
                match fa.alloc(order) {
                    Some(pfn) => {
                        assert!(order <= MAX_ORDER && pfn % (1 << order) == 0);
                        assert!(m.all(pfn, 1 << order, Owner::Free), "pfn {pfn} handed out while owned");
                        m.set(pfn, 1 << order, Owner::Used);
                        m.allocations.push((pfn, order));
                    }
                    None => assert!(order > MAX_ORDER || !m.has_free_block(order)),
                }
            }
            Op::Free { nth } => {
                if !m.allocations.is_empty() {
                    let (pfn, order) = m.allocations.swap_remove(nth as usize % m.allocations.len());
                    assert_eq!(fa.free(pfn, order), Ok(()));
                    m.set(pfn, 1 << order, Owner::Free);
                    // The same block again: a double free, refused.
                    assert_eq!(fa.free(pfn, order), Err(FrameError::AlreadyFree));
                }
            }
            Op::FreeRaw { pfn, order } => {
                let (pfn, order) = (u64::from(pfn), u32::from(order % 12));
                match expected_block_error(total, pfn, order) {
                    Some(e) => assert_eq!(fa.free(pfn, order), Err(e)),
                    // Freeing a block the model says is partly free must be refused.
                    None if !m.all(pfn, 1 << order, Owner::Used) && !m.all(pfn, 1 << order, Owner::Ballooned) => {
                        let any_free = (pfn..pfn + (1 << order)).any(|p| m.owner[p as usize] == Owner::Free);
                        if any_free {
                            assert_eq!(fa.free(pfn, order), Err(FrameError::AlreadyFree));
                        }
                    }
                    None => {}
                }
            }
            Op::TakeExtent => match fa.take_free_extent_2m_from_top() {
                Some(pfn) => {
                    assert!(pfn % FRAMES_PER_2M == 0 && m.all(pfn, FRAMES_PER_2M, Owner::Free));
                    // The highest such extent.
                    let above = (pfn / FRAMES_PER_2M + 1..total / FRAMES_PER_2M)
                        .any(|r| m.all(r * FRAMES_PER_2M, FRAMES_PER_2M, Owner::Free));
                    assert!(!above);
                    m.set(pfn, FRAMES_PER_2M, Owner::Ballooned);
                    m.ballooned.push((pfn, 9));
                }
                None => assert!(!m.has_free_block(9)),
            },
            Op::TakeFrames { n } => {
                let mut out = vec![0u64; n as usize % 1200];
                let free = m.count(Owner::Free);
                let got = fa.take_free_frames_from_top(&mut out);
                assert_eq!(got as u64, free.min(out.len() as u64));
                for &pfn in &out[..got] {
                    assert_eq!(m.owner[pfn as usize], Owner::Free, "pfn {pfn} taken twice or while owned");
                    m.owner[pfn as usize] = Owner::Ballooned;
                    m.ballooned.push((pfn, 0));
                }
            }
            Op::GiveBack { nth, whole } => {
                if !m.ballooned.is_empty() {
                    let i = nth as usize % m.ballooned.len();
                    let (pfn, order) = m.ballooned[i];
                    if whole || order == 0 {
                        m.ballooned.swap_remove(i);
                        assert_eq!(fa.give_back(pfn, order), Ok(()));
                        m.set(pfn, 1 << order, Owner::Free);
                    } else {
                        // One frame of a ballooned extent: the rest stays out.
                        m.ballooned.swap_remove(i);
                        assert_eq!(fa.give_back(pfn, 0), Ok(()));
                        m.owner[pfn as usize] = Owner::Free;
                        (pfn + 1..pfn + FRAMES_PER_2M).for_each(|p| m.ballooned.push((p, 0)));
                    }
                }
            }
            Op::GiveBackRaw { pfn, order } => {
                let (pfn, order) = (u64::from(pfn), u32::from(order % 12));
                let r = match expected_block_error(total, pfn, order) {
                    Some(e) => Some(e),
                    None if (pfn..pfn + (1 << order)).any(|p| m.owner[p as usize] == Owner::Free)
                        && m.count(Owner::Ballooned) >= 1 << order =>
                    {
                        Some(FrameError::AlreadyFree)
                    }
                    None if m.count(Owner::Ballooned) < 1 << order => Some(FrameError::NotBallooned),
                    None => None, // would succeed: only the caller knows which frames are ballooned
                };
                if let Some(e) = r {
                    assert_eq!(fa.give_back(pfn, order), Err(e));
                }
            }
            Op::Grow { regions } => {
                let new_nr = total + u64::from(regions % 4) * FRAMES_PER_2M;
                if !grown && new_nr <= MAX_PFNS {
                    grown = true;
                    // SAFETY: as for FIRST; GROWN is taken once per input.
                    fa.grow(unsafe { &mut *core::ptr::addr_of_mut!(GROWN) }, new_nr);
                    for p in total..new_nr {
                        m.owner.push(Owner::Ballooned);
                        m.ballooned.push((p, 0));
                    }
                }
            }
        }
        check(&fa, &m);
    }
    check_everything(&fa, &m);
});
