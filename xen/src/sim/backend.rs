//! What every simulated PV backend shares (blkback, netback):
//! a device's two xenstore directories, the backend's half of the xenbus
//! handshake as a pure decision, the checks Xen and a backend make of the
//! grant refs and event channel a frontend publishes, and the backend's
//! side of a shared ring (`BACK_RING` in `io/ring.h`).
//!
//! Backends run in dom0. Binding to the frontend's unbound port turns it
//! into an interdomain port, as Xen does, and the backend's close leaves it
//! unbound again. A send on it only tells the backend
//! ([`Sim::backend_kicked`]); the backend does the work when dom0 runs
//! ([`Sim::run_backends`]): whenever a vCPU of the guest blocks or yields,
//! or a test says so. Answering inside the send would let a guest task
//! submit and find its answer forever without ever waiting, which no real
//! backend does (and which starves the guest's idle task).

use super::blkback::{SimDisk, DISKS};
use super::netback::{SimVif, VIFS};
use super::{PortKind, Sim};
use crate::ring::{ring_size, HEADER_LEN};
use crate::xenbus::XenbusState;
use crate::xenstore::sim::SimXenstored;
use core::sync::atomic::{fence, Ordering};
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

/// The domain the simulated backends run in.
pub const BACKEND_DOMID: u16 = 0;

/// Grant entry flags (v1, `grant_table.h`).
pub const GTF_PERMIT_ACCESS: u16 = 1;
const GTF_TYPE_MASK: u16 = 3;
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by Xen while a grantee has the page mapped for reading / writing.
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;

/// A v1 grant entry as the guest wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantEntry {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

/// What a backend reaches of the guest: its grant table and its frames.
///
/// # Safety
/// `page` must return only pointers to live, page-aligned 4096-byte pages
/// of the domain, which stay live while the backend holds `&self`.
pub unsafe trait GuestMemory {
    /// The grant entry `gref`, if the table has it.
    fn grant(&self, gref: u32) -> Option<GrantEntry>;
    /// The bytes of machine frame `frame`, if the domain owns it.
    fn page(&self, frame: u64) -> Option<*mut u8>;
}

// SAFETY: `Memory::frame_ptr` names a live page of the arena (a RAM frame
// at its place) or of the test binary (a remapped view); only frames the
// domain owns are handed out, and they stay while the simulator's lock is
// held (the backend runs under it).
unsafe impl GuestMemory for Sim {
    fn grant(&self, gref: u32) -> Option<GrantEntry> {
        let (flags, domid, frame) = self.grant_entry(gref)?;
        Some(GrantEntry { flags, domid, frame })
    }

    fn page(&self, frame: u64) -> Option<*mut u8> {
        self.mem.frame_ptr(&self.arena, frame).filter(|_| self.owns(frame))
    }
}

/// Why a grant ref does not give the backend a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// Outside the grant table.
    NoEntry(u32),
    /// The entry does not permit access.
    NotGranted { gref: u32, flags: u16 },
    /// Granted to another domain.
    OtherDomain { gref: u32, domid: u16 },
    /// Read-only, but the backend must write the page.
    ReadOnly(u32),
    /// It names a frame the domain does not own.
    NotOwned { gref: u32, frame: u32 },
}

/// The page `gref` grants the backend, checked as Xen checks a map or a
/// grant copy; `backend_writes` if the backend will write it.
pub fn granted_page(mem: &dyn GuestMemory, gref: u32, backend_writes: bool) -> Result<*mut u8, GrantError> {
    let e = mem.grant(gref).ok_or(GrantError::NoEntry(gref))?;
    if e.flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
        return Err(GrantError::NotGranted { gref, flags: e.flags });
    }
    if e.domid != BACKEND_DOMID {
        return Err(GrantError::OtherDomain { gref, domid: e.domid });
    }
    if backend_writes && e.flags & GTF_READONLY != 0 {
        return Err(GrantError::ReadOnly(gref));
    }
    mem.page(e.frame as u64).ok_or(GrantError::NotOwned { gref, frame: e.frame })
}

/// Why the frontend's event channel cannot be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    /// No such port in the domain.
    NotBound(u32),
    /// A port, but not one left unbound for dom0.
    NotForBackend { port: u32, kind: PortKind },
}

/// A PV device's two xenstore directories, as libxl names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePaths {
    pub front: String,
    pub back: String,
}

