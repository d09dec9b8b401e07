//! netfront: the PV network frontend (`io/netif.h`).
//!
//! A [`Vif`] is one `device/vif/<n>`: a transmit and a receive ring on one
//! event channel, receive buffers posted (granted pages the backend copies
//! frames into), and frames to send copied into granted pages of a pool.
//! The IP stack (`stack`, smoltcp) takes received frames and hands frames
//! to send; the driver knows nothing of IP.
//!
//! Across a suspend: `cancel` carries on with the same rings; after a
//! resume in a new domain the service task (`xenbus::lifecycle`) connects
//! from scratch with new rings and buffers. Frames in flight then are
//! lost, as on any network, and counted. The backend is not trusted: an
//! index beyond the ring, an id never posted, a length past the page or a
//! status out of range fail this vif, never the guest.

mod service;
pub use service::parse_mac;
pub mod stack;

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::events::Channel;
use kernel::sched::WaitQueue;
use kernel::shared_page::{GrantedPage, SharedRing};
use spin::Mutex;
use xen::netif::{Received, RxRequest, RxResponse, TxRequest, TxResponse, RSP_DROPPED, RSP_ERROR, RSP_NULL, RSP_OKAY};

pub use crate::xenbus::Phase;
pub use service::{spawn, vifs};

/// Receive buffers posted (of the ring's 256 slots).
const RX_BUFFERS: usize = 128;
/// Frames received and not yet taken by the stack; more are dropped.
const RX_QUEUE: usize = 256;
/// Transmit pages kept granted for the next frames.
const TX_POOL: usize = 64;
/// An Ethernet frame without its FCS.
pub const MAX_FRAME: usize = 1514;

/// A vif's figures, published under `data/net/<n>/`.
#[derive(Default)]
pub struct Figures {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Frames the backend failed or dropped, or the frontend could not take.
    pub rx_errors: AtomicU64,
    pub tx_errors: AtomicU64,
    /// Frames not sent: no connection (suspended, reconnecting) or no slot.
    pub tx_dropped: AtomicU64,
    /// Frames in flight on a ring a new domain left behind.
    pub tx_lost_at_resume: AtomicU64,
    pub garps: AtomicU64,
    pub ping_sent: AtomicU64,
    pub ping_replies: AtomicU64,
    /// Pings sent before one that was answered, never answered themselves.
    pub ping_lost: AtomicU64,
    /// Ping ticks skipped while the vif was not connected.
    pub ping_skipped: AtomicU64,
    pub tcp_echo_bytes: AtomicU64,
    pub udp_echo_packets: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A live connection to the backend.
struct Connection {
    tx: SharedRing<TxRequest, TxResponse>,
    rx: SharedRing<RxRequest, RxResponse>,
    channel: Channel,
    backend_id: u16,
    /// Receive buffers by id; all posted, each reposted once read.
    rx_bufs: Vec<GrantedPage>,
    /// Transmit pages in flight, by id.
    tx_bufs: Vec<Option<GrantedPage>>,
}

impl Connection {
    /// Rings and posted receive buffers for backend `backend`.
    fn new(backend: u16, channel: Channel) -> Result<Self, kernel::shared_page::SharedPageError> {
        let mut c = Connection {
            tx: SharedRing::new(backend)?,
            rx: SharedRing::new(backend)?,
            channel,
            backend_id: backend,
            rx_bufs: Vec::with_capacity(RX_BUFFERS),
            tx_bufs: (0..xen::netif::TxRing::SIZE).map(|_| None).collect(),
        };
        for id in 0..RX_BUFFERS {
            let page = GrantedPage::new(backend, false)?;
            c.rx.ring().write_request(RxRequest { id: id as u16, _pad: 0, gref: page.gref() });
            c.rx_bufs.push(page);
        }
        c.rx.ring().push_requests();
        Ok(c)
    }

