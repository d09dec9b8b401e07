//! The block backend in a booted simulated domain, driven by a frontend
//! written by hand in the test: the real frontend ring on a guest page,
//! grant entries written into Xen's grant frame, nodes written through
//! the toolstack path (which serves the store as a guest write would).

use super::{BlkFault, DiskFeatures, SimDisk};
use crate::blkif::{BlkRing, Request, Response, Segment, OP_READ, OP_WRITE};
use crate::seam::Hypervisor;
use crate::sim::backend::{GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING};
use crate::sim::test_support::{
    self as support, boot, grant, grant_flags, mfn, node, page, prepare_save, take_pending,
};
use crate::sim::{with, PortKind, SimXen, SuspendPlan};
use crate::xenbus::XenbusState as S;
use crate::xenstore::ring::XenstoreInterface;
use crate::xenstore::wire::{self, Decoder, MsgType};

const VDEV: u32 = 51712;
const RING_PFN: u64 = 3000;
const RING_GREF: u32 = 8;
const DATA_PFN: u64 = 3001;
const DATA_GREF: u32 = 9;
const BACK: &str = "/local/domain/0/backend/vbd/7";

fn front_write(vdev: u32, node: &str, value: &str) {
    support::front_write("vbd", vdev, node, value);
}

fn back_node(vdev: u32, name: &str) -> Option<String> {
    node(&format!("{BACK}/{vdev}/{name}"))
}

fn disk<R>(vdev: u32, f: impl FnOnce(&SimDisk) -> R) -> R {
    with(|s| f(s.disk(vdev).expect("the disk")))
}

/// A blkfront written by hand: ring, grant and port set up and published.
struct Front {
    vdev: u32,
    ring: BlkRing,
    port: u32,
}

impl Front {
    fn publish(vdev: u32) -> Front {
        // SAFETY: a guest page nothing else in the test uses; the backend
        // reaches it through raw pointers only.
        let ring = unsafe { BlkRing::init(page(RING_PFN)) };
        grant(RING_GREF, 0, RING_PFN, GTF_PERMIT_ACCESS);
        let port = SimXen::alloc_unbound(0).unwrap();
        front_write(vdev, "ring-ref", &RING_GREF.to_string());
        front_write(vdev, "event-channel", &port.to_string());
        front_write(vdev, "protocol", "x86_64-abi");
        Front { vdev, ring, port }
    }

    fn connect(vdev: u32) -> Front {
        let f = Front::publish(vdev);
        f.state(S::Initialised);
        assert_eq!(back_node(vdev, "state").as_deref(), Some("4"), "{:?}", disk(vdev, |d| d.notes().to_vec()));
        f.state(S::Connected);
        f
    }

    fn state(&self, s: S) {
        front_write(self.vdev, "state", &s.as_number().to_string());
    }

    /// Queues `reqs`, notifies if the ring says so, and takes what came back.
    fn io(&mut self, reqs: &[Request]) -> Vec<Response> {
        for r in reqs {
            assert!(self.ring.write_request(*r));
        }
        if self.ring.push_requests() {
            SimXen::send(self.port);
        }
        // dom0 runs once the guest gives up the CPU.
        SimXen::yield_now();
        self.responses()
    }

    fn responses(&mut self) -> Vec<Response> {
        std::iter::from_fn(|| self.ring.take_response().unwrap()).collect()
    }
}

fn whole_page(write: bool, id: u64, sector: u64) -> Request {
    let seg = Segment { gref: DATA_GREF, first_sect: 0, last_sect: 7, _pad: 0 };
    Request::read_write(write, VDEV as u16, id, sector, &[seg]).unwrap()
}

fn fill_data_page(byte: u8) {
    // SAFETY: a guest page of the arena, 4096 bytes.
    unsafe { core::ptr::write_bytes(page(DATA_PFN), byte, 4096) };
}

fn data_page() -> Vec<u8> {
    let p = page(DATA_PFN);
    // SAFETY: as above.
    (0..4096).map(|i| unsafe { p.add(i).read() }).collect()
}

/// Registers a watch as the guest's xenstore client would.
fn watch(path: &str) {
    let req = wire::encode(MsgType::WATCH, 1, 0, &wire::watch_payload(path, "t").unwrap()).unwrap();
    with(|s| {
        s.xenstore.process(&req);
        s.serve_store();
    });
}

