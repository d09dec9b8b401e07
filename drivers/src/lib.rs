//! ballast's drivers. Like Tock's capsules, this crate has no `unsafe`:
//! whatever needs raw memory or hypercalls is a method of `kernel` or `xen`.
//! Request parsing and policy are plain functions; the driver tasks run on
//! the real Xen and, under `cargo test`, on the one simulated Xen.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod balloon;
pub mod blk_pattern;
pub mod blkfront;
pub mod console_input;
pub mod control;
pub mod data;
pub mod meminfo;
pub mod netfront;
pub mod pressure;
pub mod suspend_channel;
pub mod vcpus;
pub mod xenbus;

/// Starts every driver's task (called once the kernel is up).
pub fn start(opts: &kernel::cmdline::Options) {
    kernel::xenstore::init();
    use alloc::sync::Arc;
    kernel::pm::register(Arc::new(kernel::console::ConsoleDevice));
    kernel::pm::register(Arc::new(kernel::xenstore::XenstoreDevice));
    if opts.balloon {
        kernel::pm::register(Arc::new(balloon::BalloonDevice));
    }
    kernel::pm::register(Arc::new(kernel::grant::GrantDevice));
    control::spawn();
    suspend_channel::spawn(opts.suspend_channel);
    if opts.balloon {
        balloon::spawn();
        pressure::spawn();
    } else {
        kernel::mm::pressure::set_enabled(false);
        log::info!("balloon: off (ballast.balloon=0): memory/target is ignored and no memory moves");
    }
    meminfo::spawn(opts.balloon);
    console_input::spawn();
    data::spawn();
    vcpus::spawn();
    blkfront::spawn(opts.blk_mib, opts.blk_bench_mib);
    netfront::spawn(netfront::stack::Config::new(opts.ip, opts.ping));
}
