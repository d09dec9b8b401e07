//! The network backend's data path without a simulated domain: a guest of
//! a few boxed pages and a grant table in a map, the real frontend rings
//! (`netif::TxRing`, `netif::RxRing`) on two of them.

use super::io::{NetIo, RX_ENTRY, RX_QUEUE_MAX, SENT_MAX, TX_ENTRY};
use super::{Fatal, NetFault, NetRing};
use crate::netif::{
    RxRequest, RxResponse, RxRing, TxRequest, TxResponse, TxRing, RSP_ERROR, RSP_NULL, RSP_OKAY, RXF_MORE_DATA,
    TXF_EXTRA_INFO, TXF_MORE_DATA,
};
use crate::sim::backend::{BackRing, GrantEntry, GTF_PERMIT_ACCESS};
use crate::sim::test_support::Guest;

const TX_FRAME: u64 = 100;
const RX_FRAME: u64 = 101;

/// A guest, its frontend rings and a vif's backend serving them.
struct Rig {
    guest: Guest,
    tx: TxRing,
    rx: RxRing,
    back_tx: BackRing,
    back_rx: BackRing,
    io: NetIo,
}

impl Rig {
    fn new() -> Rig {
        let guest = Guest::new();
        let (tx_page, rx_page) = (guest.pages[&TX_FRAME], guest.pages[&RX_FRAME]);
        // SAFETY: leaked pages, used for nothing else; the backend reaches
        // them through raw pointers only.
        let (tx, rx) = unsafe { (TxRing::init(tx_page), RxRing::init(rx_page)) };
        // SAFETY: as above.
        let (back_tx, back_rx) = unsafe { (BackRing::attach(tx_page), BackRing::attach(rx_page)) };
        Rig { guest, tx, rx, back_tx, back_rx, io: NetIo::default() }
    }

    /// Grants `frame` to dom0 as ref `gref`.
    fn grant(&mut self, gref: u32, frame: u64, readonly: bool) {
        self.guest.grant_frame(gref, frame, readonly);
    }

    fn put(&self, frame: u64, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= 4096);
        let p = self.guest.pages[&frame];
        // SAFETY: a leaked page of 4096 bytes; in bounds (checked).
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(at), bytes.len()) };
    }

    fn bytes(&self, frame: u64, at: usize, n: usize) -> Vec<u8> {
        let p = self.guest.pages[&frame];
        assert!(at + n <= 4096);
        // SAFETY: as in `put`.
        (0..n).map(|i| unsafe { p.add(at + i).read() }).collect()
    }

    /// Queues transmit requests, pushes them, and lets the backend serve
    /// both rings; returns whether the frontend was notified.
    fn send(&mut self, reqs: &[TxRequest]) -> bool {
        for r in reqs {
            assert!(self.tx.write_request(*r));
        }
        self.tx.push_requests();
        self.serve()
    }

    fn serve(&mut self) -> bool {
        let (t, r) = (self.guest.pages[&TX_FRAME], self.guest.pages[&RX_FRAME]);
        // SAFETY: the leaked ring pages.
        let (mut tx, mut rx) = unsafe { (self.back_tx.on(t, TX_ENTRY), self.back_rx.on(r, RX_ENTRY)) };
        self.io.serve(&mut tx, &mut rx, &self.guest)
    }

    /// Posts receive buffer `id` granted as `gref`; true if the backend
    /// asked to hear of it.
    fn post(&mut self, id: u16, gref: u32) -> bool {
        assert!(self.rx.write_request(RxRequest { id, _pad: 0, gref }));
        self.rx.push_requests()
    }

    /// The responses, then asks to hear of the next (as a frontend does).
    fn tx_responses(&mut self) -> Vec<TxResponse> {
        std::iter::from_fn(|| self.tx.take_response().expect("a sound ring")).collect()
    }

    fn rx_responses(&mut self) -> Vec<RxResponse> {
        std::iter::from_fn(|| self.rx.take_response().expect("a sound ring")).collect()
    }
}

fn tx(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> TxRequest {
    TxRequest { gref, offset, flags, id, size }
}

/// A frame of `n` bytes whose every byte tells where it is.
fn frame(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7) ^ salt).collect()
}

