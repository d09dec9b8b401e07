//! The xenbus frontend layer: finding a class of PV devices in xenstore
//! (`device/vbd/<n>`, `device/vif/<n>`) and walking each through the
//! handshake with its backend (`xen::xenbus` decides every step).
//!
//! Everything read here comes from dom0 and is checked: a missing or
//! malformed node, a state the protocol does not allow, a backend that
//! never connects or closes under us all end as a [`FrontendError`] for
//! that device alone.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use kernel::rejects::{excerpt, RateLimit};
use kernel::warn_limited;
use kernel::xenstore::{self, Watch, XsError};
use xen::xenbus::{frontend_step, BadState, FrontendStep, ProtocolError, XenbusState};

mod lifecycle;
pub use lifecycle::{Phase, PvDevice, Registry};

/// Why a device could not be driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendError {
    Store(XsError),
    /// A node the protocol needs is missing.
    Missing(String),
    /// A node holds something that cannot be right.
    Malformed {
        node: String,
        value: String,
    },
    BadState(BadState),
    Protocol(ProtocolError),
    /// The backend did not connect within the time allowed.
    NeverConnected {
        waited_ms: u64,
    },
    /// The backend is closing or closed.
    BackendClosed(XenbusState),
    /// The domain was resumed elsewhere during the handshake: start again.
    Resumed,
    /// No memory, grant or event channel for the connection.
    Resources(String),
}

impl fmt::Display for FrontendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendError::Store(e) => write!(f, "xenstore: {e:?}"),
            FrontendError::Missing(n) => write!(f, "{n} is missing"),
            FrontendError::Malformed { node, value } => write!(f, "{node} = {value:?} is malformed"),
            FrontendError::BadState(b) => write!(f, "backend state: {b}"),
            FrontendError::Protocol(p) => write!(f, "backend broke the handshake: {p:?}"),
            FrontendError::NeverConnected { waited_ms } => write!(f, "backend not connected after {waited_ms} ms"),
            FrontendError::BackendClosed(s) => write!(f, "backend is {s:?}"),
            FrontendError::Resumed => f.write_str("resumed during the handshake"),
            FrontendError::Resources(what) => write!(f, "no {what}"),
        }
    }
}

impl From<XsError> for FrontendError {
    fn from(e: XsError) -> Self {
        FrontendError::Store(e)
    }
}

