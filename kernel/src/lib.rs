//! ballast's kernel.
//!
//! Portable logic (command line, time arithmetic, allocators, the freezer
//! and suspend bookkeeping) builds everywhere and is tested on the host;
//! the modules that touch Xen directly build only for the bare-metal target.

#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod mm;
pub mod selftest;
pub mod suspend_seq;
pub mod time;

#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod events;
#[cfg(target_os = "none")]
pub mod events_mask;
#[cfg(target_os = "none")]
pub mod grant;
#[cfg(target_os = "none")]
pub mod panic;
#[cfg(target_os = "none")]
pub mod platform;
#[cfg(target_os = "none")]
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
