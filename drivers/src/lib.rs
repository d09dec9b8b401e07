//! ballast's drivers. Like Tock's capsules, this crate has no `unsafe`:
//! whatever needs raw memory or hypercalls is a method of `kernel` or `xen`.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// Starts every driver's task (called once the kernel is up).
#[cfg(target_os = "none")]
pub fn start(_opts: &kernel::cmdline::Options) {}
