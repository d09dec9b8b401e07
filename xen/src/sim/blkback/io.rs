//! The block backend's data path, as plain code over a ring page and
//! [`GuestMemory`]: requests are copied off the ring, checked as
//! xen-blkback checks them, performed on the disk image and answered.
//! A bad request gets status -1 (an operation the backend does not offer,
//! -2) and touches no memory: every segment is checked before any byte
//! moves.

use super::{BlkFault, DiskFeatures, DiskFigures, IoRecord};
use crate::blkif::{
    IndirectRequest, Request, Response, Segment, MAX_INDIRECT_PAGES, MAX_SEGMENTS, OP_FLUSH_DISKCACHE, OP_INDIRECT,
    OP_READ, OP_WRITE, SECTORS_PER_PAGE, SECTOR_SIZE, SEGMENTS_PER_INDIRECT_PAGE,
};
use crate::sim::backend::{granted_page, push_note, BackRingPage, GrantError, GuestMemory, RingOverflow};
use std::collections::{BTreeSet, VecDeque};
use std::string::String;
use std::vec::Vec;

/// Bytes of a ring slot (a request; responses are smaller).
pub const ENTRY: usize = core::mem::size_of::<Request>();
const STATUS_OKAY: i16 = 0;
const STATUS_ERROR: i16 = -1;
const STATUS_NOT_SUPPORTED: i16 = -2;
/// What `BlkFault::BadStatus` answers: no status the protocol defines.
const BAD_STATUS: i16 = 7;
const UNKNOWN_ID_MASK: u64 = 0xdead_beef_dead_beef;
/// How far past the responses `BlkFault::RspProdBeyondRing` publishes.
const BEYOND_RING: u32 = 1000;
/// Log entries and notes kept (the oldest log entries go first).
const LOG_MAX: usize = 1 << 16;
/// Grants a persistent connection keeps mapped at most (xen-blkback's
/// `max_persistent_grants`); pages past it are mapped per request.
const MAX_PERSISTENT: usize = 1056;

/// Why a request is answered with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    SegmentCount(u16),
    BadSectors { seg: usize, first: u8, last: u8 },
    BeyondDisk { sector: u64, sectors: u64 },
    Grant(GrantError),
    IndirectOp(u8),
}

/// A disk image and everything its backend keeps across connections.
#[derive(Debug)]
pub struct DiskIo {
    pub data: Vec<u8>,
    pub features: DiskFeatures,
    pub figures: DiskFigures,
    pub log: VecDeque<IoRecord>,
    pub notes: Vec<String>,
    /// Requests consumed but not answered (`Sim::disk_hold`), as copied.
    pub held: Vec<[u8; ENTRY]>,
    pub hold: bool,
    /// One-shot response faults armed, in order.
    pub faults: Vec<BlkFault>,
    /// Set when the frontend overflowed the ring: not served until the
    /// next connection.
    pub halted: Option<RingOverflow>,
    /// How far past the responses `rsp_prod` is published: 0 until
    /// `RspProdBeyondRing` applies, then for the connection.
    pub skew: u32,
    /// This connection is persistent (`feature-persistent` both ways).
    pub persistent: bool,
    /// Grants kept mapped on this connection, and those first mapped in
    /// the last serve (the simulator marks them in the guest's table).
    pub mapped: BTreeSet<u32>,
    pub newly_mapped: Vec<u32>,
}

impl DiskIo {
    pub fn new(sectors: u64, features: DiskFeatures) -> Self {
        let bytes = usize::try_from(sectors).ok().and_then(|s| s.checked_mul(SECTOR_SIZE));
        DiskIo {
            data: vec![0; bytes.expect("sim: disk too large for the host")],
            features,
            figures: DiskFigures::default(),
            log: VecDeque::new(),
            notes: Vec::new(),
            held: Vec::new(),
            hold: false,
            faults: Vec::new(),
            halted: None,
            skew: 0,
            persistent: false,
            mapped: BTreeSet::new(),
            newly_mapped: Vec::new(),
        }
    }

    pub fn sectors(&self) -> u64 {
        (self.data.len() / SECTOR_SIZE) as u64
    }

    /// The page `gref` grants, as xen-blkback maps it: writable and kept
    /// on a persistent connection, else as the request needs it.
    fn map(&mut self, mem: &dyn GuestMemory, gref: u32, backend_writes: bool) -> Result<*mut u8, GrantError> {
        if !self.persistent {
            return granted_page(mem, gref, backend_writes);
        }
        let page = granted_page(mem, gref, true)?;
        if self.mapped.len() < MAX_PERSISTENT && self.mapped.insert(gref) {
            self.newly_mapped.push(gref);
        }
        Ok(page)
    }

    pub fn note(&mut self, what: String) {
        push_note(&mut self.notes, what);
    }

