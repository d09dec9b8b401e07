//! The PV console: ballast's only output, and the `log` backend.
//!
//! Output goes through the ring with back-pressure: when the ring is full
//! the writer notifies xenconsoled and waits for room, so no byte is lost or
//! reordered however slow the reader is.

use crate::{events_mask, platform, time};
use crate::{Hv, Hypervisor};
use core::fmt::{self, Write};
use spin::Mutex;
use xen::console::{ConsoleInterface, ConsoleRing};

struct Console {
    ring: ConsoleRing,
    port: u32,
}

/// The one console. A lock because every task and the upcall may log; it
/// is only taken with events masked (see `events_mask`).
static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

/// Finds the ring from start_info and starts using it.
pub fn init() {
    let (mfn, port) = platform::with_start_info(|si| {
        // SAFETY: a domU's start_info always carries the domU console variant.
        unsafe { (si.console.domU.mfn, si.console.domU.evtchn) }
    });
    attach(platform::pfn_to_va(platform::mfn_to_pfn(mfn)), port);
}

/// Uses the ring page at `va` with event channel `port` (again after a
/// resume, when both are new).
pub fn attach(va: u64, port: u32) {
    events_mask::without_events(|| {
        // SAFETY: `va` is the console ring page inside the kernel mapping.
        let ring = unsafe { ConsoleRing::new(va as *mut ConsoleInterface) };
        *CONSOLE.lock() = Some(Console { ring, port });
    });
}

/// The console's event channel, or None before `init`.
pub fn port() -> Option<u32> {
    events_mask::without_events(|| CONSOLE.lock().as_ref().map(|c| c.port))
}

impl Console {
    fn write_all(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.ring.write(bytes);
            bytes = &bytes[n..];
            if n == 0 {
                // Full: make sure xenconsoled knows, and give it the CPU.
                Hv::send(self.port);
                Hv::yield_now();
            }
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // The ring is a terminal: lines end in CR LF.
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.write_all(b"\r\n");
            }
            self.write_all(part.as_bytes());
        }
        Ok(())
    }
}

/// Writes formatted text to the console as one unit.
pub fn write_fmt(args: fmt::Arguments) {
    events_mask::without_events(|| {
        if let Some(c) = CONSOLE.lock().as_mut() {
            let _ = c.write_fmt(args);
            Hv::send(c.port);
        }
    });
}

/// Reads whatever console input is waiting (non-blocking).
pub fn read_available(buf: &mut [u8]) -> usize {
    let n = events_mask::without_events(|| CONSOLE.lock().as_mut().map_or(0, |c| c.ring.read(buf)));
    if n > 0 {
        // Room in the input ring: tell xenconsoled it may send more.
        if let Some(p) = port() {
            Hv::send(p);
        }
    }
    n
}

/// Tasks waiting for console input (woken by the console's event).
static INPUT_WAITERS: crate::sched::WaitQueue = crate::sched::WaitQueue::new();

/// Blocks until at least one byte of input arrives; a freezer safe point,
/// and a reader blocked here across a suspend gets what is sent after the
/// resume.
pub fn read_blocking(buf: &mut [u8]) -> usize {
    INPUT_WAITERS.wait_until(|| match read_available(buf) {
        0 => None,
        n => Some(n),
    })
}

/// The console's event handler: input arrived or output was consumed.
pub fn on_event(_port: u32) {
    INPUT_WAITERS.wake_all();
}

/// Writes straight to the ring, taking the lock even if a panicking holder
/// left it taken: used only on the way down.
pub fn emergency_write(args: fmt::Arguments) {
    events_mask::mask();
    // Another vCPU in the middle of a line lets go soon; a holder that
    // never does is the code that panicked (on this vCPU or another).
    let mut guard = None;
    for _ in 0..EMERGENCY_LOCK_YIELDS {
        guard = CONSOLE.try_lock();
        if guard.is_some() {
            break;
        }
        Hv::yield_now();
    }
    let mut guard = guard.unwrap_or_else(|| {
        // SAFETY: the holder has had thousands of chances to let go: it is
        // the panicking code itself and will never touch the ring again.
        unsafe { CONSOLE.force_unlock() };
        CONSOLE.lock()
    });
    if let Some(c) = guard.as_mut() {
        let _ = c.write_fmt(args);
        Hv::send(c.port);
        // Wait (bounded) for xenconsoled to drain, so the last words survive
        // the domain being torn down.
        for _ in 0..10_000 {
            if c.ring.pending_output() == 0 {
                break;
            }
            Hv::yield_now();
        }
    }
}

/// How long `emergency_write` waits for the console lock, in yields to Xen.
const EMERGENCY_LOCK_YIELDS: u32 = 5_000;

/// The `log` backend: one line per record, stamped with seconds since boot.
struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let ns = time::now_ns();
        write_fmt(format_args!(
            "[{:>5}.{:06}] {:<5} {}\n",
            ns / 1_000_000_000,
            (ns / 1_000) % 1_000_000,
            record.level(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;

pub fn init_logger() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Waits (bounded) until xenconsoled has read everything written.
pub fn flush(timeout_ns: u64) -> bool {
    let deadline = time::now_ns() + timeout_ns;
    loop {
        let pending = events_mask::without_events(|| CONSOLE.lock().as_ref().map_or(0, |c| c.ring.pending_output()));
        if pending == 0 {
            return true;
        }
        if time::now_ns() >= deadline {
            return false;
        }
        if let Some(p) = port() {
            Hv::send(p);
        }
        Hv::yield_now();
    }
}

/// The console as a suspend-aware device.
pub struct ConsoleDevice;

impl crate::pm::Device for ConsoleDevice {
    fn name(&self) -> &'static str {
        "console"
    }
    fn suspend(&self) -> Result<(), &'static str> {
        // Not fatal if xenconsoled is slow: the ring's contents are saved
        // with the domain and drained after the resume.
        flush(500_000_000);
        Ok(())
    }
    fn resume(&self) {
        // The ring stays at the same pfn; its frame and port are new.
        init();
        INPUT_WAITERS.wake_all();
    }
    fn cancel(&self) {
        INPUT_WAITERS.wake_all();
    }
}
