//! The block backend's data path without a simulated domain: a guest of a
//! few boxed pages and a grant table in a map, the real frontend ring
//! (`blkif::BlkRing`) on one of them.

use super::io::{decode_request, DiskIo, ENTRY};
use super::{BlkFault, DiskFeatures, IoRecord};
use crate::blkif::{
    BadStatus, BlkRing, IndirectRequest, Request, Response, Segment, Status, OP_DISCARD, OP_FLUSH_DISKCACHE,
    OP_INDIRECT, OP_READ, OP_WRITE, OP_WRITE_BARRIER,
};
use crate::ring::RingFault;
use crate::sim::backend::{BackRing, GrantEntry, GTF_PERMIT_ACCESS};
use crate::sim::test_support::{Guest, FRAMES};

const RING_FRAME: u64 = 100;

/// A guest, its frontend ring and a disk's backend serving it.
struct Rig {
    guest: Guest,
    front: BlkRing,
    back: BackRing,
    io: DiskIo,
}

impl Rig {
    fn new(sectors: u64, features: DiskFeatures) -> Rig {
        let guest = Guest::new();
        let ring_page = guest.pages[&RING_FRAME];
        // SAFETY: a leaked page, used for nothing else; the backend reaches
        // it through raw pointers only.
        let front = unsafe { BlkRing::init(ring_page) };
        // SAFETY: as above.
        let back = unsafe { BackRing::attach(ring_page) };
        Rig { guest, front, back, io: DiskIo::new(sectors, features) }
    }

    /// Grants `frame` to dom0 as ref `gref`.
    fn grant(&mut self, gref: u32, frame: u64, readonly: bool) {
        self.guest.grant_frame(gref, frame, readonly);
    }

    fn grant_raw(&mut self, gref: u32, e: GrantEntry) {
        self.guest.grants.insert(gref, e);
    }

    fn fill(&self, frame: u64, f: impl Fn(usize) -> u8) {
        let p = self.guest.pages[&frame];
        for i in 0..4096 {
            // SAFETY: a leaked page of 4096 bytes.
            unsafe { p.add(i).write(f(i)) };
        }
    }

    fn bytes(&self, frame: u64) -> Vec<u8> {
        let p = self.guest.pages[&frame];
        // SAFETY: as in `fill`.
        (0..4096).map(|i| unsafe { p.add(i).read() }).collect()
    }

    /// Queues `reqs` and, if the ring says to, notifies: the backend
    /// serves. Returns whether the frontend was notified back.
    fn submit(&mut self, reqs: &[Request]) -> bool {
        for r in reqs {
            assert!(self.front.write_request(*r));
        }
        self.front.push_requests();
        self.serve(false)
    }

    fn serve(&mut self, release: bool) -> bool {
        let page = self.guest.pages[&RING_FRAME];
        // SAFETY: the leaked ring page.
        let mut ring = unsafe { self.back.on(page, ENTRY) };
        self.io.serve(&mut ring, &self.guest, release)
    }

    fn responses(&mut self) -> Vec<Response> {
        // No final check: the tests look at when the backend notifies.
        std::iter::from_fn(|| self.front.next_response().expect("a sound ring")).collect()
    }

    /// Serves `req` alone and returns its status.
    fn status_of(&mut self, req: Request) -> i16 {
        self.submit(&[req]);
        let rsp = self.responses();
        assert_eq!(rsp.len(), 1);
        assert_eq!(rsp[0].id, req.id);
        rsp[0].status
    }
}

fn seg(gref: u32, first: u8, last: u8) -> Segment {
    Segment { gref, first_sect: first, last_sect: last, _pad: 0 }
}

fn rw(write: bool, id: u64, sector: u64, segs: &[Segment]) -> Request {
    let mut r = Request::read_write(write, 51712, id, sector, &[]).unwrap();
    r.nr_segments = segs.len() as u8;
    r.seg[..segs.len().min(11)].copy_from_slice(&segs[..segs.len().min(11)]);
    r
}

