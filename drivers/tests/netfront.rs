//! netfront and its IP stack on the one simulated Xen, against its
//! simulated netback, with "dom0" played by smoltcp in the test: an
//! Ethernet interface at 10.0.0.1/24 whose wire is the backend
//! (`vif_take_sent` in, `vif_deliver` out), polled by the test thread
//! while the guest runs. Covered: the handshake, ping both ways, UDP and
//! TCP echo; a checkpoint with the backend held (nothing lost, a TCP
//! connection carries on), a restore and a migration (a new connection, a
//! gratuitous ARP, ping and TCP again); backends that break the rings or
//! the handshake, each failing its vif only.

use drivers::netfront::{self, Phase};
use kernel::testing::{assert_no_violations, boot, request_suspend, run_until, sim, store, Guest};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr,
    IpAddress, IpCidr, Ipv4Address,
};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use xen::sim::{NetFault, NetRing, SimConfig, SuspendPlan};

const VIF: u32 = 0;
const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02];
/// What Linux gives a netback vif (the bridge learns the guest's own).
const PEER_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];
const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const PEER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const PEER_IDENT: u16 = 0xd0d0;
const ECHO: u16 = 7;

fn start() -> Guest {
    let cmdline = "ballast.pattern=2 ballast.sleepers=1 ballast.blk=0 ballast.ip=10.0.0.2/24";
    let g = boot(SimConfig { cmdline: cmdline.into(), ..Default::default() });
    drivers::start(&g.opts);
    g
}

fn console() -> String {
    xen::sim::console_text()
}

fn vif(id: u32) -> Option<std::sync::Arc<netfront::Vif>> {
    netfront::vifs().into_iter().find(|v| v.id == id)
}

fn phase(id: u32) -> Option<Phase> {
    vif(id).map(|v| v.phase())
}

fn ping_replies() -> u64 {
    vif(VIF).map_or(0, |v| v.figures.ping_replies.load(Ordering::Relaxed))
}

fn ping_lost() -> u64 {
    vif(VIF).map_or(0, |v| v.figures.ping_lost.load(Ordering::Relaxed))
}

fn patterns() -> u64 {
    kernel::selftest::PATTERN_PASSES.load(Ordering::Relaxed)
}

