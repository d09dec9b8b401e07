//! The network backend in a booted simulated domain, driven by a frontend
//! written by hand in the test: the real frontend rings on guest pages,
//! grant entries written into Xen's grant frame, nodes written through
//! the toolstack path (which serves the store as a guest write would).

use super::{NetFault, NetRing, SimVif};
use crate::netif::{RxRequest, RxResponse, RxRing, TxRequest, TxResponse, TxRing, RSP_OKAY};
use crate::seam::Hypervisor;
use crate::sim::backend::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING};
use crate::sim::test_support::{
    self as support, boot, grant, grant_flags, mfn, node, page, prepare_save, take_pending,
};
use crate::sim::{with, PortKind, SimXen, SuspendPlan};
use crate::xenbus::XenbusState as S;

const DEVID: u32 = 0;
const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x0a, 0x0b, 0x0c];
const TX_PFN: u64 = 3000;
const TX_GREF: u32 = 8;
const RX_PFN: u64 = 3001;
const RX_GREF: u32 = 9;
/// A page the frontend transmits from (granted read-only).
const DATA_PFN: u64 = 3002;
const DATA_GREF: u32 = 10;
/// Receive buffers: pfn BUF_PFN + i granted as BUF_GREF + i.
const BUF_PFN: u64 = 3010;
const BUF_GREF: u32 = 20;
const BACK: &str = "/local/domain/0/backend/vif/7";

fn front_write(devid: u32, node: &str, value: &str) {
    support::front_write("vif", devid, node, value);
}

fn back_node(devid: u32, name: &str) -> Option<String> {
    node(&format!("{BACK}/{devid}/{name}"))
}

fn vif<R>(devid: u32, f: impl FnOnce(&SimVif) -> R) -> R {
    with(|s| f(s.vif(devid).expect("the vif")))
}

fn put(pfn: u64, bytes: &[u8]) {
    // SAFETY: a guest page of the arena; frames here are at most a page.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), page(pfn), bytes.len()) };
}

fn read(pfn: u64, n: usize) -> Vec<u8> {
    let p = page(pfn);
    // SAFETY: as in `put`.
    (0..n.min(4096)).map(|i| unsafe { p.add(i).read_volatile() }).collect()
}

fn frame(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13) ^ salt).collect()
}

/// A netfront written by hand: rings, grants and port set up and published.
struct Front {
    devid: u32,
    tx: TxRing,
    rx: RxRing,
    port: u32,
}

impl Front {
    fn publish(devid: u32) -> Front {
        // SAFETY: guest pages nothing else in the test uses; the backend
        // reaches them through raw pointers only.
        let (tx, rx) = unsafe { (TxRing::init(page(TX_PFN)), RxRing::init(page(RX_PFN))) };
        grant(TX_GREF, 0, TX_PFN, GTF_PERMIT_ACCESS);
        grant(RX_GREF, 0, RX_PFN, GTF_PERMIT_ACCESS);
        let port = SimXen::alloc_unbound(0).unwrap();
        for (name, value) in [
            ("tx-ring-ref", TX_GREF.to_string()),
            ("rx-ring-ref", RX_GREF.to_string()),
            ("event-channel", port.to_string()),
            ("request-rx-copy", "1".into()),
            ("feature-rx-notify", "1".into()),
        ] {
            front_write(devid, name, &value);
        }
        Front { devid, tx, rx, port }
    }

    /// Publishes and goes `Connected`, as Linux's netfront does.
    fn connect(devid: u32) -> Front {
        let f = Front::publish(devid);
        f.state(S::Connected);
        assert_eq!(back_node(devid, "state").as_deref(), Some("4"), "{:?}", vif(devid, |v| v.notes().to_vec()));
        f
    }

    fn state(&self, s: S) {
        front_write(self.devid, "state", &s.as_number().to_string());
    }

