//! Self-test tasks: a memory pattern that is written once and verified
//! forever, and sleepers that check they wake on time. The lab scenarios
//! read their console lines and `data/selftest/*` to prove that nothing
//! was lost across suspends, balloon changes and restores.

use crate::sched;
use alloc::vec::Vec;

pub mod hog;
mod vcpus;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering;
pub use vcpus::{spawn_movers, spawn_rendezvous_holder, spawn_vcpu_pattern, MOVES, MOVE_ERRORS};

/// Figures the data publisher exports.
pub static PATTERN_PASSES: AtomicU64 = AtomicU64::new(0);
pub static PATTERN_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static PATTERN_MIB: AtomicU64 = AtomicU64::new(0);
pub static DIRTY_PASSES: AtomicU64 = AtomicU64::new(0);
pub static SLEEPER_WAKEUPS: AtomicU64 = AtomicU64::new(0);
pub static SLEEPER_LATE: AtomicU64 = AtomicU64::new(0);

/// The value of word `i` of the pattern: depends on the index so that a
/// page that came back in the wrong place is caught, not just a lost one.
pub fn pattern_word(seed: u64, i: usize) -> u64 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    x.rotate_left(17) ^ (i as u64)
}

/// Checks `words` against the pattern; returns the index of every mismatch
/// (at most `limit` of them) and calls `pause` every `chunk` words.
pub fn verify(words: &[u64], seed: u64, chunk: usize, limit: usize, pause: impl FnMut()) -> Vec<usize> {
    verify_at(words, seed, 0, chunk, limit, pause)
}

/// As `verify` for a slice that starts at pattern index `base`; reported
/// indices are pattern indices.
pub fn verify_at(
    words: &[u64],
    seed: u64,
    base: usize,
    chunk: usize,
    limit: usize,
    mut pause: impl FnMut(),
) -> Vec<usize> {
    let mut bad = Vec::new();
    for (start, block) in words.chunks(chunk).enumerate() {
        for (j, &w) in block.iter().enumerate() {
            let i = base + start * chunk + j;
            if w != pattern_word(seed, i) && bad.len() < limit {
                bad.push(i);
            }
        }
        pause();
    }
    bad
}

/// Words per pattern chunk: the pattern is held in 1 MiB pieces, since the
/// heap serves at most 2 MiB in one piece.
const CHUNK_WORDS: usize = 1 << 17;

/// `mib` MiB of the pattern for `seed`, in 1 MiB chunks, yielding after each;
/// None (and a log line naming `what`) when memory runs out.
fn filled_chunks(mib: u64, seed: u64, what: &str) -> Option<Vec<Vec<u64>>> {
    let mut chunks = Vec::new();
    for c in 0..mib as usize {
        let mut words: Vec<u64> = Vec::new();
        if words.try_reserve_exact(CHUNK_WORDS).is_err() {
            log::error!("selftest: cannot allocate {}: out of memory after {} MiB", what, c);
            return None;
        }
        words.extend((0..CHUNK_WORDS).map(|i| pattern_word(seed, c * CHUNK_WORDS + i)));
        chunks.push(words);
        sched::yield_now();
    }
    Some(chunks)
}

/// The pattern task: fills `mib` MiB and verifies it forever, yielding every
/// 64 KiB so it never holds the CPU for long.
pub fn spawn_pattern(mib: u64) {
    if mib == 0 {
        return;
    }
    sched::spawn("pattern", move || {
        let seed = 0xba11_a570 ^ mib;
        let Some(mut chunks) = filled_chunks(mib, seed, "the pattern") else { return };
        PATTERN_MIB.store(mib, Ordering::Relaxed);
        log::info!("selftest: pattern of {} MiB written", mib);
        loop {
            let mut bad_total = 0;
            for (c, words) in chunks.iter_mut().enumerate() {
                let bad = verify_at(words, seed, c * CHUNK_WORDS, 8192, 8, sched::yield_now);
                if !bad.is_empty() {
                    bad_total += bad.len();
                    log::error!("selftest: PATTERN ERROR in MiB {}: words {:?} differ", c, bad);
                    // Rewrite so later passes report new damage only.
                    for &i in &bad {
                        words[i - c * CHUNK_WORDS] = pattern_word(seed, i);
                    }
                }
            }
            let passes = PATTERN_PASSES.fetch_add(1, Ordering::Relaxed) + 1;
            PATTERN_ERRORS.fetch_add(bad_total as u64, Ordering::Relaxed);
            if bad_total == 0 && passes % 10 == 1 {
                log::info!(
                    "selftest: pattern {} MiB verified, pass {}, errors {}",
                    mib,
                    passes,
                    PATTERN_ERRORS.load(Ordering::Relaxed)
                );
            }
            sched::sleep_ms(500);
        }
    });
}

