//! Driver power management for suspend: every device registers three
//! callbacks. `suspend` runs in registration order before the domain is
//! suspended; afterwards either `resume` (running in a new domain: rings,
//! ports and grant frames are new) or `cancel` (the suspend was cancelled,
//! as after `xl save -c`: the old domain continues) runs in reverse order.

use alloc::vec::Vec;
use spin::Mutex;

pub trait Device: Sync {
    fn name(&self) -> &'static str;
    /// Quiesce; an error aborts the suspend (devices already suspended are
    /// cancelled).
    fn suspend(&self) -> Result<(), &'static str>;
    /// After a resume in a new domain.
    fn resume(&self);
    /// After a cancelled suspend, in the same domain.
    fn cancel(&self);
}

/// Registered devices, in registration order. Locked only briefly by tasks.
static DEVICES: Mutex<Vec<&'static dyn Device>> = Mutex::new(Vec::new());

pub fn register(dev: &'static dyn Device) {
    DEVICES.lock().push(dev);
}

fn devices() -> Vec<&'static dyn Device> {
    DEVICES.lock().clone()
}

/// Suspends every device in order; on failure cancels the ones already
/// suspended (in reverse) and names the device that failed.
pub fn suspend_all() -> Result<usize, (&'static str, &'static str)> {
    let devs = devices();
    for (i, d) in devs.iter().enumerate() {
        if let Err(why) = d.suspend() {
            for done in devs[..i].iter().rev() {
                done.cancel();
            }
            return Err((d.name(), why));
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
