//! ballast's drivers. Like Tock's capsules, this crate has no `unsafe`:
//! whatever needs raw memory or hypercalls is a method of `kernel` or `xen`.
//! Request parsing and policy are plain functions, tested on the host; the
//! driver tasks build only for the kernel.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod balloon;
pub mod console_input;
pub mod control;
pub mod data;

/// Starts every driver's task (called once the kernel is up).
#[cfg(target_os = "none")]
pub fn start(_opts: &kernel::cmdline::Options) {
    kernel::xenstore::init();
    kernel::pm::register(&kernel::console::ConsoleDevice);
    kernel::pm::register(&kernel::xenstore::XenstoreDevice);
    kernel::pm::register(&balloon::BalloonDevice);
    kernel::pm::register(&kernel::grant::GrantDevice);
    control::spawn();
    balloon::spawn();
    console_input::spawn();
    data::spawn();
}
