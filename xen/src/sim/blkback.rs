//! A simulated block backend: Linux's xen-blkback with the xl toolstack,
//! as the guest sees them.
//!
//! - [`Sim::attach_disk`] makes the frontend and backend directories as
//!   libxl does (backend in `InitWait`, features published) and fires the
//!   guest's watches. A disk is a zero-filled image in host memory.
//! - Whenever the guest has written the store, every backend looks at its
//!   frontend's `state` ([`backend_step`]): it connects once the frontend
//!   is `Initialised` (checking `ring-ref`, `event-channel` and `protocol`;
//!   anything wrong and it goes `Closed`), closes when the frontend closes,
//!   and goes back to `InitWait` when a closed frontend starts over.
//! - A send on the event channel marks the disk; its ring is served when
//!   dom0 runs ([`Sim::run_backends`]: the guest blocks or yields) ([`io`]).
//! - [`Sim::disk_hold`] keeps requests in flight; in a new domain every
//!   connection is dropped, held requests with it, and the device starts
//!   over as libxl creates it again; a cancelled suspend changes nothing.
//! - [`Sim::detach_disk`] closes the device as `xl block-detach` does.
//! - [`Sim::disk_fault`] makes the backend misbehave.

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
use crate::blkif::SECTOR_SIZE;
use crate::xenbus::XenbusState;
use crate::xenstore::sim::SimXenstored;
use io::{DiskIo, ENTRY};
use std::string::String;
use std::vec::Vec;

/// What a disk's backend offers (the `feature-*` nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFeatures {
    /// `feature-flush-cache`: 1, else 0 and flushes answer -2.
    pub flush: bool,
    /// `feature-max-indirect-segments`, written if not 0; indirect
    /// requests answer -2 without it.
    pub max_indirect_segments: u32,
    /// `feature-persistent`: with the frontend's consent, every page a
    /// request names stays mapped (writable, as Linux maps it) until the
    /// connection ends, so the frontend cannot end its grant meanwhile.
    pub persistent: bool,
}

impl Default for DiskFeatures {
    fn default() -> Self {
        DiskFeatures { flush: true, max_indirect_segments: 0, persistent: false }
    }
}

/// A way for the backend to misbehave, armed by [`Sim::disk_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkFault {
    /// The next batch of responses publishes `rsp_prod` 1000 past the
    /// responses it wrote, and so does every later batch until the next
    /// connection (a later batch would otherwise mend the index before
    /// the frontend looked).
    RspProdBeyondRing,
    /// One-shot: the next response carries an id the frontend never
    /// issued (its request's id ^ 0xdead_beef_dead_beef).
    UnknownId,
    /// One-shot: the next response has status 7.
    BadStatus,
    /// One-shot: the next request is answered twice (two slots).
    DuplicateResponse,
    /// Sticky: the backend stays in `InitWait` whatever the frontend does.
    NeverConnect,
    /// One-shot: the backend goes `Closed` (unmapping the ring) while
    /// connected: at once if it is, else as soon as it connects.
    GoClosed,
    /// One-shot, at once: "banana" in the backend's `state` node; the
    /// backend goes on as before, and its next state write replaces it.
    StateGarbage,
}

/// What a disk's backend has done, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskFigures {
    /// Requests consumed from the ring, good or bad.
    pub requests: u64,
    pub sectors_read: u64,
    pub sectors_written: u64,
    pub flushes: u64,
    /// Requests answered -1 (bad requests).
    pub errors: u64,
    /// Requests answered -2 (operations not offered).
    pub not_supported: u64,
    /// Held requests discarded when the guest resumed in a new domain.
    pub dropped_with_old_domain: u64,
    /// Held requests discarded when the connection closed.
    pub dropped_on_disconnect: u64,
    /// Times the frontend's `req_prod` overflowed the ring (the ring is
    /// then not served until the next connection).
    pub ring_overflows: u64,
    pub connects: u64,
    /// Connections refused (bad ring-ref, event channel or protocol).
    pub failed_connects: u64,
    pub disconnects: u64,
    /// Notifications of responses sent to the guest.
    pub notifies: u64,
    /// Faults of [`BlkFault`] that took effect.
    pub faults_applied: u64,
}

