//! The balloon policy driven by arbitrary targets (dom0's `memory/target`),
//! guest allocations, a host that runs short of memory either way, and a
//! floor that moves, over the real frame allocator.
//!
//! Checked: every frame is owned once (free, the guest's, or ballooned
//! out) and the allocator's counts agree; the goal is always the target
//! clamped to [floor, static-max]; a step never moves memory past the goal;
//! a converged step reports what memory really is; backoffs are bounded;
//! and once the host cooperates, a reachable target is reached in a
//! bounded number of steps, while an unreachable one ends in a `GaveUp`
//! that says where it stopped.
#![no_main]

use arbitrary::Arbitrary;
use drivers::balloon::{Balloon, BalloonMemory, Limit, Step, BACKOFF_MAX_MS};
use kernel::mm::ballooning::Progress;
use kernel::mm::frames::{FrameAllocator, FRAMES_PER_2M};
use libfuzzer_sys::fuzz_target;

const MAX_PFNS: u64 = 8 * FRAMES_PER_2M;
const WORDS: usize = FrameAllocator::words_needed(MAX_PFNS);
/// See `frame_allocator`: one input at a time uses it.
static mut STORAGE: [u64; WORDS] = [0; WORDS];

struct Mem {
    fa: FrameAllocator,
    ballooned: Vec<(u64, u32)>,
    guest: Vec<(u64, u32)>,
    floor: u64,
    /// Pages the host will still populate / take back (None: no limit).
    populate_budget: Option<u64>,
    decrease_budget: Option<u64>,
}

fn spend(budget: &mut Option<u64>, want: u64) -> u64 {
    match budget {
        None => want,
        Some(b) => {
            let n = want.min(*b);
            *b -= n;
            n
        }
    }
}

impl BalloonMemory for Mem {
    fn populated_pages(&self) -> u64 {
        self.fa.total_pfns() - self.fa.ballooned_count()
    }
    fn floor_pages(&self) -> u64 {
        self.floor
    }
    fn max_pages(&self) -> u64 {
        self.fa.total_pfns()
    }
    fn inflate_2m(&mut self, max_extents: u64) -> Progress {
        let mut p = Progress::default();
        for _ in 0..max_extents {
            if spend(&mut self.decrease_budget.clone(), FRAMES_PER_2M) < FRAMES_PER_2M {
                break;
            }
            let Some(pfn) = self.fa.take_free_extent_2m_from_top() else { break };
            spend(&mut self.decrease_budget, FRAMES_PER_2M);
            self.ballooned.push((pfn, 9));
            p += Progress { pages: FRAMES_PER_2M, extents_2m: 1, frames: 0 };
        }
        p
    }
    fn inflate_frames(&mut self, n: u64) -> Progress {
        let n = spend(&mut self.decrease_budget, n);
        let mut out = vec![0u64; n as usize];
        let got = self.fa.take_free_frames_from_top(&mut out);
        // Frames the host agreed to take but the guest had not: budget unspent.
        if let Some(b) = self.decrease_budget.as_mut() {
            *b += n - got as u64;
        }
        self.ballooned.extend(out[..got].iter().map(|&p| (p, 0)));
        Progress { pages: got as u64, extents_2m: 0, frames: got as u64 }
    }
    fn deflate(&mut self, n: u64) -> Progress {
        let mut left = spend(&mut self.populate_budget, n);
        let granted = left;
        let mut p = Progress::default();
        while left > 0 {
            let Some((pfn, order)) = self.ballooned.pop() else { break };
            if order == 9 && left >= FRAMES_PER_2M {
                self.fa.give_back(pfn, 9).expect("a ballooned extent goes back");
                p += Progress { pages: FRAMES_PER_2M, extents_2m: 1, frames: 0 };
                left -= FRAMES_PER_2M;
            } else {
                self.fa.give_back(pfn, 0).expect("a ballooned frame goes back");
                let size = 1u64 << order;
                (pfn + 1..pfn + size).for_each(|f| self.ballooned.push((f, 0)));
                p += Progress { pages: 1, extents_2m: 0, frames: 1 };
                left -= 1;
            }
        }
        if let Some(b) = self.populate_budget.as_mut() {
            *b += left.min(granted);
        }
        p
    }
}

impl Mem {
    fn check(&self) {
        let out: u64 = self.ballooned.iter().map(|(_, o)| 1u64 << o).sum();
        let held: u64 = self.guest.iter().map(|(_, o)| 1u64 << o).sum();
        assert_eq!(self.fa.ballooned_count(), out, "ballooned frames lost or counted twice");
        assert_eq!(self.fa.free_count() + held + out + KERNEL_PAGES, self.fa.total_pfns(), "a frame lost");
    }
}

