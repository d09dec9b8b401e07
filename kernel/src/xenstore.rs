//! The xenstore client on the real ring.
//!
//! Requests are numbered by the `Router`, appended whole to an outgoing
//! queue and pumped into the ring as space allows, so two requests never
//! interleave and a full ring never blocks with a lock held. Replies and
//! watch events are drained from the ring by whichever task is waiting
//! (every xenstore waiter sleeps on one queue that the xenstore event
//! wakes), routed by request id or watch token, and picked up by their
//! owners. Across a suspend the router re-sends what was in flight on the
//! new ring and registers every watch again.

use crate::sched::WaitQueue;
use crate::{events, events_mask, platform};
use crate::{Hv, Hypervisor};
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;
use xen::xenstore::ring::{XenstoreInterface, XenstoreRing};
use xen::xenstore::{ops, Decoder, MsgType, Routed, Router};

pub use xen::xenstore::{Errno, XsError};
pub type Result<T> = core::result::Result<T, XsError>;

struct Conn {
    ring: XenstoreRing,
    decoder: Decoder,
    router: Router,
    port: u32,
    /// Bytes of whole requests not yet in the ring.
    out: VecDeque<u8>,
    /// Set by the suspend callback: nothing more goes into the ring until
    /// resume or cancel.
    paused: bool,
}

/// The connection. Locked only with events masked (short sections; never
/// held across a block).
static CONN: Mutex<Option<Conn>> = Mutex::new(None);
/// Every task waiting for a reply or a watch event.
static WAITERS: WaitQueue = WaitQueue::new();
static NEXT_TOKEN: AtomicU32 = AtomicU32::new(1);
/// Counts reconnections to a new xenstored (resumes in a new domain). A
/// transaction begun before one is unknown to the new xenstored.
static GENERATION: AtomicU32 = AtomicU32::new(0);

fn with_conn<R>(f: impl FnOnce(&mut Conn) -> R) -> R {
    events_mask::without_events(|| f(CONN.lock().as_mut().expect("xenstore not connected")))
}

fn ring_page() -> (*mut XenstoreInterface, u32) {
    platform::with_start_info(|si| {
        let va = platform::pfn_to_va(platform::mfn_to_pfn(si.store_mfn));
        (va as *mut XenstoreInterface, si.store_evtchn)
    })
}

/// Connects to the ring start_info names.
pub fn init() {
    let (page, port) = ring_page();
    // SAFETY: the store page lies inside the kernel mapping and stays mapped.
    let ring = unsafe { XenstoreRing::new(page) };
    events_mask::without_events(|| {
        *CONN.lock() = Some(Conn {
            ring,
            decoder: Decoder::new(),
            router: Router::new(),
            port,
            out: VecDeque::new(),
            paused: false,
        })
    });
    if let Err(e) = events::attach(port, "xenstore", |_| WAITERS.wake_all()) {
        log::error!("xenstore: cannot attach port {}: {:?}", port, e);
    }
}

impl Conn {
    /// Moves queued requests into the ring and replies out of it.
    fn pump(&mut self) {
        let mut notify = false;
        if !self.paused {
            while !self.out.is_empty() {
                let (a, _) = self.out.as_slices();
                let n = self.ring.write_request(a);
                if n == 0 {
                    break;
                }
                self.out.drain(..n);
                notify = true;
            }
        }
        let mut buf = [0u8; 256];
        loop {
            let n = self.ring.read_response(&mut buf);
            if n == 0 {
                break;
            }
            notify = true;
            let router = &mut self.router;
            let route = |m| {
                if let Routed::Unwaited { req_id, result: Err(e) } = router.on_message(m) {
                    log::warn!("xenstore: request {} failed unobserved: {:?}", req_id, e)
                }
            };
            if let Err(e) = self.decoder.feed_all(&buf[..n], route) {
                log::error!("xenstore: byte stream corrupt ({:?}); dropping the rest", e);
                self.decoder.reset();
            }
        }
        if let Some(f) = self.ring.fault() {
            log::error!("xenstore: ring fault {:?}", f);
        }
        if notify {
            Hv::send(self.port);
        }
    }
}

fn wait_reply(req_id: u32) -> Result<Vec<u8>> {
    WAITERS.wait_until(|| {
        with_conn(|c| {
            c.pump();
            c.router.take_reply(req_id)
        })
    })
}

