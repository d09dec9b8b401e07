//! From Xen's entry to a running kernel.

use crate::{cmdline, console, events_mask, platform, traps};
use xen::abi::start_info;
use xen::hv;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The kernel proper.
///
/// # Safety
/// `si` must be the start_info pointer Xen passed to `_start`, and this must
/// be called exactly once, on the boot stack, with events masked.
pub unsafe fn kmain(si: *mut start_info) -> ! {
    // SAFETY: forwarded from our caller.
    unsafe { platform::init(si) };
    platform::map_shared_info();
    console::init();
    console::init_logger();
    traps::init();

    let (major, minor) = hv::version();
    let mut extra = [0u8; 16];
    let extra = hv::extraversion(&mut extra);
    let (pages, raw_cmdline) = platform::with_start_info(|si| {
        // SAFETY: cmd_line is a plain byte array inside start_info.
        let raw: &'static [u8; 1024] = unsafe { &*(core::ptr::addr_of!(si.cmd_line) as *const [u8; 1024]) };
        (si.nr_pages, raw)
    });
    let line = cmdline::as_text(raw_cmdline);
    log::info!(
        "ballast {} on Xen {}.{}{}: domain pages={} ({} MiB), cmdline=\"{}\"",
        VERSION, major, minor, extra, pages, pages / 256, line
    );
    let opts = cmdline::Options::parse(line);
    events_mask::unmask();

    if opts.panic_on_boot {
        panic!("panic requested on the command line (ballast.panic=1)");
    }

    crate::run(opts)
}