/// The wire between the peer's interface and the backend.
#[derive(Default)]
struct Wire {
    from_guest: VecDeque<Vec<u8>>,
    to_guest: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.from_guest.pop_front()?;
        Some((Rx(f), Tx(&mut self.to_guest)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.to_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// dom0 as the guest sees it: 10.0.0.1 behind vif `VIF`.
struct Peer {
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    icmp: SocketHandle,
    udp: SocketHandle,
    /// Every frame the guest sent, in order.
    seen: Vec<Vec<u8>>,
    seq: u16,
    /// Pings sent and not answered.
    waiting: BTreeSet<u16>,
    replies: u64,
    /// UDP datagrams that came back from port 7.
    udp_back: Vec<Vec<u8>>,
}

fn now() -> Instant {
    Instant::from_micros((sim(|s| s.now_ns()) / 1000) as i64)
}

fn buf(n: usize) -> Vec<u8> {
    vec![0; n]
}

impl Peer {
    fn new() -> Peer {
        let mut wire = Wire::default();
        let mut config = Config::new(EthernetAddress(PEER_MAC).into());
        config.random_seed = 0x5eed;
        let mut iface = Interface::new(config, &mut wire, now());
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(PEER_IP), 24)).unwrap());
        let mut sockets = SocketSet::new(Vec::new());
        let mut i = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 64], buf(8192)),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 64], buf(8192)),
        );
        i.bind(icmp::Endpoint::Ident(PEER_IDENT)).unwrap();
        let icmp = sockets.add(i);
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], buf(8192)),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], buf(8192)),
        );
        u.bind(40007).unwrap();
        let udp = sockets.add(u);
        Peer {
            iface,
            wire,
            sockets,
            icmp,
            udp,
            seen: Vec::new(),
            seq: 0,
            waiting: BTreeSet::new(),
            replies: 0,
            udp_back: Vec::new(),
        }
    }

    /// Takes what the guest sent, lets smoltcp answer, sends what it made.
    fn poll(&mut self) {
        let frames = sim(|s| s.vif_take_sent(VIF));
        self.seen.extend(frames.iter().cloned());
        self.wire.from_guest.extend(frames);
        self.iface.poll(now(), &mut self.wire, &mut self.sockets);
        let s = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        while let Ok((data, _)) = s.recv() {
            let repr =
                Icmpv4Packet::new_checked(data).and_then(|p| Icmpv4Repr::parse(&p, &ChecksumCapabilities::default()));
            if let Ok(Icmpv4Repr::EchoReply { ident: PEER_IDENT, seq_no, .. }) = repr {
                self.replies += self.waiting.remove(&seq_no) as u64;
            }
        }
        let u = self.sockets.get_mut::<udp::Socket>(self.udp);
        while let Ok((data, meta)) = u.recv() {
            if meta.endpoint.port == ECHO {
                self.udp_back.push(data.to_vec());
            }
        }
        for f in self.wire.to_guest.drain(..) {
            sim(|s| s.vif_deliver(VIF, &f));
        }
    }

    fn ping(&mut self) {
        self.seq += 1;
        let repr = Icmpv4Repr::EchoRequest { ident: PEER_IDENT, seq_no: self.seq, data: b"dom0 ping" };
        let s = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        let b = s.send(repr.buffer_len(), IpAddress::Ipv4(GUEST_IP)).expect("room to ping");
        repr.emit(&mut Icmpv4Packet::new_unchecked(b), &ChecksumCapabilities::default());
        self.waiting.insert(self.seq);
    }

    fn udp_send(&mut self, data: &[u8]) {
        let u = self.sockets.get_mut::<udp::Socket>(self.udp);
        u.send_slice(data, (IpAddress::Ipv4(GUEST_IP), ECHO)).unwrap();
    }

    fn tcp_connect(&mut self, local_port: u16) -> SocketHandle {
        let mut t = tcp::Socket::new(tcp::SocketBuffer::new(buf(8192)), tcp::SocketBuffer::new(buf(8192)));
        t.connect(self.iface.context(), (IpAddress::Ipv4(GUEST_IP), ECHO), local_port).unwrap();
        self.sockets.add(t)
    }

    fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Runs the guest until `done`, polling the peer all along.
    fn run_until(&mut self, what: &str, limit_ms: u64, mut done: impl FnMut(&mut Peer) -> bool) {
        run_until(what, limit_ms, || {
            self.poll();
            done(self)
        });
    }

    /// Pings the guest `n` times, 20 ms apart, until every one is answered.
    fn ping_guest(&mut self, n: usize) {
        let replies = self.replies;
        for _ in 0..n {
            self.ping();
            let at = sim(|s| s.now_ns()) + 20_000_000;
            self.run_until("the next ping to be due", 10_000, |_| sim(|s| s.now_ns()) >= at);
        }
        self.run_until("the guest's echo replies", 30_000, |p| p.waiting.is_empty());
        assert_eq!(self.replies, replies + n as u64);
    }

    /// Sends `data` on connection `h` and runs until all of it came back.
    fn tcp_echo(&mut self, h: SocketHandle, data: &[u8]) {
        self.run_until("the TCP connection", 30_000, |p| p.tcp(h).may_send());
        assert_eq!(self.tcp(h).send_slice(data).unwrap(), data.len());
        let mut back = Vec::new();
        self.run_until("the TCP echo", 60_000, |p| {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = p.tcp(h).recv_slice(&mut chunk) {
                back.extend_from_slice(&chunk[..n]);
            }
            back.len() >= data.len()
        });
        assert_eq!(back, data);
    }

    /// Whether a gratuitous ARP for the guest's address is among `frames`.
    fn garp_in(frames: &[Vec<u8>]) -> bool {
        frames.iter().any(|f| {
            let Ok(eth) = EthernetFrame::new_checked(&f[..]) else { return false };
            if eth.ethertype() != EthernetProtocol::Arp || eth.dst_addr() != EthernetAddress::BROADCAST {
                return false;
            }
            let arp = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p));
            matches!(arp, Ok(ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(GUEST_MAC),
                source_protocol_addr: s,
                target_protocol_addr: t,
                ..
            }) if s == GUEST_IP && t == GUEST_IP)
        })
    }
}

