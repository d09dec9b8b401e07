//! The balloon: makes the guest's memory follow `memory/target`, the
//! figure `xl mem-set` writes, by giving frames back to Xen (inflating) or
//! getting them again (deflating).
//!
//! The model, in three layers, each written once:
//!
//! - [`Balloon`] is the policy, a state machine with no I/O. It holds the
//!   last good target and turns it into a *goal* clamped between the floor
//!   and static-max; [`Balloon::step`] moves at most [`CHUNK_PAGES`] toward
//!   the goal and says what to do next (call again, back off, or done), so
//!   the task re-reads the target between chunks and a newer target wins.
//!   A chunk that falls short (Xen out of memory on populate, a decrease
//!   stopping early) is retried after an exponential backoff, at most
//!   [`MAX_RETRIES`] times before giving up until the next target.
//! - [`BalloonMemory`] is what the policy needs from memory, in pages.
//!   [`KernelMemory`] implements it over `kernel::mm::ballooning`, the
//!   one mechanism for moving memory to and from Xen (the suspend-time
//!   release uses it too): inflating takes only frames the allocator has
//!   free, whole aligned 2 MiB extents first (highest first, one order-9
//!   hypercall each when machine-contiguous), single frames in batches
//!   otherwise; deflating repopulates wholly ballooned 2 MiB regions as
//!   order-9 extents, then single frames. Frames Xen does not take or give
//!   are returned to where they were. The tests run the policy over that
//!   mechanism against the simulated Xen, with failure injection.
//!
//! The ceiling is static-max or the guest's pfn space, whichever is lower.
//! The pfn space (and the p2m) is sized at boot from Xen's maximum
//! reservation, which libxl sets to the boot target + 1 MiB: a guest booted
//! with `maxmem` above `memory` can grow only 1 MiB above its boot size
//! (into pfns that need new page tables, made as they are populated).
//!
//! The floor, the least memory the balloon leaves the guest, is
//! [`FLOOR_BASE_PAGES`] (8 MiB) + every frame tasks and the kernel hold
//! (reserved at boot, heap pages, stacks, page tables: the allocator's
//! in-use count) + [`FLOOR_SLACK_PAGES`] (1 MiB). So an inflated guest still
//! has 9 MiB free. Under memory pressure (`kernel::mm::pressure`) the floor
//! also keeps 16 MiB of headroom until the pressure has been gone for 10 s:
//! a guest that grows past its target gets memory back from Xen at once,
//! and the balloon returns toward the target only once it is quiet. Targets are KiB; anything that is not a plain decimal
//! number of at most [`MAX_PLAUSIBLE_KB`] is ignored with a log line and the
//! guest stays at its last good target.

use kernel::mm::ballooning::{self, Progress};
use kernel::mm::frames::FRAMES_PER_2M;
use kernel::rejects::{excerpt, RateLimit};
use kernel::warn_limited;

pub const PAGE_KB: u64 = 4;
/// The most pages one `step` moves: 16 MiB, a few ms of work.
pub const CHUNK_PAGES: u64 = 4096;
/// The floor: 8 MiB plus what is in use plus 1 MiB of slack.
pub const FLOOR_BASE_PAGES: u64 = 2048;
pub const FLOOR_SLACK_PAGES: u64 = 256;
/// Backoff after a chunk that fell short: 100 ms, doubling, at most 5 s.
pub const BACKOFF_FIRST_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 5_000;
/// Shortfalls in a row after which a reconciliation gives up.
pub const MAX_RETRIES: u32 = 8;
/// Targets above 1 PiB are taken for garbage, not clamped.
pub const MAX_PLAUSIBLE_KB: u64 = 1 << 40;

/// Why a `memory/target` value was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadTarget {
    Empty,
    Negative,
    NotANumber,
    /// Does not fit in 64 bits.
    Overflow,
    /// A number, but beyond any memory size (KiB).
    Implausible(u64),
}

