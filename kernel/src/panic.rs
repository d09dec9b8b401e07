//! The end of the line: report a panic on the console and have Xen mark the
//! domain crashed (so `on_crash` in the xl config decides what happens).

use crate::{Hv, Hypervisor};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use xen::abi::sched;

static PANICKING: AtomicBool = AtomicBool::new(false);

pub fn report_and_crash(info: &PanicInfo) -> ! {
    if !PANICKING.swap(true, Ordering::SeqCst) {
        match info.location() {
            Some(loc) => crate::console::emergency_write(format_args!(
                "ballast panicked at {}:{}:{}: {}\n",
                loc.file(),
                loc.line(),
                loc.column(),
                info.message()
            )),
            None => crate::console::emergency_write(format_args!("ballast panicked: {}\n", info.message())),
        }
    }
    Hv::shutdown(sched::REASON_CRASH)
}
