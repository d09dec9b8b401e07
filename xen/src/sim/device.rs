//! The xenbus life of a simulated backend device, shared by blkback and
//! netback: the backend's `state` and phase, answering the frontend's
//! state ([`backend_step`]), closing, detaching, starting over in a new
//! domain, the faults of the handshake, and the dom0 side of a kick.
//! What a device maps and serves is its own ([`Device`]).

use super::backend::{backend_step, push_note, read_state, BackendStep, Backends, DevicePaths};
use super::Sim;
use crate::xenbus::XenbusState;
use crate::xenstore::sim::SimXenstored;
use core::fmt::Debug;
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Attached,
    /// The toolstack asked for a detach: the backend is `Closing`.
    Detaching,
    /// Gone from the store; what the backend kept stays for tests.
    Detached,
}

/// A backend device's xenbus side.
#[derive(Debug)]
pub(super) struct Xenbus {
    pub paths: DevicePaths,
    /// The backend's state, as it last wrote it.
    pub state: XenbusState,
    pub phase: Phase,
    /// The guest sent on the port since the device was last served.
    pub kicked: bool,
    pub never_connect: bool,
    pub go_closed: bool,
    /// The frontend's last `state`, so an odd one is noted once.
    pub last_front: Option<Result<XenbusState, Option<String>>>,
}

impl Xenbus {
    /// A device just attached: the backend in `InitWait`.
    pub fn new(paths: DevicePaths) -> Self {
        Xenbus {
            paths,
            state: XenbusState::InitWait,
            phase: Phase::Attached,
            kicked: false,
            never_connect: false,
            go_closed: false,
            last_front: None,
        }
    }

    pub fn set_state(&mut self, xs: &mut SimXenstored, s: XenbusState) {
        self.state = s;
        xs.toolstack_write(&self.paths.back_node("state"), s.as_number().to_string().as_bytes());
    }
}

/// The faults every backend has in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BusFault {
    NeverConnect,
    GoClosed,
    StateGarbage,
}

/// What a backend records of its handshake: its notes (what it found
/// worth saying, for tests) and two of its figures.
pub(super) struct Record<'a> {
    pub notes: &'a mut Vec<String>,
    /// Faults that took effect.
    pub faults_applied: &'a mut u64,
    /// Connections refused.
    pub failed_connects: &'a mut u64,
}

/// What a backend device adds to its [`Xenbus`] side.
pub(super) trait Device {
    /// Why a connection was refused.
    type ConnectError: Debug;
    fn bus(&mut self) -> &mut Xenbus;
    fn record(&mut self) -> Record<'_>;
    /// Writes both directories as the toolstack does.
    fn write_nodes(&self, xs: &mut SimXenstored);
    /// Some note if this backend waits for more than `front` to connect.
    fn waits_at(&self, _front: XenbusState) -> Option<&'static str> {
        None
    }
    /// Reads and checks what the frontend published, binds the event
    /// channel and maps the rings.
    fn connect(&mut self, sim: &mut Sim) -> Result<(), Self::ConnectError>;
    /// Unmaps the rings and closes dom0's port, if connected.
    fn disconnect(&mut self, sim: &mut Sim);
    /// The guest resumed in a new domain: the connection is dropped
    /// without touching anything of the old one.
    fn drop_for_new_domain(&mut self);
    /// The guest's port and dom0's end of it, while connected.
    fn ports(&self) -> Option<(u32, u32)>;
}

fn note<D: Device>(d: &mut D, what: String) {
    push_note(d.record().notes, what);
}

/// Looks at the frontend's state and answers it; true if anything was
/// written.
pub(super) fn step<D: Device>(d: &mut D, sim: &mut Sim) -> bool {
    if d.bus().phase == Phase::Detached {
        return false;
    }
    if d.bus().go_closed && d.bus().state == XenbusState::Connected {
        d.bus().go_closed = false;
        *d.record().faults_applied += 1;
        note(d, "fault: GoClosed".into());
        close(d, sim);
        return true;
    }
    let front = read_state(&sim.xenstore, &d.bus().paths.front_node("state"));
    let changed = d.bus().last_front.as_ref() != Some(&front);
    d.bus().last_front = Some(front.clone());
    let front = match front {
        Ok(s) => s,
        Err(raw) => {
            if changed {
                note(d, format!("frontend state {raw:?} is no state: ignored"));
            }
            return false;
        }
    };
    let (state, detaching, never_connect) = {
        let bus = d.bus();
        (bus.state, bus.phase == Phase::Detaching, bus.never_connect)
    };
    match backend_step(front, state, detaching) {
        BackendStep::Stay => false,
        BackendStep::Ignore => {
            if changed {
                note(d, format!("frontend state {front:?} means nothing to a backend: ignored"));
            }
            false
        }
        BackendStep::Connect if d.waits_at(front).is_some() => {
            if let (true, Some(why)) = (changed, d.waits_at(front)) {
                note(d, why.into());
            }
            false
        }
        BackendStep::Connect if never_connect => {
            if changed {
                note(d, format!("frontend {front:?}: the backend never connects (NeverConnect)"));
            }
            false
        }
        BackendStep::Connect => {
            match d.connect(sim) {
                Ok(()) => d.bus().set_state(&mut sim.xenstore, XenbusState::Connected),
                Err(e) => {
                    *d.record().failed_connects += 1;
                    note(d, format!("connection refused: {e:?}"));
                    d.bus().set_state(&mut sim.xenstore, XenbusState::Closed);
                }
            }
            true
        }
        BackendStep::Close => {
            close(d, sim);
            true
        }
        BackendStep::Reinit => {
            d.bus().set_state(&mut sim.xenstore, XenbusState::InitWait);
            true
        }
        BackendStep::Remove => {
            close(d, sim);
            sim.xenstore.toolstack_remove(&d.bus().paths.front);
            sim.xenstore.toolstack_remove(&d.bus().paths.back);
            d.bus().phase = Phase::Detached;
            true
        }
    }
}

