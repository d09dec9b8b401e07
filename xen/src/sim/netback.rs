//! A simulated network backend: Linux's xen-netback with the xl toolstack,
//! as the guest sees them, with the other end of the wire left to tests.
//!
//! - [`Sim::attach_vif`] makes the frontend and backend directories as
//!   libxl and netback do (backend in `InitWait`, features published) and
//!   fires the guest's watches.
//! - Whenever the guest has written the store, every backend looks at its
//!   frontend's `state` ([`backend_step`]): it connects once the frontend
//!   is `Connected` (as Linux's netback, which ignores `Initialised`:
//!   Linux's netfront publishes its rings and goes straight to
//!   `Connected`), checking `tx-ring-ref`, `rx-ring-ref`,
//!   `event-channel`, `request-rx-copy` and `feature-rx-notify` (both must
//!   be set: netback copies into posted buffers and relies on being told
//!   of them) and a single queue; anything wrong and it goes `Closed`.
//! - A send on the event channel marks the vif; both rings are served
//!   when dom0 runs ([`Sim::run_backends`]: the guest blocks or yields)
//!   ([`io`]): frames the guest sent are recorded for the test
//!   ([`Sim::vif_take_sent`]), frames the test sends ([`Sim::vif_deliver`])
//!   go into posted buffers at once or wait for the next ones (while
//!   the vif is not connected they are dropped: netback's carrier is off).
//! - [`Sim::vif_hold`] stops the backend serving (frames wait on both
//!   sides); in a new domain every connection is dropped, frames waiting
//!   for the guest with it (netback keeps nothing across a migration),
//!   and the device starts over as libxl creates it again; a cancelled
//!   suspend changes nothing.
//! - [`Sim::detach_vif`] closes the device as `xl network-detach` does.
//! - [`Sim::vif_fault`] makes the backend misbehave.

mod io;
#[cfg(test)]
mod io_tests;
#[cfg(test)]
mod tests;

use super::backend::{
    granted_page, parse_u32, BackRing, Backends, DevicePaths, GrantError, GuestMemory, PortError, GTF_READING,
    GTF_WRITING,
};
use super::device::{self, BusFault, Class, Device, Phase, Record, Xenbus};
use super::Sim;
use crate::xenbus::XenbusState;
use crate::xenstore::sim::SimXenstored;
use io::{NetIo, RX_ENTRY, TX_ENTRY};
use std::string::String;
use std::vec::Vec;

pub use io::{Fatal, RX_QUEUE_MAX, SENT_MAX};

/// One of a vif's two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetRing {
    Tx = 0,
    Rx = 1,
}

/// A way for the backend to misbehave, armed by [`Sim::vif_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    /// One-shot: the next receive response names a buffer never posted
    /// (its id ^ 0xdead).
    RxIdNeverPosted,
    /// One-shot: the next receive response with data puts it past the
    /// page (offset 4097 - len).
    RxLenPastPage,
    /// One-shot: the next receive response has status -7.
    RxBadStatus,
    /// One-shot: the next transmit response (not `RSP_NULL`) carries an id
    /// never sent (its id ^ 0xdead).
    TxIdNeverSent,
    /// One-shot: the next batch of responses on that ring publishes
    /// `rsp_prod` 1000 past the responses it wrote, and so does every
    /// later batch on that ring until the next connection (a later batch
    /// would otherwise mend the index before the frontend looked).
    RspProdBeyondRing(NetRing),
    /// Sticky: the backend stays in `InitWait` whatever the frontend does.
    NeverConnect,
    /// One-shot: the backend goes `Closed` (unmapping the rings) while
    /// connected: at once if it is, else as soon as it connects.
    GoClosed,
    /// One-shot, at once: "banana" in the backend's `state` node; the
    /// backend goes on as before, and its next state write replaces it.
    StateGarbage,
}

/// What a vif's backend has done, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetFigures {
    /// Transmit slots consumed (data and extra info), good or bad.
    pub tx_slots: u64,
    /// Frames the guest sent (answered `OKAY`), and their bytes.
    pub frames_sent: u64,
    pub bytes_sent: u64,
    /// Transmitted packets answered `ERROR` (bad grant, size, offset...).
    pub tx_errors: u64,
    /// Frames copied into the guest's buffers, and their bytes.
    pub frames_delivered: u64,
    pub bytes_delivered: u64,
    /// Frames answered `ERROR` in a posted buffer (its grant was bad).
    pub rx_errors: u64,
    /// Frames for the guest dropped on arrival: no connection (the vif's
    /// carrier is off), the vif halted, the queue full, or larger than a
    /// page for a frontend without `feature-sg`.
    pub rx_dropped: u64,
    /// Frames waiting for the guest, dropped with the old domain.
    pub dropped_with_old_domain: u64,
    /// Frames waiting for the guest, dropped as the connection closed.
    pub dropped_on_disconnect: u64,
    /// Frames sent by the guest that no test took before the record of
    /// [`SENT_MAX`] frames overflowed.
    pub sent_overflow: u64,
    /// Fatal frontend errors (a ring overflowed, a chain cut short): the
    /// vif is then not served until the next connection.
    pub fatal_errors: u64,
    pub connects: u64,
    /// Connections refused (bad ring refs, event channel, features).
    pub failed_connects: u64,
    pub disconnects: u64,
    /// Notifications sent to the guest.
    pub notifies: u64,
    /// Faults of [`NetFault`] that took effect.
    pub faults_applied: u64,
}