/// One request as the backend answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoRecord {
    /// `blkif::OP_*`; an indirect request's own operation (read, write).
    pub op: u8,
    pub sector: u64,
    /// Sectors moved (0 for a plain flush or a refused request).
    pub sectors: u64,
    /// The status answered (0, -1, -2; a `BadStatus` fault not shown).
    pub status: i16,
}

/// The mapped ring and bound event channel of a connected backend.
#[derive(Debug)]
struct Connection {
    ring_gref: u32,
    ring_frame: u64,
    /// The guest's port, and dom0's end of it.
    port: u32,
    backend_port: u32,
    ring: BackRing,
}

/// Why a backend refused what the frontend published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ConnectError {
    RingRef(Option<String>),
    EventChannel(Option<String>),
    Protocol(String),
    Ring(GrantError),
    Port(PortError),
}

/// The only protocol accepted besides none (the native one).
const PROTOCOL: &[u8] = b"x86_64-abi";

/// A disk and its backend.
#[derive(Debug)]
pub struct SimDisk {
    vdev: u32,
    bus: Xenbus,
    conn: Option<Connection>,
    io: DiskIo,
}

/// The disks among the backends.
pub(super) const DISKS: Class<SimDisk> = |b: &mut Backends| &mut b.disks;

fn lossy(raw: Option<&[u8]>) -> Option<String> {
    raw.map(|r| String::from_utf8_lossy(r).into_owned())
}

impl SimDisk {
    pub fn vdev(&self) -> u32 {
        self.vdev
    }

    pub fn sectors(&self) -> u64 {
        self.io.sectors()
    }

    /// Sector `n`'s 512 bytes; panics past the end of the disk.
    pub fn sector(&self, n: u64) -> &[u8] {
        let at = usize::try_from(n).ok().filter(|&n| (n as u64) < self.sectors()).expect("sim: sector past the disk");
        &self.io.data[at * SECTOR_SIZE..(at + 1) * SECTOR_SIZE]
    }

    /// The whole image.
    pub fn contents(&self) -> &[u8] {
        &self.io.data
    }

    pub fn features(&self) -> DiskFeatures {
        self.io.features
    }

    pub fn figures(&self) -> &DiskFigures {
        &self.io.figures
    }

    /// Requests answered, oldest first (the last 65536).
    pub fn log(&self) -> Vec<IoRecord> {
        self.io.log.iter().copied().collect()
    }

    /// What the backend found worth saying (refused requests and
    /// connections, odd frontend states, overflows), oldest first.
    pub fn notes(&self) -> &[String] {
        &self.io.notes
    }

    /// The backend's xenbus state (as a number: `.as_number()`).
    pub fn state(&self) -> XenbusState {
        self.bus.state
    }

    /// Whether the ring is mapped and the event channel bound.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The ring's grant ref and the guest's port, while connected.
    pub fn connection(&self) -> Option<(u32, u32)> {
        self.conn.as_ref().map(|c| (c.ring_gref, c.port))
    }

    /// Requests in flight (held, not answered).
    pub fn held(&self) -> usize {
        self.io.held.len()
    }

    /// Whether new requests are held.
    pub fn holding(&self) -> bool {
        self.io.hold
    }

    /// False once a detach is over (the directories are gone).
    pub fn attached(&self) -> bool {
        self.bus.phase != Phase::Detached
    }

    /// Whether the ring went unserved after the frontend overflowed it.
    pub fn halted(&self) -> bool {
        self.io.halted.is_some()
    }

    /// Serves the ring if connected; true if the guest is to be notified.
    fn serve(&mut self, mem: &dyn GuestMemory, release: bool) -> bool {
        let Some(c) = self.conn.as_mut() else { return false };
        let Some(page) = mem.page(c.ring_frame) else {
            let frame = c.ring_frame;
            self.io.note(format!("ring frame {frame:#x} is no longer the domain's: not served"));
            return false;
        };
        // SAFETY: `page` is the ring's frame, live while the simulator's
        // lock is held (the `GuestMemory` contract); the frontend touches
        // it only through raw pointers.
        let mut ring = unsafe { c.ring.on(page, ENTRY) };
        self.io.serve(&mut ring, mem, release)
    }
}

impl Device for SimDisk {
    type ConnectError = ConnectError;

    fn bus(&mut self) -> &mut Xenbus {
        &mut self.bus
    }

