//! What is netfront's own in a vif's life (`xenbus::lifecycle` runs it):
//! connecting with new rings and receive buffers, closing, suspend and
//! resume; and the figures under `data/net/<n>/`.

use super::{Connection, Phase, Vif};
use crate::xenbus::{Frontend, FrontendError, PvDevice, Registry};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use kernel::events::{Binding, Channel};
use kernel::xenstore::{self, Watch};
use xen::xenbus::XenbusState;

/// How long a backend may take to connect before the vif is failed.
const CONNECT_TIMEOUT_MS: u64 = 30_000;
const CLOSE_TIMEOUT_MS: u64 = 5_000;

static VIFS: Registry<Vif> = Registry::new();

/// The vifs, lowest device number first.
pub fn vifs() -> Vec<Arc<Vif>> {
    VIFS.all()
}

/// Starts discovery, the figures and, with an address, the IP stack.
pub fn spawn(net: Option<super::stack::Config>) {
    VIFS.spawn();
    if let Some(cfg) = net {
        super::stack::spawn(cfg);
    }
}

/// `xx:xx:xx:xx:xx:xx`, hex.
pub fn parse_mac(raw: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = raw.trim().split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        // Two hex digits exactly: `from_str_radix` alone would take "+b".
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl PvDevice for Vif {
    const CLASS: &'static str = "vif";
    const NAME: &'static str = "netfront";
    const DATA_DIR: &'static str = "data/net";

    fn new(id: u32) -> Self {
        Vif::new(id)
    }
    fn id(&self) -> u32 {
        self.id
    }
    fn resumes(&self) -> u64 {
        Vif::resumes(self)
    }
    fn is_failed(&self) -> bool {
        self.phase() == Phase::Failed
    }

    fn connect(&self, front: &mut Frontend, watch: &Watch, epoch: u64) -> Result<(), FrontendError> {
        let node = front.nodename.clone();
        let raw = xenstore::read(&format!("{node}/mac"))?;
        let mac = parse_mac(&raw).ok_or(FrontendError::Malformed { node: format!("{node}/mac"), value: raw })?;
        let backend = front.backend_id;
        let old = {
            let mut g = self.inner.lock();
            if g.phase != Phase::Failed {
                g.phase = Phase::Connecting;
            }
            g.conn.take()
        };
        if let Some(old) = old {
            // A new domain: what was in flight went with the old one.
            super::add(&self.figures.tx_lost_at_resume, old.in_flight() as u64);
        }
        let wake = self.wake.clone();
        let channel = Channel::bind(Binding::Unbound { remote_dom: backend }, "netfront", move |_| wake.wake_all())
            .map_err(|e| FrontendError::Resources(format!("event channel: {e:?}")))?;
        let port = channel.port().ok_or(FrontendError::Resources(String::from("event channel vanished")))?;
        let conn =
            Connection::new(backend, channel).map_err(|e| FrontendError::Resources(format!("ring pages: {e:?}")))?;
        let (tx_ref, rx_ref) = (conn.tx.gref(), conn.rx.gref());
        let still_current = || Vif::resumes(self) == epoch;
        // netback connects once the frontend is connected (as Linux's netfront
        // goes straight there after publishing).
        front.connect(watch, CONNECT_TIMEOUT_MS, XenbusState::Connected, still_current, |tx| {
            for (name, value) in [
                ("tx-ring-ref", format!("{tx_ref}")),
                ("rx-ring-ref", format!("{rx_ref}")),
                ("event-channel", format!("{port}")),
                // Frames are copied into posted pages, one page each.
                ("request-rx-copy", String::from("1")),
                ("feature-rx-notify", String::from("1")),
                // The stack computes and checks every checksum itself.
                ("feature-no-csum-offload", String::from("1")),
                ("feature-sg", String::from("0")),
                ("feature-gso-tcpv4", String::from("0")),
            ] {
                xenstore::write_tx(tx, &format!("{node}/{name}"), &value)?;
            }
            Ok(())
        })?;
        conn.channel.notify();
        {
            let mut g = self.inner.lock();
            if g.phase == Phase::Failed {
                return Ok(());
            }
            g.mac = mac;
            g.conn = Some(conn);
            g.phase = Phase::Connected;
        }
        self.wake.wake_all();
        log::info!(
            "netfront {}: connected to dom{}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {} receive buffers",
            self.id,
            backend,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5],
            super::RX_BUFFERS
        );
        Ok(())
    }

    fn close(&self, front: &mut Frontend, watch: &Watch) {
        self.inner.lock().phase = Phase::Closing;
        front.close(watch, CLOSE_TIMEOUT_MS);
        let conn = {
            let mut g = self.inner.lock();
            g.phase = Phase::Closed;
            g.conn.take()
        };
        if let Some(c) = &conn {
            c.tx.wait_unmapped(Frontend::UNMAP_WAIT_MS);
            c.rx.wait_unmapped(Frontend::UNMAP_WAIT_MS);
        }
        drop(conn);
        self.wake.wake_all();
        let _ = xenstore::write(&format!("data/net/{}/state", self.id), Phase::Closed.name());
        log::info!("netfront {}: detached", self.id);
    }

    fn fail(&self, why: &FrontendError) {
        self.inner.lock().fail(self, format!("{why}"));
    }

    fn suspend(&self) {
        let mut g = self.inner.lock();
        g.phase.suspend();
        let n = g.conn.as_ref().map_or(0, Connection::in_flight);
        log::info!("netfront {}: suspended, {} frame(s) in flight", self.id, n);
    }

    fn resume(&self) {
        let mut g = self.inner.lock();
        g.phase.resume();
        self.resumes.fetch_add(1, Ordering::AcqRel);
        drop(g);
        self.wake.wake_all();
    }

    fn cancel(&self) {
        self.inner.lock().phase.cancel();
        self.wake.wake_all();
    }

    fn figures(&self) -> (Phase, Vec<(&'static str, u64)>) {
        let f = &self.figures;
        let figures = [
            ("rx_packets", &f.rx_packets),
            ("rx_bytes", &f.rx_bytes),
            ("tx_packets", &f.tx_packets),
            ("tx_bytes", &f.tx_bytes),
            ("rx_errors", &f.rx_errors),
            ("tx_errors", &f.tx_errors),
            ("tx_dropped", &f.tx_dropped),
            ("tx_lost_at_resume", &f.tx_lost_at_resume),
            ("garps", &f.garps),
            ("ping_sent", &f.ping_sent),
            ("ping_replies", &f.ping_replies),
            ("ping_lost", &f.ping_lost),
            ("ping_skipped", &f.ping_skipped),
            ("tcp_echo_bytes", &f.tcp_echo_bytes),
            ("udp_echo_packets", &f.udp_echo_packets),
        ];
        (self.phase(), figures.iter().map(|(name, c)| (*name, c.load(Ordering::Relaxed))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn macs_parse_and_garbage_does_not() {
        assert_eq!(parse_mac("00:16:3e:5a:0b:01\n"), Some([0, 0x16, 0x3e, 0x5a, 0x0b, 0x01]));
        for bad in [
            "",
            "00:16:3e:5a:0b",
            "00:16:3e:5a:0b:01:02",
            "0:16:3e:5a:0b:01",
            "zz:16:3e:5a:0b:01",
            "banana",
            // Found by fuzz/text_values: a sign is no hex digit.
            "68:68:46:68:+B:76",
            "-1:16:3e:5a:0b:01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