/// An indirect request in a ring slot, as the frontend would write it:
/// its bytes read back as a `Request` (the layouts share every offset
/// the indirect one uses).
fn indirect(op: u8, id: u64, sector: u64, nr: u16, grefs: &[u32]) -> Request {
    let mut b = [0u8; ENTRY];
    b[0] = OP_INDIRECT;
    b[1] = op;
    b[2..4].copy_from_slice(&nr.to_le_bytes());
    b[8..16].copy_from_slice(&id.to_le_bytes());
    b[16..24].copy_from_slice(&sector.to_le_bytes());
    for (i, g) in grefs.iter().enumerate() {
        b[28 + i * 4..32 + i * 4].copy_from_slice(&g.to_le_bytes());
    }
    let r = decode_request(&b);
    let back = super::io::decode_indirect(&b);
    assert_eq!((back.nr_segments, back.indirect_op, back.indirect_grefs[0]), (nr, op, grefs[0]));
    let _: IndirectRequest = back;
    r
}

#[test]
fn writes_and_reads_move_sectors_between_pages_and_disk() {
    let mut rig = Rig::new(64, DiskFeatures::default());
    rig.grant(10, 101, true); // read-only is enough for a write
    rig.grant(11, 102, false);
    rig.fill(101, |i| (i / 512) as u8 + 1);
    rig.fill(102, |i| (i / 512) as u8 + 0x41);
    let notified = rig.submit(&[rw(true, 7, 10, &[seg(10, 0, 7), seg(11, 2, 3)])]);
    assert!(notified, "the frontend's rsp_event starts at 1");
    let rsp = rig.responses();
    assert_eq!(rsp, vec![Response { id: 7, operation: OP_WRITE, status: 0 }]);
    let d = &rig.io.data;
    for s in 0..8 {
        assert!(d[(10 + s) * 512..(11 + s) * 512].iter().all(|&b| b == s as u8 + 1), "sector {}", 10 + s);
    }
    assert!(d[18 * 512..19 * 512].iter().all(|&b| b == 0x43) && d[19 * 512..20 * 512].iter().all(|&b| b == 0x44));
    assert!(d[..10 * 512].iter().chain(&d[20 * 512..]).all(|&b| b == 0), "nothing else written");

    rig.grant(12, 103, false);
    rig.grant(13, 104, false);
    rig.fill(104, |_| 0xee);
    assert!(!rig.submit(&[rw(false, 8, 17, &[seg(12, 0, 7), seg(13, 5, 6)])]), "nobody asked to hear");
    assert!(rig.front.final_check_for_responses(), "the response came before the check");
    assert_eq!(rig.responses(), vec![Response { id: 8, operation: OP_READ, status: 0 }]);
    let (p3, p4) = (rig.bytes(103), rig.bytes(104));
    // Disk sectors 17..=26: 8, 0x43, 0x44, then never written.
    assert!(p3[..512].iter().all(|&b| b == 8) && p3[512..1024].iter().all(|&b| b == 0x43));
    assert!(p3[1024..1536].iter().all(|&b| b == 0x44) && p3[1536..].iter().all(|&b| b == 0));
    assert!(p4[5 * 512..7 * 512].iter().all(|&b| b == 0));
    assert!(p4[..5 * 512].iter().chain(&p4[7 * 512..]).all(|&b| b == 0xee), "only the sectors asked for");

    let f = &rig.io.figures;
    assert_eq!((f.requests, f.sectors_written, f.sectors_read, f.errors), (2, 10, 10, 0));
    let log: Vec<IoRecord> = rig.io.log.iter().copied().collect();
    assert_eq!(
        log,
        [
            IoRecord { op: OP_WRITE, sector: 10, sectors: 10, status: 0 },
            IoRecord { op: OP_READ, sector: 17, sectors: 10, status: 0 }
        ]
    );
}