/// The dirtying task (`ballast.dirty=MIB`): keeps rewriting `mib` MiB, each
/// MiB verified against the generation it holds before it gets the next,
/// so that pages are always being dirtied (a live migration's rounds never
/// run out of work) and a page that comes back stale or misplaced is
/// caught. Mismatches count as pattern errors.
pub fn spawn_dirtier(mib: u64) {
    if mib == 0 {
        return;
    }
    sched::spawn("dirty", move || {
        let seed = 0xd1e7_0000 ^ mib;
        let Some(chunks) = filled_chunks(mib, seed, "the dirtying buffer") else { return };
        // Each MiB with the generation it holds.
        let mut chunks: Vec<(u64, Vec<u64>)> = chunks.into_iter().map(|words| (0, words)).collect();
        log::info!("selftest: dirtying {} MiB continuously", mib);
        for pass in 1u64.. {
            let mut bad_total = 0;
            for (c, (generation, words)) in chunks.iter_mut().enumerate() {
                let base = c * CHUNK_WORDS;
                let bad = verify_at(words, seed ^ *generation, base, 8192, 8, sched::yield_now);
                if !bad.is_empty() {
                    bad_total += bad.len();
                    log::error!(
                        "selftest: PATTERN ERROR in dirtied MiB {} (generation {}): words {:?} differ",
                        c,
                        generation,
                        bad
                    );
                }
                *generation += 1;
                for (k, block) in words.chunks_mut(8192).enumerate() {
                    for (j, w) in block.iter_mut().enumerate() {
                        *w = pattern_word(seed ^ *generation, base + k * 8192 + j);
                    }
                    sched::yield_now();
                }
            }
            DIRTY_PASSES.store(pass, Ordering::Relaxed);
            PATTERN_ERRORS.fetch_add(bad_total as u64, Ordering::Relaxed);
            if pass % 10 == 1 {
                log::info!(
                    "selftest: dirtied {} MiB, pass {}, errors {}",
                    mib,
                    pass,
                    PATTERN_ERRORS.load(Ordering::Relaxed)
                );
            }
        }
    });
}

/// Sleeper tasks with different periods; each counts wake-ups and notices
/// one that comes more than 1 s late.
pub fn spawn_sleepers(count: u32) {
    const NAMES: [&str; 4] = ["sleeper-100ms", "sleeper-250ms", "sleeper-1s", "sleeper-3s"];
    const PERIODS_MS: [u64; 4] = [100, 250, 1000, 3000];
    for i in 0..(count as usize).min(NAMES.len()) {
        let (name, period) = (NAMES[i], PERIODS_MS[i]);
        sched::spawn(name, move || {
            let mut wakeups = 0u64;
            let mut last_report = crate::time::now_ns();
            loop {
                let before = crate::time::now_ns();
                sched::sleep_ms(period);
                let slept = crate::time::now_ns() - before;
                wakeups += 1;
                SLEEPER_WAKEUPS.fetch_add(1, Ordering::Relaxed);
                if slept > (period + 1000) * 1_000_000 {
                    SLEEPER_LATE.fetch_add(1, Ordering::Relaxed);
                    log::info!(
                        "selftest: {} woke {} ms after going to sleep for {} ms",
                        name,
                        slept / 1_000_000,
                        period
                    );
                }
                if crate::time::now_ns() - last_report >= 10_000_000_000 {
                    last_report = crate::time::now_ns();
                    log::info!("selftest: {} alive, {} wake-ups", name, wakeups);
                }
            }
        });
    }
}