/// Parses a `memory/target` value: decimal KiB, surrounding whitespace
/// allowed, nothing else.
pub fn parse_target_kb(raw: &str) -> Result<u64, BadTarget> {
    let s = raw.trim();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if s.is_empty() {
        return Err(BadTarget::Empty);
    }
    if let Some(rest) = s.strip_prefix('-') {
        return Err(if digits(rest) { BadTarget::Negative } else { BadTarget::NotANumber });
    }
    if !digits(s) {
        return Err(BadTarget::NotANumber);
    }
    match s.parse::<u64>() {
        Err(_) => Err(BadTarget::Overflow),
        Ok(kb) if kb > MAX_PLAUSIBLE_KB => Err(BadTarget::Implausible(kb)),
        Ok(kb) => Ok(kb),
    }
}

/// What the policy needs from memory. Figures are pages.
pub trait BalloonMemory {
    /// Pages Xen backs now.
    fn populated_pages(&self) -> u64;
    /// The least the guest may be left with now (see the module docs).
    fn floor_pages(&self) -> u64;
    /// The most the guest can hold: its pfn space.
    fn max_pages(&self) -> u64;
    /// Gives up to `max_extents` free 2 MiB extents to Xen.
    fn inflate_2m(&mut self, max_extents: u64) -> Progress;
    /// Gives up to `n` free single frames to Xen.
    fn inflate_frames(&mut self, n: u64) -> Progress;
    /// Gets up to `n` pages back from Xen.
    fn deflate(&mut self, n: u64) -> Progress;
}

/// Why the goal differs from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The target is below the floor (pages).
    Floor(u64),
    /// The target is above static-max or the pfn space (pages).
    Ceiling(u64),
}

/// The account of one reconciliation, for the log line and `data/balloon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub target_pages: u64,
    pub goal_pages: u64,
    pub current_pages: u64,
    pub floor_pages: u64,
    pub ms: u64,
    pub moved: Progress,
    pub limit: Option<Limit>,
}

impl Summary {
    pub fn pages_per_s(&self) -> u64 {
        self.moved.pages * 1000 / self.ms.max(1)
    }
}

/// What the caller of `step` does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No target, or already settled: wait for a new target.
    Idle,
    /// A chunk went through: yield, pick up any newer target, call again.
    Continue,
    /// A chunk fell short: call again after this many ms (sooner if a new
    /// target comes).
    Backoff(u64),
    /// The goal is reached.
    Converged(Summary),
    /// Too many shortfalls in a row: stopped until the next target.
    GaveUp(Summary),
}

struct Run {
    started_ms: u64,
    moved: Progress,
}

/// The reconciliation policy.
pub struct Balloon {
    static_max_pages: u64,
    target_pages: Option<u64>,
    run: Option<Run>,
    settled: bool,
    failures: u32,
    /// Shortfalls retried since start.
    pub retries: u64,
}

impl Balloon {
    pub fn new(static_max_pages: u64) -> Self {
        Self { static_max_pages, target_pages: None, run: None, settled: false, failures: 0, retries: 0 }
    }

    pub fn target_pages(&self) -> Option<u64> {
        self.target_pages
    }

    /// A new (valid) target. It takes over from any reconciliation under
    /// way; time and work are counted from here.
    pub fn set_target(&mut self, pages: u64) {
        self.target_pages = Some(pages);
        self.run = None;
        self.settled = false;
        self.failures = 0;
    }

    /// The goal for `target` now, and what clamped it.
    pub fn goal(&self, target: u64, mem: &impl BalloonMemory) -> (u64, Option<Limit>) {
        let ceiling = self.static_max_pages.min(mem.max_pages());
        let floor = mem.floor_pages().min(ceiling);
        if target < floor {
            (floor, Some(Limit::Floor(floor)))
        } else if target > ceiling {
            (ceiling, Some(Limit::Ceiling(ceiling)))
        } else {
            (target, None)
        }
    }