impl DevicePaths {
    /// `kind` is the directory name (`vbd`, `vif`), `devid` the device's id.
    pub fn new(kind: &str, domid: u32, devid: u32) -> Self {
        DevicePaths {
            front: format!("/local/domain/{domid}/device/{kind}/{devid}"),
            back: format!("/local/domain/{BACKEND_DOMID}/backend/{kind}/{domid}/{devid}"),
        }
    }

    pub fn front_node(&self, name: &str) -> String {
        format!("{}/{name}", self.front)
    }

    pub fn back_node(&self, name: &str) -> String {
        format!("{}/{name}", self.back)
    }
}

/// The notes a backend keeps, at the most (later ones are dropped).
const NOTES_MAX: usize = 256;

/// Adds `what` to a backend's notes, unless they are full.
pub fn push_note(notes: &mut Vec<String>, what: String) {
    if notes.len() < NOTES_MAX {
        notes.push(what);
    }
}

/// A decimal node (ring refs, ports), surrounding whitespace allowed.
pub fn parse_u32(raw: &[u8]) -> Option<u32> {
    let s = core::str::from_utf8(raw).ok()?.trim();
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// A `state` node: its state, or what it held instead (None: missing).
pub fn read_state(xs: &SimXenstored, path: &str) -> Result<XenbusState, Option<String>> {
    let raw = xs.value(path).ok_or(None)?;
    core::str::from_utf8(raw)
        .ok()
        .and_then(|s| XenbusState::parse(s).ok())
        .ok_or_else(|| Some(String::from_utf8_lossy(raw).into_owned()))
}

/// What the backend does next (Linux's `frontend_changed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendStep {
    Stay,
    /// Read what the frontend published, map the ring, `Connected`.
    Connect,
    /// Unmap, `Closed`.
    Close,
    /// The frontend starts over after a close: `InitWait` again.
    Reinit,
    /// A detach is done: `Closed`, then both directories go.
    Remove,
    /// A frontend state that means nothing to a backend: noted, ignored.
    Ignore,
}

/// The backend's next step, standing at `back`, with the frontend at
/// `front`; `detaching` once the toolstack asked for the device to go
/// (the backend is `Closing` and keeps the ring until the frontend is
/// `Closed`).
pub fn backend_step(front: XenbusState, back: XenbusState, detaching: bool) -> BackendStep {
    use XenbusState as S;
    if detaching {
        return if front == S::Closed { BackendStep::Remove } else { BackendStep::Stay };
    }
    match (front, back) {
        (S::Closing | S::Closed, S::Closed) => BackendStep::Stay,
        (S::Closing | S::Closed, _) => BackendStep::Close,
        (S::Initialising, S::Closed) => BackendStep::Reinit,
        (S::Initialising, _) => BackendStep::Stay,
        // Either, as a missed watch may skip Initialised (Linux connects on both).
        (S::Initialised | S::Connected, S::InitWait) => BackendStep::Connect,
        (S::Initialised | S::Connected, _) => BackendStep::Stay,
        (S::Unknown | S::InitWait | S::Reconfiguring | S::Reconfigured, _) => BackendStep::Ignore,
    }
}

/// The simulated backends of the domain, by device.
#[derive(Default)]
pub struct Backends {
    pub(super) disks: BTreeMap<u32, SimDisk>,
    pub(super) vifs: BTreeMap<u32, SimVif>,
    /// dom0's last event-channel port.
    last_port: u32,
}

impl Sim {
    /// Lets every backend look at its frontend's nodes (the guest wrote the
    /// store); true if any backend changed something, whose writes then
    /// wait in xenstored's output.
    pub(super) fn step_backends(&mut self) -> bool {
        // Both: each steps every device of its class.
        self.step_devices(DISKS) | self.step_devices(VIFS)
    }

    /// A notification on dom0's `backend_port`: served when dom0 runs.
    pub(super) fn backend_kicked(&mut self, backend_port: u32) {
        self.device_kicked(DISKS, backend_port);
        self.device_kicked(VIFS, backend_port);
    }

    /// Lets dom0's backends do what the guest has asked of them since they
    /// last ran (the simulator calls it whenever a vCPU of the guest blocks
    /// or yields).
    pub fn run_backends(&mut self) {
        for vdev in self.kicked_devices(DISKS) {
            self.serve_disk(vdev, false);
        }
        for devid in self.kicked_devices(VIFS) {
            self.serve_vif(devid);
        }
    }

