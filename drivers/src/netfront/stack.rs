//! The IP stack on the first connected vif: smoltcp with a static IPv4
//! address (`ballast.ip=A.B.C.D/N`). It answers ARP and ICMP echo, echoes
//! UDP and TCP on port 7, pings a peer every 100 ms (`ballast.ping=A.B.C.D`,
//! by default the subnet's first address: dom0's bridge) counting the
//! replies, and after every resume in a new domain announces itself with a
//! gratuitous ARP (it may now sit behind another switch port).

use super::{vifs, Phase, Vif, MAX_FRAME};
use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use kernel::{sched, time};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};

const ECHO_PORT: u16 = 7;
const PING_EVERY_MS: u64 = 100;
const PING_IDENT: u16 = 0xba11;
const TCP_ECHO_SOCKETS: usize = 4;

/// The address and the peer to ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub ip: [u8; 4],
    pub prefix: u8,
    pub peer: [u8; 4],
}

impl Config {
    /// From the command line's address and prefix, and the peer to ping
    /// (by default the subnet's first address: dom0's bridge).
    pub fn new(ip: Option<([u8; 4], u8)>, ping: Option<[u8; 4]>) -> Option<Config> {
        let (addr, prefix) = ip?;
        let first = ((u32::from_be_bytes(addr) & (u32::MAX << (32 - prefix as u32))) + 1).to_be_bytes();
        Some(Config { ip: addr, prefix, peer: ping.unwrap_or(first) })
    }
}

pub fn spawn(cfg: Config) {
    sched::spawn("net", move || loop {
        match vifs().into_iter().find(|v| v.phase() == Phase::Connected) {
            Some(vif) => serve(&vif, &cfg),
            None => sched::sleep_ms(500),
        }
    });
}

fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(time::now_ns() as i64 / 1_000_000)
}

/// smoltcp's view of a vif.
struct Port<'a> {
    vif: &'a Vif,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a Vif);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.transmit(&frame);
        r
    }
}

impl phy::Device for Port<'_> {
    type RxToken<'b>
        = Rx
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        self.vif.take_received().map(|f| (Rx(f), Tx(self.vif)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        self.vif.can_transmit().then_some(Tx(self.vif))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps
    }
}

struct Sockets {
    set: SocketSet<'static>,
    udp: SocketHandle,
    tcp: Vec<SocketHandle>,
    icmp: SocketHandle,
}

impl Sockets {
    fn new() -> Sockets {
        let mut set = SocketSet::new(Vec::new());
        let buf = |n| vec![0u8; n];
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], buf(8192)),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], buf(8192)),
        );
        u.bind(ECHO_PORT).expect("a fresh socket binds");
        let udp = set.add(u);
        let tcp = (0..TCP_ECHO_SOCKETS)
            .map(|_| set.add(tcp::Socket::new(tcp::SocketBuffer::new(buf(4096)), tcp::SocketBuffer::new(buf(4096)))))
            .collect();
        let mut i = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], buf(1024)),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], buf(1024)),
        );
        i.bind(icmp::Endpoint::Ident(PING_IDENT)).expect("a fresh socket binds");
        let icmp = set.add(i);
        Sockets { set, udp, tcp, icmp }
    }

    /// Echoes what arrived on port 7.
    fn echo(&mut self, vif: &Vif) {
        let u = self.set.get_mut::<udp::Socket>(self.udp);
        while u.can_send() {
            let Ok((data, meta)) = u.recv() else { break };
            let data = data.to_vec();
            if u.send_slice(&data, meta).is_ok() {
                super::add(&vif.figures.udp_echo_packets, 1);
            }
        }
        for &h in &self.tcp {
            let t = self.set.get_mut::<tcp::Socket>(h);
            if !t.is_open() {
                let _ = t.listen(ECHO_PORT);
                continue;
            }
            if t.may_recv() && t.can_send() {
                let mut chunk = [0u8; 1024];
                let room = t.send_capacity() - t.send_queue();
                let n = t.recv_slice(&mut chunk[..room.min(1024)]).unwrap_or(0);
                if n > 0 && t.send_slice(&chunk[..n]).is_ok() {
                    super::add(&vif.figures.tcp_echo_bytes, n as u64);
                }
            } else if t.state() == tcp::State::CloseWait && t.send_queue() == 0 {
                // The peer closed its side and everything was echoed.
                t.close();
            }
        }
    }
}

/// Pings the peer every PING_EVERY_MS and counts the replies.
struct Pinger {
    peer: IpAddress,
    next_at_ms: u64,
    seq: u16,
    /// Sequence numbers sent and not yet answered (the last 1024).
    waiting: BTreeSet<u16>,
}