    /// Moves at most one chunk toward the goal.
    pub fn step(&mut self, mem: &mut impl BalloonMemory, now_ms: u64) -> Step {
        let Some(target) = self.target_pages else { return Step::Idle };
        if self.settled {
            return Step::Idle;
        }
        let (goal, limit) = self.goal(target, mem);
        let run = self.run.get_or_insert(Run { started_ms: now_ms, moved: Progress::default() });
        let current = mem.populated_pages();
        let want = current.abs_diff(goal).min(CHUNK_PAGES);
        let got = if current > goal {
            let mut p = mem.inflate_2m(want / FRAMES_PER_2M);
            if p.pages < want {
                p += mem.inflate_frames(want - p.pages);
            }
            p
        } else if current < goal {
            mem.deflate(want)
        } else {
            Progress::default()
        };
        run.moved += got;
        let now_current = mem.populated_pages();
        let summary = |run: &Run| Summary {
            target_pages: target,
            goal_pages: goal,
            current_pages: now_current,
            floor_pages: mem.floor_pages(),
            ms: now_ms.saturating_sub(run.started_ms),
            moved: run.moved,
            limit,
        };
        if now_current == goal {
            let s = summary(run);
            self.finish();
            return Step::Converged(s);
        }
        if got.pages >= want {
            self.failures = 0;
            return Step::Continue;
        }
        self.failures += 1;
        if self.failures > MAX_RETRIES {
            let s = summary(run);
            self.finish();
            return Step::GaveUp(s);
        }
        self.retries += 1;
        Step::Backoff((BACKOFF_FIRST_MS << (self.failures - 1).min(16)).min(BACKOFF_MAX_MS))
    }

    fn finish(&mut self) {
        self.run = None;
        self.settled = true;
        self.failures = 0;
    }
}

/// `BalloonMemory` over the kernel's ballooning mechanism and the floor.
pub struct KernelMemory;

impl BalloonMemory for KernelMemory {
    fn populated_pages(&self) -> u64 {
        ballooning::populated_pages()
    }

    fn floor_pages(&self) -> u64 {
        FLOOR_BASE_PAGES + ballooning::used_pages() + FLOOR_SLACK_PAGES + kernel::mm::pressure::headroom_pages()
    }

    fn max_pages(&self) -> u64 {
        ballooning::max_pages()
    }

    fn inflate_2m(&mut self, max_extents: u64) -> Progress {
        ballooning::inflate_2m(max_extents, 0)
    }

    fn inflate_frames(&mut self, n: u64) -> Progress {
        ballooning::inflate_frames(n, 0)
    }

    fn deflate(&mut self, n: u64) -> Progress {
        ballooning::deflate(n)
    }
}

mod task {
    //! The driver task: advertises the feature, watches `memory/target`,
    //! reconciles, and publishes figures under `data/balloon/`.

    use super::*;
    use alloc::format;
    use core::sync::atomic::{AtomicU64, Ordering};
    use kernel::sched::{self, WaitQueue};
    use kernel::{time, xenstore};

    /// The newest good target (pages) and a count of targets seen, from the
    /// watcher to the worker.
    static TARGET_PAGES: AtomicU64 = AtomicU64::new(0);
    static TARGET_GEN: AtomicU64 = AtomicU64::new(0);
    static TARGET_WAIT: WaitQueue = WaitQueue::new();

    fn now_ms() -> u64 {
        time::now_ns() / 1_000_000
    }