/// Disconnects, then `Closed`.
pub(super) fn close<D: Device>(d: &mut D, sim: &mut Sim) {
    d.bus().kicked = false;
    d.disconnect(sim);
    d.bus().set_state(&mut sim.xenstore, XenbusState::Closed);
}

/// Arms a handshake fault (`GoClosed` applies as the backends step).
pub(super) fn arm<D: Device>(d: &mut D, xs: &mut SimXenstored, fault: BusFault) {
    match fault {
        BusFault::NeverConnect => d.bus().never_connect = true,
        BusFault::GoClosed => d.bus().go_closed = true,
        BusFault::StateGarbage => {
            *d.record().faults_applied += 1;
            xs.toolstack_write(&d.bus().paths.back_node("state"), b"banana");
        }
    }
}

/// One class of devices among the backends, by id.
pub(super) type Class<D> = fn(&mut Backends) -> &mut BTreeMap<u32, D>;

impl Sim {
    /// Attaches `d` as device `id` of its class and fires the guest's
    /// watches.
    pub(super) fn attach_device<D: Device>(&mut self, class: Class<D>, id: u32, d: D) {
        d.write_nodes(&mut self.xenstore);
        class(&mut self.backends).insert(id, d);
        self.serve_store();
    }

    /// Starts detaching device `id`: the backend goes `Closing`. False if
    /// it is not attached (or already detaching).
    pub(super) fn detach_device<D: Device>(&mut self, class: Class<D>, id: u32) -> bool {
        let Some(d) = class(&mut self.backends).get_mut(&id) else { return false };
        let attached = d.bus().phase == Phase::Attached;
        if attached {
            d.bus().phase = Phase::Detaching;
            d.bus().set_state(&mut self.xenstore, XenbusState::Closing);
        }
        self.serve_store();
        attached
    }

    /// Steps every device of the class; true if any wrote the store.
    pub(super) fn step_devices<D: Device>(&mut self, class: Class<D>) -> bool {
        let ids: Vec<u32> = class(&mut self.backends).keys().copied().collect();
        let mut wrote = false;
        for id in ids {
            // Out of the map while it works on the rest of the simulator.
            let Some(mut d) = class(&mut self.backends).remove(&id) else { continue };
            wrote |= step(&mut d, self);
            class(&mut self.backends).insert(id, d);
        }
        wrote
    }

    /// Marks the device whose dom0 port is `backend_port` as kicked.
    pub(super) fn device_kicked<D: Device>(&mut self, class: Class<D>, backend_port: u32) {
        let ours = |d: &&mut D| d.ports().is_some_and(|(_, b)| b == backend_port);
        if let Some(d) = class(&mut self.backends).values_mut().find(ours) {
            d.bus().kicked = true;
        }
    }

    /// The devices of the class the guest sent on since last served.
    pub(super) fn kicked_devices<D: Device>(&mut self, class: Class<D>) -> Vec<u32> {
        class(&mut self.backends).iter_mut().filter_map(|(&id, d)| d.bus().kicked.then_some(id)).collect()
    }

    /// Serves device `id` with `serve` (true: notify the guest), out of
    /// the map meanwhile, then raises the guest's port if asked.
    pub(super) fn serve_device<D: Device>(
        &mut self,
        class: Class<D>,
        id: u32,
        serve: impl FnOnce(&mut D, &Sim) -> bool,
    ) {
        let Some(mut d) = class(&mut self.backends).remove(&id) else { return };
        d.bus().kicked = false;
        let notify = serve(&mut d, self);
        let port = d.ports().map(|(port, _)| port);
        class(&mut self.backends).insert(id, d);
        if let (true, Some(port)) = (notify, port) {
            self.raise(port);
        }
    }

    /// The guest resumed in a new domain: every connection of the class is
    /// dropped, and libxl makes each device again (frontend
    /// `Initialising`, backend `InitWait`). A device being detached is gone.
    pub(super) fn devices_for_new_domain<D: Device>(&mut self, class: Class<D>) {
        for d in class(&mut self.backends).values_mut() {
            if d.bus().phase == Phase::Detached {
                continue;
            }
            d.drop_for_new_domain();
            let bus = d.bus();
            bus.kicked = false;
            bus.last_front = None;
            self.xenstore.toolstack_remove(&bus.paths.front);
            self.xenstore.toolstack_remove(&bus.paths.back);
            if bus.phase == Phase::Detaching {
                bus.phase = Phase::Detached;
                bus.state = XenbusState::Closed;
            } else {
                bus.state = XenbusState::InitWait;
                d.write_nodes(&mut self.xenstore);
            }
        }
    }
}
