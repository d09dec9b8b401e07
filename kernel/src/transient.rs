//! Xen refusals that may pass: right after a restore the new host can be
//! short of memory or ports for a moment. What must come back in the new
//! domain (a vCPU's timer and IPI, the vCPU itself, the grant table) is
//! tried a few times before the guest gives it up and says so.

use crate::{Hv, Hypervisor};
use core::fmt;

/// Attempts before a refusal counts as final.
pub const TRIES: u32 = 3;

/// `attempt` until it succeeds or has failed [`TRIES`] times; each
/// refusal but the last is logged as `"<what> refused (<error>); trying
/// again"`, and the last is returned for the caller to report.
pub fn retry<T, E: fmt::Debug>(what: fmt::Arguments, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut tries = 1;
    loop {
        match attempt() {
            Err(e) if tries < TRIES => {
                log::warn!("{} refused ({:?}); trying again", what, e);
                tries += 1;
                Hv::yield_now();
            }
            r => return r,
        }
    }
}