/// A guest with vif `VIF` connected and the peer on its wire.
fn connected() -> (Guest, Peer) {
    let g = start();
    sim(|s| s.attach_vif(VIF, GUEST_MAC));
    run_until("the vif to connect", 60_000, || phase(VIF) == Some(Phase::Connected));
    assert!(console().contains("netfront 0: connected to dom0, mac 00:16:3e:00:00:02"), "{}", console());
    assert!(sim(|s| s.vif(VIF).unwrap().connected()));
    (g, Peer::new())
}

#[test]
fn ping_both_ways_and_echo_over_udp_and_tcp() {
    let (_g, mut peer) = connected();
    peer.ping_guest(5);
    let replies = ping_replies();
    peer.run_until("the guest's pings to be answered", 30_000, |_| ping_replies() >= replies + 5);
    run_until("the figures under data/net/0", 10_000, || {
        store("data/net/0/ping_replies").and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > 0)
    });
    assert_eq!(store("data/net/0/state").as_deref(), Some("connected"));

    peer.udp_send(b"over udp, and back");
    peer.run_until("the UDP echo", 30_000, |p| !p.udp_back.is_empty());
    assert_eq!(peer.udp_back, [b"over udp, and back".to_vec()]);

    let h = peer.tcp_connect(49152);
    let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
    peer.tcp_echo(h, &data);
    peer.tcp_echo(h, b"and once more");
    // A burst of more frames than buffers are posted: the rest wait in
    // the backend until the guest posts its buffers again, and tells it.
    let rx = vif(VIF).unwrap().figures.rx_packets.load(Ordering::Relaxed);
    for _ in 0..400 {
        sim(|s| s.vif_deliver(VIF, &noise()));
    }
    assert!(sim(|s| s.vif(VIF).unwrap().queued()) >= 400 - 128, "buffers ran out");
    peer.run_until("the burst to be taken", 30_000, |_| {
        vif(VIF).unwrap().figures.rx_packets.load(Ordering::Relaxed) >= rx + 400
    });
    let f = &vif(VIF).unwrap().figures;
    assert!(f.tcp_echo_bytes.load(Ordering::Relaxed) >= 6013);
    assert_eq!(f.udp_echo_packets.load(Ordering::Relaxed), 1);
    assert_eq!((f.rx_errors.load(Ordering::Relaxed), f.tx_errors.load(Ordering::Relaxed)), (0, 0));
    let fig = sim(|s| s.vif(VIF).unwrap().figures().clone());
    assert_eq!((fig.tx_errors, fig.rx_errors, fig.rx_dropped, fig.fatal_errors), (0, 0, 0, 0));
    assert!(!console().contains("panicked"));
    assert_no_violations();
}