#[test]
fn bad_requests_get_errors_and_touch_nothing() {
    let mut rig = Rig::new(32, DiskFeatures::default());
    rig.grant(10, 101, false);
    rig.grant(11, 102, true);
    rig.grant_raw(12, GrantEntry { flags: 0, domid: 0, frame: 103 });
    rig.grant_raw(13, GrantEntry { flags: GTF_PERMIT_ACCESS, domid: 4, frame: 103 });
    rig.grant_raw(14, GrantEntry { flags: GTF_PERMIT_ACCESS, domid: 0, frame: 999 });
    for f in FRAMES.skip(1) {
        rig.fill(f, |i| i as u8 ^ f as u8);
    }
    rig.io.data.iter_mut().enumerate().for_each(|(i, b)| *b = (i / 512) as u8);
    let (pages, disk): (Vec<Vec<u8>>, Vec<u8>) = (FRAMES.map(|f| rig.bytes(f)).collect(), rig.io.data.clone());
    let cases = [
        ("no segments", rw(true, 1, 0, &[])),
        ("12 segments", rw(false, 2, 0, &[seg(10, 0, 0); 12])),
        ("first after last", rw(false, 3, 0, &[seg(10, 3, 2)])),
        ("last past the page", rw(false, 4, 0, &[seg(10, 0, 8)])),
        ("past the end", rw(false, 5, 31, &[seg(10, 0, 1)])),
        ("sector overflow", rw(true, 6, u64::MAX, &[seg(10, 0, 1)])),
        ("ref outside the table", rw(false, 7, 0, &[seg(99, 0, 0)])),
        ("not granted", rw(true, 8, 0, &[seg(12, 0, 0)])),
        ("granted to another domain", rw(true, 9, 0, &[seg(13, 0, 0)])),
        ("a read into a read-only page", rw(false, 10, 0, &[seg(11, 0, 0)])),
        ("a frame not the guest's", rw(true, 11, 0, &[seg(14, 0, 0)])),
        ("a good segment, then a bad one", rw(false, 12, 0, &[seg(10, 0, 7), seg(12, 0, 0)])),
    ];
    for (what, req) in cases {
        assert_eq!(rig.status_of(req), -1, "{what}");
        let now: Vec<Vec<u8>> = FRAMES.map(|f| rig.bytes(f)).collect();
        assert!(now[1..] == pages[1..] && rig.io.data == disk, "{what}: memory touched");
    }
    assert_eq!((rig.io.figures.errors, rig.io.figures.requests), (12, 12));
    assert_eq!(rig.io.notes.len(), 12, "each refusal noted");
    assert!(rig.io.log.iter().all(|r| r.status == -1 && r.sectors == 0));
    assert_eq!(rig.status_of(rw(true, 13, 0, &[seg(11, 0, 0)])), 0, "a write from a read-only page is fine");
}

#[test]
fn flushes_when_offered_and_other_operations_not_supported() {
    let mut rig = Rig::new(16, DiskFeatures::default());
    assert_eq!(rig.status_of(Request::flush(0, 1)), 0);
    rig.grant(10, 101, false);
    rig.fill(101, |_| 9);
    let mut flush_with_data = rw(true, 2, 3, &[seg(10, 0, 0)]);
    flush_with_data.operation = OP_FLUSH_DISKCACHE;
    assert_eq!(rig.status_of(flush_with_data), 0);
    assert!(rig.io.data[3 * 512..4 * 512].iter().all(|&b| b == 9), "its data written first");
    assert_eq!(rig.io.figures.flushes, 2);
    for op in [OP_WRITE_BARRIER, OP_DISCARD, OP_INDIRECT, 99] {
        let mut r = Request::flush(0, 3);
        r.operation = op;
        assert_eq!(rig.status_of(r), -2, "op {op}");
        assert_eq!(rig.io.log.back().map(|l| (l.op, l.status)), Some((op, -2)));
    }
    assert_eq!(rig.io.figures.not_supported, 4);

    let mut rig = Rig::new(16, DiskFeatures { flush: false, max_indirect_segments: 0, persistent: false });
    assert_eq!(rig.status_of(Request::flush(0, 1)), -2);
    assert_eq!((rig.io.figures.flushes, rig.io.figures.not_supported), (0, 1));
}