    /// Serves the ring: answers the held requests first if `release`,
    /// then consumes what the frontend published (holding or answering
    /// it) until no more comes. True if the frontend is to be notified.
    pub fn serve(&mut self, ring: &mut BackRingPage, mem: &dyn GuestMemory, release: bool) -> bool {
        let mut produced = false;
        if release {
            for req in core::mem::take(&mut self.held) {
                let rsp = self.perform(&req, mem);
                self.respond(ring, rsp);
                produced = true;
            }
        }
        while self.halted.is_none() {
            let n = match ring.unconsumed() {
                Ok(n) => n,
                Err(e) => {
                    self.figures.ring_overflows += 1;
                    self.note(format!("frontend overflowed the ring ({e:?}): no longer served"));
                    self.halted = Some(e);
                    break;
                }
            };
            // The whole batch first: a response (a duplicate, too) then
            // only ever lands in a slot whose request is already copied.
            let batch: Vec<[u8; ENTRY]> = (0..n)
                .map(|_| {
                    let mut req = [0u8; ENTRY];
                    ring.take_request(&mut req);
                    req
                })
                .collect();
            self.figures.requests += n as u64;
            if self.hold {
                self.held.extend(batch);
            } else {
                for req in batch {
                    let rsp = self.perform(&req, mem);
                    self.respond(ring, rsp);
                    produced = true;
                }
            }
            if !ring.final_check_for_requests() {
                break;
            }
        }
        produced && self.push(ring)
    }

    /// Publishes what was produced, past the responses once
    /// `RspProdBeyondRing` applied (so that a later batch does not mend
    /// the index before the frontend looked).
    fn push(&mut self, ring: &mut BackRingPage) -> bool {
        if self.skew == 0 && self.take_fault(BlkFault::RspProdBeyondRing) {
            self.skew = BEYOND_RING;
        }
        if self.skew != 0 {
            ring.publish_rsp_prod(ring.rsp_prod_pvt().wrapping_add(self.skew));
            return true;
        }
        let notify = ring.push_responses();
        self.figures.notifies += notify as u64;
        notify
    }

    fn take_fault(&mut self, f: BlkFault) -> bool {
        let Some(i) = self.faults.iter().position(|&g| g == f) else { return false };
        self.faults.remove(i);
        self.figures.faults_applied += 1;
        true
    }

    /// Writes `rsp`, spoilt by any armed response fault.
    fn respond(&mut self, ring: &mut BackRingPage, mut rsp: Response) {
        if self.take_fault(BlkFault::UnknownId) {
            rsp.id ^= UNKNOWN_ID_MASK;
        }
        if self.take_fault(BlkFault::BadStatus) {
            rsp.status = BAD_STATUS;
        }
        let bytes = encode_response(&rsp);
        ring.put_response(&bytes);
        if self.take_fault(BlkFault::DuplicateResponse) {
            ring.put_response(&bytes);
        }
    }

    /// Performs one request and returns its response.
    pub fn perform(&mut self, raw: &[u8; ENTRY], mem: &dyn GuestMemory) -> Response {
        let req = decode_request(raw);
        let (op, sector, result) = match req.operation {
            OP_READ | OP_WRITE => {
                let n = req.nr_segments as usize;
                let r = if n == 0 || n > MAX_SEGMENTS {
                    Err(Refused::SegmentCount(n as u16))
                } else {
                    self.read_write(req.operation == OP_WRITE, req.sector_number, &req.seg[..n], mem)
                };
                (req.operation, req.sector_number, r.map(Some))
            }
            OP_FLUSH_DISKCACHE if self.features.flush => {
                // With segments, a write first (REQ_PREFLUSH with data).
                let n = req.nr_segments as usize;
                let r = match n {
                    0 => Ok(0),
                    1..=MAX_SEGMENTS => self.read_write(true, req.sector_number, &req.seg[..n], mem),
                    _ => Err(Refused::SegmentCount(n as u16)),
                };
                self.figures.flushes += r.is_ok() as u64;
                (OP_FLUSH_DISKCACHE, req.sector_number, r.map(Some))
            }
            OP_INDIRECT if self.features.max_indirect_segments > 0 => {
                let ind = decode_indirect(raw);
                let r = self.indirect(&ind, mem);
                (ind.indirect_op, ind.sector_number, r.map(Some))
            }
            // Barrier, discard, indirect or flush not offered, unknown:
            // what `dispatch_other_io` answers.
            other => (other, req.sector_number, Ok(None)),
        };
        let (status, sectors) = match result {
            Ok(Some(sectors)) => (STATUS_OKAY, sectors),
            Ok(None) => {
                self.figures.not_supported += 1;
                (STATUS_NOT_SUPPORTED, 0)
            }
            Err(why) => {
                self.figures.errors += 1;
                self.note(format!("request {:#x} (op {op}) refused: {why:?}", req.id));
                (STATUS_ERROR, 0)
            }
        };
        if self.log.len() == LOG_MAX {
            self.log.pop_front();
        }
        self.log.push_back(IoRecord { op, sector, sectors, status });
        Response { id: req.id, operation: op, status }
    }

