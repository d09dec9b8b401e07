//! What is blkfront's own in a disk's life (`xenbus::lifecycle` runs it):
//! connecting, reconnecting with every request in flight issued again,
//! closing, suspend and resume; and the figures under `data/blk/<n>/`.

use super::{Connection, Disk, Phase};
use crate::xenbus::{Frontend, FrontendError, PvDevice, Registry};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use kernel::events::{Binding, Channel};
use kernel::shared_page::SharedRing;
use kernel::time;
use kernel::xenstore::{self, Watch};
use xen::xenbus::XenbusState;

/// How long a backend may take to connect before the disk is failed.
const CONNECT_TIMEOUT_MS: u64 = 30_000;
/// How long a detach waits for in-flight I/O and the backend to close.
const CLOSE_TIMEOUT_MS: u64 = 5_000;

static DISKS: Registry<Disk> = Registry::new();

/// The disks, lowest device number first.
pub fn disks() -> Vec<Arc<Disk>> {
    DISKS.all()
}

/// Starts discovery, the figures, the self-test over the first
/// `selftest_mib` MiB and the bench over `bench_mib` MiB after them (0: none).
pub fn spawn(selftest_mib: u64, bench_mib: u64) {
    DISKS.spawn();
    if selftest_mib > 0 {
        super::selftest::spawn(selftest_mib);
    }
    if bench_mib > 0 {
        super::bench::spawn(selftest_mib * 2048, bench_mib);
    }
}

impl PvDevice for Disk {
    const CLASS: &'static str = "vbd";
    const NAME: &'static str = "blkfront";
    const DATA_DIR: &'static str = "data/blk";

    fn new(id: u32) -> Self {
        Disk::new(id)
    }
    fn id(&self) -> u32 {
        self.id
    }
    fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Acquire)
    }
    fn is_failed(&self) -> bool {
        self.phase() == Phase::Failed
    }
    fn connect(&self, front: &mut Frontend, watch: &Watch, epoch: u64) -> Result<(), FrontendError> {
        connect(self, front, watch, epoch)
    }
    fn close(&self, front: &mut Frontend, watch: &Watch) {
        close(self, front, watch)
    }
    fn fail(&self, why: &FrontendError) {
        self.inner.lock().fail(self, format_args!("{}", why));
    }

    fn suspend(&self) {
        let mut g = self.inner.lock();
        g.phase.suspend();
        log::info!("blkfront {}: suspended, {} request(s) in flight", self.id, g.shadow.in_flight());
    }

    fn resume(&self) {
        let mut g = self.inner.lock();
        g.phase.resume();
        self.resumes.fetch_add(1, Ordering::AcqRel);
    }

    fn cancel(&self) {
        self.inner.lock().phase.cancel();
        self.wake.wake_all();
    }

    fn figures(&self) -> (Phase, Vec<(&'static str, u64)>) {
        let (phase, in_flight, sectors) = {
            let g = self.inner.lock();
            (g.phase, g.shadow.in_flight() as u64, g.conn.as_ref().map_or(0, |c| c.sectors))
        };
        let f = &self.figures;
        let counters = [
            ("requests", &f.requests),
            ("read_bytes", &f.read_bytes),
            ("written_bytes", &f.written_bytes),
            ("flushes", &f.flushes),
            ("errors", &f.errors),
            ("reissued", &f.reissued),
            ("duplicates", &f.duplicates),
            ("mismatches", &f.mismatches),
            ("passes", &f.passes),
        ];
        let mut figures = alloc::vec![("sectors", sectors), ("in_flight", in_flight)];
        figures.extend(counters.iter().map(|(name, c)| (*name, c.load(Ordering::Relaxed))));
        (phase, figures)
    }
}