#[test]
fn the_network_rides_through_a_checkpoint_a_restore_and_a_migration() {
    let (_g, mut peer) = connected();
    peer.ping_guest(3);
    let h = peer.tcp_connect(49153);
    peer.tcp_echo(h, b"before the checkpoint");

    // A checkpoint with the backend held: what either side sent meanwhile
    // waits, and nothing is lost once it is released.
    let lost = ping_lost();
    let replies = ping_replies();
    sim(|s| s.vif_hold(VIF, true));
    for _ in 0..3 {
        peer.ping();
    }
    peer.run_until("the peer's pings to reach the backend", 10_000, |_| sim(|s| s.vif(VIF).unwrap().queued() > 0));
    assert_eq!(peer.tcp(h).send_slice(b"held across a checkpoint").unwrap(), 24);
    peer.poll();
    request_suspend(Some(SuspendPlan::Cancel));
    sim(|s| s.vif_hold(VIF, false));
    peer.run_until("every ping held to be answered", 30_000, |p| p.waiting.is_empty());
    let mut back = Vec::new();
    peer.run_until("the held TCP data to come back", 60_000, |p| {
        let mut chunk = [0u8; 256];
        while let Ok(n @ 1..) = p.tcp(h).recv_slice(&mut chunk) {
            back.extend_from_slice(&chunk[..n]);
        }
        back.len() >= 24
    });
    assert_eq!(back, b"held across a checkpoint");
    peer.run_until("the guest's own pings again", 30_000, |_| ping_replies() > replies + 2);
    assert!(ping_lost() <= lost + 1, "a checkpoint lost {} pings", ping_lost() - lost);
    assert_eq!(sim(|s| s.vif(VIF).unwrap().figures().connects), 1, "the same connection");

    // A restore, then a migration: a new connection each time.
    for (n, plan) in [(1, SuspendPlan::Restore), (2, SuspendPlan::Migrate)] {
        let lost = ping_lost();
        let port_before = sim(|s| s.vif(VIF).unwrap().connection().unwrap().2);
        peer.poll();
        let seen = peer.seen.len();
        request_suspend(Some(plan));
        run_until("the vif to reconnect", 60_000, || {
            vif(VIF).is_some_and(|v| v.resumes() == n && v.phase() == Phase::Connected)
        });
        let b = sim(|s| s.vif(VIF).unwrap().figures().clone());
        assert_eq!((b.connects, b.disconnects), (1 + n, 0), "{plan:?}: dropped with the old domain, not closed");
        let port = sim(|s| s.vif(VIF).unwrap().connection().unwrap().2);
        assert_ne!(port, port_before, "{plan:?}: a new event channel");
        peer.run_until("a gratuitous ARP", 10_000, |p| Peer::garp_in(&p.seen[seen..]));
        peer.ping_guest(3);
        let replies = ping_replies();
        peer.run_until("the guest's own pings again", 30_000, |_| ping_replies() > replies + 2);
        assert!(ping_lost() <= lost + 1, "{plan:?} lost {} pings", ping_lost() - lost);
        let h = peer.tcp_connect(49160 + n as u16);
        peer.tcp_echo(h, format!("a new connection after {plan:?}").as_bytes());
    }
    assert_eq!(vif(VIF).unwrap().figures.garps.load(Ordering::Relaxed), 2);
    assert!(!console().contains("panicked"));
    assert_no_violations();
}

#[test]
fn a_detached_vif_goes_and_an_attached_one_is_driven() {
    let (_g, mut peer) = connected();
    peer.ping_guest(2);
    assert!(sim(|s| s.detach_vif(VIF)));
    run_until("the detach", 60_000, || console().contains("netfront 0: detached"));
    run_until("the vif to be forgotten", 10_000, || phase(VIF).is_none());
    assert!(!sim(|s| s.vif(VIF).unwrap().attached()), "the backend finished closing");
    run_until("the stack to leave it", 10_000, || console().contains("net: vif 0 is closed: the stack stops on it"));
    sim(|s| s.attach_vif(VIF, GUEST_MAC));
    run_until("the new vif to connect", 60_000, || phase(VIF) == Some(Phase::Connected));
    // A new stack on it: its neighbours are learnt anew (smoltcp drops
    // what it answers before the ARP reply), so the guest's own ping first.
    let replies = ping_replies();
    peer.run_until("the new stack to reach the peer", 30_000, |_| ping_replies() > replies);
    peer.ping_guest(2);
    let h = peer.tcp_connect(49170);
    peer.tcp_echo(h, b"on a vif attached again");
    assert_no_violations();
}

/// A guest with vifs `ids` attached, and a task that sends a frame on
/// every connected vif and takes what came back every 20 ms, so that each
/// sees responses on both rings whether the IP stack serves it or not.
fn start_with_vifs(ids: &[u32]) -> Guest {
    let g = start();
    for &id in ids {
        sim(|s| s.attach_vif(id, [0x00, 0x16, 0x3e, 0, 1, id as u8]));
    }
    run_until("the vifs to connect", 60_000, || ids.iter().all(|&id| phase(id) == Some(Phase::Connected)));
    kernel::sched::spawn("prober", || loop {
        for v in netfront::vifs() {
            if v.phase() == Phase::Connected {
                let mut frame = [0xffu8; 60];
                frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
                v.transmit(&frame);
                v.poll();
                while v.take_received().is_some() {}
            }
        }
        kernel::sched::sleep_ms(20);
    });
    g
}