/// The mapped rings and bound event channel of a connected backend.
#[derive(Debug)]
struct Connection {
    tx_gref: u32,
    rx_gref: u32,
    tx_frame: u64,
    rx_frame: u64,
    /// The guest's port, and dom0's end of it.
    port: u32,
    backend_port: u32,
    tx: BackRing,
    rx: BackRing,
}

/// Why a backend refused what the frontend published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ConnectError {
    /// A number missing or malformed.
    Node(&'static str, Option<String>),
    /// `request-rx-copy` or `feature-rx-notify` not set.
    Required(&'static str),
    /// `multi-queue-num-queues` other than 1.
    Queues(u32),
    Ring(&'static str, GrantError),
    Port(PortError),
}

/// A vif and its backend.
#[derive(Debug)]
pub struct SimVif {
    devid: u32,
    mac: [u8; 6],
    bus: Xenbus,
    conn: Option<Connection>,
    io: NetIo,
}

/// The vifs among the backends.
pub(super) const VIFS: Class<SimVif> = |b: &mut Backends| &mut b.vifs;

fn lossy(raw: Option<&[u8]>) -> Option<String> {
    raw.map(|r| String::from_utf8_lossy(r).into_owned())
}

/// `xx:xx:xx:xx:xx:xx`, as libxl writes it.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

impl SimVif {
    pub fn devid(&self) -> u32 {
        self.devid
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn figures(&self) -> &NetFigures {
        &self.io.figures
    }

    /// What the backend found worth saying (refused packets and
    /// connections, odd frontend states, fatal errors), oldest first.
    pub fn notes(&self) -> &[String] {
        &self.io.notes
    }

    /// The backend's xenbus state (as a number: `.as_number()`).
    pub fn state(&self) -> XenbusState {
        self.bus.state
    }

    /// Whether both rings are mapped and the event channel bound.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The rings' grant refs (tx, rx) and the guest's port, while connected.
    pub fn connection(&self) -> Option<(u32, u32, u32)> {
        self.conn.as_ref().map(|c| (c.tx_gref, c.rx_gref, c.port))
    }

    /// Frames waiting for a posted buffer (or for the hold to end).
    pub fn queued(&self) -> usize {
        self.io.rx_queue.len()
    }

    /// Frames the guest sent that no test has taken yet.
    pub fn unread_sent(&self) -> usize {
        self.io.sent.len()
    }

    /// Whether the backend is held ([`Sim::vif_hold`]).
    pub fn holding(&self) -> bool {
        self.io.hold
    }

    /// Why the connection is no longer served, after a fatal error.
    pub fn halted(&self) -> Option<Fatal> {
        self.io.halted
    }

    /// False once a detach is over (the directories are gone).
    pub fn attached(&self) -> bool {
        self.bus.phase != Phase::Detached
    }

    /// Serves both rings if connected; true if the guest is to be notified.
    fn serve(&mut self, mem: &dyn GuestMemory) -> bool {
        let Some(c) = self.conn.as_mut() else { return false };
        let (Some(tx_page), Some(rx_page)) = (mem.page(c.tx_frame), mem.page(c.rx_frame)) else {
            let frames = (c.tx_frame, c.rx_frame);
            self.io.note(format!("ring frames {frames:#x?} are no longer the domain's: not served"));
            return false;
        };
        // SAFETY: the rings' frames, live while the simulator's lock is
        // held (the `GuestMemory` contract); the frontend touches them only
        // through raw pointers.
        let (mut tx, mut rx) = unsafe { (c.tx.on(tx_page, TX_ENTRY), c.rx.on(rx_page, RX_ENTRY)) };
        self.io.serve(&mut tx, &mut rx, mem)
    }
}

impl Device for SimVif {
    type ConnectError = ConnectError;

    fn bus(&mut self) -> &mut Xenbus {
        &mut self.bus
    }

    /// Linux's netback ignores `Initialised`.
    fn waits_at(&self, front: XenbusState) -> Option<&'static str> {
        (front == XenbusState::Initialised).then_some("frontend Initialised: netback connects once it is Connected")
    }

    /// Writes both directories as libxl and netback do: the backend's
    /// first, each one's `state` last.
    fn write_nodes(&self, xs: &mut SimXenstored) {
        let (mac, handle) = (mac_text(self.mac), self.devid.to_string());
        let back = [
            ("frontend", self.bus.paths.front.clone()),
            ("frontend-id", xs.domid().to_string()),
            ("online", "1".into()),
            ("type", "vif".into()),
            ("handle", handle.clone()),
            ("mac", mac.clone()),
            ("feature-sg", "1".into()),
            ("feature-gso-tcpv4", "0".into()),
            ("feature-gso-tcpv6", "0".into()),
            ("feature-rx-copy", "1".into()),
            ("feature-rx-flip", "0".into()),
            ("multi-queue-max-queues", "1".into()),
            ("state", XenbusState::InitWait.as_number().to_string()),
        ];
        for (name, value) in back {
            xs.toolstack_write(&self.bus.paths.back_node(name), value.as_bytes());
        }
        let front = [
            ("backend", self.bus.paths.back.clone()),
            ("backend-id", "0".into()),
            ("handle", handle),
            ("mac", mac),
            ("state", XenbusState::Initialising.as_number().to_string()),
        ];
        for (name, value) in front {
            xs.toolstack_write(&self.bus.paths.front_node(name), value.as_bytes());
        }
    }

    /// Reads and checks everything the frontend published, then binds the
    /// event channel and maps both rings (netback's `connect`).
    fn connect(&mut self, sim: &mut Sim) -> Result<(), ConnectError> {
        let node = |name: &str| sim.xenstore.value(&self.bus.paths.front_node(name)).map(<[u8]>::to_vec);
        let number = |name: &'static str| {
            let raw = node(name);
            raw.as_deref().and_then(parse_u32).ok_or_else(|| ConnectError::Node(name, lossy(raw.as_deref())))
        };
        // Absent: one queue, on the flat layout used below.
        if node("multi-queue-num-queues").is_some() {
            match number("multi-queue-num-queues")? {
                1 => {}
                n => return Err(ConnectError::Queues(n)),
            }
        }
        let tx_gref = number("tx-ring-ref")?;
        let rx_gref = number("rx-ring-ref")?;
        let port = number("event-channel")?;
        // Absent or 0: the frontend does not take what netback offers.
        let flag = |name: &'static str| node(name).as_deref().and_then(parse_u32).is_some_and(|v| v != 0);
        for required in ["request-rx-copy", "feature-rx-notify"] {
            if !flag(required) {
                return Err(ConnectError::Required(required));
            }
        }
        let front_sg = flag("feature-sg");
        let tx_page = granted_page(&*sim, tx_gref, true).map_err(|e| ConnectError::Ring("tx", e))?;
        let rx_page = granted_page(&*sim, rx_gref, true).map_err(|e| ConnectError::Ring("rx", e))?;
        let frame = |gref| sim.grant(gref).map_or(0, |e| e.frame as u64);
        let (tx_frame, rx_frame) = (frame(tx_gref), frame(rx_gref));
        let backend_port = sim.backend_bind(port).map_err(ConnectError::Port)?;
        for gref in [tx_gref, rx_gref] {
            sim.grant_set_flags(gref, GTF_READING | GTF_WRITING, true);
        }
        // SAFETY: `granted_page` names live pages of the domain; only their
        // header words are read.
        let (tx, rx) = unsafe { (BackRing::attach(tx_page), BackRing::attach(rx_page)) };
        self.conn = Some(Connection { tx_gref, rx_gref, tx_frame, rx_frame, port, backend_port, tx, rx });
        self.io.halted = None;
        self.io.skew = [0; 2];
        self.io.front_sg = front_sg;
        self.io.figures.connects += 1;
        Ok(())
    }

    /// Unmaps the rings and closes dom0's port (frames waiting for the
    /// guest are dropped).
    fn disconnect(&mut self, sim: &mut Sim) {
        if let Some(c) = self.conn.take() {
            for gref in [c.tx_gref, c.rx_gref] {
                sim.grant_set_flags(gref, GTF_READING | GTF_WRITING, false);
            }
            sim.backend_unbind(c.port, c.backend_port);
            self.io.figures.dropped_on_disconnect += self.io.rx_queue.len() as u64;
            self.io.rx_queue.clear();
            self.io.figures.disconnects += 1;
        }
    }

    /// Frames waiting for the guest go with the old domain; frames the
    /// guest sent before stay for the test to take.
    fn drop_for_new_domain(&mut self) {
        self.io.figures.dropped_with_old_domain += self.io.rx_queue.len() as u64;
        self.io.rx_queue.clear();
        self.conn = None;
        self.io.halted = None;
        self.io.skew = [0; 2];
    }

    fn ports(&self) -> Option<(u32, u32)> {
        self.conn.as_ref().map(|c| (c.port, c.backend_port))
    }

    fn record(&mut self) -> Record<'_> {
        let (notes, f) = (&mut self.io.notes, &mut self.io.figures);
        Record { notes, faults_applied: &mut f.faults_applied, failed_connects: &mut f.failed_connects }
    }
}