    /// The guest resumed in a new domain: its grant table and ports are
    /// new, so every connection is simply dropped (nothing of the old
    /// rings is touched; see each device's `drop_for_new_domain` for what
    /// goes with it), and libxl makes each device again (frontend
    /// `Initialising`, backend `InitWait`). A device being detached is
    /// gone.
    pub(super) fn backends_for_new_domain(&mut self) {
        self.devices_for_new_domain(DISKS);
        self.devices_for_new_domain(VIFS);
    }

    /// Binds dom0's end to the frontend's `port`, which must be unbound
    /// for dom0 (`alloc_unbound(0)`); returns dom0's port.
    pub(super) fn backend_bind(&mut self, port: u32) -> Result<u32, PortError> {
        match self.ports.get(&port) {
            Some(PortKind::Unbound { remote_dom: BACKEND_DOMID }) => {}
            Some(&kind) => return Err(PortError::NotForBackend { port, kind }),
            None => return Err(PortError::NotBound(port)),
        }
        self.backends.last_port += 1;
        let remote_port = self.backends.last_port;
        self.ports.insert(port, PortKind::Interdomain { remote_dom: BACKEND_DOMID, remote_port });
        Ok(remote_port)
    }

    /// dom0 closes its end: the frontend's port is unbound again, as Xen
    /// leaves it (unless the guest closed it meanwhile).
    pub(super) fn backend_unbind(&mut self, port: u32, backend_port: u32) {
        let ours = PortKind::Interdomain { remote_dom: BACKEND_DOMID, remote_port: backend_port };
        if self.ports.get(&port) == Some(&ours) {
            self.ports.insert(port, PortKind::Unbound { remote_dom: BACKEND_DOMID });
        }
    }
}

/// The backend's private indexes of a shared ring: requests consumed,
/// responses produced (published or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackRing {
    req_cons: u32,
    rsp_prod_pvt: u32,
}

/// The frontend's `req_prod` claims more requests than the ring holds
/// (`RING_REQUEST_PROD_OVERFLOW`): the backend stops serving the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingOverflow {
    pub req_prod: u32,
    pub req_cons: u32,
    pub rsp_prod_pvt: u32,
}

const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

/// A [`BackRing`] at work on its page, for one service.
pub struct BackRingPage<'a> {
    idx: &'a mut BackRing,
    page: *mut u8,
    size: u32,
    entry: usize,
}

impl BackRing {
    /// The ring on `page`, whose slots hold `entry` bytes.
    ///
    /// # Safety
    /// `page` must be a live, page-aligned 4096-byte page for as long as
    /// the result is used, accessed meanwhile only through raw pointers
    /// (the frontend's side of the protocol).
    pub unsafe fn on(&mut self, page: *mut u8, entry: usize) -> BackRingPage<'_> {
        BackRingPage { idx: self, page, size: ring_size(entry), entry }
    }

    /// Attaches to a ring the frontend has set up (`BACK_RING_ATTACH`):
    /// both indexes start at its `rsp_prod`.
    ///
    /// # Safety
    /// As for [`BackRing::on`].
    pub unsafe fn attach(page: *mut u8) -> BackRing {
        // SAFETY: the caller's page; `rsp_prod` is an aligned header word.
        let rsp_prod = unsafe { (page.add(RSP_PROD) as *const u32).read_volatile() };
        BackRing { req_cons: rsp_prod, rsp_prod_pvt: rsp_prod }
    }
}

