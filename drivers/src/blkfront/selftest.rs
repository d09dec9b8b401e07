//! The block self-test (`ballast.blk=MIB`, 16 by default, 0 for none):
//! rewrites and verifies the first MIB of the first disk, pass after pass,
//! with several requests in flight, so that a suspend nearly always finds
//! I/O in flight. Each pass writes every sector in the on-disk format of
//! `blk_pattern` with the pass number, flushes, and reads everything back;
//! a sector that is not what the pass wrote is a mismatch, counted and
//! logged. dom0 can check the disk with the same format afterwards.

use super::window::{chunks, Window};
use super::{disks, BlkError, Disk, Phase};
use crate::blk_pattern::{self, SECTOR_SIZE};
use alloc::sync::Arc;
use alloc::vec;
use core::sync::atomic::Ordering;
use kernel::sched;

/// Requests in flight at once.
const DEPTH: usize = 8;
/// Sectors per request at most (128 KiB).
const CHUNK_SECTORS: u32 = 256;
/// Mismatches logged one by one; the rest are only counted.
const LOGGED_MISMATCHES: u64 = 20;
/// A pause between passes: the disk stays busy most of the time, and a
/// backend that answers at once cannot keep every other task off the vCPU.
const PAUSE_MS: u64 = 50;

pub fn spawn(mib: u64) {
    sched::spawn("blk-selftest", move || run(mib));
}

fn run(mib: u64) {
    let mut gen = 0u64;
    loop {
        let disk = disks().into_iter().find(|d| !matches!(d.phase(), Phase::Failed | Phase::Closing | Phase::Closed));
        let Some(disk) = disk else {
            sched::sleep_ms(1000);
            continue;
        };
        let Ok(geo) = disk.geometry() else { continue };
        let range = (mib * 2048).min(geo.sectors);
        if range == 0 {
            sched::sleep_ms(1000);
            continue;
        }
        gen += 1;
        let chunk = geo.max_sectors.min(CHUNK_SECTORS);
        match pass(&disk, range, chunk, gen, geo.flush) {
            Ok(()) => {
                let passes = disk.figures.passes.fetch_add(1, Ordering::Relaxed) + 1;
                if passes == 1 {
                    log::info!("blk-selftest: disk {}: first pass over {} MiB verified", disk.id, range / 2048);
                }
                sched::sleep_ms(PAUSE_MS);
            }
            Err(e) => {
                log::warn!("blk-selftest: disk {}: pass {} stopped: {:?}", disk.id, gen, e);
                sched::sleep_ms(1000);
            }
        }
    }
}

fn pass(disk: &Arc<Disk>, range: u64, chunk: u32, gen: u64, flush: bool) -> Result<(), BlkError> {
    let mut w = Window::new(disk, DEPTH);
    let mut nothing = |_, _| {};
    for (sector, n) in chunks(0, range, chunk) {
        let mut data = vec![0u8; n as usize * SECTOR_SIZE];
        for (i, s) in data.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            blk_pattern::fill(s.try_into().expect("a sector"), sector + i as u64, gen);
        }
        w.push(disk.submit_write(sector, &data), (), &mut nothing)?;
    }
    w.finish(&mut nothing)?;
    if flush {
        disk.flush()?;
    }
    let mut check = |data: alloc::vec::Vec<u8>, first: u64| {
        for (i, s) in data.chunks_exact(SECTOR_SIZE).enumerate() {
            let sector = first + i as u64;
            let seen = blk_pattern::check(s.try_into().expect("a sector"), sector);
            if seen != Ok(gen) {
                let n = disk.figures.mismatches.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= LOGGED_MISMATCHES {
                    log::error!(
                        "blk-selftest: disk {} MISMATCH at sector {} (pass {}): {:?}",
                        disk.id,
                        sector,
                        gen,
                        seen
                    );
                }
            }
        }
    };
    let mut r = Window::new(disk, DEPTH);
    for (sector, n) in chunks(0, range, chunk) {
        r.push(disk.submit_read(sector, n), sector, &mut check)?;
    }
    r.finish(&mut check)
}
