//! ballast's kernel.
//!
//! Xen is reached only through `Hv`: the real hypervisor on the bare-metal
//! target, the one simulated Xen (`xen::sim`) in host builds, where the
//! memory, event, grant and power-management layers run under `cargo test`
//! (`testing` boots them). Modules still tied to the target (the scheduler
//! and what needs it, traps, the console) are gated below.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

/// The hypervisor: the kernel reaches Xen only through this alias and the
/// `Hypervisor` trait (the real Xen on the target, the one simulated Xen in
/// host builds).
#[cfg(target_os = "none")]
pub type Hv = xen::hv::Xen;
#[cfg(not(target_os = "none"))]
pub type Hv = xen::sim::SimXen;
pub use xen::seam::{Hypervisor, XenError};

pub mod cmdline;
pub mod mm;
pub mod selftest;
pub mod suspend_seq;
#[cfg(not(target_os = "none"))]
pub mod testing;
pub mod time;

#[cfg(target_os = "none")]
pub mod console;
pub mod events;
pub mod events_mask;
pub mod grant;
#[cfg(target_os = "none")]
pub mod panic;
pub mod platform;
pub mod pm;
#[cfg(target_os = "none")]
pub mod power;
#[cfg(target_os = "none")]
pub mod report;
#[cfg(target_os = "none")]
pub mod sched;
#[cfg(target_os = "none")]
pub mod start;
#[cfg(target_os = "none")]
pub mod suspend;
#[cfg(target_os = "none")]
pub mod traps;
#[cfg(target_os = "none")]
pub mod xenstore;