#[test]
fn indirect_requests_when_offered() {
    let mut rig = Rig::new(2048, DiskFeatures { flush: true, max_indirect_segments: 600, persistent: false });
    rig.grant(10, 101, false);
    rig.grant(11, 102, false);
    rig.grant(20, 110, true); // the segment lists: the backend only reads them
    rig.grant(21, 111, true);
    rig.fill(101, |i| (i / 512) as u8 | 0x80);
    // 520 one-sector segments: 512 in the first list page, 8 in the second.
    let list = |rig: &Rig, frame: u64, segs: &[Segment]| {
        let p = rig.guest.pages[&frame];
        for (i, s) in segs.iter().enumerate() {
            let b: [u8; 8] = [s.gref.to_le_bytes(), [s.first_sect, s.last_sect, 0, 0]].concat().try_into().unwrap();
            // SAFETY: a leaked page; i < 512.
            unsafe { core::ptr::copy_nonoverlapping(b.as_ptr(), p.add(i * 8), 8) };
        }
    };
    let segs: Vec<Segment> = (0..520).map(|i| seg(10, (i % 8) as u8, (i % 8) as u8)).collect();
    list(&rig, 110, &segs[..512]);
    list(&rig, 111, &segs[512..]);
    assert_eq!(rig.status_of(indirect(OP_WRITE, 1, 100, 520, &[20, 21])), 0);
    assert!((0..520).all(|s| rig.io.data[(100 + s) * 512] == (s % 8) as u8 | 0x80));
    assert_eq!(rig.io.figures.sectors_written, 520);
    assert_eq!(rig.io.log.back(), Some(&IoRecord { op: OP_WRITE, sector: 100, sectors: 520, status: 0 }));

    let back: Vec<Segment> = (0..16).map(|i| seg(11, (i % 8) as u8, (i % 8) as u8)).collect();
    list(&rig, 110, &back);
    let rsp = {
        rig.submit(&[indirect(OP_READ, 2, 108, 16, &[20])]);
        rig.responses()
    };
    assert_eq!(rsp, vec![Response { id: 2, operation: OP_READ, status: 0 }], "the response names the read");
    assert!(rig.bytes(102).chunks(512).enumerate().all(|(s, c)| c.iter().all(|&b| b == s as u8 | 0x80)));

    assert_eq!(rig.status_of(indirect(OP_WRITE, 3, 0, 601, &[20, 21])), -1, "more than offered");
    assert_eq!(rig.status_of(indirect(OP_WRITE, 4, 0, 0, &[20])), -1, "none");
    assert_eq!(rig.status_of(indirect(OP_WRITE, 5, 0, 4, &[77])), -1, "a list page not granted");
    assert_eq!(rig.status_of(indirect(OP_FLUSH_DISKCACHE, 6, 0, 4, &[20])), -1, "neither read nor write");
    list(&rig, 110, &[seg(10, 0, 0), seg(12, 0, 0)]);
    assert_eq!(rig.status_of(indirect(OP_READ, 7, 0, 2, &[20])), -1, "a bad segment in the list");
}

#[test]
fn a_persistent_connection_maps_every_page_writable_and_keeps_it() {
    let mut rig = Rig::new(64, DiskFeatures { persistent: true, ..DiskFeatures::default() });
    rig.io.persistent = true;
    rig.grant(10, 101, true);
    rig.grant(11, 102, false);
    // xen-blkback maps a persistent grant writable even for a write.
    assert_eq!(rig.status_of(rw(true, 1, 0, &[seg(10, 0, 7)])), -1, "a read-only page");
    assert_eq!(rig.status_of(rw(true, 2, 0, &[seg(11, 0, 7)])), 0);
    assert_eq!(rig.status_of(rw(false, 3, 8, &[seg(11, 0, 7)])), 0);
    assert_eq!(rig.io.mapped.iter().copied().collect::<Vec<_>>(), [11], "kept once, however often used");
    assert_eq!(core::mem::take(&mut rig.io.newly_mapped), [11]);
}

#[test]
fn held_requests_wait_and_are_answered_in_order() {
    let mut rig = Rig::new(64, DiskFeatures::default());
    rig.grant(10, 101, false);
    rig.fill(101, |_| 5);
    rig.io.hold = true;
    assert!(!rig.submit(&[rw(true, 1, 0, &[seg(10, 0, 0)]), rw(true, 2, 1, &[seg(10, 0, 0)])]));
    assert!(!rig.front.final_check_for_responses());
    assert!(rig.submit(&[Request::flush(0, 3)]) || rig.io.held.len() == 3);
    assert_eq!((rig.io.held.len(), rig.io.figures.requests), (3, 3), "consumed, not answered");
    assert!(rig.responses().is_empty() && rig.io.data.iter().all(|&b| b == 0));
    assert!(rig.front.write_request(Request::flush(0, 4)));
    assert!(rig.front.push_requests(), "the backend asked to hear of the next request");
    assert!(rig.serve(true), "the frontend waits for responses");
    let ids = |rig: &mut Rig| rig.responses().iter().map(|r| r.id).collect::<Vec<u64>>();
    assert_eq!(ids(&mut rig), [1, 2, 3], "the held ones, in order");
    assert!(rig.io.data[..1024].iter().all(|&b| b == 5));
    assert_eq!(rig.io.held.len(), 1, "a release keeps the hold: the new one waits");
    rig.io.hold = false;
    assert!(!rig.front.final_check_for_responses());
    assert!(rig.serve(true));
    assert_eq!(ids(&mut rig), [4]);
}