    /// Writes both directories as libxl does: the backend's first, each
    /// one's `state` last.
    fn write_nodes(&self, xs: &mut SimXenstored) {
        let f = self.io.features;
        let mut back = vec![
            ("frontend", self.bus.paths.front.clone()),
            ("frontend-id", xs.domid().to_string()),
            ("online", "1".into()),
            ("mode", "w".into()),
            ("sectors", self.sectors().to_string()),
            ("sector-size", "512".into()),
            ("info", "0".into()),
            ("feature-flush-cache", (f.flush as u8).to_string()),
            ("feature-persistent", (f.persistent as u8).to_string()),
        ];
        if f.max_indirect_segments > 0 {
            back.push(("feature-max-indirect-segments", f.max_indirect_segments.to_string()));
        }
        back.push(("state", XenbusState::InitWait.as_number().to_string()));
        for (name, value) in back {
            xs.toolstack_write(&self.bus.paths.back_node(name), value.as_bytes());
        }
        let front = [
            ("backend", self.bus.paths.back.clone()),
            ("backend-id", "0".into()),
            ("virtual-device", self.vdev.to_string()),
            ("device-type", "disk".into()),
            ("state", XenbusState::Initialising.as_number().to_string()),
        ];
        for (name, value) in front {
            xs.toolstack_write(&self.bus.paths.front_node(name), value.as_bytes());
        }
    }

    /// Reads and checks what the frontend published, binds the event
    /// channel and maps the ring (Linux's `connect_ring`).
    fn connect(&mut self, sim: &mut Sim) -> Result<(), ConnectError> {
        let node = |name: &str| sim.xenstore.value(&self.bus.paths.front_node(name)).map(<[u8]>::to_vec);
        let raw = node("ring-ref");
        let gref = raw.as_deref().and_then(parse_u32).ok_or_else(|| ConnectError::RingRef(lossy(raw.as_deref())))?;
        let raw = node("event-channel");
        let port =
            raw.as_deref().and_then(parse_u32).ok_or_else(|| ConnectError::EventChannel(lossy(raw.as_deref())))?;
        match node("protocol") {
            Some(p) if p != PROTOCOL => return Err(ConnectError::Protocol(String::from_utf8_lossy(&p).into_owned())),
            _ => {}
        }
        let persistent = self.io.features.persistent && node("feature-persistent").as_deref() == Some(b"1");
        let page = granted_page(&*sim, gref, true).map_err(ConnectError::Ring)?;
        let frame = sim.grant(gref).map_or(0, |e| e.frame as u64);
        let backend_port = sim.backend_bind(port).map_err(ConnectError::Port)?;
        sim.grant_set_flags(gref, GTF_READING | GTF_WRITING, true);
        // SAFETY: `granted_page` names a live page of the domain; only its
        // header word is read.
        let ring = unsafe { BackRing::attach(page) };
        self.conn = Some(Connection { ring_gref: gref, ring_frame: frame, port, backend_port, ring });
        self.io.persistent = persistent;
        self.io.halted = None;
        self.io.skew = 0;
        self.io.figures.connects += 1;
        Ok(())
    }

    /// Unmaps the ring and closes dom0's port (requests held are dropped:
    /// the frontend has given up on them).
    fn disconnect(&mut self, sim: &mut Sim) {
        if let Some(c) = self.conn.take() {
            sim.grant_set_flags(c.ring_gref, GTF_READING | GTF_WRITING, false);
            for gref in core::mem::take(&mut self.io.mapped) {
                sim.grant_set_flags(gref, GTF_READING | GTF_WRITING, false);
            }
            sim.backend_unbind(c.port, c.backend_port);
            self.io.figures.dropped_on_disconnect += self.io.held.len() as u64;
            self.io.held.clear();
            self.io.figures.disconnects += 1;
        }
    }