    fn publish(current: u64, target: u64, floor: u64, retries: u64, last: Option<&Summary>) {
        let (ms, rate) = last.map_or((0, 0), |s| (s.ms, s.pages_per_s()));
        let figures = [
            ("data/balloon/current_kb", current * PAGE_KB),
            ("data/balloon/target_kb", target * PAGE_KB),
            ("data/balloon/floor_kb", floor * PAGE_KB),
            ("data/balloon/retries", retries),
            ("data/balloon/last_ms", ms),
            ("data/balloon/last_pages_per_s", rate),
        ];
        let r = xenstore::transaction(|tx| {
            for (path, value) in &figures {
                xenstore::write_tx(tx, path, &format!("{}", value))?;
            }
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("balloon: publishing data/balloon failed: {:?}", e);
        }
    }

    fn watch_target() {
        // dom0 may rewrite the node as fast as it likes: one limit for both lines.
        static REJECTS: RateLimit = RateLimit::new();
        xenstore::on_each_change("memory/target", "; the balloon stays put", || {
            let raw = match xenstore::read("memory/target") {
                Ok(v) => v,
                Err(e) => {
                    warn_limited!(REJECTS, "balloon: reading memory/target failed: {:?}; ignored", e);
                    return;
                }
            };
            match parse_target_kb(&raw) {
                Ok(kb) => {
                    TARGET_PAGES.store(kb / PAGE_KB, Ordering::Release);
                    TARGET_GEN.fetch_add(1, Ordering::AcqRel);
                    TARGET_WAIT.wake_all();
                }
                Err(why) => {
                    let last = TARGET_PAGES.load(Ordering::Acquire) * PAGE_KB;
                    warn_limited!(
                        REJECTS,
                        "balloon: ignoring memory/target {:?} ({:?}); staying at target {} KiB",
                        excerpt(&raw, 40),
                        why,
                        last
                    );
                }
            }
        })
    }

    fn run() {
        if let Err(e) = xenstore::write("control/feature-balloon", "1") {
            log::info!("balloon: cannot advertise control/feature-balloon ({:?}): the toolstack owns that node", e);
        }
        let mut mem = KernelMemory;
        let static_max = match xenstore::read("memory/static-max").map(|v| parse_target_kb(&v)) {
            Ok(Ok(kb)) => kb / PAGE_KB,
            other => {
                log::warn!("balloon: memory/static-max unusable ({:?}); using the pfn space", other);
                mem.max_pages()
            }
        };
        if static_max > mem.max_pages() {
            // Booted with less than static-max: make room to grow into it.
            if let Err(e) = kernel::mm::kernel_memory::grow_pfn_space(static_max) {
                log::warn!("balloon: cannot grow the pfn space to static-max: {:?}", e);
            }
        }
        let mut balloon = Balloon::new(static_max);
        let current = mem.populated_pages();
        TARGET_PAGES.store(current, Ordering::Release);
        log::info!(
            "balloon: static-max {} KiB, {} pfns, current {} KiB, floor {} KiB",
            static_max * PAGE_KB,
            mem.max_pages(),
            current * PAGE_KB,
            mem.floor_pages() * PAGE_KB
        );
        publish(current, current, mem.floor_pages(), 0, None);
        sched::spawn("balloon-watch", watch_target);

        let mut seen = 0u64;
        let newer = |seen: u64| (TARGET_GEN.load(Ordering::Acquire) != seen).then_some(());
        loop {
            let generation = TARGET_GEN.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                balloon.set_target(TARGET_PAGES.load(Ordering::Acquire));
            }
            // Memory released at a suspend comes back first: the balloon
            // then starts from where the guest really is.
            kernel::restock::wait_done();
            match balloon.step(&mut mem, now_ms()) {
                Step::Idle => TARGET_WAIT.wait_until(|| newer(seen)),
                Step::Continue => sched::yield_now(),
                Step::Backoff(ms) => {
                    log::info!(
                        "balloon: short of the goal at {} KiB; retry {} in {} ms",
                        mem.populated_pages() * PAGE_KB,
                        balloon.retries,
                        ms
                    );
                    let deadline = time::now_ns() + ms * 1_000_000;
                    let _ = TARGET_WAIT.wait_until_deadline(Some(deadline), &mut || newer(seen));
                }
                Step::Converged(s) | Step::GaveUp(s) => {
                    let gave_up = s.current_pages != s.goal_pages;
                    match s.limit {
                        Some(Limit::Floor(f)) => log::info!(
                            "balloon: target {} KiB is below the floor of {} KiB (8 MiB + in use + 1 MiB); stopping at the floor",
                            s.target_pages * PAGE_KB,
                            f * PAGE_KB
                        ),
                        Some(Limit::Ceiling(c)) => log::info!(
                            "balloon: target {} KiB is above what the guest can hold (static-max {} KiB, pfn space {} KiB); stopping at {} KiB",
                            s.target_pages * PAGE_KB,
                            static_max * PAGE_KB,
                            mem.max_pages() * PAGE_KB,
                            c * PAGE_KB
                        ),
                        None => {}
                    }
                    if gave_up {
                        log::warn!(
                            "balloon: giving up at {} KiB, goal {} KiB, after {} retries; waiting for a new target",
                            s.current_pages * PAGE_KB,
                            s.goal_pages * PAGE_KB,
                            MAX_RETRIES
                        );
                    }
                    log::info!(
                        "balloon: target {} KiB -> current {} KiB in {} ms ({} pages/s, {} 2M extents, {} frames)",
                        s.target_pages * PAGE_KB,
                        s.current_pages * PAGE_KB,
                        s.ms,
                        s.pages_per_s(),
                        s.moved.extents_2m,
                        s.moved.frames
                    );
                    publish(s.current_pages, s.target_pages, s.floor_pages, balloon.retries, Some(&s));
                }
            }
        }
    }

