//! blkfront: the PV block frontend (`io/blkif.h`).
//!
//! A [`Disk`] is one `device/vbd/<n>`. Tasks read, write and flush through
//! it with several requests in flight; each request's data travels in
//! pages granted to the backend (kept in a pool, granted again when a new
//! backend takes over). Its service task (`service`) walks the xenbus
//! handshake, reconnects after a resume in a new domain and answers a
//! detach.
//!
//! Across a suspend: `suspend` stops new submissions and counts what is in
//! flight; `cancel` carries on with the same ring (the backend kept it);
//! `resume` marks the connection dead, and the service task then drops the
//! old grants, connects from scratch and issues every request that was in
//! flight again, exactly once, from the frontend's own record (`shadow`).
//!
//! The backend is not trusted: a ring index beyond what was asked, a
//! response id never issued or answered twice, a status the protocol does
//! not define fail this disk (a log line, every waiter told), never the
//! guest.

mod bench;
mod request;
mod service;
pub mod shadow;
mod window;

pub mod selftest;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::events::Channel;
use kernel::sched::WaitQueue;
use kernel::shared_page::{GrantedPage, SharedRing};
use request::Pending;
use shadow::{IdError, Shadow};
use spin::Mutex;
use xen::blkif::{Request, Response, Status};

pub use crate::xenbus::Phase;
pub use request::Op;
pub use service::{disks, spawn};
pub use shadow::Ticket;

/// Pages kept granted for the next requests. On a persistent connection
/// every page is kept (the backend may still have it mapped), which bounds
/// the pool by what was once in flight: 32 requests of 33 pages at most.
const POOL_PAGES: usize = 128;

/// Why an I/O did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkError {
    /// The disk failed (its backend misbehaved); it takes no more I/O.
    Failed,
    /// The disk was detached.
    Gone,
    /// Past the end of the disk, or longer than one request may be.
    OutOfRange,
    /// The backend answered with an error.
    Io,
    /// The backend does not do this (a flush without `feature-flush-cache`).
    NotSupported,
    /// No memory for the request's pages.
    NoMemory,
}

/// The disk's figures, published under `data/blk/<n>/`.
#[derive(Default)]
pub struct Figures {
    pub requests: AtomicU64,
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub errors: AtomicU64,
    /// Requests issued again on a new ring after a resume.
    pub reissued: AtomicU64,
    /// Responses for a request that had already completed.
    pub duplicates: AtomicU64,
    /// Sectors the self-test read back wrong.
    pub mismatches: AtomicU64,
    /// Self-test passes (write, flush, read back) completed.
    pub passes: AtomicU64,
}

impl Figures {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A live connection to the backend.
struct Connection {
    ring: SharedRing<Request, Response>,
    channel: Channel,
    backend_id: u16,
    sectors: u64,
    flush: bool,
    /// Segments per indirect request the backend takes (0: none).
    max_indirect: u32,
    /// `feature-persistent` both ways: the backend keeps every page it has
    /// seen mapped until the connection ends, so the pages stay granted.
    persistent: bool,
}

impl Connection {
    /// Pages one request may carry.
    fn max_pages(&self) -> usize {
        if self.max_indirect as usize > xen::blkif::MAX_SEGMENTS {
            (self.max_indirect as usize).min(request::MAX_INDIRECT_PAGES_USED)
        } else {
            xen::blkif::MAX_SEGMENTS
        }
    }
}

struct Inner {
    phase: Phase,
    conn: Option<Connection>,
    shadow: Shadow<Pending, Result<(), BlkError>>,
    pool: Vec<GrantedPage>,
}

/// One virtual block device.
pub struct Disk {
    pub id: u32,
    /// Taken by tasks only, never while blocking (the upcall only wakes).
    inner: Mutex<Inner>,
    /// Submitters and waiters; the event channel's handler wakes it.
    wake: Arc<WaitQueue>,
    /// Resumes in a new domain: the service task reconnects when it moves.
    resumes: AtomicU64,
    pub figures: Figures,
}

/// What a submitter needs to know of the connection.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub sectors: u64,
    pub max_sectors: u32,
    pub flush: bool,
    backend_id: u16,
}