/// The paths of the watch events on the guest's store ring since last asked.
fn watch_events() -> Vec<String> {
    let bytes = with(|s| {
        let ring = s.mem.frame_ptr(&s.arena, s.mfn_of_pfn(s.store_pfn).unwrap()).unwrap() as *mut XenstoreInterface;
        // SAFETY: the store page, in the arena; nothing runs the guest.
        unsafe {
            let (cons, prod) = ((*ring).rsp_cons, (*ring).rsp_prod);
            let out: Vec<u8> = (cons..prod).map(|i| (*ring).rsp[i as usize % 1024]).collect();
            (*ring).rsp_cons = prod;
            out
        }
    });
    let mut events = Vec::new();
    Decoder::new()
        .feed_all(&bytes, |m| {
            if m.ty == MsgType::WATCH_EVENT {
                events.push(wire::parse_watch_event(&m.payload).unwrap().0);
            }
        })
        .unwrap();
    events
}

#[test]
fn attach_publishes_both_directories_as_libxl_does_and_fires_watches() {
    let _s = boot();
    watch("device/vbd");
    watch(&format!("{BACK}/{VDEV}/state"));
    let features = DiskFeatures { flush: false, max_indirect_segments: 32, persistent: false };
    with(|s| s.attach_disk(VDEV, 2048, features));
    let front = |n: &str| node(&format!("/local/domain/7/device/vbd/{VDEV}/{n}"));
    assert_eq!(front("backend"), Some(format!("{BACK}/{VDEV}")));
    let f: Vec<_> = ["backend-id", "virtual-device", "device-type", "state"].map(front).into();
    assert_eq!(f, [Some("0".into()), Some("51712".into()), Some("disk".into()), Some("1".into())]);
    let b = |n| back_node(VDEV, n);
    assert_eq!(b("frontend"), Some(format!("/local/domain/7/device/vbd/{VDEV}")));
    for (name, value) in [
        ("frontend-id", "7"),
        ("state", "2"),
        ("sectors", "2048"),
        ("sector-size", "512"),
        ("info", "0"),
        ("mode", "w"),
        ("feature-flush-cache", "0"),
        ("feature-max-indirect-segments", "32"),
        ("feature-persistent", "0"),
    ] {
        assert_eq!(b(name).as_deref(), Some(value), "{name}");
    }
    let events = watch_events();
    assert!(events.contains(&format!("device/vbd/{VDEV}/state")), "{events:?}");
    assert!(events.contains(&format!("{BACK}/{VDEV}/state")), "{events:?}");
    assert!(take_pending(with(|s| s.store_port())), "the guest was told");
    disk(VDEV, |d| {
        assert_eq!((d.state(), d.connected(), d.sectors(), d.features()), (S::InitWait, false, 2048, features));
        assert!(d.contents().iter().all(|&b| b == 0));
    });
    with(|s| s.attach_disk(VDEV + 16, 8, DiskFeatures::default()));
    assert_eq!(back_node(VDEV + 16, "feature-flush-cache").as_deref(), Some("1"));
    assert_eq!(back_node(VDEV + 16, "feature-max-indirect-segments"), None, "not offered");
}