/// Connects from scratch: a new ring and event channel, the handshake, the
/// backend's details, then every request still in flight issued again.
fn connect(disk: &Disk, front: &mut Frontend, watch: &Watch, epoch: u64) -> Result<(), FrontendError> {
    let backend = front.backend_id;
    let reconnect = {
        let mut g = disk.inner.lock();
        if g.phase != Phase::Failed {
            g.phase = Phase::Connecting;
        }
        // The old connection died with the old domain (its port was made
        // again for nothing, its ring's grant is ended here).
        g.conn.take().is_some() || epoch > 0
    };
    let ring = SharedRing::new(backend).map_err(|e| FrontendError::Resources(format!("ring page: {e:?}")))?;
    let wake = disk.wake.clone();
    let channel = Channel::bind(Binding::Unbound { remote_dom: backend }, "blkfront", move |_| wake.wake_all())
        .map_err(|e| FrontendError::Resources(format!("event channel: {e:?}")))?;
    let port = channel.port().ok_or(FrontendError::Resources(String::from("event channel vanished")))?;
    let gref = ring.gref();
    let node = front.nodename.clone();
    let still_current = || disk.resumes.load(Ordering::Acquire) == epoch;
    front.connect(watch, CONNECT_TIMEOUT_MS, XenbusState::Initialised, still_current, |tx| {
        xenstore::write_tx(tx, &format!("{node}/ring-ref"), &format!("{gref}"))?;
        xenstore::write_tx(tx, &format!("{node}/event-channel"), &format!("{port}"))?;
        xenstore::write_tx(tx, &format!("{node}/protocol"), "x86_64-abi")?;
        // The pool already reuses its pages; a backend that keeps them
        // mapped saves a map and an unmap per page and request.
        xenstore::write_tx(tx, &format!("{node}/feature-persistent"), "1")
    })?;
    let sectors = front.backend_u64("sectors")?.ok_or(FrontendError::Missing(format!("{}/sectors", front.backend)))?;
    if let Some(size) = front.backend_u64("sector-size")?.filter(|&s| s != 512) {
        return Err(FrontendError::Malformed {
            node: format!("{}/sector-size", front.backend),
            value: format!("{size}"),
        });
    }
    let flush = feature(front, "feature-flush-cache") == 1;
    let max_indirect = feature(front, "feature-max-indirect-segments").min(u32::MAX as u64) as u32;
    let persistent = feature(front, "feature-persistent") == 1;
    front.switch_state(XenbusState::Connected)?;
    let conn = Connection { ring, channel, backend_id: backend, sectors, flush, max_indirect, persistent };
    let reissued = disk.install(conn, reconnect);
    log::info!(
        "blkfront {}: connected to dom{} ({} MiB, flush {}, indirect {}, persistent {}), {} request(s) issued again",
        disk.id,
        backend,
        sectors / 2048,
        if flush { "yes" } else { "no" },
        max_indirect,
        if persistent { "yes" } else { "no" },
        reissued
    );
    Ok(())
}

/// A feature flag or limit the backend offers (0 if absent or garbage).
fn feature(front: &Frontend, node: &str) -> u64 {
    front
        .backend_u64(node)
        .unwrap_or_else(|e| {
            log::warn!("blkfront {}: {}; taken as not offered", front.id, e);
            None
        })
        .unwrap_or(0)
}

impl Disk {
    /// Makes `conn` the disk's connection. After a reconnect every page
    /// is granted afresh to the (new) backend and every request in flight
    /// goes on the new ring again, in the order first issued.
    fn install(&self, mut conn: Connection, reconnect: bool) -> usize {
        let mut g = self.inner.lock();
        if g.phase == Phase::Failed {
            return 0;
        }
        let backend = conn.backend_id;
        let mut reissued = 0;
        if reconnect {
            g.pool.retain_mut(|p| p.regrant(backend).is_ok());
            let mut broken = None;
            for (t, p) in g.shadow.issued_mut() {
                if let Err(e) = p.regrant_all(backend) {
                    broken = Some(e);
                    break;
                }
                conn.ring.ring().write_request(p.ring_request(self.id as u16, t.id()));
                reissued += 1;
            }
            if let Some(e) = broken {
                g.fail(self, format_args!("granting pages to the new backend: {:?}", e));
                return 0;
            }
            if conn.ring.ring().push_requests() {
                conn.channel.notify();
            }
            super::Figures::add(&self.figures.reissued, reissued as u64);
        }
        g.conn = Some(conn);
        g.phase = Phase::Connected;
        drop(g);
        self.wake.wake_all();
        reissued
    }
}

/// Answers a closing backend (a detach): in-flight I/O may finish, then
/// both sides close.
fn close(disk: &Disk, front: &mut Frontend, watch: &Watch) {
    {
        let mut g = disk.inner.lock();
        if g.phase != Phase::Failed {
            g.phase = Phase::Closing;
        }
    }
    disk.wake.wake_all();
    let deadline = time::now_ns() + CLOSE_TIMEOUT_MS * 1_000_000;
    disk.wake.wait_until_deadline(Some(deadline), &mut || {
        let mut g = disk.inner.lock();
        g.poll(disk);
        (g.shadow.in_flight() == 0).then_some(())
    });
    let ended = disk.inner.lock().shadow.fail_all(|| Err(super::BlkError::Gone));
    disk.wake.wake_all();
    front.close(watch, CLOSE_TIMEOUT_MS);
    // The backend has let go of the ring (or never will): end its grant.
    let conn = {
        let mut g = disk.inner.lock();
        g.phase = Phase::Closed;
        g.conn.take()
    };
    if let Some(c) = &conn {
        c.ring.wait_unmapped(Frontend::UNMAP_WAIT_MS);
    }
    drop(conn);
    disk.wake.wake_all();
    let _ = xenstore::write(&format!("data/blk/{}/state", disk.id), Phase::Closed.name());
    log::info!("blkfront {}: detached, {} request(s) ended unfinished", disk.id, ended);
}