impl BackRingPage<'_> {
    fn load(&self, at: usize) -> u32 {
        // SAFETY: `at` is one of the header's aligned words, in the page
        // `BackRing::on` was given.
        unsafe { (self.page.add(at) as *const u32).read_volatile() }
    }

    fn store(&self, at: usize, v: u32) {
        // SAFETY: as in `load`.
        unsafe { (self.page.add(at) as *mut u32).write_volatile(v) }
    }

    /// Slot `i`'s first byte: the index is masked to the ring, so the
    /// `entry` bytes from there lie in the page.
    fn slot(&self, i: u32) -> *mut u8 {
        self.page.wrapping_add(HEADER_LEN + (i & (self.size - 1)) as usize * self.entry)
    }

    /// Responses produced, published or not.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.idx.rsp_prod_pvt
    }

    /// Requests published and not consumed, or the overflow if the
    /// frontend claims more than a ring's worth beyond the responses.
    pub fn unconsumed(&self) -> Result<u32, RingOverflow> {
        let req_prod = self.load(REQ_PROD);
        fence(Ordering::Acquire); // the index before the requests
        let (req_cons, rsp_prod_pvt) = (self.idx.req_cons, self.idx.rsp_prod_pvt);
        // Signed: a hostile duplicate response may put responses ahead.
        let unanswered = req_prod.wrapping_sub(rsp_prod_pvt) as i32;
        let new = req_prod.wrapping_sub(req_cons);
        if unanswered > self.size as i32 || new > self.size {
            return Err(RingOverflow { req_prod, req_cons, rsp_prod_pvt });
        }
        Ok(new)
    }

    /// Copies the next request into `buf` (at most a slot) and consumes it
    /// (`RING_COPY_REQUEST`: the frontend cannot change it afterwards).
    pub fn take_request(&mut self, buf: &mut [u8]) {
        let src = self.slot(self.idx.req_cons);
        for (i, b) in buf.iter_mut().take(self.entry).enumerate() {
            // SAFETY: within the slot (see `slot`).
            *b = unsafe { src.add(i).read_volatile() };
        }
        self.idx.req_cons = self.idx.req_cons.wrapping_add(1);
    }

    /// Writes a response into the next slot (not yet published).
    pub fn put_response(&mut self, rsp: &[u8]) {
        let dst = self.slot(self.idx.rsp_prod_pvt);
        for (i, &b) in rsp.iter().take(self.entry).enumerate() {
            // SAFETY: within the slot (see `slot`).
            unsafe { dst.add(i).write_volatile(b) };
        }
        self.idx.rsp_prod_pvt = self.idx.rsp_prod_pvt.wrapping_add(1);
    }

    /// Publishes the responses; true if the frontend asked to hear of them
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses(&mut self) -> bool {
        let old = self.load(RSP_PROD);
        let new = self.idx.rsp_prod_pvt;
        fence(Ordering::Release); // responses before the index
        self.store(RSP_PROD, new);
        fence(Ordering::SeqCst); // the index before reading rsp_event
        new.wrapping_sub(self.load(RSP_EVENT)) < new.wrapping_sub(old)
    }

    /// Publishes `rsp_prod` as `value`, whatever was produced: a hostile
    /// backend's index.
    pub fn publish_rsp_prod(&mut self, value: u32) {
        fence(Ordering::Release);
        self.store(RSP_PROD, value);
    }

    /// Asks to be notified of the next request and says whether one came
    /// meanwhile (`RING_FINAL_CHECK_FOR_REQUESTS`): call once out of work.
    pub fn final_check_for_requests(&mut self) -> bool {
        let cons = self.idx.req_cons;
        if self.load(REQ_PROD) != cons {
            return true;
        }
        self.store(REQ_EVENT, cons.wrapping_add(1));
        fence(Ordering::SeqCst); // req_event before reading req_prod again
        self.load(REQ_PROD) != cons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use XenbusState as S;

    #[test]
    fn the_backend_half_of_the_handshake() {
        assert_eq!(backend_step(S::Initialising, S::InitWait, false), BackendStep::Stay);
        assert_eq!(backend_step(S::Initialised, S::InitWait, false), BackendStep::Connect);
        assert_eq!(backend_step(S::Connected, S::InitWait, false), BackendStep::Connect, "a missed Initialised");
        assert_eq!(backend_step(S::Connected, S::Connected, false), BackendStep::Stay);
        assert_eq!(backend_step(S::Closing, S::Connected, false), BackendStep::Close);
        assert_eq!(backend_step(S::Closed, S::InitWait, false), BackendStep::Close);
        assert_eq!(backend_step(S::Closed, S::Closed, false), BackendStep::Stay);
        assert_eq!(backend_step(S::Initialising, S::Closed, false), BackendStep::Reinit);
        assert_eq!(backend_step(S::Initialised, S::Closed, false), BackendStep::Stay, "a failed connect stays");
        for odd in [S::Unknown, S::InitWait, S::Reconfiguring, S::Reconfigured] {
            assert_eq!(backend_step(odd, S::Connected, false), BackendStep::Ignore);
        }
        assert_eq!(backend_step(S::Connected, S::Closing, true), BackendStep::Stay);
        assert_eq!(backend_step(S::Closing, S::Closing, true), BackendStep::Stay, "the ring stays till Closed");
        assert_eq!(backend_step(S::Closed, S::Closing, true), BackendStep::Remove);
    }

    #[test]
    fn paths_and_numbers() {
        let p = DevicePaths::new("vbd", 7, 51712);
        assert_eq!(p.front_node("state"), "/local/domain/7/device/vbd/51712/state");
        assert_eq!(p.back_node("state"), "/local/domain/0/backend/vbd/7/51712/state");
        assert_eq!(parse_u32(b"12"), Some(12));
        assert_eq!(parse_u32(b" 8\n"), Some(8));
        for bad in [&b""[..], b"-1", b"0x10", b"4294967296", b"1 2", b"\xff"] {
            assert_eq!(parse_u32(bad), None, "{bad:?}");
        }
    }

    struct Grants(HashMap<u32, GrantEntry>, Box<Page>);

    // SAFETY: the one page is boxed and lives as long as `self`.
    unsafe impl GuestMemory for Grants {
        fn grant(&self, gref: u32) -> Option<GrantEntry> {
            self.0.get(&gref).copied()
        }
        fn page(&self, frame: u64) -> Option<*mut u8> {
            (frame == 5).then_some(self.1 .0.as_ptr() as *mut u8)
        }
    }

    #[test]
    fn grants_are_checked_as_xen_does() {
        let e = |flags, domid, frame| GrantEntry { flags, domid, frame };
        let refs = [(1, e(1, 0, 5)), (2, e(1 | GTF_READONLY, 0, 5)), (3, e(0, 0, 5)), (4, e(1, 3, 5)), (5, e(1, 0, 6))];
        let g = Grants(refs.into_iter().collect(), Box::new(Page([0; 4096])));
        assert!(granted_page(&g, 1, true).is_ok());
        assert!(granted_page(&g, 2, false).is_ok(), "read-only is enough to read");
        assert_eq!(granted_page(&g, 2, true), Err(GrantError::ReadOnly(2)));
        assert_eq!(granted_page(&g, 3, false), Err(GrantError::NotGranted { gref: 3, flags: 0 }));
        assert_eq!(granted_page(&g, 4, false), Err(GrantError::OtherDomain { gref: 4, domid: 3 }));
        assert_eq!(granted_page(&g, 5, false), Err(GrantError::NotOwned { gref: 5, frame: 6 }));
        assert_eq!(granted_page(&g, 9, false), Err(GrantError::NoEntry(9)));
    }

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    fn word(p: &Page, at: usize) -> u32 {
        u32::from_le_bytes(p.0[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_back_ring_consumes_answers_and_refuses_an_overflow() {
        let mut page = Box::new(Page([0; 4096]));
        let mut idx = BackRing::default();
        let p = page.0.as_mut_ptr();
        // A frontend's ring: events at 1; three requests of 112 bytes.
        let set = |p: *mut u8, at: usize, v: u32| {
            // SAFETY: the boxed page, accessed only through `p` meanwhile.
            unsafe { (p.add(at) as *mut u32).write(v) }
        };
        set(p, REQ_EVENT, 1);
        set(p, RSP_EVENT, 1);
        set(p, HEADER_LEN + 112, 0xabcd);
        set(p, REQ_PROD, 3);
        {
            // SAFETY: as above.
            let mut r = unsafe { idx.on(p, 112) };
            assert_eq!(r.unconsumed(), Ok(3));
            let mut buf = [0u8; 112];
            for _ in 0..3 {
                r.take_request(&mut buf);
                r.put_response(&buf[..16]);
            }
            assert!(r.push_responses(), "rsp_event 1: the frontend wants the first");
            assert!(!r.final_check_for_requests());
        }
        assert_eq!(word(&page, RSP_PROD), 3);
        assert_eq!(word(&page, REQ_EVENT), 4, "asks to hear of the next request");
        assert_eq!(word(&page, HEADER_LEN + 112), 0xabcd, "the second response in its slot");
        let p = page.0.as_mut_ptr();
        set(p, REQ_PROD, 3 + 33);
        // SAFETY: as above.
        let r = unsafe { idx.on(p, 112) };
        assert_eq!(r.unconsumed(), Err(RingOverflow { req_prod: 36, req_cons: 3, rsp_prod_pvt: 3 }));
        set(p, REQ_PROD, 2);
        assert!(r.unconsumed().is_err(), "a producer index that went back");
    }
}
