//! A PV device's life, the same for every class: discovery under
//! `device/<class>`, a service task per device (the handshake, a reconnect
//! after every resume in a new domain, a detach), and power management.
//! A driver says what is its own through [`PvDevice`].

use super::{device_ids, Frontend, FrontendError};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use kernel::pm::{self, DeviceId};
use kernel::xenstore::{self, Watch};
use kernel::{sched, time};
use spin::Mutex;
use xen::xenbus::{frontend_step, FrontendStep, XenbusState};

/// Discovery looks again this often, besides on every change.
const RESCAN_MS: u64 = 5_000;

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Connected,
    /// The domain is suspending: nothing is submitted.
    Suspended,
    /// The backend is closing (a detach): in-flight work is let finish.
    Closing,
    Failed,
    Closed,
}

impl Phase {
    /// The domain suspends: a connected device stops submitting.
    pub fn suspend(&mut self) {
        if *self == Phase::Connected {
            *self = Phase::Suspended;
        }
    }

    /// Running in a new domain: the connection is dead until remade.
    pub fn resume(&mut self) {
        if matches!(self, Phase::Suspended | Phase::Connected | Phase::Connecting) {
            *self = Phase::Connecting;
        }
    }

    /// The suspend was cancelled: the same connection goes on.
    pub fn cancel(&mut self) {
        if *self == Phase::Suspended {
            *self = Phase::Connected;
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Suspended => "suspended",
            Phase::Closing => "closing",
            Phase::Failed => "failed",
            Phase::Closed => "closed",
        }
    }
}