    fn in_flight(&self) -> usize {
        self.tx_bufs.iter().filter(|b| b.is_some()).count()
    }
}

struct Inner {
    phase: Phase,
    mac: [u8; 6],
    conn: Option<Connection>,
    received: VecDeque<Vec<u8>>,
    pool: Vec<GrantedPage>,
}

/// One virtual network interface.
pub struct Vif {
    pub id: u32,
    /// Taken by tasks only, never while blocking (the upcall only wakes).
    inner: Mutex<Inner>,
    /// The stack waits here; the event channel's handler wakes it.
    wake: Arc<WaitQueue>,
    resumes: AtomicU64,
    pub figures: Figures,
}

impl Vif {
    fn new(id: u32) -> Self {
        Vif {
            id,
            inner: Mutex::new(Inner {
                phase: Phase::Connecting,
                mac: [0; 6],
                conn: None,
                received: VecDeque::new(),
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

    /// The MAC address the toolstack gave (zero until connected).
    pub fn mac(&self) -> [u8; 6] {
        self.inner.lock().mac
    }

    /// Resumes in a new domain so far (a gratuitous ARP is due after each).
    pub fn resumes(&self) -> u64 {
        self.resumes.load(Ordering::Acquire)
    }

    /// Takes what the backend produced; true if frames wait for the stack.
    pub fn poll(&self) -> bool {
        let mut g = self.inner.lock();
        g.poll(self);
        !g.received.is_empty()
    }

    /// The oldest frame received, if any.
    pub fn take_received(&self) -> Option<Vec<u8>> {
        self.inner.lock().received.pop_front()
    }

    /// Whether a frame could be sent now.
    pub fn can_transmit(&self) -> bool {
        let g = self.inner.lock();
        g.phase == Phase::Connected && g.conn.as_ref().is_some_and(|c| c.tx_bufs.iter().any(Option::is_none))
    }

    /// Sends one Ethernet frame; false (counted) if it could not go.
    pub fn transmit(&self, frame: &[u8]) -> bool {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            add(&self.figures.tx_errors, 1);
            return false;
        }
        let pooled = self.inner.lock().pool.pop();
        let backend = self.inner.lock().conn.as_ref().map(|c| c.backend_id);
        let page = match (pooled, backend) {
            (Some(p), _) => Some(p),
            (None, Some(b)) => GrantedPage::new(b, true).ok(),
            (None, None) => None,
        };
        let Some(mut page) = page else {
            add(&self.figures.tx_dropped, 1);
            return false;
        };
        page.copy_in(0, frame);
        let mut g = self.inner.lock();
        let sent = g.send(page, frame.len() as u16);
        drop(g);
        if sent {
            add(&self.figures.tx_packets, 1);
            add(&self.figures.tx_bytes, frame.len() as u64);
        } else {
            add(&self.figures.tx_dropped, 1);
        }
        sent
    }

    /// Waits until frames arrive, the vif is connected again after a
    /// resume the caller has not seen yet, or `deadline` (monotonic ns).
    /// (Not merely until a resume: the reconnect needs the vCPU.)
    pub fn wait(&self, deadline: u64, resumes_seen: u64) {
        self.wake.wait_until_deadline(Some(deadline), &mut || {
            let reconnected = self.resumes() != resumes_seen && self.phase() == Phase::Connected;
            (self.poll() || reconnected).then_some(())
        });
    }
}

impl Inner {
    /// Puts a frame in `page` on the transmit ring; keeps the page in the
    /// pool if it cannot.
    fn send(&mut self, mut page: GrantedPage, len: u16) -> bool {
        let connected = self.phase == Phase::Connected;
        let Some(conn) = self.conn.as_mut().filter(|_| connected) else { return self.recycle(page) };
        if page.domid() != conn.backend_id && page.regrant(conn.backend_id).is_err() {
            return false;
        }
        let Some(id) = conn.tx_bufs.iter().position(Option::is_none) else { return self.recycle(page) };
        if !conn.tx.ring().write_request(TxRequest { gref: page.gref(), offset: 0, flags: 0, id: id as u16, size: len })
        {
            return self.recycle(page);
        }
        conn.tx_bufs[id] = Some(page);
        if conn.tx.ring().push_requests() {
            conn.channel.notify();
        }
        true
    }

    fn recycle(&mut self, page: GrantedPage) -> bool {
        if self.pool.len() < TX_POOL {
            self.pool.push(page);
        }
        false
    }

    /// Takes transmit completions and received frames, reposting buffers.
    fn poll(&mut self, vif: &Vif) {
        if !matches!(self.phase, Phase::Connected | Phase::Closing) {
            return;
        }
        if let Err(why) = self.poll_tx(vif).and_then(|()| self.poll_rx(vif)) {
            self.fail(vif, why);
        }
    }

    fn poll_tx(&mut self, vif: &Vif) -> Result<(), alloc::string::String> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Ok(()) };
            let rsp = match conn.tx.ring().take_response() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(f) => return Err(alloc::format!("transmit ring fault {:?}", f)),
            };
            if rsp.status == RSP_NULL {
                continue;
            }
            let page = conn.tx_bufs.get_mut(rsp.id as usize).and_then(Option::take);
            let Some(page) = page else {
                return Err(alloc::format!("a transmit response for id {}, never sent", rsp.id));
            };
            self.recycle(page);
            match rsp.status {
                RSP_OKAY => {}
                RSP_ERROR | RSP_DROPPED => add(&vif.figures.tx_errors, 1),
                s => return Err(alloc::format!("transmit status {} out of range", s)),
            }
        }
    }