/// Whether sequence number `a` was sent before `b` (they wrap).
fn sent_before(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

impl Pinger {
    fn tick(&mut self, vif: &Vif, sockets: &mut Sockets) {
        let s = sockets.set.get_mut::<icmp::Socket>(sockets.icmp);
        while let Ok((data, _)) = s.recv() {
            let Ok(packet) = Icmpv4Packet::new_checked(data) else { continue };
            let repr = Icmpv4Repr::parse(&packet, &smoltcp::phy::ChecksumCapabilities::default());
            if let Ok(Icmpv4Repr::EchoReply { ident: PING_IDENT, seq_no, .. }) = repr {
                if self.waiting.remove(&seq_no) {
                    super::add(&vif.figures.ping_replies, 1);
                    // Replies come in order: one sent earlier and still
                    // unanswered will not be (whatever time passed while
                    // the domain was suspended).
                    let before = self.waiting.len();
                    self.waiting.retain(|&s| !sent_before(s, seq_no));
                    super::add(&vif.figures.ping_lost, (before - self.waiting.len()) as u64);
                }
            }
        }
        let now_ms = time::now_ns() / 1_000_000;
        if now_ms < self.next_at_ms {
            return;
        }
        self.next_at_ms = now_ms + PING_EVERY_MS;
        if vif.phase() != Phase::Connected || !s.can_send() {
            super::add(&vif.figures.ping_skipped, 1);
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        let repr = Icmpv4Repr::EchoRequest { ident: PING_IDENT, seq_no: self.seq, data: b"ballast ping" };
        let Ok(buf) = s.send(repr.buffer_len(), self.peer) else { return };
        let mut packet = Icmpv4Packet::new_unchecked(buf);
        repr.emit(&mut packet, &smoltcp::phy::ChecksumCapabilities::default());
        super::add(&vif.figures.ping_sent, 1);
        self.waiting.insert(self.seq);
        if self.waiting.len() > 1024 {
            self.waiting.pop_first();
            super::add(&vif.figures.ping_lost, 1);
        }
    }
}

/// An ARP request for our own address, to everyone: switches learn where
/// the guest is now and neighbours refresh their caches.
fn gratuitous_arp(vif: &Vif, ip: Ipv4Address) {
    let mac = EthernetAddress(vif.mac());
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr { src_addr: mac, dst_addr: EthernetAddress::BROADCAST, ethertype: EthernetProtocol::Arp };
    let mut frame = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut e = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut e);
    arp.emit(&mut ArpPacket::new_unchecked(e.payload_mut()));
    if vif.transmit(&frame) {
        super::add(&vif.figures.garps, 1);
    }
}

/// Runs the stack on `vif` until it fails or is detached.
fn serve(vif: &Arc<Vif>, cfg: &Config) {
    let mut port = Port { vif };
    let mut config = IfaceConfig::new(EthernetAddress(vif.mac()).into());
    config.random_seed = time::now_ns() ^ u64::from(vif.id) << 32;
    let mut iface = Interface::new(config, &mut port, now());
    let ip = Ipv4Address::from(cfg.ip);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), cfg.prefix));
    });
    let mut sockets = Sockets::new();
    let peer = Ipv4Address::from(cfg.peer);
    let mut pinger = Pinger { peer: IpAddress::Ipv4(peer), next_at_ms: 0, seq: 0, waiting: BTreeSet::new() };
    log::info!(
        "net: {}/{} on vif {}: answering ARP and ping, echo on UDP and TCP port {}, pinging {} every {} ms",
        ip,
        cfg.prefix,
        vif.id,
        ECHO_PORT,
        peer,
        PING_EVERY_MS
    );
    let mut resumes_seen = vif.resumes();
    loop {
        match vif.phase() {
            Phase::Failed | Phase::Closed => {
                log::warn!("net: vif {} is {}: the stack stops on it", vif.id, vif.phase().name());
                return;
            }
            Phase::Connected if vif.resumes() != resumes_seen => {
                resumes_seen = vif.resumes();
                gratuitous_arp(vif, ip);
                log::info!("net: gratuitous ARP for {} sent after the resume", ip);
            }
            _ => {}
        }
        vif.poll();
        iface.poll(now(), &mut port, &mut sockets.set);
        sockets.echo(vif);
        pinger.tick(vif, &mut sockets);
        iface.poll(now(), &mut port, &mut sockets.set);
        let now_ms = time::now_ns() / 1_000_000;
        let stack_ms = iface.poll_delay(now(), &sockets.set).map_or(PING_EVERY_MS, |d| d.total_millis());
        let wait_ms = stack_ms.min(pinger.next_at_ms.saturating_sub(now_ms)).max(1);
        vif.wait(time::now_ns() + wait_ms * 1_000_000, resumes_seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_is_the_subnets_first_address_unless_named() {
        assert_eq!(
            Config::new(Some(([10, 0, 0, 2], 24)), None),
            Some(Config { ip: [10, 0, 0, 2], prefix: 24, peer: [10, 0, 0, 1] })
        );
        assert_eq!(Config::new(Some(([192, 168, 7, 77], 28)), None).map(|c| c.peer), Some([192, 168, 7, 65]));
        assert_eq!(Config::new(Some(([10, 0, 0, 2], 24)), Some([10, 0, 0, 9])).map(|c| c.peer), Some([10, 0, 0, 9]));
        assert_eq!(Config::new(None, Some([10, 0, 0, 1])), None);
    }
}