#[test]
fn an_overflowing_frontend_halts_the_ring() {
    let mut rig = Rig::new(8, DiskFeatures::default());
    let p = rig.guest.pages[&RING_FRAME];
    // SAFETY: the leaked ring page; req_prod is its first word.
    unsafe { (p as *mut u32).write_volatile(33) };
    assert!(!rig.serve(false));
    assert!(rig.io.halted.is_some());
    assert_eq!((rig.io.figures.ring_overflows, rig.io.figures.requests), (1, 0));
    // SAFETY: as above; rsp_prod is at offset 8.
    assert_eq!(unsafe { (p.add(8) as *const u32).read_volatile() }, 0, "nothing answered");
    assert!(!rig.serve(false) && rig.io.figures.ring_overflows == 1, "not served again");
}

#[test]
fn hostile_responses_as_armed() {
    let req = || rw(true, 0x42, 0, &[]);
    let mut rig = Rig::new(8, DiskFeatures::default());
    rig.io.faults.push(BlkFault::UnknownId);
    rig.submit(&[Request::flush(0, 0x42)]);
    assert_eq!(rig.responses()[0].id, 0x42 ^ 0xdead_beef_dead_beef);
    assert_eq!(rig.status_of(req()), -1, "one-shot: the next is honest");

    rig.io.faults.push(BlkFault::BadStatus);
    rig.submit(&[Request::flush(0, 9)]);
    let r = rig.responses()[0];
    assert_eq!((r.id, r.status(), r.operation), (9, Err(BadStatus(7)), OP_FLUSH_DISKCACHE));
    assert_eq!(rig.status_of(Request::flush(0, 10)), 0);
    assert_eq!(rig.io.figures.faults_applied, 2);

    rig.io.faults.push(BlkFault::DuplicateResponse);
    rig.submit(&[Request::flush(0, 11)]);
    assert!(matches!(rig.front.next_response(), Err(RingFault::TooManyResponses { .. })));

    let mut rig = Rig::new(8, DiskFeatures::default());
    rig.io.faults.push(BlkFault::RspProdBeyondRing);
    assert!(rig.submit(&[Request::flush(0, 1), Request::flush(0, 2)]), "always told");
    assert!(matches!(rig.front.next_response(), Err(RingFault::TooManyResponses { rsp_prod: 1002, .. })));
    assert!(rig.io.faults.is_empty());

    // It stays on: a later batch does not mend the index before the
    // frontend looks.
    let mut rig = Rig::new(8, DiskFeatures::default());
    rig.io.faults.push(BlkFault::RspProdBeyondRing);
    assert!(rig.submit(&[Request::flush(0, 1)]));
    assert!(rig.submit(&[Request::flush(0, 2)]), "always told");
    assert!(matches!(rig.front.next_response(), Err(RingFault::TooManyResponses { rsp_prod: 1002, .. })));
    assert_eq!(rig.io.figures.faults_applied, 1, "applied once");
}

#[test]
fn statuses_are_the_protocols() {
    let mut rig = Rig::new(8, DiskFeatures { flush: false, max_indirect_segments: 0, persistent: false });
    let r = |rig: &mut Rig, req| {
        rig.submit(&[req]);
        rig.responses()[0].status()
    };
    assert_eq!(r(&mut rig, Request::flush(0, 1)), Ok(Status::NotSupported));
    assert_eq!(r(&mut rig, rw(true, 2, 0, &[])), Ok(Status::Error));
}