impl Disk {
    fn new(id: u32) -> Self {
        Disk {
            id,
            inner: Mutex::new(Inner {
                phase: Phase::Connecting,
                conn: None,
                shadow: Shadow::new(xen::blkif::BlkRing::SIZE as usize),
                pool: Vec::new(),
            }),
            wake: Arc::new(WaitQueue::new()),
            resumes: AtomicU64::new(0),
            figures: Figures::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.inner.lock().phase
    }

    pub fn in_flight(&self) -> usize {
        self.inner.lock().shadow.in_flight()
    }

    /// Waits until the disk is connected; its size and limits.
    pub fn geometry(&self) -> Result<Geometry, BlkError> {
        self.wake.wait_until(|| {
            let g = self.inner.lock();
            match (g.phase, g.conn.as_ref()) {
                (Phase::Failed, _) => Some(Err(BlkError::Failed)),
                (Phase::Closing | Phase::Closed, _) => Some(Err(BlkError::Gone)),
                (Phase::Connected, Some(c)) => Some(Ok(Geometry {
                    sectors: c.sectors,
                    max_sectors: (c.max_pages() * 8) as u32,
                    flush: c.flush,
                    backend_id: c.backend_id,
                })),
                _ => None,
            }
        })
    }

    /// Starts reading `sectors` sectors at `sector`.
    pub fn submit_read(&self, sector: u64, sectors: u32) -> Result<Ticket, BlkError> {
        self.submit(Op::Read, sector, sectors, &[])
    }

    /// Starts writing `data` (whole sectors) at `sector`.
    pub fn submit_write(&self, sector: u64, data: &[u8]) -> Result<Ticket, BlkError> {
        if data.is_empty() || !data.len().is_multiple_of(xen::blkif::SECTOR_SIZE) {
            return Err(BlkError::OutOfRange);
        }
        self.submit(Op::Write, sector, (data.len() / xen::blkif::SECTOR_SIZE) as u32, data)
    }

    /// Starts a cache flush: every write completed before it is durable.
    pub fn submit_flush(&self) -> Result<Ticket, BlkError> {
        self.submit(Op::Flush, 0, 0, &[])
    }

    fn submit(&self, op: Op, sector: u64, sectors: u32, data: &[u8]) -> Result<Ticket, BlkError> {
        let geo = self.geometry()?;
        if op == Op::Flush && !geo.flush {
            return Err(BlkError::NotSupported);
        }
        if op != Op::Flush
            && (sectors == 0 || sectors > geo.max_sectors || sector.saturating_add(sectors as u64) > geo.sectors)
        {
            return Err(BlkError::OutOfRange);
        }
        let mut pending = Some(self.prepare(op, sector, sectors, data, geo.backend_id)?);
        let issued = self.wake.wait_until(|| {
            let mut g = self.inner.lock();
            match g.phase {
                Phase::Failed => Some(Err(BlkError::Failed)),
                Phase::Closing | Phase::Closed => Some(Err(BlkError::Gone)),
                Phase::Connected => match g.issue(self.id, pending.take()?) {
                    Ok(t) => Some(Ok(t)),
                    Err(p) => {
                        pending = Some(p);
                        None
                    }
                },
                _ => None,
            }
        });
        if issued.is_ok() {
            Figures::add(&self.figures.requests, 1);
        }
        if let Some(p) = pending {
            self.recycle(p);
        }
        issued
    }

    /// The request's pages, from the pool or new, with a write's data in.
    /// Every page is granted writable: a persistent backend maps the
    /// segment list's page so too.
    fn prepare(&self, op: Op, sector: u64, sectors: u32, data: &[u8], backend: u16) -> Result<Pending, BlkError> {
        let n = (sectors as usize).div_ceil(8);
        let with_list = n > xen::blkif::MAX_SEGMENTS;
        let total = n + usize::from(with_list);
        let mut pages = {
            let mut g = self.inner.lock();
            let keep = g.pool.len().saturating_sub(total);
            g.pool.split_off(keep)
        };
        while pages.len() < total {
            pages.push(GrantedPage::new(backend, false).map_err(|_| BlkError::NoMemory)?);
        }
        let indirect = if with_list { pages.pop() } else { None };
        for (page, chunk) in pages.iter_mut().zip(data.chunks(4096)) {
            page.copy_in(0, chunk);
        }
        Ok(Pending { op, sector, sectors, pages, indirect })
    }

    /// Gives a finished request's pages back to the pool.
    fn recycle(&self, p: Pending) {
        let mut g = self.inner.lock();
        let keep_all = g.conn.as_ref().is_some_and(|c| c.persistent);
        for page in p.pages.into_iter().chain(p.indirect) {
            if keep_all || g.pool.len() < POOL_PAGES {
                g.pool.push(page);
            }
        }
    }

    /// Waits for a request to finish; a read's data.
    pub fn wait(&self, t: Ticket) -> Result<Vec<u8>, BlkError> {
        let (p, result) = self.wake.wait_until(|| {
            let mut g = self.inner.lock();
            g.poll(self);
            if let Some(done) = g.shadow.take(t) {
                return Some(Ok(done));
            }
            (!g.shadow.holds(t)).then_some(Err(BlkError::Gone))
        })?;
        let out = match (result, p.op) {
            (Ok(()), Op::Read) => {
                let mut buf = alloc::vec![0u8; p.sectors as usize * xen::blkif::SECTOR_SIZE];
                for (page, chunk) in p.pages.iter().zip(buf.chunks_mut(4096)) {
                    page.copy_out(0, chunk);
                }
                Figures::add(&self.figures.read_bytes, buf.len() as u64);
                Ok(buf)
            }
            (Ok(()), Op::Write) => {
                Figures::add(&self.figures.written_bytes, p.sectors as u64 * 512);
                Ok(Vec::new())
            }
            (Ok(()), Op::Flush) => {
                Figures::add(&self.figures.flushes, 1);
                Ok(Vec::new())
            }
            (Err(e), _) => {
                Figures::add(&self.figures.errors, 1);
                Err(e)
            }
        };
        self.recycle(p);
        out
    }

    /// Reads `sectors` sectors at `sector`.
    pub fn read(&self, sector: u64, sectors: u32) -> Result<Vec<u8>, BlkError> {
        self.wait(self.submit_read(sector, sectors)?)
    }

    /// Writes `data` at `sector`.
    pub fn write(&self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        self.wait(self.submit_write(sector, data)?).map(drop)
    }

    pub fn flush(&self) -> Result<(), BlkError> {
        self.wait(self.submit_flush()?).map(drop)
    }
}

impl Inner {
    /// Puts `p` on the ring; gives it back if no slot is free.
    fn issue(&mut self, disk_id: u32, mut p: Pending) -> Result<Ticket, Pending> {
        let Some(conn) = self.conn.as_mut() else { return Err(p) };
        if conn.ring.ring().free_requests() == 0 {
            return Err(p);
        }
        // Pages prepared while a new backend took over belong to the old one.
        if let Err(e) = p.grant_to(conn.backend_id) {
            log::warn!("blkfront {}: regranting a request's pages failed: {:?}", disk_id, e);
            return Err(p);
        }
        let t = self.shadow.insert(p)?;
        let req = self.shadow.request_mut(t).map(|p| p.ring_request(disk_id as u16, t.id()));
        if let Some(req) = req {
            conn.ring.ring().write_request(req);
            if conn.ring.ring().push_requests() {
                conn.channel.notify();
            }
        }
        Ok(t)
    }

