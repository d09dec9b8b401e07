//! The suspend event channel. When a guest names a port in
//! `device/suspend/event-channel`, libxl binds to it and asks for a suspend
//! with one notification instead of writing `control/shutdown` and waiting
//! for the guest to acknowledge through xenstore; Xen then signals the same
//! channel back to dom0 when the guest has suspended.
//!
//! The guest allocates a port open to dom0 and writes its number there.
//! libxl binds for each suspend and closes its end when done, which leaves
//! the port unbound again: one port serves every suspend of a domain,
//! including after a cancelled one. A resumed domain has no ports; the
//! binding table allocates a new one (`events::rebind_all`) and this task
//! publishes it again. libxl leaves the node empty in every domain it
//! creates, so until the new number is written a save simply uses the
//! xenstore handshake.
//!
//! Only dom0 can notify the port, the same party that may write
//! `control/shutdown`: a notification is a suspend request like that one.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::events::{self, Binding};
use kernel::sched::{self, WaitQueue};

/// Where libxl looks for the port.
pub const NODE: &str = "device/suspend/event-channel";
/// The binding's name in the event table.
pub const BINDING: &str = "suspend-request";

/// Set by the port's handler (in the upcall), taken by the task.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Set after a resume in a new domain: the port number changed.
static REPUBLISH: AtomicBool = AtomicBool::new(false);
/// The task waits here for either.
static WAKE: WaitQueue = WaitQueue::new();

/// Asks the task to publish the (new) port after a resume in a new domain.
struct ChannelDevice;

impl kernel::pm::Device for ChannelDevice {
    fn name(&self) -> &'static str {
        "suspend-channel"
    }
    fn suspend(&self) -> Result<(), &'static str> {
        Ok(())
    }
    fn resume(&self) {
        REPUBLISH.store(true, Ordering::Release);
        WAKE.wake_all();
    }
    fn cancel(&self) {
        // Same domain, same port: libxl's end is closed when it is done,
        // which makes the port unbound and ready for the next suspend.
    }
}

/// Writes the port's number where libxl reads it.
fn publish() {
    let Some(port) = events::port_of(BINDING) else {
        log::warn!("suspend-channel: the port was not bound again; suspends use control/shutdown");
        return;
    };
    match kernel::xenstore::write(NODE, &alloc::format!("{}", port)) {
        Ok(()) => log::info!("suspend-channel: port {} offered in {}", port, NODE),
        Err(e) => {
            log::info!("suspend-channel: cannot write {} ({:?}): this toolstack asks through control/shutdown", NODE, e)
        }
    }
}

/// Starts the task that offers the channel and runs the suspends it asks
/// for (`enabled` false: nothing is offered).
pub fn spawn(enabled: bool) {
    REQUESTED.store(false, Ordering::Relaxed);
    REPUBLISH.store(false, Ordering::Relaxed);
    if !enabled {
        log::info!("suspend-channel: not offered (ballast.suspend_evtchn=0); suspends use control/shutdown");
        return;
    }
    sched::spawn("suspend-channel", || {
        let notified = |_port: u32| {
            REQUESTED.store(true, Ordering::Release);
            WAKE.wake_all();
        };
        if let Err(e) = events::bind(Binding::Unbound { remote_dom: 0 }, BINDING, notified) {
            log::warn!("suspend-channel: no port for dom0 ({:?}); suspends use control/shutdown", e);
            return;
        }
        kernel::pm::register(Arc::new(ChannelDevice));
        publish();
        loop {
            let (request, republish) = WAKE.wait_until(|| {
                let request = REQUESTED.swap(false, Ordering::AcqRel);
                let republish = REPUBLISH.swap(false, Ordering::AcqRel);
                (request || republish).then_some((request, republish))
            });
            if republish {
                publish();
            }
            if request {
                log::info!(
                    "control: suspend requested through the event channel (port {})",
                    events::port_of(BINDING).unwrap_or(0)
                );
                kernel::suspend::do_suspend();
            }
        }
    });
}