#[test]
fn transmits_are_copied_out_and_answered() {
    let mut r = Rig::new();
    r.grant(10, 102, true);
    let f = frame(60, 1);
    r.put(102, 100, &f);
    assert!(r.send(&[tx(10, 100, 0, 5, 60)]), "the first response is wanted (rsp_event 1)");
    assert_eq!(r.tx_responses(), [TxResponse { id: 5, status: RSP_OKAY }]);
    assert_eq!(r.io.sent.pop_front(), Some(f));
    // The backend asked to hear of the next request.
    assert!(r.tx.write_request(tx(10, 0, 0, 6, 14)));
    assert!(r.tx.push_requests(), "req_event was set past the last request");
    r.serve();
    assert_eq!(r.tx_responses()[0].status, RSP_OKAY);
    let fig = &r.io.figures;
    assert_eq!((fig.tx_slots, fig.frames_sent, fig.bytes_sent, fig.tx_errors), (2, 2, 74, 0));
}

#[test]
fn chained_slots_make_one_frame_and_extra_info_is_refused() {
    let mut r = Rig::new();
    for (gref, frame) in [(10, 102), (11, 103), (12, 104)] {
        r.grant(gref, frame, true);
    }
    let f = frame(3000, 2);
    // 1000 bytes at 96 in the first page, 1500 at 0, 500 at 3000.
    r.put(102, 96, &f[..1000]);
    r.put(103, 0, &f[1000..2500]);
    r.put(104, 3000, &f[2500..]);
    let chain = [tx(10, 96, TXF_MORE_DATA, 1, 3000), tx(11, 0, TXF_MORE_DATA, 2, 1500), tx(12, 3000, 0, 3, 500)];
    r.send(&chain);
    let ids: Vec<(u16, i16)> = r.tx_responses().iter().map(|x| (x.id, x.status)).collect();
    assert_eq!(ids, [(1, RSP_OKAY), (2, RSP_OKAY), (3, RSP_OKAY)], "every slot answered");
    assert_eq!(r.io.sent.pop_front(), Some(f));

    // A packet with an extra-info slot (never negotiated): refused whole,
    // the extra slot answered RSP_NULL right after the first.
    let mut extra = tx(0, 0, 0, 0, 0);
    extra.gref = 2; // type 2 (multicast add), no more extras
    r.send(&[tx(10, 0, TXF_EXTRA_INFO | TXF_MORE_DATA, 7, 100), extra, tx(11, 0, 0, 8, 40)]);
    let got: Vec<(u16, i16)> = r.tx_responses().iter().map(|x| (x.id, x.status)).collect();
    assert_eq!(got, [(7, RSP_ERROR), (0, RSP_NULL), (8, RSP_ERROR)]);
    assert!(r.io.sent.is_empty());
    assert_eq!((r.io.figures.tx_slots, r.io.figures.tx_errors), (6, 1));
}

#[test]
fn bad_transmits_are_answered_error_and_move_nothing() {
    let mut r = Rig::new();
    r.grant(10, 102, true);
    r.guest.grants.insert(11, GrantEntry { flags: 0, domid: 0, frame: 103 });
    r.guest.grants.insert(12, GrantEntry { flags: GTF_PERMIT_ACCESS, domid: 5, frame: 103 });
    r.grant(13, 999, true); // a frame the guest does not own
    let long: Vec<TxRequest> = (0..19).map(|i| tx(10, 0, if i < 18 { TXF_MORE_DATA } else { 0 }, i, 20)).collect();
    let cases: [(&str, Vec<TxRequest>); 8] = [
        ("not granted", vec![tx(11, 0, 0, 1, 60)]),
        ("granted to another domain", vec![tx(12, 0, 0, 1, 60)]),
        ("no such ref", vec![tx(77, 0, 0, 1, 60)]),
        ("a frame not the guest's", vec![tx(13, 0, 0, 1, 60)]),
        ("past the page", vec![tx(10, 4000, 0, 1, 97)]),
        ("a runt", vec![tx(10, 0, 0, 1, 13)]),
        ("a chain longer than the packet", vec![tx(10, 0, TXF_MORE_DATA, 1, 60), tx(10, 0, 0, 2, 61)]),
        ("19 slots", long),
    ];
    for (what, reqs) in cases {
        r.send(&reqs);
        let rsp = r.tx_responses();
        assert_eq!(rsp.len(), reqs.len(), "{what}");
        assert!(rsp.iter().zip(&reqs).all(|(a, q)| a.id == q.id && a.status == RSP_ERROR), "{what}: {rsp:?}");
        assert!(r.io.sent.is_empty(), "{what}");
    }
    assert_eq!((r.io.figures.tx_errors, r.io.notes.len()), (8, 8));
    r.send(&[tx(10, 4000, 0, 9, 96)]);
    assert_eq!(r.tx_responses()[0].status, RSP_OKAY, "the edge of the page is fine");
    assert!(r.io.halted.is_none());
}