    /// Sends `frame` from the data page as transmit id `id`, notifying if
    /// the ring says so; dom0 runs once the guest yields.
    fn send(&mut self, id: u16, frame: &[u8]) -> Vec<TxResponse> {
        grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS | GTF_READONLY);
        put(DATA_PFN, frame);
        let req = TxRequest { gref: DATA_GREF, offset: 0, flags: 0, id, size: frame.len() as u16 };
        assert!(self.tx.write_request(req));
        if self.tx.push_requests() {
            SimXen::send(self.port);
        }
        SimXen::yield_now();
        self.tx_responses()
    }

    fn tx_responses(&mut self) -> Vec<TxResponse> {
        std::iter::from_fn(|| self.tx.take_response().unwrap()).collect()
    }

    /// Posts receive buffers `ids`, notifying if the backend asked.
    fn post(&mut self, ids: core::ops::Range<u16>) {
        for id in ids {
            grant(BUF_GREF + id as u32, 0, BUF_PFN + id as u64, GTF_PERMIT_ACCESS);
            assert!(self.rx.write_request(RxRequest { id, _pad: 0, gref: BUF_GREF + id as u32 }));
        }
        if self.rx.push_requests() {
            SimXen::send(self.port);
        }
    }

    fn rx_responses(&mut self) -> Vec<RxResponse> {
        std::iter::from_fn(|| self.rx.take_response().unwrap()).collect()
    }
}

#[test]
fn attach_publishes_both_directories_as_libxl_and_netback_do() {
    let _s = boot();
    with(|s| s.attach_vif(DEVID, MAC));
    let front = |n: &str| node(&format!("/local/domain/7/device/vif/{DEVID}/{n}"));
    assert_eq!(front("backend"), Some(format!("{BACK}/{DEVID}")));
    let f: Vec<_> = ["backend-id", "handle", "mac", "state"].map(front).into();
    assert_eq!(f, [Some("0".into()), Some("0".into()), Some("00:16:3e:0a:0b:0c".into()), Some("1".into())]);
    assert_eq!(back_node(DEVID, "frontend"), Some(format!("/local/domain/7/device/vif/{DEVID}")));
    for (name, value) in [
        ("frontend-id", "7"),
        ("state", "2"),
        ("handle", "0"),
        ("mac", "00:16:3e:0a:0b:0c"),
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "0"),
        ("multi-queue-max-queues", "1"),
    ] {
        assert_eq!(back_node(DEVID, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(back_node(DEVID, "feature-rx-notify"), None, "the frontend's to write");
    vif(DEVID, |v| assert_eq!((v.state(), v.connected(), v.mac(), v.devid()), (S::InitWait, false, MAC, DEVID)));
}

#[test]
fn connect_send_receive_close_and_reconnect() {
    let _s = boot();
    with(|s| s.attach_vif(DEVID, MAC));
    let mut f = Front::publish(DEVID);
    f.post(0..2);
    f.state(S::Initialised);
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("2"), "netback waits for Connected");
    f.state(S::Connected);
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("4"));
    for gref in [TX_GREF, RX_GREF] {
        assert_eq!(grant_flags(gref), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING, "mapped");
    }
    let kind = with(|s| s.ports().into_iter().find(|&(p, _)| p == f.port).unwrap().1);
    assert!(matches!(kind, PortKind::Interdomain { remote_dom: 0, .. }), "{kind:?}");
    assert_eq!(vif(DEVID, |v| v.connection()), Some((TX_GREF, RX_GREF, f.port)));

    let out = frame(60, 1);
    assert_eq!(f.send(3, &out), [TxResponse { id: 3, status: RSP_OKAY }]);
    assert!(take_pending(f.port), "responses raise the guest's port");
    assert_eq!(with(|s| s.vif_take_sent(DEVID)), [out]);
    assert!(with(|s| s.vif_take_sent(DEVID)).is_empty(), "taken once");

    let (a, b, c) = (frame(42, 2), frame(1514, 3), frame(100, 4));
    with(|s| s.vif_deliver(DEVID, &a));
    assert!(take_pending(f.port));
    assert_eq!(f.rx_responses(), [RxResponse { id: 0, offset: 0, flags: 0, status: 42 }]);
    assert_eq!(read(BUF_PFN, 42), a);
    with(|s| {
        s.vif_deliver(DEVID, &b);
        s.vif_deliver(DEVID, &c);
    });
    assert_eq!(f.rx_responses().iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(), [(1, 1514)]);
    assert_eq!(read(BUF_PFN + 1, 1514), b);
    assert_eq!(vif(DEVID, SimVif::queued), 1, "no buffer left");
    // The backend asked to hear of the next buffer; it answers once the
    // guest gives up the CPU.
    f.post(2..3);
    assert!(f.rx_responses().is_empty(), "answered inside the send");
    SimXen::block();
    assert_eq!(f.rx_responses().iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(), [(2, 100)]);
    assert_eq!(read(BUF_PFN + 2, 100), c);

    f.state(S::Closing);
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("6"));
    assert_eq!(grant_flags(TX_GREF), GTF_PERMIT_ACCESS, "unmapped");
    let kind = with(|s| s.ports().into_iter().find(|&(p, _)| p == f.port).unwrap().1);
    assert_eq!(kind, PortKind::Unbound { remote_dom: 0 });
    with(|s| s.vif_deliver(DEVID, &a));
    assert_eq!(vif(DEVID, |v| (v.queued(), v.figures().rx_dropped)), (0, 1), "no carrier while unconnected");
    f.state(S::Closed);
    f.state(S::Initialising);
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("2"), "ready for a reconnect");
    let mut f = Front::connect(DEVID);
    assert_eq!(f.send(0, &frame(14, 5))[0].status, RSP_OKAY);
    let fig = vif(DEVID, |v| v.figures().clone());
    assert_eq!((fig.connects, fig.disconnects, fig.frames_sent, fig.frames_delivered), (2, 1, 2, 3));
    assert!(with(|s| s.violations().is_empty()));
}

