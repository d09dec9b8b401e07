//! The xenstore ring page (`struct xenstore_domain_interface`).
//!
//! Two byte rings of 1024 bytes share one page with xenstored. The guest
//! is producer of `req` (it advances `req_prod`, xenstored `req_cons`) and
//! consumer of `rsp` (xenstored advances `rsp_prod`, the guest
//! `rsp_cons`). Indices are free-running `u32`s; a position in the ring is
//! the index modulo 1024, and `prod - cons` (wrapping) is the fill level.
//!
//! The page is shared with a peer we do not trust to be correct: a fill
//! level above 1024 means the indices are corrupt. The ring then stops
//! moving bytes and reports a [`RingFault`] until the caller re-attaches it
//! (the byte stream is out of step by then, so only a reconnect helps).
//!
//! After a restore the toolstack hands over a fresh page with all indices
//! zero; [`XenstoreRing::reattach`] points the ring at it and clears any
//! fault. Anything half written to the old page is gone: the router
//! re-sends whole requests.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

/// Size of each of the two byte rings (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: usize = 1024;

/// `server_features` bit: xenstored supports the reconnection handshake.
pub const SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features` bit: xenstored reports errors in `error`.
pub const SERVER_FEATURE_ERROR: u32 = 2;
/// `connection` value: the ring is in normal use.
pub const CONNECTED: u32 = 0;
/// `connection` value: a reconnection was asked for and is under way.
pub const RECONNECT: u32 = 1;

/// The layout of the shared page, as xenstored sees it.
#[repr(C)]
pub struct XenstoreInterface {
    pub req: [u8; RING_SIZE],
    pub rsp: [u8; RING_SIZE],
    pub req_cons: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
    pub rsp_prod: u32,
    pub server_features: u32,
    pub connection: u32,
    pub error: u32,
}

// The peer's C layout; a mismatch would be silent corruption, so check it.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(XenstoreInterface, req) == 0);
    assert!(offset_of!(XenstoreInterface, rsp) == 1024);
    assert!(offset_of!(XenstoreInterface, req_cons) == 2048);
    assert!(offset_of!(XenstoreInterface, req_prod) == 2052);
    assert!(offset_of!(XenstoreInterface, rsp_cons) == 2056);
    assert!(offset_of!(XenstoreInterface, rsp_prod) == 2060);
    assert!(offset_of!(XenstoreInterface, server_features) == 2064);
    assert!(offset_of!(XenstoreInterface, connection) == 2068);
    assert!(offset_of!(XenstoreInterface, error) == 2072);
};

impl XenstoreInterface {
    /// A page as the toolstack hands it over: empty rings, indices zero.
    pub const fn zeroed() -> Self {
        Self {
            req: [0; RING_SIZE],
            rsp: [0; RING_SIZE],
            req_cons: 0,
            req_prod: 0,
            rsp_cons: 0,
            rsp_prod: 0,
            server_features: 0,
            connection: CONNECTED,
            error: 0,
        }
    }
}

/// Which ring was found with impossible indices, and the values seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    Request { cons: u32, prod: u32 },
    Response { cons: u32, prod: u32 },
}

/// A snapshot of the page's control words, for diagnostics and resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingState {
    pub req_cons: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
    pub rsp_prod: u32,
    pub server_features: u32,
    pub connection: u32,
    pub error: u32,
}

/// The guest's end of a xenstore ring page that xenstored updates
/// concurrently.
pub struct XenstoreRing {
    page: *mut XenstoreInterface,
    fault: Option<RingFault>,
}

// SAFETY: the ring is a shared page with its own producer/consumer
// protocol; callers serialise guest-side access (the glue holds a lock).
unsafe impl Send for XenstoreRing {}

impl XenstoreRing {
    /// # Safety
    /// `page` must point to a mapped xenstore ring page that stays mapped,
    /// and is not accessed by the guest through another `XenstoreRing`, for
    /// as long as this one is used (or until [`Self::reattach`]).
    pub const unsafe fn new(page: *mut XenstoreInterface) -> Self {
        Self { page, fault: None }
    }

    /// Points the ring at the page handed over after a restore (it may be
    /// a different frame) and forgets any fault seen on the old one.
    ///
    /// # Safety
    /// As for [`Self::new`], for the new `page`.
    pub unsafe fn reattach(&mut self, page: *mut XenstoreInterface) {
        self.page = page;
        self.fault = None;
    }

    /// The fault that stopped the ring, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Reads the request indices as `(cons, prod)`.
    fn request_indices(&self) -> (u32, u32) {
        // SAFETY: `new`'s contract keeps the page mapped; volatile loads
        // because xenstored changes `req_cons` under us.
        unsafe {
            let cons = addr_of!((*self.page).req_cons).read_volatile();
            let prod = addr_of!((*self.page).req_prod).read_volatile();
            (cons, prod)
        }
    }

    /// Reads the response indices as `(cons, prod)`.
    fn response_indices(&self) -> (u32, u32) {
        // SAFETY: as in `request_indices`; xenstored moves `rsp_prod`.
        unsafe {
            let cons = addr_of!((*self.page).rsp_cons).read_volatile();
            let prod = addr_of!((*self.page).rsp_prod).read_volatile();
            (cons, prod)
        }
    }

    /// Free bytes in the request ring; zero if the ring is faulted.
    pub fn request_space(&self) -> usize {
        if self.fault.is_some() {
            return 0;
        }
        let (cons, prod) = self.request_indices();
        RING_SIZE.saturating_sub(prod.wrapping_sub(cons) as usize)
    }

    /// Whether response bytes are waiting (false if the ring is faulted).
    pub fn has_response(&self) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let (cons, prod) = self.response_indices();
        let avail = prod.wrapping_sub(cons) as usize;
        avail != 0 && avail <= RING_SIZE
    }

    /// `prod - cons`, the bytes in a ring, if the other side's indexes
    /// allow it; otherwise records `fault` (the ring is no longer used).
    fn fill_level(&mut self, cons: u32, prod: u32, fault: RingFault) -> Option<usize> {
        let level = prod.wrapping_sub(cons) as usize;
        if level > RING_SIZE {
            self.fault = Some(fault);
            return None;
        }
        Some(level)
    }

    /// Copies as much of `bytes` as fits into the request ring and returns
    /// how many were taken. Zero means full, or faulted (see [`Self::fault`]).
    /// The caller notifies xenstored over the event channel afterwards.
    pub fn write_request(&mut self, bytes: &[u8]) -> usize {
        if self.fault.is_some() {
            return 0;
        }
        let (cons, prod) = self.request_indices();
        // Read the free space before writing into it.
        fence(Ordering::Acquire);
        let Some(used) = self.fill_level(cons, prod, RingFault::Request { cons, prod }) else { return 0 };
        let n = bytes.len().min(RING_SIZE - used);
        let page = self.page;
        // SAFETY: the page is mapped (`new`); every index is reduced modulo
        // RING_SIZE, so the writes stay inside `req`.
        unsafe {
            let req = addr_of_mut!((*page).req) as *mut u8;
            for (i, b) in bytes[..n].iter().enumerate() {
                req.add((prod as usize).wrapping_add(i) % RING_SIZE).write_volatile(*b);
            }
            // The bytes must be visible before the index that publishes them.
            fence(Ordering::Release);
            addr_of_mut!((*page).req_prod).write_volatile(prod.wrapping_add(n as u32));
        }
        n
    }

    /// Moves response bytes into `buf` and returns how many were read.
    /// Zero means nothing waiting, or faulted (see [`Self::fault`]).
    /// The caller notifies xenstored afterwards if it read anything, since
    /// xenstored may be waiting for room.
    pub fn read_response(&mut self, buf: &mut [u8]) -> usize {
        if self.fault.is_some() {
            return 0;
        }
        let (cons, prod) = self.response_indices();
        // The bytes below `prod` must be read after `prod` itself.
        fence(Ordering::Acquire);
        let Some(avail) = self.fill_level(cons, prod, RingFault::Response { cons, prod }) else { return 0 };
        let n = avail.min(buf.len());
        let page = self.page;
        // SAFETY: the page is mapped (`new`); every index is reduced modulo
        // RING_SIZE, so the reads stay inside `rsp`.
        unsafe {
            let rsp = addr_of!((*page).rsp) as *const u8;
            for (i, slot) in buf[..n].iter_mut().enumerate() {
                *slot = rsp.add((cons as usize).wrapping_add(i) % RING_SIZE).read_volatile();
            }
            // Finish reading before handing the space back.
            fence(Ordering::Release);
            addr_of_mut!((*page).rsp_cons).write_volatile(cons.wrapping_add(n as u32));
        }
        n
    }

    /// The page's control words as they are now.
    pub fn state(&self) -> RingState {
        let (req_cons, req_prod) = self.request_indices();
        let (rsp_cons, rsp_prod) = self.response_indices();
        // SAFETY: the page is mapped (`new`); plain volatile loads of words
        // xenstored may change.
        let (server_features, connection, error) = unsafe {
            (
                addr_of!((*self.page).server_features).read_volatile(),
                addr_of!((*self.page).connection).read_volatile(),
                addr_of!((*self.page).error).read_volatile(),
            )
        };
        RingState { req_cons, req_prod, rsp_cons, rsp_prod, server_features, connection, error }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;

    #[test]
    fn request_fills_wraps_and_reports_space() {
        let mut page = Box::new(XenstoreInterface::zeroed());
        page.req_cons = u32::MAX - 1; // indices wrap around u32
        page.req_prod = u32::MAX - 1;
        // SAFETY: the boxed page outlives the ring in this test.
        let mut ring = unsafe { XenstoreRing::new(&mut *page) };
        assert_eq!(ring.request_space(), RING_SIZE);
        assert_eq!(ring.write_request(&[9u8; 1500]), RING_SIZE);
        assert_eq!(ring.request_space(), 0);
        assert_eq!(ring.write_request(b"x"), 0);
        page.req_cons = page.req_cons.wrapping_add(4);
        assert_eq!(ring.request_space(), 4);
        assert_eq!(ring.write_request(b"abcdef"), 4);
        // (u32::MAX - 1 + 1024) % 1024 == 1022: the last write wrapped there.
        assert_eq!(&page.req[1022..], b"ab");
        assert_eq!(&page.req[..2], b"cd");
        assert!(ring.fault().is_none());
    }

    #[test]
    fn response_read_in_order_across_the_wrap() {
        let mut page = Box::new(XenstoreInterface::zeroed());
        page.rsp_cons = 1022;
        page.rsp_prod = 1022;
        for (i, b) in b"hello".iter().enumerate() {
            page.rsp[(1022 + i) % RING_SIZE] = *b;
        }
        page.rsp_prod += 5;
        // SAFETY: the boxed page outlives the ring in this test.
        let mut ring = unsafe { XenstoreRing::new(&mut *page) };
        assert!(ring.has_response());
        let mut buf = [0u8; 3];
        assert_eq!(ring.read_response(&mut buf), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(ring.read_response(&mut buf), 2);
        assert_eq!(&buf[..2], b"lo");
        assert!(!ring.has_response());
        assert_eq!(ring.read_response(&mut buf), 0);
        assert_eq!(ring.state().rsp_cons, 1027);
    }

    #[test]
    fn corrupt_indices_fault_instead_of_overrunning() {
        let mut page = Box::new(XenstoreInterface::zeroed());
        page.rsp_prod = 5000;
        page.req_cons = 10; // cons ahead of prod: fill level wraps to ~4G
                            // SAFETY: the boxed page outlives the ring in this test.
        let mut ring = unsafe { XenstoreRing::new(&mut *page) };
        assert!(!ring.has_response());
        let mut buf = [0u8; 16];
        assert_eq!(ring.read_response(&mut buf), 0);
        assert_eq!(ring.fault(), Some(RingFault::Response { cons: 0, prod: 5000 }));
        // Stopped: nothing moves until re-attached, not even the request side.
        assert_eq!(ring.write_request(b"x"), 0);
        assert_eq!(ring.request_space(), 0);
        assert_eq!(page.req_prod, 0);
        assert_eq!(page.rsp_cons, 0);

        let mut fresh = Box::new(XenstoreInterface::zeroed());
        fresh.req_cons = 10;
        // SAFETY: the boxed page outlives the ring in this test.
        unsafe { ring.reattach(&mut *fresh) };
        assert_eq!(ring.fault(), None);
        assert_eq!(ring.write_request(b"x"), 0);
        assert_eq!(ring.fault(), Some(RingFault::Request { cons: 10, prod: 0 }));
    }

    #[test]
    fn reattach_to_a_fresh_page_after_resume() {
        let mut old = Box::new(XenstoreInterface::zeroed());
        // SAFETY: the boxed page outlives the ring in this test.
        let mut ring = unsafe { XenstoreRing::new(&mut *old) };
        assert_eq!(ring.write_request(b"half a message"), 14);
        let mut fresh = Box::new(XenstoreInterface::zeroed());
        // SAFETY: the boxed page outlives the ring in this test.
        unsafe { ring.reattach(&mut *fresh) };
        let st = ring.state();
        assert_eq!((st.req_cons, st.req_prod, st.rsp_cons, st.rsp_prod), (0, 0, 0, 0));
        assert_eq!(ring.request_space(), RING_SIZE);
        assert_eq!(st.connection, CONNECTED);
    }
}