/// Sends one request and waits for its reply payload.
pub fn request(ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>> {
    let req_id = with_conn(|c| {
        let (id, bytes) = c.router.start(ty, tx_id, payload).map_err(XsError::Wire)?;
        c.out.extend(bytes);
        c.pump();
        Ok::<u32, XsError>(id)
    })?;
    wait_reply(req_id)
}

fn run(req: core::result::Result<ops::Request, xen::xenstore::WireError>, tx: u32) -> Result<Vec<u8>> {
    let req = req.map_err(XsError::Wire)?;
    request(req.ty, tx, &req.payload)
}

pub fn read_tx(tx: u32, path: &str) -> Result<String> {
    ops::read_reply(run(ops::read(path), tx)?)
}

pub fn read(path: &str) -> Result<String> {
    read_tx(0, path)
}

pub fn write_tx(tx: u32, path: &str, value: &str) -> Result<()> {
    ops::ok_reply(&run(ops::write(path, value.as_bytes()), tx)?)
}

pub fn write(path: &str, value: &str) -> Result<()> {
    write_tx(0, path, value)
}

pub fn mkdir(path: &str) -> Result<()> {
    ops::ok_reply(&run(ops::mkdir(path), 0)?)
}

pub fn rm(path: &str) -> Result<()> {
    ops::ok_reply(&run(ops::rm(path), 0)?)
}

pub fn directory(path: &str) -> Result<Vec<String>> {
    ops::parse_directory(&run(ops::directory(path), 0)?)
}

/// Runs `work` inside a transaction, again from the start whenever the
/// commit fails with EAGAIN (someone else changed what it read).
pub fn transaction<T>(mut work: impl FnMut(u32) -> Result<T>) -> Result<T> {
    ops::with_transaction(ops::DEFAULT_TRANSACTION_ATTEMPTS, || {
        let generation = GENERATION.load(Ordering::Acquire);
        let tx = ops::tx_id(&run(Ok(ops::transaction_start()), 0)?)?;
        let outcome = match work(tx) {
            Ok(v) => ops::ok_reply(&run(Ok(ops::transaction_end(true)), tx)?).map(|_| v),
            Err(e) => {
                let _ = run(Ok(ops::transaction_end(false)), tx);
                Err(e)
            }
        };
        // Across a resume the transaction died with the old xenstored, and
        // whatever it read may be stale: run it again, like any conflict.
        match outcome {
            Err(_) if GENERATION.load(Ordering::Acquire) != generation => Err(XsError::Errno(Errno::EAGAIN)),
            other => other,
        }
    })
}

/// Watches `path` for the rest of the calling task's life and runs
/// `on_event` after every event (the first comes at registration). A watch
/// that cannot be set is logged with what that means (`consequence`, e.g.
/// "; the balloon stays put") and the call returns.
pub fn on_each_change(path: &str, consequence: &str, mut on_event: impl FnMut()) {
    let watch = match Watch::new(path) {
        Ok(w) => w,
        Err(e) => {
            log::error!("xenstore: cannot watch {}: {:?}{}", path, e, consequence);
            return;
        }
    };
    loop {
        watch.next();
        on_event();
    }
}

/// A registered watch; events are read with `next`. Dropping it unwatches.
pub struct Watch {
    token: String,
    path: String,
}

impl Watch {
    /// Registers a watch on `path` (xenstored fires it once right away).
    pub fn new(path: &str) -> Result<Watch> {
        let token = format!("ballast-{}", NEXT_TOKEN.fetch_add(1, Ordering::Relaxed));
        let req_id = with_conn(|c| {
            let (id, bytes) = c.router.register_watch(path, &token)?;
            c.out.extend(bytes);
            c.pump();
            Ok::<u32, XsError>(id)
        })?;
        ops::ok_reply(&wait_reply(req_id)?)?;
        Ok(Watch { token, path: String::from(path) })
    }

    /// Blocks until the watch fires; returns the path that changed.
    pub fn next(&self) -> String {
        WAITERS.wait_until(|| {
            with_conn(|c| {
                c.pump();
                c.router.pop_event(&self.token)
            })
        })
    }

    /// As `next`, giving up (None) at `deadline` (monotonic ns).
    pub fn next_until(&self, deadline: u64) -> Option<String> {
        WAITERS.wait_until_deadline(Some(deadline), &mut || {
            with_conn(|c| {
                c.pump();
                c.router.pop_event(&self.token)
            })
        })
    }

    /// The next event if one has arrived, without blocking.
    pub fn try_next(&self) -> Option<String> {
        with_conn(|c| {
            c.pump();
            c.router.pop_event(&self.token)
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let sent = with_conn(|c| match c.router.unregister_watch(&self.token) {
            Ok((id, bytes)) => {
                c.out.extend(bytes);
                c.pump();
                Some(id)
            }
            Err(_) => None,
        });
        if let Some(id) = sent {
            let _ = wait_reply(id);
        }
    }
}

// ---- suspend support -------------------------------------------------------

/// Before suspending: wait (bounded) until every queued byte is in the
/// ring, then stop writing, so no request is half-sent across the suspend.
pub fn suspend() -> core::result::Result<(), &'static str> {
    let deadline = crate::time::now_ns() + 1_000_000_000;
    loop {
        let empty = with_conn(|c| {
            c.pump();
            c.out.is_empty()
        });
        if empty {
            break;
        }
        if crate::time::now_ns() >= deadline {
            return Err("xenstore ring did not drain");
        }
        crate::sched::yield_now();
    }
    with_conn(|c| c.paused = true);
    Ok(())
}

/// After a resume in a new domain: a fresh ring and port from the new
/// start_info; re-send what was in flight and every watch.
pub fn resume() -> usize {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    let (page, port) = ring_page();
    let resent = with_conn(|c| {
        // SAFETY: the new store page lies inside the kernel mapping.
        unsafe { c.ring.reattach(page) };
        c.port = port;
        c.decoder.reset();
        c.out.clear();
        let msgs = c.router.requests_to_resend();
        let n = msgs.len();
        for m in msgs {
            c.out.extend(m);
        }
        c.paused = false;
        c.pump();
        n
    });
    WAITERS.wake_all();
    resent
}

/// After a cancelled suspend: same ring, carry on.
pub fn cancel() {
    with_conn(|c| {
        c.paused = false;
        c.pump();
    });
    WAITERS.wake_all();
}

/// The xenstore event channel (for rebinding by name after a resume).
pub fn port() -> u32 {
    with_conn(|c| c.port)
}

/// The xenstore client as a suspend-aware device.
pub struct XenstoreDevice;

impl crate::pm::Device for XenstoreDevice {
    fn name(&self) -> &'static str {
        "xenstore"
    }
    fn suspend(&self) -> core::result::Result<(), &'static str> {
        suspend()
    }
    fn resume(&self) {
        let n = resume();
        log::info!("xenstore: reconnected on port {}, {} requests and watches re-sent", port(), n);
    }
    fn cancel(&self) {
        cancel();
    }
}