    pub fn spawn() {
        sched::spawn("balloon", run);
    }

    /// The last good `memory/target` in pages (0 until the balloon runs).
    pub fn target_pages() -> u64 {
        TARGET_PAGES.load(Ordering::Acquire)
    }

    /// Reconciles again toward the last good target, for whoever changed
    /// memory behind the balloon's back (e.g. a resume that could not get
    /// every frame back): after converging or giving up the balloon
    /// otherwise waits for a new `memory/target`.
    pub fn recheck() {
        TARGET_GEN.fetch_add(1, Ordering::AcqRel);
        TARGET_WAIT.wake_all();
    }
}

pub use task::{recheck, spawn, target_pages};

/// The balloon as a suspend-aware device: its size needs no work across a
/// suspend (ballooned pfns stay out of the p2m the toolstack copies), but
/// afterwards it reconciles again: the target may have changed while the
/// domain was suspended, and a resume that could not get every released
/// frame back leaves memory to ask for.
pub struct BalloonDevice;

impl kernel::pm::Device for BalloonDevice {
    fn name(&self) -> &'static str {
        "balloon"
    }
    fn suspend(&self) -> Result<(), &'static str> {
        Ok(())
    }
    fn resume(&self) {
        recheck();
    }
    fn cancel(&self) {
        recheck();
    }
}

#[cfg(test)]
mod tests {
    //! The policy over the kernel's own ballooning mechanism, against the
    //! one simulated Xen (failure injection through its `faults`).
    use super::*;
    use kernel::mm::{kernel_memory, physmap};
    use kernel::testing::{assert_no_violations, boot, sim as xen, Guest};
    use xen::sim::SimConfig;

    const MIB: u64 = 256; // pages

    /// A guest of `total` pfns (maxmem), `backed` of them populated, with
    /// 3000 frames held by "tasks" that the balloon must never give away.
    fn sim(total: u64, backed: u64) -> (Guest, KernelMemory) {
        sim_with(SimConfig { nr_pages: backed, max_pages: total, ..SimConfig::default() })
    }

    fn sim_with(cfg: SimConfig) -> (Guest, KernelMemory) {
        let g = boot(cfg);
        for _ in 0..3000 {
            kernel_memory::with_frames(|f| f.alloc(0)).expect("a frame to hold");
        }
        (g, KernelMemory)
    }

    fn hypercalls() -> u64 {
        xen(|s| s.calls.values().sum())
    }

    /// Steps until the balloon is done; returns the final step and the
    /// backoffs it asked for. Time advances 1 ms per chunk.
    fn run(b: &mut Balloon, m: &mut KernelMemory, clock: &mut u64) -> (Step, Vec<u64>) {
        let mut backoffs = Vec::new();
        for _ in 0..10_000 {
            match b.step(m, *clock) {
                Step::Continue => *clock += 1,
                Step::Backoff(ms) => {
                    backoffs.push(ms);
                    *clock += ms;
                }
                done => return (done, backoffs),
            }
        }
        panic!("the balloon never finished");
    }

    /// Xen and the allocator agree on what is backed, every free frame is
    /// backed, and Xen saw no guest mistake.
    fn check_consistent(_m: &KernelMemory) {
        assert_eq!(ballooning::populated_pages(), xen(|s| s.owned_pages()));
        let total = ballooning::max_pages();
        let free: Vec<u64> = kernel_memory::with_frames(|f| (0..total).filter(|&p| f.is_free(p)).collect());
        for pfn in free {
            let mfn = physmap::pfn_to_mfn(pfn);
            assert!(xen(|s| s.owns(mfn) && s.mfn_mapped(mfn)), "free pfn {pfn:#x} not backed and mapped");
        }
        assert_no_violations();
    }