/// A broadcast frame of a local experimental type, which nothing answers.
fn noise() -> Vec<u8> {
    let mut f = vec![0xffu8; 60];
    f[6..12].copy_from_slice(&PEER_MAC);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

#[test]
fn backends_breaking_the_rings_fail_their_vif_only() {
    let faults = [
        (1, NetFault::RxIdNeverPosted),
        (2, NetFault::RxLenPastPage),
        (3, NetFault::RxBadStatus),
        (4, NetFault::TxIdNeverSent),
        (5, NetFault::RspProdBeyondRing(NetRing::Tx)),
        (6, NetFault::RspProdBeyondRing(NetRing::Rx)),
    ];
    let _g = start_with_vifs(&[0, 1, 2, 3, 4, 5, 6]);
    run_until("the prober to send", 30_000, || sim(|s| s.vif(6).unwrap().figures().frames_sent > 2));
    for (id, f) in faults {
        sim(|s| s.vif_fault(id, f));
    }
    run_until("every faulty vif to fail", 60_000, || {
        for (id, _) in faults {
            if phase(id) != Some(Phase::Failed) {
                sim(|s| s.vif_deliver(id, &noise()));
            }
        }
        faults.iter().all(|&(id, _)| phase(id) == Some(Phase::Failed))
    });
    let text = console();
    for (id, why) in [
        (1, "a receive response for id 57005, never posted"),
        (2, "receive response PastThePage"),
        (3, "receive response Status(-7)"),
        (4, "a transmit response for id "), // 0xdead ^ the id sent, "never sent"
        (5, "transmit ring fault"),
        (6, "receive ring fault"),
    ] {
        assert!(text.contains(&format!("netfront {id}: {why}")), "vif {id}: {why}\n{text}");
        assert!(text.contains(&format!("netfront {id}: ")) && text.contains("never sent: vif failed"));
    }
    // The sound vif goes on, and so does the guest.
    let (sent, passes) = (sim(|s| s.vif(0).unwrap().figures().frames_sent), patterns());
    run_until("the guest to go on", 60_000, || {
        sim(|s| s.vif_deliver(0, &noise()));
        patterns() > passes && sim(|s| s.vif(0).unwrap().figures().frames_sent) > sent + 2
    });
    assert_eq!(phase(0), Some(Phase::Connected));
    assert!(vif(0).unwrap().figures.rx_packets.load(Ordering::Relaxed) > 0);
    assert!(!console().contains("panicked"));
    assert_no_violations();
}

#[test]
fn backends_that_never_connect_close_or_write_garbage_fail_their_vif_only() {
    let g = start();
    sim(|s| {
        s.attach_vif(0, GUEST_MAC);
        s.attach_vif(1, [0x00, 0x16, 0x3e, 0, 1, 1]);
        s.vif_fault(1, NetFault::NeverConnect);
        s.attach_vif(2, [0x00, 0x16, 0x3e, 0, 1, 2]);
        s.attach_vif(3, [0x00, 0x16, 0x3e, 0, 1, 3]);
    });
    run_until("three vifs to connect", 60_000, || [0, 2, 3].iter().all(|&id| phase(id) == Some(Phase::Connected)));
    sim(|s| {
        s.vif_fault(2, NetFault::GoClosed);
        s.vif_fault(3, NetFault::StateGarbage);
    });
    run_until("the garbage state to fail its vif", 60_000, || phase(3) == Some(Phase::Failed));
    assert!(console().contains("netfront 3: backend state: not a number"), "{}", console());
    // A backend that closes has its vif closed (as Linux's netfront does),
    // not driven again while its nodes stay.
    run_until("the closed backend's vif to go", 60_000, || phase(2).is_none());
    assert!(console().contains("netfront 2: detached"));
    let passes = patterns();
    run_until("the silent backend to be given up", 120_000, || phase(1) == Some(Phase::Failed));
    assert!(console().contains("netfront 1: backend not connected after"));
    assert!(patterns() > passes, "the guest went on meanwhile");
    assert!(phase(2).is_none(), "a closed backend's vif came back");
    assert_eq!(phase(0), Some(Phase::Connected), "the sound vif");
    assert!(!console().contains("panicked"));
    assert_no_violations();
    drop(g);
}