#[test]
fn a_chain_cut_short_or_an_overflowing_ring_halts_the_vif() {
    let mut r = Rig::new();
    r.grant(10, 102, true);
    r.send(&[tx(10, 0, TXF_MORE_DATA, 1, 100)]);
    assert_eq!(r.io.halted, Some(Fatal::ChainCut { slots: 1 }));
    assert!(r.tx_responses().is_empty(), "nothing answered after a fatal error");
    r.send(&[tx(10, 0, 0, 2, 60)]);
    assert!(r.tx_responses().is_empty() && r.io.sent.is_empty(), "no longer served");

    let mut r = Rig::new();
    let t = r.guest.pages[&TX_FRAME];
    // SAFETY: the leaked ring page; req_prod is its first word.
    unsafe { (t as *mut u32).write_volatile(300) };
    r.serve();
    assert!(matches!(r.io.halted, Some(Fatal::Overflow(NetRing::Tx, _))), "{:?}", r.io.halted);
    assert_eq!(r.io.figures.fatal_errors, 1);
}

#[test]
fn frames_go_into_posted_buffers_or_wait_for_them() {
    let mut r = Rig::new();
    for (gref, frame) in [(20, 110), (21, 111), (22, 112)] {
        r.grant(gref, frame, false);
    }
    assert!(r.post(0, 20), "the first buffer is announced (req_event 1)");
    r.post(1, 21);
    let frames = [frame(42, 3), frame(1514, 4), frame(60, 5)];
    for f in &frames {
        assert!(r.io.queue(f));
    }
    assert!(r.serve());
    let rsp = r.rx_responses();
    assert_eq!(
        rsp,
        [
            RxResponse { id: 0, offset: 0, flags: 0, status: 42 },
            RxResponse { id: 1, offset: 0, flags: 0, status: 1514 }
        ]
    );
    assert_eq!((r.bytes(110, 0, 42), r.bytes(111, 0, 1514)), (frames[0].clone(), frames[1].clone()));
    assert_eq!(r.io.rx_queue.len(), 1, "the third waits for a buffer");
    assert!(r.post(2, 22), "and the backend asked to hear of the next one");
    assert!(r.serve());
    assert_eq!(r.rx_responses(), [RxResponse { id: 2, offset: 0, flags: 0, status: 60 }]);
    assert_eq!(r.bytes(112, 0, 60), frames[2]);
    let fig = &r.io.figures;
    assert_eq!((fig.frames_delivered, fig.bytes_delivered, fig.rx_errors), (3, 1616, 0));
}

#[test]
fn bad_buffers_larger_frames_and_a_full_queue() {
    let mut r = Rig::new();
    r.grant(20, 110, true); // read-only: the backend cannot copy into it
    r.grant(21, 111, false);
    r.grant(22, 112, false);
    r.post(0, 20);
    assert!(r.io.queue(&frame(60, 6)));
    r.serve();
    assert_eq!(r.rx_responses(), [RxResponse { id: 0, offset: 0, flags: 0, status: RSP_ERROR }]);
    assert_eq!((r.io.figures.rx_errors, r.io.figures.frames_delivered), (1, 0));

    assert!(!r.io.queue(&frame(5000, 7)), "larger than a page without feature-sg");
    r.io.front_sg = true;
    let big = frame(5000, 7);
    assert!(r.io.queue(&big));
    r.post(1, 21);
    r.serve();
    assert!(r.rx_responses().is_empty(), "two buffers are needed");
    r.post(2, 22);
    r.serve();
    let rsp = r.rx_responses();
    assert_eq!(
        rsp,
        [
            RxResponse { id: 1, offset: 0, flags: RXF_MORE_DATA, status: 4096 },
            RxResponse { id: 2, offset: 0, flags: 0, status: 904 }
        ]
    );
    assert_eq!([r.bytes(111, 0, 4096), r.bytes(112, 0, 904)].concat(), big);

    for _ in 0..RX_QUEUE_MAX {
        assert!(r.io.queue(&frame(60, 0)));
    }
    assert!(!r.io.queue(&frame(60, 0)), "the queue is bounded");
    assert_eq!(r.io.figures.rx_dropped, 2);
}