/// What differs between device classes.
pub trait PvDevice: Send + Sync + Sized + 'static {
    /// The directory under `device/` ("vbd", "vif").
    const CLASS: &'static str;
    /// The driver's name, for logs, tasks and power management.
    const NAME: &'static str;
    /// Where each device's figures go: `<DATA_DIR>/<id>/`.
    const DATA_DIR: &'static str;

    fn new(id: u32) -> Self;
    fn id(&self) -> u32;
    /// Resumes in a new domain so far: a connection made before the last
    /// one is dead.
    fn resumes(&self) -> u64;
    fn is_failed(&self) -> bool;
    /// Connects from scratch (rings, event channel, the handshake through
    /// `front.connect`, the backend's details); `epoch` is `resumes()` when
    /// the attempt began.
    fn connect(&self, front: &mut Frontend, watch: &Watch, epoch: u64) -> Result<(), FrontendError>;
    /// The backend is closing: finish, close both sides (`front.close`).
    fn close(&self, front: &mut Frontend, watch: &Watch);
    /// The device is failed: a log line, nothing more is done with it.
    fn fail(&self, why: &FrontendError);
    /// Stops submitting (the domain is suspending).
    fn suspend(&self);
    /// Runs in a new domain: marks the connection dead (grants and
    /// xenstore are not back yet; the service task reconnects).
    fn resume(&self);
    /// The suspend was cancelled: carry on with the same connection.
    fn cancel(&self);
    /// Where the device stands and its figures, by name, as published.
    fn figures(&self) -> (Phase, Vec<(&'static str, u64)>);
}

/// Every device of one class the guest drives, with its PM registration.
/// A lock because discovery adds, a detach removes, and other tasks read.
pub struct Registry<D> {
    devices: Mutex<Vec<(Arc<D>, DeviceId)>>,
    /// Devices whose backend closed while their nodes stayed: not driven
    /// again until the toolstack removes them (a detach) and adds them anew.
    closed: Mutex<Vec<u32>>,
}

impl<D: PvDevice> Registry<D> {
    pub const fn new() -> Self {
        Registry { devices: Mutex::new(Vec::new()), closed: Mutex::new(Vec::new()) }
    }

    /// The devices, lowest number first.
    pub fn all(&self) -> Vec<Arc<D>> {
        let mut v: Vec<Arc<D>> = self.devices.lock().iter().map(|(d, _)| d.clone()).collect();
        v.sort_by_key(|d| d.id());
        v
    }

    /// Starts discovery (forgetting devices of an earlier boot, which only
    /// a simulated guest has) and the figures.
    pub fn spawn(&'static self) {
        self.devices.lock().clear();
        self.closed.lock().clear();
        sched::spawn(D::NAME, move || self.discover());
        sched::spawn(D::DATA_DIR, move || self.publish_figures());
    }

    /// Publishes each device's phase (as `state`) and figures when they
    /// change, at most once a second, one transaction per device.
    fn publish_figures(&'static self) {
        let mut last = BTreeMap::new();
        loop {
            for dev in self.all() {
                let now = dev.figures();
                if last.get(&dev.id()) == Some(&now) {
                    continue;
                }
                let dir = format!("{}/{}", D::DATA_DIR, dev.id());
                let (phase, figures) = &now;
                let written = xenstore::transaction(|tx| {
                    xenstore::write_tx(tx, &format!("{dir}/state"), phase.name())?;
                    for (name, v) in figures {
                        xenstore::write_tx(tx, &format!("{dir}/{name}"), &format!("{v}"))?;
                    }
                    Ok(())
                });
                if written.is_ok() {
                    last.insert(dev.id(), now);
                }
            }
            sched::sleep_ms(1000);
        }
    }

    fn discover(&'static self) {
        let dir = alloc::format!("device/{}", D::CLASS);
        let watch = Watch::new(&dir)
            .inspect_err(|e| log::error!("{}: cannot watch {} ({:?}): looking every {} ms", D::NAME, dir, e, RESCAN_MS))
            .ok();
        loop {
            self.scan();
            match &watch {
                Some(w) => drop(w.next_until(time::now_ns() + RESCAN_MS * 1_000_000)),
                None => sched::sleep_ms(RESCAN_MS),
            }
        }
    }

    fn scan(&'static self) {
        let ids = device_ids(D::CLASS);
        self.closed.lock().retain(|id| ids.contains(id));
        // A failed device whose nodes are gone (detached): a later attach
        // of the same number is a new device.
        let gone: Vec<u32> =
            self.all().iter().filter(|d| d.is_failed() && !ids.contains(&d.id())).map(|d| d.id()).collect();
        for id in gone {
            log::info!("{} {}: gone from device/{} while failed; forgotten", D::NAME, id, D::CLASS);
            self.forget(id);
        }
        for id in ids {
            if self.devices.lock().iter().any(|(d, _)| d.id() == id) || self.closed.lock().contains(&id) {
                continue;
            }
            let dev = Arc::new(D::new(id));
            let pm_id = pm::register(Arc::new(Pm(dev.clone())));
            self.devices.lock().push((dev.clone(), pm_id));
            log::info!("{} {}: found device/{}/{}", D::NAME, id, D::CLASS, id);
            sched::spawn(D::NAME, move || self.serve(dev));
        }
    }

    fn forget(&self, id: u32) {
        let gone = {
            let mut all = self.devices.lock();
            let at = all.iter().position(|(d, _)| d.id() == id);
            at.map(|i| all.remove(i))
        };
        if let Some((_, pm_id)) = gone {
            pm::unregister(pm_id);
        }
    }

    /// A device's service task.
    fn serve(&self, dev: Arc<D>) {
        let mut front = match Frontend::find(D::CLASS, dev.id()) {
            Ok(f) => f,
            Err(e) => return dev.fail(&e),
        };
        loop {
            let epoch = dev.resumes();
            // A watch per connection: the backend's path names the domain
            // id, which a restore or a migration changes.
            let watch = match front.refresh_backend().and_then(|()| front.watch_backend()) {
                Ok(w) => w,
                Err(e) => return dev.fail(&e),
            };
            match dev.connect(&mut front, &watch, epoch) {
                Ok(()) => {}
                Err(FrontendError::Resumed) => continue,
                Err(FrontendError::BackendClosed(_)) => return self.close(&dev, &mut front, &watch),
                Err(e) => return dev.fail(&e),
            }
            // Connected: follow the backend until it closes or the domain
            // moves.
            loop {
                watch.next();
                if dev.resumes() != epoch {
                    break;
                }
                match front.backend_state().map(|b| frontend_step(XenbusState::Connected, b)) {
                    Ok(FrontendStep::Close | FrontendStep::Closed) => return self.close(&dev, &mut front, &watch),
                    Ok(FrontendStep::Fail(p)) => return dev.fail(&FrontendError::Protocol(p)),
                    Ok(_) => {}
                    Err(e) => return dev.fail(&e),
                }
                if dev.is_failed() {
                    return;
                }
            }
        }
    }

    fn close(&self, dev: &D, front: &mut Frontend, watch: &Watch) {
        dev.close(front, watch);
        self.closed.lock().push(dev.id());
        self.forget(dev.id());
    }
}

impl<D: PvDevice> Default for Registry<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// A device as a suspend-aware device.
struct Pm<D>(Arc<D>);

impl<D: PvDevice> pm::Device for Pm<D> {
    fn name(&self) -> &'static str {
        D::NAME
    }
    fn suspend(&self) -> Result<(), &'static str> {
        self.0.suspend();
        Ok(())
    }
    fn resume(&self) {
        self.0.resume();
    }
    fn cancel(&self) {
        self.0.cancel();
    }
}