    #[test]
    fn converges_down_then_up() {
        let (_g, mut m) = sim(256 * MIB, 256 * MIB);
        let mut b = Balloon::new(256 * MIB);
        let mut clock = 0;
        b.set_target(32 * MIB);
        let (step, backoffs) = run(&mut b, &mut m, &mut clock);
        let Step::Converged(s) = step else { panic!("{step:?}") };
        assert!(backoffs.is_empty());
        assert_eq!((s.current_pages, s.limit), (32 * MIB, None));
        assert_eq!(s.moved.pages, 224 * MIB);
        assert!(s.moved.extents_2m >= 100, "2 MiB extents preferred: {:?}", s.moved);
        assert_eq!(s.moved.extents_2m * FRAMES_PER_2M + s.moved.frames, s.moved.pages);
        check_consistent(&m);
        assert_eq!(b.step(&mut m, clock), Step::Idle, "settled until a new target");

        let calls = hypercalls();
        b.set_target(200 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!(s.current_pages, 200 * MIB);
        assert!(s.moved.extents_2m >= 80, "{:?}", s.moved);
        assert!(hypercalls() - calls < 100, "batched: {} hypercalls", hypercalls() - calls);
        check_consistent(&m);
        assert_eq!(m.populated_pages(), 200 * MIB);
    }

    #[test]
    fn clamps_to_the_floor_and_to_static_max() {
        let (_g, mut m) = sim(64 * MIB, 64 * MIB);
        let mut b = Balloon::new(48 * MIB);
        let mut clock = 0;
        let used = ballooning::used_pages();
        b.set_target(2 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        let floor = FLOOR_BASE_PAGES + used + FLOOR_SLACK_PAGES;
        assert_eq!(s.limit, Some(Limit::Floor(floor)));
        assert_eq!(s.current_pages, floor);
        assert_eq!(ballooning::free_pages(), FLOOR_BASE_PAGES + FLOOR_SLACK_PAGES, "9 MiB stay free");
        check_consistent(&m);

        b.set_target(1000 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!(s.limit, Some(Limit::Ceiling(48 * MIB)));
        assert_eq!(s.current_pages, 48 * MIB);
        check_consistent(&m);
    }

    #[test]
    fn malformed_targets_are_refused() {
        assert_eq!(parse_target_kb("262144"), Ok(262144));
        assert_eq!(parse_target_kb(" 32768\n"), Ok(32768));
        assert_eq!(parse_target_kb("0"), Ok(0));
        assert_eq!(parse_target_kb("abc"), Err(BadTarget::NotANumber));
        assert_eq!(parse_target_kb("-5"), Err(BadTarget::Negative));
        assert_eq!(parse_target_kb("-"), Err(BadTarget::NotANumber));
        assert_eq!(parse_target_kb("99999999999999999999999"), Err(BadTarget::Overflow));
        assert_eq!(parse_target_kb(""), Err(BadTarget::Empty));
        assert_eq!(parse_target_kb("  "), Err(BadTarget::Empty));
        assert_eq!(parse_target_kb("12abc"), Err(BadTarget::NotANumber));
        assert_eq!(parse_target_kb("+5"), Err(BadTarget::NotANumber));
        assert_eq!(parse_target_kb("1e6"), Err(BadTarget::NotANumber));
        assert_eq!(parse_target_kb("12 34"), Err(BadTarget::NotANumber));
        assert_eq!(parse_target_kb("18446744073709551615"), Err(BadTarget::Implausible(u64::MAX)));
        assert_eq!(parse_target_kb("2000000000000"), Err(BadTarget::Implausible(2_000_000_000_000)));
        assert_eq!(parse_target_kb(&"7".repeat(5000)), Err(BadTarget::Overflow));
    }

    #[test]
    fn a_short_decrease_backs_off_then_gives_up() {
        let (_g, mut m) = sim(64 * MIB, 64 * MIB);
        xen(|s| s.faults.decrease_budget = Some(1000));
        let mut b = Balloon::new(64 * MIB);
        let mut clock = 0;
        b.set_target(32 * MIB);
        let (step, backoffs) = run(&mut b, &mut m, &mut clock);
        let Step::GaveUp(s) = step else { panic!("{step:?}") };
        assert_eq!(s.current_pages, 64 * MIB - 1000);
        assert_eq!(backoffs, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000], "exponential, capped, bounded");
        assert_eq!(b.retries, MAX_RETRIES as u64);
        assert_eq!(b.step(&mut m, clock), Step::Idle, "no spinning after giving up");
        check_consistent(&m);
        // Frames Xen refused went back to the free pool.
        assert_eq!(ballooning::free_pages() + ballooning::used_pages(), 64 * MIB - 1000);
    }

    #[test]
    fn populate_running_short_retries_and_recovers() {
        let (_g, mut m) = sim(64 * MIB, 64 * MIB);
        let mut b = Balloon::new(64 * MIB);
        let mut clock = 0;
        b.set_target(16 * MIB);
        assert!(matches!(run(&mut b, &mut m, &mut clock).0, Step::Converged(_)));
        xen(|s| s.host_free = 5 * MIB);
        b.set_target(40 * MIB);
        let mut backoffs = 0;
        loop {
            match b.step(&mut m, clock) {
                Step::Continue => clock += 1,
                Step::Backoff(ms) => {
                    backoffs += 1;
                    clock += ms;
                    if backoffs == 2 {
                        xen(|s| s.host_free += 100 * MIB); // another domain shrank
                    }
                }
                Step::Converged(s) => {
                    assert_eq!(s.current_pages, 40 * MIB);
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(backoffs, 2);
        assert_eq!(b.retries, 2);
        check_consistent(&m);
    }

    #[test]
    fn a_newer_target_wins_mid_reconcile() {
        let (_g, mut m) = sim(256 * MIB, 256 * MIB);
        let mut b = Balloon::new(256 * MIB);
        let mut clock = 0;
        b.set_target(32 * MIB);
        assert_eq!(b.step(&mut m, clock), Step::Continue);
        assert_eq!(b.step(&mut m, clock), Step::Continue);
        assert_eq!(m.populated_pages(), 256 * MIB - 2 * CHUNK_PAGES);
        b.set_target(240 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!((s.target_pages, s.current_pages), (240 * MIB, 240 * MIB));
        assert_eq!(s.moved.pages, 240 * MIB - (256 * MIB - 2 * CHUNK_PAGES));
        check_consistent(&m);
    }

    #[test]
    fn non_contiguous_extents_and_no_2m_in_xen_fall_back_to_frames() {
        // Machine frames scattered in every region: no order-9 release works.
        let (_g, mut m) =
            sim_with(SimConfig { nr_pages: 64 * MIB, max_pages: 64 * MIB, scattered: true, ..Default::default() });
        xen(|s| s.faults.no_2m = true);
        let mut b = Balloon::new(64 * MIB);
        let mut clock = 0;
        b.set_target(24 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!((s.current_pages, s.moved.extents_2m, s.moved.frames), (24 * MIB, 0, 40 * MIB));
        b.set_target(60 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!((s.current_pages, s.moved.extents_2m), (60 * MIB, 0));
        check_consistent(&m);
    }

    #[test]
    fn grows_above_the_boot_allocation_up_to_maxmem() {
        // memory=32, maxmem=96: pfns above 32 MiB start ballooned out.
        let (_g, mut m) = sim(96 * MIB, 32 * MIB);
        assert_eq!(m.populated_pages(), 32 * MIB);
        let mut b = Balloon::new(96 * MIB);
        let mut clock = 0;
        b.set_target(96 * MIB);
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!((s.current_pages, s.moved.extents_2m), (96 * MIB, 32));
        assert!(kernel_memory::figures().free_2m_extents >= 32, "the grown regions are whole free extents");
        check_consistent(&m);
    }

    #[test]
    fn random_targets_end_at_the_last_one() {
        let (_g, mut m) = sim(256 * MIB, 256 * MIB);
        let mut b = Balloon::new(256 * MIB);
        let mut clock = 0;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut last = 0;
        for _ in 0..50 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            last = (32 + x % 225) * MIB + x % 256; // not always a whole MiB
            b.set_target(last);
            // A few chunks at most before the next target lands.
            for _ in 0..(x % 4) {
                let _ = b.step(&mut m, clock);
            }
        }
        let Step::Converged(s) = run(&mut b, &mut m, &mut clock).0 else { panic!() };
        assert_eq!(s.current_pages, last);
        check_consistent(&m);
    }
}