impl Sim {
    /// Attaches vif `devid` with address `mac`, as `xl network-attach`
    /// does. Panics if `devid` is attached.
    pub fn attach_vif(&mut self, devid: u32, mac: [u8; 6]) {
        assert!(!self.vif(devid).is_some_and(SimVif::attached), "sim: vif {devid} is attached already");
        let vif = SimVif {
            devid,
            mac,
            bus: Xenbus::new(DevicePaths::new("vif", self.xenstore.domid(), devid)),
            conn: None,
            io: NetIo::default(),
        };
        self.attach_device(VIFS, devid, vif);
    }

    /// Starts detaching `devid` as `xl network-detach` does: the backend
    /// goes `Closing`; once the frontend is `Closed` the backend goes
    /// `Closed` and both directories are removed. The vif stays readable
    /// through [`Sim::vif`] until attached again. False if `devid` is not
    /// attached (or already detaching).
    pub fn detach_vif(&mut self, devid: u32) -> bool {
        self.detach_device(VIFS, devid)
    }

    /// Vif `devid`, attached or detached.
    pub fn vif(&self, devid: u32) -> Option<&SimVif> {
        self.backends.vifs.get(&devid)
    }

    /// The frames the guest sent on `devid` since last asked, oldest first.
    /// Like every `vif_*` call, panics if `devid` was never attached.
    pub fn vif_take_sent(&mut self, devid: u32) -> Vec<Vec<u8>> {
        self.vif_mut(devid).io.sent.drain(..).collect()
    }