/// Frames the "kernel" holds from boot, never freed.
const KERNEL_PAGES: u64 = 64;

#[derive(Arbitrary, Debug)]
enum Op {
    Target(u16),
    Step,
    GuestAlloc(u8),
    GuestFree(u8),
    Budget { populate: Option<u16>, decrease: Option<u16> },
    Floor(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    regions: u8,
    static_max: u16,
    floor: u16,
    ops: Vec<Op>,
}

fn clamp(target: u64, floor: u64, ceiling: u64) -> u64 {
    target.max(floor.min(ceiling)).min(ceiling)
}

fuzz_target!(|input: Input| {
    let nr = u64::from(input.regions % 8 + 1) * FRAMES_PER_2M;
    // SAFETY: one input at a time; the allocator is dropped at the end.
    let mut fa = FrameAllocator::new(unsafe { &mut *core::ptr::addr_of_mut!(STORAGE) }, nr);
    fa.add_free_range(KERNEL_PAGES, nr - KERNEL_PAGES).unwrap();
    let static_max = u64::from(input.static_max) % (nr + 1024);
    let mut mem = Mem {
        fa,
        ballooned: Vec::new(),
        guest: Vec::new(),
        floor: u64::from(input.floor) % nr,
        populate_budget: None,
        decrease_budget: None,
    };
    let mut balloon = Balloon::new(static_max);
    let mut now_ms = 0u64;
    for op in input.ops.into_iter().take(128) {
        match op {
            Op::Target(t) => balloon.set_target(u64::from(t)),
            Op::Step => {
                let before = mem.populated_pages();
                let step = balloon.step(&mut mem, now_ms);
                let after = mem.populated_pages();
                if let Some(target) = balloon.target_pages() {
                    let ceiling = static_max.min(nr);
                    let goal = clamp(target, mem.floor, ceiling);
                    assert_eq!(balloon.goal(target, &mem).0, goal);
                    // Never past the goal.
                    assert!(before.min(goal) <= after && after <= before.max(goal), "{before} -> {after}, goal {goal}");
                }
                match step {
                    Step::Converged(s) => {
                        assert_eq!(s.current_pages, after);
                        assert_eq!(s.goal_pages, after);
                        match s.limit {
                            Some(Limit::Floor(f)) => assert!(s.target_pages < f && f == s.goal_pages),
                            Some(Limit::Ceiling(c)) => assert!(s.target_pages > c && c == s.goal_pages),
                            None => assert_eq!(s.target_pages, s.goal_pages),
                        }
                    }
                    Step::GaveUp(s) => assert_ne!(s.current_pages, s.goal_pages),
                    Step::Backoff(ms) => assert!(ms <= BACKOFF_MAX_MS),
                    Step::Continue => assert_ne!(before, after),
                    Step::Idle => {}
                }
            }
            Op::GuestAlloc(order) => {
                let order = u32::from(order % 10);
                if let Some(pfn) = mem.fa.alloc(order) {
                    mem.guest.push((pfn, order));
                }
            }
            Op::GuestFree(nth) => {
                if !mem.guest.is_empty() {
                    let (pfn, order) = mem.guest.swap_remove(nth as usize % mem.guest.len());
                    mem.fa.free(pfn, order).unwrap();
                }
            }
            Op::Budget { populate, decrease } => {
                mem.populate_budget = populate.map(u64::from);
                mem.decrease_budget = decrease.map(u64::from);
            }
            Op::Floor(f) => mem.floor = u64::from(f) % nr,
        }
        now_ms += 10;
        mem.check();
    }
    // The host cooperates from here: a last target either converges or
    // gives up saying where it stopped, in a bounded number of steps.
    let Some(target) = balloon.target_pages() else { return };
    mem.populate_budget = None;
    mem.decrease_budget = None;
    balloon.set_target(target);
    let goal = clamp(target, mem.floor, static_max.min(nr));
    let reachable = goal >= mem.populated_pages() || mem.populated_pages() - goal <= mem.fa.free_count();
    for _ in 0..1000 {
        match balloon.step(&mut mem, now_ms) {
            Step::Converged(s) => {
                assert_eq!(s.current_pages, goal);
                mem.check();
                return;
            }
            Step::GaveUp(s) => {
                assert!(!reachable, "gave up on a reachable goal {goal} at {}", s.current_pages);
                mem.check();
                return;
            }
            Step::Idle => panic!("idle with a target not yet reached"),
            Step::Continue => {}
            Step::Backoff(ms) => now_ms += ms,
        }
        mem.check();
    }
    panic!("no end after 1000 steps toward {goal}");
});
