//! ballast's kernel.
//!
//! Xen is reached only through `Hv`: the real hypervisor on the bare-metal
//! target, the one simulated Xen (`xen::sim`) in host builds, where the
//! whole kernel runs under `cargo test` (`testing` boots it). Only the
//! panic path, which ends the program, is the target's alone.

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
pub mod console;
pub mod events;
pub mod events_mask;
pub mod grant;
pub mod mm;
#[cfg(target_os = "none")]
pub mod panic;
pub mod percpu;
pub mod platform;
pub mod pm;
pub mod power;
pub mod rejects;
pub mod report;
pub mod restock;
pub mod sched;
pub mod selftest;
pub mod shared_page;
pub mod smp;
pub mod start;
pub mod suspend;
pub mod suspend_seq;
#[cfg(not(target_os = "none"))]
pub mod testing;
pub mod time;
pub mod transient;
pub mod traps;
pub mod xenstore;