    /// Held requests go with the old domain; the image persists.
    fn drop_for_new_domain(&mut self) {
        let held = core::mem::take(&mut self.io.held);
        self.io.figures.dropped_with_old_domain += held.len() as u64;
        // The old domain's grant table went with it.
        self.io.mapped.clear();
        self.conn = None;
        self.io.halted = None;
        self.io.skew = 0;
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
    /// Attaches a zero-filled disk of `sectors` sectors as virtual device
    /// `vdev`, as `xl block-attach` does. Panics if `vdev` is attached.
    pub fn attach_disk(&mut self, vdev: u32, sectors: u64, features: DiskFeatures) {
        assert!(!self.disk(vdev).is_some_and(SimDisk::attached), "sim: vbd {vdev} is attached already");
        let disk = SimDisk {
            vdev,
            bus: Xenbus::new(DevicePaths::new("vbd", self.xenstore.domid(), vdev)),
            conn: None,
            io: DiskIo::new(sectors, features),
        };
        self.attach_device(DISKS, vdev, disk);
    }

    /// Starts detaching `vdev` as `xl block-detach` does: the backend goes
    /// `Closing`; once the frontend is `Closed` the backend goes `Closed`
    /// and both directories are removed. The image stays readable through
    /// [`Sim::disk`] until `vdev` is attached again. False if `vdev` is
    /// not attached (or already detaching).
    pub fn detach_disk(&mut self, vdev: u32) -> bool {
        self.detach_device(DISKS, vdev)
    }

    /// Disk `vdev`, attached or detached.
    pub fn disk(&self, vdev: u32) -> Option<&SimDisk> {
        self.backends.disks.get(&vdev)
    }

    /// Writes `data` into the image at `sector`, as a test prepares a
    /// disk (no request, nothing logged). Panics past the end.
    pub fn disk_write(&mut self, vdev: u32, sector: u64, data: &[u8]) {
        let disk = self.disk_mut(vdev);
        let at = usize::try_from(sector).ok().and_then(|s| s.checked_mul(SECTOR_SIZE));
        let range = at.and_then(|a| Some(a..a.checked_add(data.len())?)).filter(|r| r.end <= disk.io.data.len());
        disk.io.data[range.expect("sim: write past the disk")].copy_from_slice(data);
    }

    /// While `hold`, requests are consumed but not answered (in flight).
    /// Ending the hold answers the held ones too ([`Sim::disk_release`]).
    pub fn disk_hold(&mut self, vdev: u32, hold: bool) {
        self.disk_mut(vdev).io.hold = hold;
        if !hold {
            self.serve_disk(vdev, true);
        }
    }

    /// Performs and answers the held requests in order (the hold itself
    /// stays as it is), then serves anything new.
    pub fn disk_release(&mut self, vdev: u32) {
        self.serve_disk(vdev, true);
    }

    /// Arms `fault` (see each [`BlkFault`] for when it applies).
    pub fn disk_fault(&mut self, vdev: u32, fault: BlkFault) {
        let disk = self.backends.disks.get_mut(&vdev).unwrap_or_else(|| panic!("sim: no vbd {vdev}"));
        let xs = &mut self.xenstore;
        match fault {
            BlkFault::NeverConnect => device::arm(disk, xs, BusFault::NeverConnect),
            BlkFault::GoClosed => device::arm(disk, xs, BusFault::GoClosed),
            BlkFault::StateGarbage => device::arm(disk, xs, BusFault::StateGarbage),
            BlkFault::RspProdBeyondRing | BlkFault::UnknownId | BlkFault::BadStatus | BlkFault::DuplicateResponse => {
                disk.io.faults.push(fault)
            }
        }
        // GoClosed applies as the backends step.
        self.serve_store();
    }

    fn disk_mut(&mut self, vdev: u32) -> &mut SimDisk {
        self.backends.disks.get_mut(&vdev).unwrap_or_else(|| panic!("sim: no vbd {vdev}"))
    }

    pub(super) fn serve_disk(&mut self, vdev: u32, release: bool) {
        self.serve_device(DISKS, vdev, |disk, sim| disk.serve(sim, release));
        // Pages first seen on a persistent connection stay mapped.
        let newly = self.backends.disks.get_mut(&vdev).map(|d| core::mem::take(&mut d.io.newly_mapped));
        for gref in newly.unwrap_or_default() {
            self.grant_set_flags(gref, GTF_READING | GTF_WRITING, true);
        }
    }

    /// Grants disk `vdev`'s backend keeps mapped (a persistent connection).
    pub fn disk_mapped(&self, vdev: u32) -> usize {
        self.disk(vdev).map_or(0, |d| d.io.mapped.len())
    }
}