#[test]
fn connect_serve_close_and_reconnect() {
    let _s = boot();
    with(|s| s.attach_disk(VDEV, 64, DiskFeatures::default()));
    let mut f = Front::publish(VDEV);
    watch(&format!("{BACK}/{VDEV}/state"));
    let _ = watch_events();
    f.state(S::Initialised);
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("4"));
    assert_eq!(watch_events(), [format!("{BACK}/{VDEV}/state")], "the guest hears of Connected");
    assert_eq!(grant_flags(RING_GREF), GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING, "mapped");
    let kind = with(|s| s.ports().into_iter().find(|&(p, _)| p == f.port).unwrap().1);
    assert!(matches!(kind, PortKind::Interdomain { remote_dom: 0, .. }), "{kind:?}");
    assert_eq!(disk(VDEV, |d| (d.connected(), d.connection())), (true, Some((RING_GREF, f.port))));
    f.state(S::Connected);

    grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS);
    fill_data_page(0x5a);
    assert_eq!(f.io(&[whole_page(true, 1, 8)]), [Response { id: 1, operation: OP_WRITE, status: 0 }]);
    assert!(take_pending(f.port), "responses raise the guest's port");
    assert!((8..16).all(|n| disk(VDEV, |d| d.sector(n).iter().all(|&b| b == 0x5a))));
    fill_data_page(0);
    assert_eq!(f.io(&[whole_page(false, 2, 8)]), [Response { id: 2, operation: OP_READ, status: 0 }]);
    assert!(data_page().iter().all(|&b| b == 0x5a));
    assert_eq!(disk(VDEV, |d| (d.figures().requests, d.figures().sectors_read, d.log().len())), (2, 8, 2));
    // A send only tells dom0, which answers once the guest waits.
    assert!(f.ring.write_request(Request::flush(0, 9)) && f.ring.push_requests());
    SimXen::send(f.port);
    assert!(f.responses().is_empty(), "answered inside the send");
    SimXen::block();
    assert_eq!(f.responses().iter().map(|r| r.id).collect::<Vec<_>>(), [9]);
    assert!(take_pending(f.port));

    f.state(S::Closing);
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("6"));
    assert_eq!(grant_flags(RING_GREF), GTF_PERMIT_ACCESS, "unmapped");
    let kind = with(|s| s.ports().into_iter().find(|&(p, _)| p == f.port).unwrap().1);
    assert_eq!(kind, PortKind::Unbound { remote_dom: 0 });
    SimXen::send(f.port);
    f.state(S::Closed);
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("6"));

    f.state(S::Initialising);
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("2"), "ready for a reconnect");
    let mut f = Front::connect(VDEV);
    fill_data_page(0);
    assert_eq!(f.io(&[whole_page(false, 3, 8)])[0].status, 0);
    assert!(data_page().iter().all(|&b| b == 0x5a));
    let fig = disk(VDEV, |d| d.figures().clone());
    assert_eq!((fig.connects, fig.disconnects, fig.errors), (2, 1, 0));
    assert!(with(|s| s.violations().is_empty()));
}

#[test]
fn bad_connections_close_the_backend() {
    let _s = boot();
    let other_port = SimXen::alloc_unbound(3).unwrap();
    let store_port = with(|s| s.store_port());
    // (what, node, value, entry flags and domid of the ring's grant)
    let cases: [(&str, &str, String, u16, u16); 9] = [
        ("ring-ref missing", "ring-ref", String::new(), GTF_PERMIT_ACCESS, 0),
        ("ring-ref garbage", "ring-ref", "eight".into(), GTF_PERMIT_ACCESS, 0),
        ("ring not granted", "ring-ref", RING_GREF.to_string(), 0, 0),
        ("ring read-only", "ring-ref", RING_GREF.to_string(), GTF_PERMIT_ACCESS | GTF_READONLY, 0),
        ("ring for another domain", "ring-ref", RING_GREF.to_string(), GTF_PERMIT_ACCESS, 3),
        ("no such port", "event-channel", "999".into(), GTF_PERMIT_ACCESS, 0),
        ("the store's port", "event-channel", store_port.to_string(), GTF_PERMIT_ACCESS, 0),
        ("unbound for another domain", "event-channel", other_port.to_string(), GTF_PERMIT_ACCESS, 0),
        ("a 32-bit protocol", "protocol", "x86_32-abi".into(), GTF_PERMIT_ACCESS, 0),
    ];
    for (i, (what, name, value, flags, domid)) in cases.into_iter().enumerate() {
        let vdev = VDEV + 16 * i as u32;
        with(|s| s.attach_disk(vdev, 8, DiskFeatures::default()));
        let f = Front::publish(vdev);
        grant(RING_GREF, domid, RING_PFN, flags);
        if value.is_empty() {
            with(|s| s.xenstore.toolstack_remove(&format!("device/vbd/{vdev}/{name}")));
        } else {
            front_write(vdev, name, &value);
        }
        f.state(S::Initialised);
        assert_eq!(back_node(vdev, "state").as_deref(), Some("6"), "{what}");
        let (connected, failed, notes) = disk(vdev, |d| (d.connected(), d.figures().failed_connects, d.notes().len()));
        assert_eq!((connected, failed, notes), (false, 1, 1), "{what}");
        assert_eq!(grant_flags(RING_GREF) & (GTF_READING | GTF_WRITING), 0, "{what}: nothing mapped");
        assert!(with(|s| s.ports().iter().all(|(_, k)| !matches!(k, PortKind::Interdomain { .. }))), "{what}");
        f.state(S::Closed);
        f.state(S::Initialising);
        assert_eq!(back_node(vdev, "state").as_deref(), Some("2"), "{what}: it may try again");
    }
}