#[test]
fn held_the_backend_serves_nothing() {
    let mut r = Rig::new();
    r.grant(10, 102, true);
    r.grant(20, 110, false);
    r.post(0, 20);
    r.io.hold = true;
    assert!(r.io.queue(&frame(60, 1)));
    assert!(!r.send(&[tx(10, 0, 0, 1, 60)]));
    assert!(r.tx_responses().is_empty() && r.rx_responses().is_empty());
    assert_eq!((r.io.sent.len(), r.io.rx_queue.len()), (0, 1));
    r.io.hold = false;
    assert!(r.serve());
    assert_eq!((r.tx_responses().len(), r.rx_responses().len(), r.io.sent.len()), (1, 1, 1));
}

#[test]
fn the_record_of_sent_frames_is_bounded() {
    let mut r = Rig::new();
    r.grant(10, 102, true);
    for i in 0..SENT_MAX + 3 {
        r.send(&[tx(10, 0, 0, (i % 256) as u16, 60)]);
        r.tx_responses();
    }
    assert_eq!((r.io.sent.len(), r.io.figures.sent_overflow), (SENT_MAX, 3));
}

#[test]
fn each_response_fault_spoils_one_response() {
    let mut r = Rig::new();
    r.grant(10, 102, true);
    for gref in 20..24 {
        r.grant(gref, 110 + gref as u64 - 20, false);
    }
    for id in 0..4 {
        r.post(id, 20 + id as u32);
    }
    r.io.faults = vec![NetFault::RxIdNeverPosted, NetFault::RxLenPastPage, NetFault::RxBadStatus];
    for _ in 0..4 {
        assert!(r.io.queue(&frame(100, 0)));
    }
    r.serve();
    let rsp = r.rx_responses();
    assert_eq!(rsp[0].id, 0xdead, "an id never posted");
    assert_eq!((rsp[0].offset, rsp[0].status), (0, 100), "one fault a response");
    assert_eq!((rsp[1].id, rsp[1].offset, rsp[1].status), (1, 3997, 100), "3997 + 100 > 4096");
    assert_eq!((rsp[2].id, rsp[2].status), (2, -7));
    assert_eq!(rsp[3], RxResponse { id: 3, offset: 0, flags: 0, status: 100 }, "one-shot");

    r.io.faults = vec![NetFault::TxIdNeverSent];
    r.send(&[tx(10, 0, 0, 4, 60), tx(10, 0, 0, 5, 60)]);
    let ids: Vec<u16> = r.tx_responses().iter().map(|x| x.id).collect();
    assert_eq!(ids, [4 ^ 0xdead, 5]);
    assert_eq!(r.io.figures.faults_applied, 4);

    r.io.faults = vec![NetFault::RspProdBeyondRing(NetRing::Tx)];
    r.send(&[tx(10, 0, 0, 6, 60)]);
    let t = r.guest.pages[&TX_FRAME];
    // SAFETY: the leaked ring page; rsp_prod is its third word.
    let rsp_prod = || unsafe { (t as *const u32).add(2).read_volatile() };
    assert_eq!(rsp_prod(), 3 + 1000, "three responses on the ring so far");
    r.send(&[tx(10, 0, 0, 7, 60)]);
    assert_eq!(rsp_prod(), 4 + 1000, "a later batch does not mend it");
    assert!(r.tx.next_response().is_err(), "the frontend sees an index past its requests");
    r.post(0, 20);
    r.io.faults = vec![NetFault::RspProdBeyondRing(NetRing::Rx)];
    assert!(r.io.queue(&frame(60, 0)));
    r.serve();
    assert!(r.rx.next_response().is_err());
}
