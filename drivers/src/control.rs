//! Shutdown control: what the toolstack asks through `control/shutdown`
//! and `control/sysrq`.
//!
//! The guest advertises what it supports under `control/feature-*`,
//! watches `control/shutdown`, and acknowledges a request by writing the
//! empty string back (libxl cancels a suspend that is not acknowledged).
//! Anything it does not understand is logged and ignored: the guest runs on.

/// A value found in `control/shutdown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// Empty: nothing asked (or our own acknowledgement firing the watch).
    None,
    Poweroff,
    Halt,
    Reboot,
    Suspend,
    /// Anything else, kept for the log line.
    Unknown(alloc::string::String),
}

impl ShutdownRequest {
    pub fn parse(value: &str) -> Self {
        match value {
            "" => Self::None,
            "poweroff" => Self::Poweroff,
            "halt" => Self::Halt,
            "reboot" => Self::Reboot,
            "suspend" => Self::Suspend,
            other => Self::Unknown(other.chars().take(64).collect()),
        }
    }
}

/// A value found in `control/sysrq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysrqRequest {
    None,
    /// `t`: dump task states.
    Tasks,
    /// `m`: print memory figures.
    Memory,
    /// A single key ballast has no action for.
    UnknownKey(char),
    /// Not a single character.
    Garbage,
}

impl SysrqRequest {
    pub fn parse(value: &str) -> Self {
        let mut chars = value.chars();
        match (chars.next(), chars.next()) {
            (None, _) | (Some('\0'), None) => Self::None,
            (Some('t'), None) => Self::Tasks,
            (Some('m'), None) => Self::Memory,
            (Some(c), None) => Self::UnknownKey(c),
            _ => Self::Garbage,
        }
    }
}

/// Features written under `control/` at start.
pub const FEATURES: [&str; 4] = ["feature-poweroff", "feature-reboot", "feature-suspend", "feature-sysrq"];

mod task {
    use super::*;
    use kernel::power::{self, Stop};
    use kernel::rejects::{excerpt, RateLimit};
    use kernel::{report, sched, warn_limited, xenstore};

    /// dom0 may rewrite either node as fast as it likes.
    static SHUTDOWN_REJECTS: RateLimit = RateLimit::new();
    static SYSRQ_REJECTS: RateLimit = RateLimit::new();

    /// Reads and acknowledges `control/shutdown` in one transaction, as
    /// libxl expects: the value is only taken if the empty string we write
    /// back commits.
    fn take_shutdown_request() -> xenstore::Result<ShutdownRequest> {
        xenstore::transaction(|tx| {
            let value = match xenstore::read_tx(tx, "control/shutdown") {
                Ok(v) => v,
                Err(xen::xenstore::XsError::Errno(xenstore::Errno::ENOENT)) => return Ok(ShutdownRequest::None),
                Err(e) => return Err(e),
            };
            let req = ShutdownRequest::parse(&value);
            if matches!(req, ShutdownRequest::None | ShutdownRequest::Unknown(_)) {
                return Ok(req);
            }
            xenstore::write_tx(tx, "control/shutdown", "")?;
            Ok(req)
        })
    }