#[test]
fn bad_connections_close_the_backend() {
    let _s = boot();
    let other_port = SimXen::alloc_unbound(3).unwrap();
    // (what, node, value, entry flags of the rx ring's grant)
    let cases: [(&str, &str, String, u16); 10] = [
        ("tx-ring-ref missing", "tx-ring-ref", String::new(), GTF_PERMIT_ACCESS),
        ("tx-ring-ref garbage", "tx-ring-ref", "eight".into(), GTF_PERMIT_ACCESS),
        ("rx ring not granted", "rx-ring-ref", RX_GREF.to_string(), 0),
        ("rx ring read-only", "rx-ring-ref", RX_GREF.to_string(), GTF_PERMIT_ACCESS | GTF_READONLY),
        ("no such port", "event-channel", "999".into(), GTF_PERMIT_ACCESS),
        ("unbound for another domain", "event-channel", other_port.to_string(), GTF_PERMIT_ACCESS),
        ("no rx-copy", "request-rx-copy", "0".into(), GTF_PERMIT_ACCESS),
        ("rx-copy missing", "request-rx-copy", String::new(), GTF_PERMIT_ACCESS),
        ("no rx-notify", "feature-rx-notify", String::new(), GTF_PERMIT_ACCESS),
        ("two queues", "multi-queue-num-queues", "2".into(), GTF_PERMIT_ACCESS),
    ];
    for (i, (what, name, value, flags)) in cases.into_iter().enumerate() {
        let devid = 1 + i as u32;
        with(|s| s.attach_vif(devid, MAC));
        let f = Front::publish(devid);
        grant(RX_GREF, 0, RX_PFN, flags);
        if value.is_empty() {
            with(|s| s.xenstore.toolstack_remove(&format!("device/vif/{devid}/{name}")));
        } else {
            front_write(devid, name, &value);
        }
        f.state(S::Connected);
        assert_eq!(back_node(devid, "state").as_deref(), Some("6"), "{what}");
        let (connected, failed, notes) = vif(devid, |v| (v.connected(), v.figures().failed_connects, v.notes().len()));
        assert_eq!((connected, failed, notes), (false, 1, 1), "{what}");
        for gref in [TX_GREF, RX_GREF] {
            assert_eq!(grant_flags(gref) & (GTF_READING | GTF_WRITING), 0, "{what}: nothing mapped");
        }
        assert!(with(|s| s.ports().iter().all(|(_, k)| !matches!(k, PortKind::Interdomain { .. }))), "{what}");
        f.state(S::Closed);
        f.state(S::Initialising);
        assert_eq!(back_node(devid, "state").as_deref(), Some("2"), "{what}: it may try again");
    }
    with(|s| s.attach_vif(20, MAC));
    let f = Front::publish(20);
    front_write(20, "multi-queue-num-queues", "1");
    f.state(S::Connected);
    assert_eq!(back_node(20, "state").as_deref(), Some("4"), "one queue is the flat layout");
}

