//! Driver power management for suspend: every device registers three
//! callbacks. `suspend` runs in registration order before the domain is
//! suspended; afterwards either `resume` (running in a new domain: rings,
//! ports and grant frames are new) or `cancel` (the suspend was cancelled,
//! as after `xl save -c`: the old domain continues) runs in reverse order.
//!
//! Devices come and go at run time (a frontend per backend): `register`
//! returns the id that `unregister` takes, and the list holds the only
//! reference the PM layer keeps.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use spin::Mutex;

pub trait Device: Send + Sync {
    fn name(&self) -> &'static str;
    /// Quiesce; an error aborts the suspend (devices already suspended are
    /// cancelled).
    fn suspend(&self) -> Result<(), &'static str>;
    /// After a resume in a new domain.
    fn resume(&self);
    /// After a cancelled suspend, in the same domain.
    fn cancel(&self);
}

/// A registration, for `unregister`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId(u64);

/// A device that would not suspend; the suspend is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub device: &'static str,
    pub reason: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "device {} could not suspend: {}", self.device, self.reason)
    }
}

struct Registry {
    devices: Vec<(DeviceId, Arc<dyn Device>)>,
    next_id: u64,
}

/// Registered devices, in registration order. Locked only briefly, never
/// while a device callback runs (a callback may register or unregister).
static DEVICES: Mutex<Registry> = Mutex::new(Registry { devices: Vec::new(), next_id: 1 });

/// Starts with no devices (a simulated guest boots again in the same
/// process; on Xen the list is empty at boot anyway).
pub fn init() {
    DEVICES.lock().devices.clear();
}

pub fn register(dev: Arc<dyn Device>) -> DeviceId {
    let mut r = DEVICES.lock();
    let id = DeviceId(r.next_id);
    r.next_id += 1;
    r.devices.push((id, dev));
    id
}

/// Forgets a device; returns whether it was registered.
pub fn unregister(id: DeviceId) -> bool {
    let mut r = DEVICES.lock();
    let before = r.devices.len();
    r.devices.retain(|(d, _)| *d != id);
    r.devices.len() != before
}

/// How many devices are registered.
pub fn count() -> usize {
    DEVICES.lock().devices.len()
}

fn devices() -> Vec<Arc<dyn Device>> {
    DEVICES.lock().devices.iter().map(|(_, d)| d.clone()).collect()
}

/// Suspends every device in order; on failure cancels the ones already
/// suspended (in reverse) and names the device that failed.
pub fn suspend_all() -> Result<usize, Refusal> {
    let devs = devices();
    for (i, d) in devs.iter().enumerate() {
        if let Err(reason) = d.suspend() {
            for done in devs[..i].iter().rev() {
                done.cancel();
            }
            return Err(Refusal { device: d.name(), reason });
        }
    }
    Ok(devs.len())
}

pub fn resume_all() {
    for d in devices().iter().rev() {
        d.resume();
    }
}

pub fn cancel_all() {
    for d in devices().iter().rev() {
        d.cancel();
    }
}
