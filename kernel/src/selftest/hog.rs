//! The memory hog: a task that grows to a size dom0 asks for and releases
//! it again, over time, to drive pressure deflates and the host daemon.
//!
//! It holds memory in 1 MiB pieces of [`TaskPages`], each filled with a
//! pattern of its own and verified while held and once more when released,
//! so memory the balloon or a suspend damaged is caught. It grows and
//! shrinks by one piece every [`STEP_MS`] (up to 200 MiB/s: faster than a
//! host daemon reacts, so the guest's own deflate is what keeps it going). A piece it cannot
//! get (Xen has nothing left to give) is an error for the hog alone: it
//! says so once, holds what it has, and tries again a second later.

use super::pattern_word;
use crate::mm::pressure::{OutOfMemory, TaskPages};
use crate::sched::{self, WaitQueue};
use crate::time;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One piece: 2^8 pages, 1 MiB.
const PIECE_ORDER: u32 = 8;
const STEP_MS: u64 = 5;
/// How often a settled hog verifies what it holds.
const VERIFY_EVERY_MS: u64 = 2000;
/// Sizes above 1 TiB are not memory any guest has: refused.
pub const MAX_MIB: u64 = 1 << 20;

/// The size asked for, what is held, refusals and pattern errors; atomics
/// because the watcher of `data/hog/mib` and the publisher share them
/// with the hog.
pub static WANT_MIB: AtomicU64 = AtomicU64::new(0);
pub static HELD_MIB: AtomicU64 = AtomicU64::new(0);
pub static REFUSALS: AtomicU64 = AtomicU64::new(0);
pub static ERRORS: AtomicU64 = AtomicU64::new(0);
static NEW_SIZE: WaitQueue = WaitQueue::new();
/// The task starts with the first size above 0, so a guest that never
/// hogs runs no extra task.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Asks the hog to grow or shrink to `mib`, starting it if need be.
pub fn set_size(mib: u64) {
    WANT_MIB.store(mib.min(MAX_MIB), Ordering::Release);
    if mib > 0 && !STARTED.swap(true, Ordering::AcqRel) {
        sched::spawn("hog", run);
    }
    NEW_SIZE.wake_all();
}

/// Forgets the task and the figures (a new boot of the simulated Xen in
/// host tests reuses the kernel's statics).
pub fn clear() {
    STARTED.store(false, Ordering::Release);
    for c in [&WANT_MIB, &HELD_MIB, &REFUSALS, &ERRORS] {
        c.store(0, Ordering::Relaxed);
    }
}

fn seed(index: usize) -> u64 {
    0x4009_0000 + index as u64
}

fn fill(piece: &mut TaskPages, index: usize) {
    for (i, w) in piece.words_mut().iter_mut().enumerate() {
        *w = pattern_word(seed(index), i);
    }
}

/// Words apart that `check` reads: a prime, so every page is sampled at
/// 8 or 9 offsets that move from page to page. A page lost, swapped or
/// zeroed by a balloon or suspend bug is caught; a full pass over every
/// word is the pattern self-test's job.
const SAMPLE_STRIDE: usize = 61;

/// Verifies piece `index` by sampling; counts and logs a mismatch.
fn check(piece: &TaskPages, index: usize) {
    let words = piece.words();
    let bad: Vec<usize> =
        (0..words.len()).step_by(SAMPLE_STRIDE).filter(|&i| words[i] != pattern_word(seed(index), i)).take(4).collect();
    if !bad.is_empty() {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        log::error!("hog: PATTERN ERROR in piece {} at words {:?}", index, bad);
    }
}

fn run() {
    let mut pieces: Vec<TaskPages> = Vec::new();
    let mut short: Option<OutOfMemory> = None;
    let mut last_verify_ms = 0;
    let mut moving_since: Option<u64> = None;
    loop {
        let want = WANT_MIB.load(Ordering::Acquire) as usize;
        let now_ms = time::now_ns() / 1_000_000;
        let held = pieces.len();
        if held < want && pieces.try_reserve(1).is_err() {
            // Not even room to list another piece: as out of memory.
            REFUSALS.fetch_add(1, Ordering::Relaxed);
            sched::sleep_ms(1000);
            continue;
        }
        if held < want {
            moving_since.get_or_insert(now_ms);
            match TaskPages::try_new(PIECE_ORDER) {
                Ok(mut piece) => {
                    fill(&mut piece, held);
                    pieces.push(piece);
                    if let Some(e) = short.take() {
                        log::info!(
                            "hog: memory again at {} MiB (was refused {} KiB with {} KiB free)",
                            held,
                            e.pages * 4,
                            e.free * 4
                        );
                    }
                }
                Err(e) => {
                    REFUSALS.fetch_add(1, Ordering::Relaxed);
                    if short.is_none() {
                        log::warn!(
                            "hog: out of memory at {} MiB of {} MiB ({} KiB free, nothing more from Xen); holding, retrying every second",
                            held,
                            want,
                            e.free * 4
                        );
                    }
                    short = Some(e);
                    sched::sleep_ms(1000);
                    continue;
                }
            }
        } else if held > want {
            moving_since.get_or_insert(now_ms);
            if let Some(piece) = pieces.pop() {
                check(&piece, held - 1);
            }
        } else {
            if let Some(since) = moving_since.take() {
                log::info!("hog: holding {} MiB (reached in {} ms)", held, now_ms.saturating_sub(since));
            }
            HELD_MIB.store(held as u64, Ordering::Release);
            if now_ms.saturating_sub(last_verify_ms) >= VERIFY_EVERY_MS {
                for (i, piece) in pieces.iter().enumerate() {
                    check(piece, i);
                    sched::yield_now();
                }
                last_verify_ms = now_ms;
            }
            let deadline = time::now_ns() + VERIFY_EVERY_MS * 1_000_000;
            let asked = |n: usize| (WANT_MIB.load(Ordering::Acquire) as usize != n).then_some(());
            let _ = NEW_SIZE.wait_until_deadline(Some(deadline), &mut || asked(held));
            continue;
        }
        HELD_MIB.store(pieces.len() as u64, Ordering::Release);
        sched::sleep_ms(STEP_MS);
    }
}