#[test]
fn odd_frontend_states_are_noted_and_ignored() {
    let _s = boot();
    with(|s| s.attach_disk(VDEV, 8, DiskFeatures::default()));
    let _f = Front::publish(VDEV);
    for odd in ["banana", "99", "", "0", "2", "7"] {
        front_write(VDEV, "state", odd);
        assert_eq!(back_node(VDEV, "state").as_deref(), Some("2"), "{odd:?}");
    }
    front_write(VDEV, "state", "7"); // again: noted once
    assert_eq!(disk(VDEV, |d| d.notes().len()), 6, "{:?}", disk(VDEV, |d| d.notes().to_vec()));
    front_write(VDEV, "state", "3");
    assert!(disk(VDEV, SimDisk::connected));
}

#[test]
fn held_io_waits_through_a_cancelled_suspend() {
    let _s = boot();
    with(|s| s.attach_disk(VDEV, 64, DiskFeatures::default()));
    let mut f = Front::connect(VDEV);
    grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS);
    fill_data_page(7);
    with(|s| s.disk_hold(VDEV, true));
    assert!(f.io(&[whole_page(true, 1, 0), whole_page(true, 2, 8)]).is_empty(), "in flight");
    assert_eq!(disk(VDEV, |d| (d.held(), d.holding(), d.figures().requests)), (2, true, 2));
    with(|s| s.plan_suspend(SuspendPlan::Cancel));
    let si = mfn(with(|s| s.start_info_pfn));
    // SAFETY: the simulated Xen reads start_info only; no guest runs.
    assert_eq!(unsafe { SimXen::suspend(si) }, 1);
    assert_eq!(disk(VDEV, |d| (d.held(), d.connected(), d.state())), (2, true, S::Connected), "as it was");
    with(|s| s.disk_release(VDEV));
    let ids: Vec<u64> = f.responses().iter().map(|r| r.id).collect();
    assert_eq!(ids, [1, 2]);
    assert!(disk(VDEV, |d| d.contents()[..16 * 512].iter().all(|&b| b == 7)));
    with(|s| s.disk_hold(VDEV, false));
    assert_eq!(f.io(&[whole_page(false, 3, 0)]).len(), 1, "no longer held");
}

#[test]
fn a_new_domain_drops_the_connection_and_keeps_the_disk() {
    let _s = boot();
    with(|s| s.attach_disk(VDEV, 64, DiskFeatures::default()));
    let mut f = Front::connect(VDEV);
    grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS);
    fill_data_page(0x33);
    assert_eq!(f.io(&[whole_page(true, 1, 16)])[0].status, 0);
    with(|s| s.disk_hold(VDEV, true));
    fill_data_page(0x44);
    assert!(f.io(&[whole_page(true, 2, 24)]).is_empty());
    let (old_port, ring_before) = (f.port, (0..4096).map(|i| unsafe_read(RING_PFN, i)).collect::<Vec<u8>>());

    with(|s| s.plan_suspend(SuspendPlan::Restore));
    let si = prepare_save();
    // SAFETY: as in the cancelled suspend; the frame lists are published.
    assert_eq!(unsafe { SimXen::suspend(si) }, 0);
    assert_eq!(with(|s| s.generation()), 1);
    disk(VDEV, |d| {
        assert_eq!((d.connected(), d.held(), d.state()), (false, 0, S::InitWait));
        assert_eq!(d.figures().dropped_with_old_domain, 1);
        assert!(d.sector(16).iter().all(|&b| b == 0x33) && d.sector(24).iter().all(|&b| b == 0));
    });
    let front = |n: &str| node(&format!("/local/domain/7/device/vbd/{VDEV}/{n}"));
    assert_eq!((front("state").as_deref(), front("ring-ref")), (Some("1"), None), "made again by libxl");
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("2"));
    SimXen::send(old_port);
    with(|s| s.disk_release(VDEV));
    let ring_after: Vec<u8> = (0..4096).map(|i| unsafe_read(RING_PFN, i)).collect();
    assert_eq!(ring_before, ring_after, "the old ring is not touched again");

    SimXen::grant_setup_table(&mut [0u64; 1]).unwrap();
    with(|s| s.disk_hold(VDEV, false));
    let mut f = Front::connect(VDEV);
    grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS);
    fill_data_page(0);
    assert_eq!(f.io(&[whole_page(false, 3, 16)])[0].status, 0);
    assert!(data_page().iter().all(|&b| b == 0x33), "the disk outlived the old domain");
}