#[test]
fn held_frames_wait_through_a_cancelled_suspend() {
    let _s = boot();
    with(|s| s.attach_vif(DEVID, MAC));
    let mut f = Front::connect(DEVID);
    f.post(0..4);
    with(|s| s.vif_hold(DEVID, true));
    assert!(f.send(1, &frame(60, 1)).is_empty(), "not answered");
    with(|s| s.vif_deliver(DEVID, &frame(70, 2)));
    assert!(f.rx_responses().is_empty(), "not delivered");
    vif(DEVID, |v| assert_eq!((v.holding(), v.queued(), v.unread_sent(), v.figures().tx_slots), (true, 1, 0, 0)));
    with(|s| s.plan_suspend(SuspendPlan::Cancel));
    let si = mfn(with(|s| s.start_info_pfn));
    // SAFETY: the simulated Xen reads start_info only; no guest runs.
    assert_eq!(unsafe { SimXen::suspend(si) }, 1);
    vif(DEVID, |v| assert_eq!((v.connected(), v.queued(), v.state()), (true, 1, S::Connected), "as it was"));
    with(|s| s.vif_hold(DEVID, false));
    assert_eq!(f.tx_responses(), [TxResponse { id: 1, status: RSP_OKAY }]);
    assert_eq!(f.rx_responses().iter().map(|r| r.status).collect::<Vec<_>>(), [70]);
    assert_eq!(with(|s| s.vif_take_sent(DEVID)), [frame(60, 1)]);
}

#[test]
fn a_new_domain_drops_the_connection_and_the_frames_waiting() {
    let _s = boot();
    with(|s| s.attach_vif(DEVID, MAC));
    let mut f = Front::connect(DEVID);
    assert_eq!(f.send(1, &frame(60, 1)).len(), 1);
    with(|s| {
        s.vif_deliver(DEVID, &frame(60, 2));
        s.vif_deliver(DEVID, &frame(60, 3));
    });
    assert_eq!(vif(DEVID, SimVif::queued), 2, "no buffer posted");
    let (old_port, rx_before) = (f.port, read(RX_PFN, 4096));

    with(|s| s.plan_suspend(SuspendPlan::Restore));
    let si = prepare_save();
    // SAFETY: as in the cancelled suspend; the frame lists are published.
    assert_eq!(unsafe { SimXen::suspend(si) }, 0);
    vif(DEVID, |v| {
        assert_eq!((v.connected(), v.queued(), v.state()), (false, 0, S::InitWait));
        assert_eq!((v.figures().dropped_with_old_domain, v.unread_sent()), (2, 1), "sent frames stay for the test");
    });
    let front = |n: &str| node(&format!("/local/domain/7/device/vif/{DEVID}/{n}"));
    assert_eq!((front("state").as_deref(), front("tx-ring-ref")), (Some("1"), None), "made again by libxl");
    assert_eq!(front("mac").as_deref(), Some("00:16:3e:0a:0b:0c"));
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("2"));
    SimXen::send(old_port);
    with(|s| s.vif_deliver(DEVID, &frame(60, 4)));
    assert_eq!(vif(DEVID, |v| v.figures().rx_dropped), 1, "no carrier until connected");
    assert_eq!(rx_before, read(RX_PFN, 4096), "the old ring is not touched again");

    SimXen::grant_setup_table(&mut [0u64; 1]).unwrap();
    let mut f = Front::connect(DEVID);
    f.post(0..1);
    with(|s| s.vif_deliver(DEVID, &frame(80, 5)));
    assert_eq!(f.rx_responses()[0].status, 80);
    assert_eq!(f.send(2, &frame(60, 6))[0].status, RSP_OKAY);
    assert_eq!(with(|s| s.vif_take_sent(DEVID)), [frame(60, 1), frame(60, 6)]);
}