    /// Takes every response the backend has produced.
    fn poll(&mut self, disk: &Disk) {
        if !matches!(self.phase, Phase::Connected | Phase::Closing) {
            return;
        }
        loop {
            let Some(conn) = self.conn.as_mut() else { return };
            let rsp = match conn.ring.ring().take_response() {
                Ok(Some(rsp)) => rsp,
                Ok(None) => return,
                Err(fault) => return self.fail(disk, format_args!("ring fault {:?}", fault)),
            };
            let status = rsp.status();
            let done = self.shadow.complete(rsp.id, |_| match status {
                Ok(Status::Okay) => Ok(()),
                Ok(Status::Error) => Err(BlkError::Io),
                Ok(Status::NotSupported) => Err(BlkError::NotSupported),
                Err(_) => Err(BlkError::Failed),
            });
            match (done, status) {
                (Err(IdError::Duplicate(id)), _) => {
                    Figures::add(&disk.figures.duplicates, 1);
                    return self.fail(disk, format_args!("a second response for request {:#x}", id));
                }
                (Err(IdError::NeverIssued(id)), _) => {
                    return self.fail(disk, format_args!("a response for request {:#x}, never issued", id))
                }
                (Ok(()), Err(bad)) => return self.fail(disk, format_args!("response status {} out of range", bad.0)),
                (Ok(()), Ok(_)) => {}
            }
        }
    }

    /// Marks the disk failed: every request in flight ends with an error.
    fn fail(&mut self, disk: &Disk, why: core::fmt::Arguments) {
        if self.phase == Phase::Failed {
            return;
        }
        let ended = self.shadow.fail_all(|| Err(BlkError::Failed));
        self.phase = Phase::Failed;
        // The backend may still write the ring page: dropping it ends the
        // grant or, if still mapped, leaks the page.
        self.conn = None;
        log::error!("blkfront {}: {}: disk failed, {} request(s) ended with an error", disk.id, why, ended);
        disk.wake.wake_all();
    }
}