    /// Sends `frame` (an Ethernet frame, without FCS) to the guest on
    /// `devid`: into the next posted buffer, at once if there is one and
    /// the backend is not held, else it waits in a queue of
    /// [`RX_QUEUE_MAX`] frames. Dropped (counted in `rx_dropped`) while
    /// the vif is not connected, as netback's carrier is off then. Panics
    /// on an empty frame or one over 65535 bytes.
    pub fn vif_deliver(&mut self, devid: u32, frame: &[u8]) {
        assert!((1..=u16::MAX as usize).contains(&frame.len()), "sim: a frame of {} bytes", frame.len());
        let vif = self.vif_mut(devid);
        if vif.conn.is_none() || vif.io.halted.is_some() {
            vif.io.figures.rx_dropped += 1;
            return;
        }
        if vif.io.queue(frame) {
            self.serve_vif(devid);
        }
    }

    /// While `hold`, the backend serves neither ring: frames the guest
    /// sends stay on its ring, frames for it wait in the queue. Ending the
    /// hold serves both at once.
    pub fn vif_hold(&mut self, devid: u32, hold: bool) {
        self.vif_mut(devid).io.hold = hold;
        if !hold {
            self.serve_vif(devid);
        }
    }

    /// Arms `fault` (see each [`NetFault`] for when it applies).
    pub fn vif_fault(&mut self, devid: u32, fault: NetFault) {
        let vif = self.backends.vifs.get_mut(&devid).unwrap_or_else(|| panic!("sim: no vif {devid}"));
        let xs = &mut self.xenstore;
        match fault {
            NetFault::NeverConnect => device::arm(vif, xs, BusFault::NeverConnect),
            NetFault::GoClosed => device::arm(vif, xs, BusFault::GoClosed),
            NetFault::StateGarbage => device::arm(vif, xs, BusFault::StateGarbage),
            NetFault::RxIdNeverPosted
            | NetFault::RxLenPastPage
            | NetFault::RxBadStatus
            | NetFault::TxIdNeverSent
            | NetFault::RspProdBeyondRing(_) => vif.io.faults.push(fault),
        }
        // GoClosed applies as the backends step.
        self.serve_store();
    }

    fn vif_mut(&mut self, devid: u32) -> &mut SimVif {
        self.backends.vifs.get_mut(&devid).unwrap_or_else(|| panic!("sim: no vif {devid}"))
    }

    pub(super) fn serve_vif(&mut self, devid: u32) {
        self.serve_device(VIFS, devid, |vif, sim| {
            let notify = vif.serve(sim);
            vif.io.figures.notifies += notify as u64;
            notify
        });
    }
}