    fn poll_rx(&mut self, vif: &Vif) -> Result<(), alloc::string::String> {
        let mut reposted = false;
        let outcome = loop {
            let Some(conn) = self.conn.as_mut() else { break Ok(()) };
            let rsp = match conn.rx.ring().take_response() {
                Ok(Some(r)) => r,
                Ok(None) => break Ok(()),
                Err(f) => break Err(alloc::format!("receive ring fault {:?}", f)),
            };
            let Some(page) = conn.rx_bufs.get(rsp.id as usize) else {
                break Err(alloc::format!("a receive response for id {}, never posted", rsp.id));
            };
            if rsp.flags & xen::netif::RXF_EXTRA_INFO != 0 {
                break Err(alloc::string::String::from("extra info on a receive response (never asked for)"));
            }
            match rsp.received() {
                Ok(Received::Data { offset, len, more: false }) if self.received.len() < RX_QUEUE => {
                    let mut frame = alloc::vec![0u8; len as usize];
                    page.copy_out(offset as usize, &mut frame);
                    add(&vif.figures.rx_packets, 1);
                    add(&vif.figures.rx_bytes, len as u64);
                    self.received.push_back(frame);
                }
                // A frame in several buffers (never offered) or no room.
                Ok(Received::Data { .. }) | Ok(Received::Failed(_)) => add(&vif.figures.rx_errors, 1),
                Err(bad) => break Err(alloc::format!("receive response {:?}", bad)),
            }
            let gref = page.gref();
            conn.rx.ring().write_request(RxRequest { id: rsp.id, _pad: 0, gref });
            reposted = true;
        };
        if let Some(conn) = self.conn.as_mut().filter(|_| reposted) {
            if conn.rx.ring().push_requests() {
                conn.channel.notify();
            }
        }
        outcome
    }

    /// Marks the vif failed; the connection is dropped.
    fn fail(&mut self, vif: &Vif, why: alloc::string::String) {
        if self.phase == Phase::Failed {
            return;
        }
        self.phase = Phase::Failed;
        self.conn = None;
        log::error!("netfront {}: {}: vif failed", vif.id, why);
        vif.wake.wake_all();
    }
}