    pub fn spawn() {
        sched::spawn("shutdown-control", || {
            for f in FEATURES {
                let path = alloc::format!("control/{}", f);
                if let Err(e) = xenstore::write(&path, "1") {
                    log::info!("control: cannot advertise {} ({:?}): the toolstack owns that node", path, e);
                }
            }
            let watch = match xenstore::Watch::new("control/shutdown") {
                Ok(w) => w,
                Err(e) => {
                    log::error!("control: cannot watch control/shutdown: {:?}", e);
                    return;
                }
            };
            log::info!("control: watching control/shutdown");
            loop {
                watch.next();
                let fired_ns = kernel::time::now_ns();
                match take_shutdown_request() {
                    Ok(ShutdownRequest::None) => {}
                    Ok(ShutdownRequest::Poweroff) | Ok(ShutdownRequest::Halt) => {
                        log::info!("control: poweroff requested");
                        power::stop(Stop::Poweroff);
                    }
                    Ok(ShutdownRequest::Reboot) => {
                        log::info!("control: reboot requested");
                        power::stop(Stop::Reboot);
                    }
                    Ok(ShutdownRequest::Suspend) => {
                        // libxl gives the acknowledgement 60 s, then the
                        // suspend itself another 60 s: this is the first half.
                        log::info!(
                            "control: suspend requested; acknowledged {} us after the watch fired",
                            (kernel::time::now_ns() - fired_ns) / 1000
                        );
                        kernel::suspend::do_suspend();
                        // The watch was registered again on a new ring and
                        // fires once; that read finds the empty value.
                    }
                    Ok(ShutdownRequest::Unknown(v)) => {
                        warn_limited!(SHUTDOWN_REJECTS, "control: ignoring unknown shutdown request {:?}", v);
                    }
                    Err(e) => {
                        warn_limited!(SHUTDOWN_REJECTS, "control: reading control/shutdown failed: {:?}; ignored", e)
                    }
                }
            }
        });

        sched::spawn("sysrq", || {
            xenstore::on_each_change("control/sysrq", "", || {
                let value = match xenstore::read("control/sysrq") {
                    Ok(v) => v,
                    Err(xen::xenstore::XsError::Errno(xenstore::Errno::ENOENT)) => return,
                    Err(e) => {
                        warn_limited!(SYSRQ_REJECTS, "control: reading control/sysrq failed: {:?}; ignored", e);
                        let _ = xenstore::write("control/sysrq", "");
                        return;
                    }
                };
                let req = SysrqRequest::parse(&value);
                if req != SysrqRequest::None {
                    let _ = xenstore::write("control/sysrq", "");
                }
                match req {
                    SysrqRequest::None => {}
                    SysrqRequest::Tasks => report::dump_tasks(),
                    SysrqRequest::Memory => report::dump_memory(),
                    SysrqRequest::UnknownKey(c) => {
                        warn_limited!(SYSRQ_REJECTS, "control: sysrq key {:?} has no action; ignored", c)
                    }
                    SysrqRequest::Garbage => {
                        warn_limited!(
                            SYSRQ_REJECTS,
                            "control: sysrq value {:?} is not a single key; ignored",
                            excerpt(&value, 32)
                        )
                    }
                }
            })
        });
    }
}

pub use task::spawn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_values() {
        assert_eq!(ShutdownRequest::parse(""), ShutdownRequest::None);
        assert_eq!(ShutdownRequest::parse("suspend"), ShutdownRequest::Suspend);
        assert_eq!(ShutdownRequest::parse("halt"), ShutdownRequest::Halt);
        assert!(matches!(ShutdownRequest::parse("Suspend "), ShutdownRequest::Unknown(_)));
        let long = "x".repeat(5000);
        match ShutdownRequest::parse(&long) {
            ShutdownRequest::Unknown(v) => assert_eq!(v.len(), 64),
            other => panic!("{:?}", other),
        }
    }

    #[test]
    fn sysrq_values() {
        assert_eq!(SysrqRequest::parse("t"), SysrqRequest::Tasks);
        assert_eq!(SysrqRequest::parse("m"), SysrqRequest::Memory);
        assert_eq!(SysrqRequest::parse(""), SysrqRequest::None);
        assert_eq!(SysrqRequest::parse("\0"), SysrqRequest::None);
        assert_eq!(SysrqRequest::parse("q"), SysrqRequest::UnknownKey('q'));
        assert_eq!(SysrqRequest::parse("tm"), SysrqRequest::Garbage);
        assert_eq!(SysrqRequest::parse("\u{fffd}zz"), SysrqRequest::Garbage);
    }
}