fn unsafe_read(pfn: u64, i: usize) -> u8 {
    // SAFETY: a guest page of the arena; i < 4096.
    unsafe { page(pfn).add(i).read_volatile() }
}

#[test]
fn detach_waits_for_the_frontend_then_removes_the_device() {
    let _s = boot();
    with(|s| s.attach_disk(VDEV, 64, DiskFeatures::default()));
    let mut f = Front::connect(VDEV);
    grant(DATA_GREF, 0, DATA_PFN, GTF_PERMIT_ACCESS);
    fill_data_page(0x77);
    assert_eq!(f.io(&[whole_page(true, 1, 0)])[0].status, 0);
    assert!(with(|s| s.detach_disk(VDEV)));
    assert!(!with(|s| s.detach_disk(VDEV)), "once");
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("5"));
    f.state(S::Closing);
    assert_eq!(f.io(&[whole_page(true, 2, 8)])[0].status, 0, "served until the frontend is Closed");
    f.state(S::Closed);
    assert_eq!(node(&format!("{BACK}/{VDEV}")), None, "backend directory gone");
    assert_eq!(node(&format!("/local/domain/7/device/vbd/{VDEV}")), None, "frontend directory gone");
    assert_eq!(grant_flags(RING_GREF), GTF_PERMIT_ACCESS);
    disk(VDEV, |d| {
        assert_eq!((d.attached(), d.connected(), d.state()), (false, false, S::Closed));
        assert!(d.sector(15).iter().all(|&b| b == 0x77), "the image stays readable");
    });
    with(|s| s.attach_disk(VDEV, 8, DiskFeatures::default()));
    assert_eq!(disk(VDEV, |d| (d.attached(), d.sectors())), (true, 8), "attached afresh");
}

#[test]
fn hostile_backend_states() {
    let _s = boot();
    with(|s| s.attach_disk(VDEV, 8, DiskFeatures::default()));
    with(|s| s.disk_fault(VDEV, BlkFault::NeverConnect));
    let f = Front::publish(VDEV);
    f.state(S::Initialised);
    assert_eq!(back_node(VDEV, "state").as_deref(), Some("2"), "stays InitWait");
    assert!(!disk(VDEV, SimDisk::connected));

    let vdev = VDEV + 16;
    with(|s| s.attach_disk(vdev, 8, DiskFeatures::default()));
    let mut f = Front::connect(vdev);
    with(|s| s.disk_fault(vdev, BlkFault::StateGarbage));
    assert_eq!(back_node(vdev, "state").as_deref(), Some("banana"));
    assert_eq!(disk(vdev, |d| (d.state(), d.connected())), (S::Connected, true), "goes on as before");
    assert_eq!(f.io(&[Request::flush(0, 1)])[0].status, 0);
    with(|s| s.disk_fault(vdev, BlkFault::GoClosed));
    assert_eq!(back_node(vdev, "state").as_deref(), Some("6"));
    assert_eq!(grant_flags(RING_GREF), GTF_PERMIT_ACCESS, "unmapped");
    assert_eq!(disk(vdev, |d| (d.connected(), d.figures().faults_applied)), (false, 2));
    f.state(S::Closed);
    f.state(S::Initialising);
    assert_eq!(back_node(vdev, "state").as_deref(), Some("2"), "one-shot: it reconnects");

    let vdev = VDEV + 32;
    with(|s| s.attach_disk(vdev, 8, DiskFeatures::default()));
    with(|s| s.disk_fault(vdev, BlkFault::GoClosed));
    let f = Front::publish(vdev);
    f.state(S::Initialised);
    assert_eq!(back_node(vdev, "state").as_deref(), Some("6"), "armed before, closed once connected");
    assert_eq!(disk(vdev, |d| d.figures().connects), 1);
    with(|s| s.disk_fault(vdev, BlkFault::UnknownId));
    f.state(S::Closed);
    f.state(S::Initialising);
    let mut f = Front::connect(vdev);
    assert_eq!(f.io(&[Request::flush(0, 5)])[0].id, 5 ^ 0xdead_beef_dead_beef);
}