pub static ASPACE_CHECKS: AtomicU64 = AtomicU64::new(0);
pub static ASPACE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// An address space kept under construction (unpinned) with `pages` pattern
/// pages mapped in its lower half. Every 2 s it is pinned, loaded, read
/// through its own mappings, and unpinned again, so at any suspend it is
/// most likely unpinned: the suspend path must pin it for the toolstack.
pub fn spawn_aspace(pages: u64) {
    use crate::mm::{aspace, kernel_memory::with_frames};
    use crate::platform::pfn_to_va;
    if pages == 0 {
        return;
    }
    sched::spawn("aspace-test", move || {
        const BASE: u64 = 0x0000_4000_0000_0000;
        let seed = 0x5eed_a5ac;
        let Some(space) = aspace::create() else {
            log::error!("aspace: cannot create an address space");
            return;
        };
        let mut frames = Vec::new();
        for i in 0..pages {
            let Some(pfn) = with_frames(|f| f.alloc(0)) else { break };
            let page = pfn_to_va(pfn) as *mut u64;
            for w in 0..512 {
                // SAFETY: a fresh frame of ours, mapped writable.
                unsafe { page.add(w).write(pattern_word(seed, i as usize * 512 + w)) };
            }
            if let Err(e) = aspace::map(space, BASE + i * 4096, pfn) {
                log::error!("aspace: mapping page {} failed: {:?}", i, e);
                return;
            }
            frames.push(pfn);
        }
        log::info!("aspace: space {} built with {} pattern pages, left unpinned", space, frames.len());
        loop {
            sched::sleep_ms(2000);
            if let Err(e) = aspace::pin(space) {
                log::error!("aspace: pinning space {} failed: {:?}", space, e);
                ASPACE_ERRORS.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let bad = aspace::with_space(space, || {
                let mut bad = 0u64;
                for i in 0..frames.len() {
                    let page = (BASE + i as u64 * 4096) as *const u64;
                    for w in 0..512 {
                        // SAFETY: the space maps page i at this address.
                        if unsafe { page.add(w).read_volatile() } != pattern_word(seed, i * 512 + w) {
                            bad += 1;
                        }
                    }
                }
                bad
            });
            let _ = aspace::unpin(space);
            let n = ASPACE_CHECKS.fetch_add(1, Ordering::Relaxed) + 1;
            match bad {
                Ok(0) => {
                    if n % 5 == 1 {
                        log::info!(
                            "aspace: space {}: {} pages verified through its own mappings (check {})",
                            space,
                            frames.len(),
                            n
                        );
                    }
                }
                Ok(b) => {
                    ASPACE_ERRORS.fetch_add(1, Ordering::Relaxed);
                    log::error!("aspace: MISMATCH: {} words differ through space {} (check {})", b, space, n);
                }
                Err(e) => {
                    ASPACE_ERRORS.fetch_add(1, Ordering::Relaxed);
                    log::error!("aspace: loading space {} failed: {:?}", space, e);
                }
            }
        }
    });
}

/// A task that stays away from every freezer safe point until `attempts`
/// freeze attempts have timed out because of it, then gives in. With fewer
/// than a suspend's attempts it is a laggard the suspend waits out; with
/// as many, it gets one suspend refused. The `refuse` lab scenario checks
/// both: nothing lost, and the next suspend works.
/// `ballast.hvlimit=1`: the hypervisor-limit probe, once, a second after
/// boot so that the self-tests have taken their memory.
pub fn spawn_limit_probe() {
    sched::spawn("limit-probe", || {
        sched::sleep_ms(1000);
        if crate::mm::limit_probe::run().is_none() {
            log::warn!("limit: probe incomplete");
        }
    });
}

pub fn spawn_stubborn(attempts: u64) {
    sched::spawn("stubborn", move || {
        log::info!("stubborn: running outside any safe point until {} freeze attempts time out", attempts);
        let timed_out = || {
            let f = crate::suspend::figures();
            f.freeze_retries + f.refused
        };
        while timed_out() < attempts {
            sched::yield_without_freezing();
        }
        log::info!("stubborn: {} freeze attempts timed out; giving in", attempts);
    });
}

/// Grants one page to dom0 (read-only) and checks every 5 s that the entry
/// still names the page's current machine frame: after a resume in a new
/// domain the frame is new and the table must have been set up again.
pub fn spawn_grant_check() {
    use crate::grant::{self, GrantFlags};
    use crate::mm::{kernel_memory::with_frames, physmap::pfn_to_mfn};
    sched::spawn("grant-check", || {
        let Some(pfn) = with_frames(|f| f.alloc(0)) else { return };
        // A grant ended at once gives its ref back for the next grant.
        let ended = grant::grant_access(0, pfn, true).and_then(|r| grant::end_access(r).map(|_| r));
        let gref = match grant::grant_access(0, pfn, true) {
            Ok(gref) => gref,
            Err(e) => {
                log::error!("grant: cannot grant a page to dom0: {:?}", e);
                return;
            }
        };
        match ended {
            Ok(r) if r == gref => log::info!("grant: ref {} ended and handed out again", r),
            other => log::error!("grant: ending a grant did not free its ref ({:?}, next ref {})", other, gref),
        }
        let mut last_frame = 0u32;
        loop {
            let want = pfn_to_mfn(pfn) as u32;
            match grant::entry(gref) {
                Ok(e) if e.frame == want && e.domid == 0 && e.flags.contains(GrantFlags::PERMIT_ACCESS) => {
                    if e.frame != last_frame {
                        log::info!(
                            "grant: ref {} verified: pfn {:#x} at frame {:#x}, read-only for dom0",
                            gref,
                            pfn,
                            e.frame
                        );
                        last_frame = e.frame;
                    }
                }
                Ok(e) => log::error!("grant: STALE entry: ref {} is {:?}, page is at {:#x}", gref, e, want),
                Err(e) => log::error!("grant: ref {} unreadable: {:?}", gref, e),
            }
            sched::sleep_ms(5000);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_finds_exactly_the_damaged_words() {
        let mut w: Vec<u64> = (0..10_000).map(|i| pattern_word(7, i)).collect();
        assert!(verify(&w, 7, 512, 8, || {}).is_empty());
        w[3] ^= 1;
        w[9_999] = 0;
        assert_eq!(verify(&w, 7, 512, 8, || {}), vec![3, 9_999]);
    }

    #[test]
    fn a_page_in_the_wrong_place_is_caught() {
        let mut w: Vec<u64> = (0..1024).map(|i| pattern_word(1, i)).collect();
        w.swap(0, 512); // two "pages" swapped
        assert_eq!(verify(&w, 1, 100, 8, || {}).len(), 2);
    }
}