    fn indirect(&mut self, ind: &IndirectRequest, mem: &dyn GuestMemory) -> Result<u64, Refused> {
        if ind.indirect_op != OP_READ && ind.indirect_op != OP_WRITE {
            return Err(Refused::IndirectOp(ind.indirect_op));
        }
        let n = ind.nr_segments as usize;
        let max = (self.features.max_indirect_segments as usize).min(MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE);
        if n == 0 || n > max {
            return Err(Refused::SegmentCount(ind.nr_segments));
        }
        let mut segs = Vec::with_capacity(n);
        for &gref in &ind.indirect_grefs[..n.div_ceil(SEGMENTS_PER_INDIRECT_PAGE)] {
            let page = self.map(mem, gref, false).map_err(Refused::Grant)?;
            let here = (n - segs.len()).min(SEGMENTS_PER_INDIRECT_PAGE);
            for i in 0..here {
                let mut b = [0u8; 8];
                // SAFETY: `granted_page` names a live page of the domain
                // (the `GuestMemory` contract); i * 8 + 8 <= 4096.
                unsafe { core::ptr::copy_nonoverlapping(page.add(i * 8), b.as_mut_ptr(), 8) };
                segs.push(decode_segment(&b));
            }
        }
        self.read_write(ind.indirect_op == OP_WRITE, ind.sector_number, &segs, mem)
    }

    /// Moves the segments' sectors between the disk at `sector` and the
    /// granted pages, once every segment has been checked.
    fn read_write(
        &mut self,
        write: bool,
        sector: u64,
        segs: &[Segment],
        mem: &dyn GuestMemory,
    ) -> Result<u64, Refused> {
        let mut pages = Vec::with_capacity(segs.len());
        let mut sectors = 0u64;
        for (i, s) in segs.iter().enumerate() {
            if s.first_sect > s.last_sect || s.last_sect >= SECTORS_PER_PAGE {
                return Err(Refused::BadSectors { seg: i, first: s.first_sect, last: s.last_sect });
            }
            sectors += (s.last_sect - s.first_sect) as u64 + 1;
        }
        if sector.checked_add(sectors).is_none_or(|end| end > self.sectors()) {
            return Err(Refused::BeyondDisk { sector, sectors });
        }
        for s in segs {
            // A read writes the guest's page.
            pages.push(self.map(mem, s.gref, !write).map_err(Refused::Grant)?);
        }
        let mut at = sector as usize * SECTOR_SIZE;
        for (s, &page) in segs.iter().zip(&pages) {
            let off = s.first_sect as usize * SECTOR_SIZE;
            let len = (s.last_sect - s.first_sect + 1) as usize * SECTOR_SIZE;
            let disk = &mut self.data[at..at + len];
            // SAFETY: `page` is a live page of the domain (the `GuestMemory`
            // contract) and off + len <= 4096 (last_sect < 8, checked); the
            // disk image is the backend's own.
            unsafe {
                if write {
                    core::ptr::copy_nonoverlapping(page.add(off), disk.as_mut_ptr(), len);
                } else {
                    core::ptr::copy_nonoverlapping(disk.as_ptr(), page.add(off), len);
                }
            }
            at += len;
        }
        if write {
            self.figures.sectors_written += sectors;
        } else {
            self.figures.sectors_read += sectors;
        }
        Ok(sectors)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn decode_segment(b: &[u8]) -> Segment {
    Segment { gref: u32_at(b, 0), first_sect: b[4], last_sect: b[5], _pad: 0 }
}

/// `struct blkif_request` from its slot's bytes (offsets in `blkif`'s tests).
pub fn decode_request(b: &[u8; ENTRY]) -> Request {
    let mut seg = [Segment::default(); MAX_SEGMENTS];
    for (i, s) in seg.iter_mut().enumerate() {
        *s = decode_segment(&b[24 + i * 8..]);
    }
    Request {
        operation: b[0],
        nr_segments: b[1],
        handle: u16_at(b, 2),
        id: u64_at(b, 8),
        sector_number: u64_at(b, 16),
        seg,
    }
}

/// `struct blkif_request_indirect` from the same bytes.
pub fn decode_indirect(b: &[u8; ENTRY]) -> IndirectRequest {
    let mut indirect_grefs = [0; MAX_INDIRECT_PAGES];
    for (i, g) in indirect_grefs.iter_mut().enumerate() {
        *g = u32_at(b, 28 + i * 4);
    }
    IndirectRequest {
        operation: b[0],
        indirect_op: b[1],
        nr_segments: u16_at(b, 2),
        id: u64_at(b, 8),
        sector_number: u64_at(b, 16),
        handle: u16_at(b, 24),
        indirect_grefs,
    }
}

/// `struct blkif_response`'s bytes (padding zero).
pub fn encode_response(r: &Response) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&r.id.to_le_bytes());
    b[8] = r.operation;
    b[10..12].copy_from_slice(&r.status.to_le_bytes());
    b
}
