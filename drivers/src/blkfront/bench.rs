//! The block bench (`ballast.blkbench=MIB`): once the first disk connects,
//! one sequential write of MIB (then a flush) and one sequential read of
//! the same range, in 128 KiB requests with 8 in flight. The speeds go to
//! the console and to `data/blk/<n>/bench_*` for `make bench`.
//!
//! The range starts where the self-test's ends, so the two never touch the
//! same sectors.

use super::window::{chunks, Window};
use super::{disks, BlkError, Disk, Phase};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use kernel::{sched, time, xenstore};

/// Requests in flight at once.
const DEPTH: usize = 8;
/// Sectors per request at most (128 KiB).
const CHUNK_SECTORS: u32 = 256;
/// Every byte the bench writes.
const PATTERN: u8 = 0xb5;
/// How long the bench waits for a disk before it gives up.
const DISK_WAIT_MS: u64 = 60_000;

/// Starts the bench over `mib` MiB from sector `start`.
pub fn spawn(start: u64, mib: u64) {
    sched::spawn("blk-bench", move || run(start, mib));
}

fn run(start: u64, mib: u64) {
    let Some(disk) = first_disk() else {
        log::warn!("blk-bench: no disk within {} s; no bench", DISK_WAIT_MS / 1000);
        return;
    };
    let geo = match disk.geometry() {
        Ok(g) => g,
        Err(e) => return log::warn!("blk-bench: disk {} did not connect: {:?}", disk.id, e),
    };
    let end = start + mib * 2048;
    if end > geo.sectors {
        log::warn!(
            "blk-bench: disk {} has {} MiB, the bench needs sectors {}..{}; no bench",
            disk.id,
            geo.sectors / 2048,
            start,
            end
        );
        return;
    }
    let chunk = geo.max_sectors.min(CHUNK_SECTORS);
    let bytes = mib << 20;
    let figures = measure(&disk, start, end, chunk, geo.flush);
    let dir = format!("data/blk/{}", disk.id);
    match figures {
        Ok((write_us, read_us)) => {
            log::info!(
                "blk-bench: disk {}: {} MiB in {} KiB requests, {} in flight: write+flush {} us ({} MiB/s), read {} us ({} MiB/s)",
                disk.id,
                mib,
                chunk / 2,
                DEPTH,
                write_us,
                mib_per_s(bytes, write_us),
                read_us,
                mib_per_s(bytes, read_us)
            );
            let written = xenstore::transaction(|tx| {
                xenstore::write_tx(tx, &format!("{dir}/bench_bytes"), &format!("{bytes}"))?;
                xenstore::write_tx(tx, &format!("{dir}/bench_write_us"), &format!("{write_us}"))?;
                xenstore::write_tx(tx, &format!("{dir}/bench_read_us"), &format!("{read_us}"))
            });
            if let Err(e) = written {
                log::warn!("blk-bench: figures not published: {:?}", e);
            }
        }
        Err(e) => {
            log::warn!("blk-bench: disk {}: stopped: {:?}", disk.id, e);
            let _ = xenstore::write(&format!("{dir}/bench_error"), &format!("{e:?}"));
        }
    }
}

/// The first disk that is not failed or closed, waiting for one to appear.
fn first_disk() -> Option<alloc::sync::Arc<Disk>> {
    let deadline = time::now_ns() + DISK_WAIT_MS * 1_000_000;
    loop {
        let disk = disks().into_iter().find(|d| !matches!(d.phase(), Phase::Failed | Phase::Closing | Phase::Closed));
        if disk.is_some() || time::now_ns() >= deadline {
            return disk;
        }
        sched::sleep_ms(100);
    }
}

/// Microseconds for the write (with its flush) and for the read.
fn measure(disk: &Disk, start: u64, end: u64, chunk: u32, flush: bool) -> Result<(u64, u64), BlkError> {
    let data: Vec<u8> = vec![PATTERN; chunk as usize * xen::blkif::SECTOR_SIZE];
    let mut ignore = |_, _| {};
    let t0 = time::now_ns();
    let mut w = Window::new(disk, DEPTH);
    for (sector, n) in chunks(start, end, chunk) {
        w.push(disk.submit_write(sector, &data[..n as usize * xen::blkif::SECTOR_SIZE]), (), &mut ignore)?;
    }
    w.finish(&mut ignore)?;
    if flush {
        disk.flush()?;
    }
    let t1 = time::now_ns();
    // A read that does not give back what was written is counted: a bench
    // of wrong data would be no figure at all. Each sector's first and last
    // bytes are looked at, which keeps the check out of the figure.
    let mut differ = 0u64;
    let mut check = |got: Vec<u8>, ()| {
        let bad = got.chunks(xen::blkif::SECTOR_SIZE).any(|s| s[0] != PATTERN || s[s.len() - 1] != PATTERN);
        differ += u64::from(bad);
    };
    let mut r = Window::new(disk, DEPTH);
    for (sector, n) in chunks(start, end, chunk) {
        r.push(disk.submit_read(sector, n), (), &mut check)?;
    }
    r.finish(&mut check)?;
    let t2 = time::now_ns();
    if differ > 0 {
        log::error!("blk-bench: disk {}: {} read(s) differ from what was written", disk.id, differ);
        return Err(BlkError::Io);
    }
    Ok(((t1 - t0) / 1000, (t2 - t1) / 1000))
}

fn mib_per_s(bytes: u64, us: u64) -> u64 {
    (bytes * 1_000_000 / us.max(1)) >> 20
}
