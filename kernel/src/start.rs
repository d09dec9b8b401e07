//! From Xen's entry to a running kernel.

use crate::events;
use crate::{cmdline, console, events_mask, mm, platform, sched, selftest, smp, time, traps};
use crate::{Hv, Hypervisor};
use xen::abi::start_info;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kernel proper: brings up everything the drivers stand on and
/// returns the parsed command line. The caller then starts the drivers and
/// becomes the idle task.
///
/// # Safety
/// `si` must be the start_info pointer Xen passed to `_start`, and this must
/// be called exactly once, on the boot stack, with events masked.
pub unsafe fn kmain(si: *mut start_info) -> cmdline::Options {
    // SAFETY: forwarded from our caller.
    unsafe { platform::init(si) };
    platform::map_shared_info();
    time::rebase_on_this_host();
    console::init();
    console::init_logger();
    traps::init();

    let (major, minor) = Hv::version();
    let mut extra = [0u8; 16];
    let extra = Hv::extraversion(&mut extra);
    let (pages, raw_cmdline) = platform::with_start_info(|si| {
        // SAFETY: cmd_line is a plain byte array inside start_info.
        let raw: &'static [u8; 1024] = unsafe { &*(core::ptr::addr_of!(si.cmd_line) as *const [u8; 1024]) };
        (si.nr_pages, raw)
    });
    let line = cmdline::as_text(raw_cmdline);
    log::info!(
        "ballast {} on Xen {}.{}{}: domain pages={} ({} MiB), cmdline=\"{}\"",
        VERSION,
        major,
        minor,
        extra,
        pages,
        pages / 256,
        line
    );
    let opts = cmdline::Options::parse(line);
    if opts.panic_on_boot {
        panic!("panic requested on the command line (ballast.panic=1)");
    }

    crate::suspend::init(opts.release_at_suspend);
    crate::pm::init();
    mm::kernel_memory::init();
    sched::init();
    events::init();
    smp::init();
    if let Some(port) = console::port() {
        if let Err(e) = events::attach(port, "console", console::on_event) {
            log::error!("console: cannot attach port {}: {:?}", port, e);
        }
    }
    crate::grant::init();
    crate::restock::spawn();
    smp::configure_selftests(opts.hold_vcpu);
    smp::spawn_boot_vcpu_tasks();
    if smp::possible() > 1 {
        selftest::spawn_movers(opts.movers);
    }
    let (secs, _) = time::wall_clock();
    log::info!("time: wall clock {} s since the epoch", secs);
    selftest::spawn_pattern(opts.pattern_mib);
    selftest::spawn_dirtier(opts.dirty_mib);
    selftest::spawn_grant_check();
    selftest::spawn_sleepers(opts.sleepers);
    selftest::spawn_aspace(opts.aspace_pages);
    selftest::hog::set_size(opts.hog_mib);
    if opts.limit_probe {
        selftest::spawn_limit_probe();
    }
    if opts.stubborn_attempts > 0 {
        selftest::spawn_stubborn(opts.stubborn_attempts);
    }
    events_mask::unmask();
    log::info!("kernel: up in {} ms", time::now_ns() / 1_000_000);
    opts
}