#[test]
fn detach_waits_for_the_frontend_then_removes_the_device() {
    let _s = boot();
    with(|s| s.attach_vif(DEVID, MAC));
    let mut f = Front::connect(DEVID);
    assert!(with(|s| s.detach_vif(DEVID)));
    assert!(!with(|s| s.detach_vif(DEVID)), "once");
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("5"));
    f.state(S::Closing);
    assert_eq!(f.send(1, &frame(60, 1))[0].status, RSP_OKAY, "served until the frontend is Closed");
    f.state(S::Closed);
    assert_eq!(node(&format!("{BACK}/{DEVID}")), None, "backend directory gone");
    assert_eq!(node(&format!("/local/domain/7/device/vif/{DEVID}")), None, "frontend directory gone");
    assert_eq!(grant_flags(RX_GREF), GTF_PERMIT_ACCESS);
    vif(DEVID, |v| assert_eq!((v.attached(), v.connected(), v.state()), (false, false, S::Closed)));
    with(|s| s.attach_vif(DEVID, MAC));
    assert_eq!(vif(DEVID, |v| (v.attached(), v.state())), (true, S::InitWait), "attached afresh");
}

#[test]
fn hostile_backend_states_and_rings() {
    let _s = boot();
    with(|s| s.attach_vif(DEVID, MAC));
    with(|s| s.vif_fault(DEVID, NetFault::NeverConnect));
    let f = Front::publish(DEVID);
    f.state(S::Connected);
    assert_eq!(back_node(DEVID, "state").as_deref(), Some("2"), "stays InitWait");
    assert!(!vif(DEVID, SimVif::connected));

    let devid = 1;
    with(|s| s.attach_vif(devid, MAC));
    let mut f = Front::connect(devid);
    with(|s| s.vif_fault(devid, NetFault::StateGarbage));
    assert_eq!(back_node(devid, "state").as_deref(), Some("banana"));
    assert_eq!(vif(devid, |v| (v.state(), v.connected())), (S::Connected, true), "goes on as before");
    assert_eq!(f.send(1, &frame(60, 1))[0].status, RSP_OKAY);
    with(|s| s.vif_fault(devid, NetFault::GoClosed));
    assert_eq!(back_node(devid, "state").as_deref(), Some("6"));
    assert_eq!(grant_flags(TX_GREF), GTF_PERMIT_ACCESS, "unmapped");
    assert_eq!(vif(devid, |v| (v.connected(), v.figures().faults_applied)), (false, 2));
    f.state(S::Closed);
    f.state(S::Initialising);
    assert_eq!(back_node(devid, "state").as_deref(), Some("2"), "one-shot: it reconnects");

    let devid = 2;
    with(|s| s.attach_vif(devid, MAC));
    with(|s| s.vif_fault(devid, NetFault::GoClosed));
    let f = Front::publish(devid);
    f.state(S::Connected);
    assert_eq!(back_node(devid, "state").as_deref(), Some("6"), "armed before, closed once connected");
    with(|s| s.vif_fault(devid, NetFault::RspProdBeyondRing(NetRing::Tx)));
    f.state(S::Closed);
    f.state(S::Initialising);
    let mut f = Front::connect(devid);
    grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS | GTF_READONLY);
    assert!(f.tx.write_request(TxRequest { gref: DATA_GREF, offset: 0, flags: 0, id: 1, size: 60 }));
    assert!(f.tx.push_requests());
    SimXen::send(f.port);
    SimXen::yield_now();
    assert!(f.tx.next_response().is_err(), "an index past the ring");
    assert!(take_pending(f.port), "and the guest was told");
}
