//! Self-tests for several vCPUs: a pattern pinned to each vCPU, tasks that
//! keep moving between vCPUs, and a task that keeps a vCPU from the
//! suspend rendezvous on purpose.

use super::{pattern_word, verify, PATTERN_ERRORS};
use crate::percpu::{self, VcpuId};
use crate::{sched, smp};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

/// Moves the movers made, and moves that did not land where asked.
pub static MOVES: AtomicU64 = AtomicU64::new(0);
pub static MOVE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Words of each per-vCPU pattern (256 KiB).
const VCPU_PATTERN_WORDS: usize = 32 * 1024;

/// vCPU `v`'s own pattern, verified every half second on vCPU `v` (while
/// it is online): proves after every suspend that its tasks run there
/// again and their memory is intact.
pub fn spawn_vcpu_pattern(v: VcpuId) {
    sched::spawn_pinned("vcpu-pattern", v, move || {
        let seed = 0x5cb0_0000 ^ v as u64;
        let mut words: Vec<u64> = (0..VCPU_PATTERN_WORDS).map(|i| pattern_word(seed, i)).collect();
        for pass in 1u64.. {
            let bad = verify(&words, seed, 8192, 8, sched::yield_now);
            if !bad.is_empty() {
                PATTERN_ERRORS.fetch_add(bad.len() as u64, Ordering::Relaxed);
                log::error!("selftest: PATTERN ERROR in vCPU {}'s pattern: words {:?} differ", v, bad);
                for &i in &bad {
                    words[i] = pattern_word(seed, i);
                }
            }
            if pass % 20 == 1 {
                log::info!(
                    "selftest: vCPU {} pattern verified on vCPU {}, pass {}, errors {}",
                    v,
                    percpu::current(),
                    pass,
                    bad.len()
                );
            }
            sched::sleep_ms(500);
        }
    });
}

/// Tasks that hop to the next online vCPU every 100 ms carrying a small
/// pattern, checking each time that they landed where they asked.
pub fn spawn_movers(count: u32) {
    for m in 0..count {
        sched::spawn("mover", move || {
            let seed = 0x3077_e000 ^ m as u64;
            let words: Vec<u64> = (0..1024).map(|i| pattern_word(seed, i)).collect();
            let mut target = m;
            let mut moves = 0u64;
            loop {
                sched::sleep_ms(100);
                let online = smp::online_mask();
                target = next_online(target, online);
                let landed = sched::pin_current(Some(target));
                if !landed && smp::is_online(target) {
                    MOVE_ERRORS.fetch_add(1, Ordering::Relaxed);
                    log::error!("selftest: mover {} asked for vCPU {} but runs on {}", m, target, percpu::current());
                }
                let bad = verify(&words, seed, 1024, 4, || {});
                if !bad.is_empty() {
                    PATTERN_ERRORS.fetch_add(bad.len() as u64, Ordering::Relaxed);
                    log::error!("selftest: PATTERN ERROR in mover {}'s words {:?}", m, bad);
                }
                moves += 1;
                MOVES.fetch_add(1, Ordering::Relaxed);
                if moves % 300 == 1 {
                    log::info!(
                        "selftest: mover {} made {} moves, now on vCPU {} of {} online",
                        m,
                        moves,
                        percpu::current(),
                        online.count_ones()
                    );
                }
            }
        });
    }
}

/// The online vCPU after `v`, wrapping round (vCPU 0 is always online).
fn next_online(v: VcpuId, online: u64) -> VcpuId {
    (1..=percpu::MAX_VCPUS as VcpuId)
        .map(|k| (v + k) % percpu::MAX_VCPUS as VcpuId)
        .find(|&c| online & (1 << c) != 0)
        .unwrap_or(0)
}

/// `ballast.holdvcpu=V:N`: a task on vCPU `v`, left running by the freezer,
/// that keeps spinning while a rendezvous waits for its vCPU, through `n`
/// rendezvous; then it gives in. The `smp-refuse` lab scenario checks that
/// the suspend is refused, nothing is lost, and the next one works.
pub fn spawn_rendezvous_holder(v: VcpuId, n: u32) {
    sched::spawn_unfreezable_pinned("vcpu-holder", v, move || {
        log::info!("holder: keeping vCPU {} from the next {} rendezvous", percpu::current(), n);
        let mut held = 0;
        while held < n {
            // Pinned tasks run elsewhere while their vCPU is offline: never
            // spin anywhere but on `v`.
            if percpu::current() != v {
                sched::sleep_ms(100);
                continue;
            }
            // Spinning, never at a schedule point: the vCPU cannot stop.
            if !smp::stop_requested_here() {
                core::hint::spin_loop();
                continue;
            }
            log::info!("holder: vCPU {} asked to stop; holding it", percpu::current());
            while smp::stop_requested_here() {
                core::hint::spin_loop();
            }
            held += 1;
            log::info!("holder: the rendezvous gave up ({} of {})", held, n);
        }
        log::info!("holder: giving in");
    });
}