/// The numeric ids under `device/<class>`, lowest first; names that are
/// not numbers are logged and left out. No directory: no devices.
pub fn device_ids(class: &str) -> Vec<u32> {
    static NOT_A_NUMBER: RateLimit = RateLimit::new();
    let dir = format!("device/{class}");
    let names = match xenstore::directory(&dir) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let mut ids: Vec<u32> = names
        .iter()
        .filter_map(|n| match n.parse::<u32>() {
            Ok(id) => Some(id),
            Err(_) => {
                // Every rescan meets the same names again: one limit for all classes.
                warn_limited!(NOT_A_NUMBER, "xenbus: {}/{:?} is not a device number; ignored", dir, excerpt(n, 40));
                None
            }
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// One device's frontend: its own directory and what it knows of the
/// backend's.
pub struct Frontend {
    pub id: u32,
    /// `device/<class>/<id>` (relative to the domain's home).
    pub nodename: String,
    /// The backend's directory (absolute).
    pub backend: String,
    pub backend_id: u16,
    state: XenbusState,
}

impl Frontend {
    /// The device `device/<class>/<id>`, with its backend as the toolstack
    /// wrote it (read again on every connect: a new domain may have a new
    /// backend).
    pub fn find(class: &str, id: u32) -> Result<Frontend, FrontendError> {
        let mut f = Frontend {
            id,
            nodename: format!("device/{class}/{id}"),
            backend: String::new(),
            backend_id: 0,
            state: XenbusState::Unknown,
        };
        f.refresh_backend()?;
        Ok(f)
    }

    /// Reads `backend` and `backend-id` again (before every connect: a new
    /// domain may have a new backend).
    pub fn refresh_backend(&mut self) -> Result<(), FrontendError> {
        let backend = self.own("backend")?;
        if !backend.starts_with('/') || backend.len() > 256 {
            return Err(FrontendError::Malformed { node: format!("{}/backend", self.nodename), value: backend });
        }
        let raw = self.own("backend-id")?;
        let backend_id = raw
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&d| d < 0x7ff0)
            .ok_or(FrontendError::Malformed { node: format!("{}/backend-id", self.nodename), value: raw })?;
        self.backend = backend;
        self.backend_id = backend_id;
        Ok(())
    }

    fn own(&self, node: &str) -> Result<String, FrontendError> {
        let path = format!("{}/{node}", self.nodename);
        xenstore::read(&path).map_err(|e| match e {
            XsError::Errno(xenstore::Errno::ENOENT) => FrontendError::Missing(path),
            other => FrontendError::Store(other),
        })
    }

    /// Where this frontend stands.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// Publishes the frontend's state.
    pub fn switch_state(&mut self, s: XenbusState) -> Result<(), FrontendError> {
        xenstore::write(&format!("{}/state", self.nodename), &format!("{}", s.as_number()))?;
        self.state = s;
        Ok(())
    }

    /// The backend's state; a missing node reads as `Unknown` (not written
    /// yet), garbage is an error.
    pub fn backend_state(&self) -> Result<XenbusState, FrontendError> {
        match self.backend_node("state")? {
            None => Ok(XenbusState::Unknown),
            Some(raw) => XenbusState::parse(&raw).map_err(FrontendError::BadState),
        }
    }

    /// A backend node, None if it does not exist.
    pub fn backend_node(&self, node: &str) -> Result<Option<String>, FrontendError> {
        match xenstore::read(&format!("{}/{node}", self.backend)) {
            Ok(v) => Ok(Some(v)),
            Err(XsError::Errno(xenstore::Errno::ENOENT)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A backend node holding a decimal number (None if missing).
    pub fn backend_u64(&self, node: &str) -> Result<Option<u64>, FrontendError> {
        match self.backend_node(node)? {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| FrontendError::Malformed { node: format!("{}/{node}", self.backend), value: raw }),
        }
    }

    /// A watch on the backend's `state`.
    pub fn watch_backend(&self) -> Result<Watch, FrontendError> {
        Ok(Watch::new(&format!("{}/state", self.backend))?)
    }

    /// Walks the handshake from the start until the backend is
    /// `Connected`. `publish(tx)` writes what the backend needs (ring refs,
    /// event channel, protocol) inside the transaction that also moves the
    /// frontend to `publish_as`: `Initialised` for a backend that connects
    /// on that (blkback; the caller then reads the backend's details and
    /// switches to `Connected`), `Connected` for one that waits for the
    /// frontend to be connected first (netback). `still_current()` turning
    /// false (the domain resumed elsewhere meanwhile) abandons the attempt.
    pub fn connect(
        &mut self,
        watch: &Watch,
        timeout_ms: u64,
        publish_as: XenbusState,
        still_current: impl Fn() -> bool,
        mut publish: impl FnMut(u32) -> xenstore::Result<()>,
    ) -> Result<(), FrontendError> {
        self.switch_state(XenbusState::Initialising)?;
        let start = kernel::time::now_ns();
        let deadline = start + timeout_ms * 1_000_000;
        loop {
            if !still_current() {
                return Err(FrontendError::Resumed);
            }
            let backend = self.backend_state()?;
            // Published as connected, the frontend still waits for the
            // backend as one that has only published.
            let standing = if self.state == publish_as { XenbusState::Initialised } else { self.state };
            match frontend_step(standing, backend) {
                FrontendStep::Wait => {
                    if watch.next_until(deadline).is_none() {
                        return Err(FrontendError::NeverConnected {
                            waited_ms: (kernel::time::now_ns() - start) / 1_000_000,
                        });
                    }
                }
                FrontendStep::Publish => {
                    let state = format!("{}/state", self.nodename);
                    let value = format!("{}", publish_as.as_number());
                    xenstore::transaction(|tx| {
                        publish(tx)?;
                        xenstore::write_tx(tx, &state, &value)
                    })?;
                    self.state = publish_as;
                }
                FrontendStep::Connect => return Ok(()),
                FrontendStep::Close | FrontendStep::Closed => return Err(FrontendError::BackendClosed(backend)),
                FrontendStep::Fail(p) => return Err(FrontendError::Protocol(p)),
            }
        }
    }

    /// How long a closed device waits for the backend to unmap its rings
    /// (xen-blkback and xen-netback unmap just after they say `Closed`).
    pub const UNMAP_WAIT_MS: u64 = 2_000;

    /// Answers a closing backend: `Closing`, then `Closed` once the backend
    /// has closed too (or after `timeout_ms`: the device is gone anyway).
    pub fn close(&mut self, watch: &Watch, timeout_ms: u64) {
        let _ = self.switch_state(XenbusState::Closing);
        let deadline = kernel::time::now_ns() + timeout_ms * 1_000_000;
        while !matches!(self.backend_state(), Ok(XenbusState::Closing | XenbusState::Closed) | Err(_)) {
            if watch.next_until(deadline).is_none() {
                break;
            }
        }
        let _ = self.switch_state(XenbusState::Closed);
    }
}
