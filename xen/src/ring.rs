//! The front end of a Xen shared ring (`io/ring.h`), as blkif and netif
//! use it: one page, a 64-byte header of four free-running indexes, then a
//! power-of-two number of slots, each holding a request (written by the
//! frontend) or, later, its response (written by the backend).
//!
//! The backend is not trusted: it writes `rsp_prod` and the responses.
//! [`FrontRing::next_response`] refuses a producer index that claims more
//! responses than there are requests outstanding, so a hostile or broken
//! backend makes the ring report a fault instead of handing out slots that
//! hold requests, or indexes past the page.

use core::marker::PhantomData;
use core::mem::size_of;
use core::sync::atomic::{fence, Ordering};

pub const PAGE_SIZE: usize = 4096;
/// `req_prod`, `req_event`, `rsp_prod`, `rsp_event`, then padding.
pub const HEADER_LEN: usize = 64;

/// Slots in a one-page ring whose entries are `entry` bytes: the largest
/// power of two that fits (`__RING_SIZE`).
pub const fn ring_size(entry: usize) -> u32 {
    let mut n = 1u32;
    while HEADER_LEN + (n as usize * 2) * entry <= PAGE_SIZE {
        n *= 2;
    }
    n
}

/// Why the ring can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingFault {
    /// The backend's `rsp_prod` claims more responses than requests were
    /// outstanding.
    TooManyResponses { rsp_prod: u32, rsp_cons: u32, req_prod: u32 },
}

/// The frontend's side of a ring of requests `Req` and responses `Rsp`.
pub struct FrontRing<Req: Copy, Rsp: Copy> {
    page: *mut u8,
    size: u32,
    /// Requests written, published or not.
    req_prod_pvt: u32,
    /// Responses consumed.
    rsp_cons: u32,
    fault: Option<RingFault>,
    _types: PhantomData<(Req, Rsp)>,
}

const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

impl<Req: Copy, Rsp: Copy> FrontRing<Req, Rsp> {
    const ENTRY: usize = if size_of::<Req>() > size_of::<Rsp>() { size_of::<Req>() } else { size_of::<Rsp>() };
    /// Slots in this ring.
    pub const SIZE: u32 = ring_size(Self::ENTRY);

    /// Starts a fresh ring on `page` (`SHARED_RING_INIT` + `FRONT_RING_INIT`).
    ///
    /// # Safety
    ///
    /// `page` must be a page-aligned, writable page that stays mapped (and
    /// is used for nothing else on this side) for as long as the ring; only
    /// the backend may write it besides.
    pub unsafe fn init(page: *mut u8) -> Self {
        // SAFETY: the caller hands over the whole page.
        unsafe { core::ptr::write_bytes(page, 0, PAGE_SIZE) };
        let ring = Self { page, size: Self::SIZE, req_prod_pvt: 0, rsp_cons: 0, fault: None, _types: PhantomData };
        ring.store(REQ_EVENT, 1);
        ring.store(RSP_EVENT, 1);
        ring
    }

    fn index(&self, at: usize) -> *mut u32 {
        // SAFETY (of the arithmetic): the header is inside the page.
        self.page.wrapping_add(at) as *mut u32
    }

    fn load(&self, at: usize) -> u32 {
        // SAFETY: `at` names one of the header's aligned u32 fields, in the
        // page `init` was given.
        unsafe { self.index(at).read_volatile() }
    }

    fn store(&self, at: usize, v: u32) {
        // SAFETY: as in `load`.
        unsafe { self.index(at).write_volatile(v) }
    }

    fn slot(&self, i: u32) -> *mut u8 {
        self.page.wrapping_add(HEADER_LEN + (i & (self.size - 1)) as usize * Self::ENTRY)
    }

    /// The fault that stopped the ring, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Requests that may still be written before responses are consumed.
    pub fn free_requests(&self) -> u32 {
        self.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next slot (not yet visible to the backend:
    /// [`FrontRing::push_requests`]); false if the ring is full or faulty.
    pub fn write_request(&mut self, req: Req) -> bool {
        if self.fault.is_some() || self.free_requests() == 0 {
            return false;
        }
        // SAFETY: the slot lies in the page (index masked to the ring) and
        // is free: every response up to `rsp_cons` has been consumed and at
        // most `size` requests are outstanding. Entries are 8-aligned
        // (the header is 64 bytes and Xen's entry types are multiples of 8)
        // and `write_unaligned` does not rely on it anyway.
        unsafe { (self.slot(self.req_prod_pvt) as *mut Req).write_unaligned(req) };
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Publishes the written requests; true if the backend asked to be
    /// notified of them (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push_requests(&mut self) -> bool {
        let old = self.load(REQ_PROD);
        let new = self.req_prod_pvt;
        fence(Ordering::Release); // requests before the index
        self.store(REQ_PROD, new);
        fence(Ordering::SeqCst); // the index before reading req_event
        new.wrapping_sub(self.load(REQ_EVENT)) < new.wrapping_sub(old)
    }

    /// The next response, if the backend has produced one; an error (and
    /// a faulty ring from then on) if its index cannot be right.
    pub fn next_response(&mut self) -> Result<Option<Rsp>, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        let rsp_prod = self.load(RSP_PROD);
        fence(Ordering::Acquire); // the index before the responses
        let available = rsp_prod.wrapping_sub(self.rsp_cons);
        let outstanding = self.req_prod_pvt.wrapping_sub(self.rsp_cons);
        if available > outstanding {
            let f = RingFault::TooManyResponses { rsp_prod, rsp_cons: self.rsp_cons, req_prod: self.req_prod_pvt };
            self.fault = Some(f);
            return Err(f);
        }
        if available == 0 {
            return Ok(None);
        }
        // SAFETY: the slot lies in the page and holds a response the
        // backend produced (checked above); read as bytes the backend may
        // have chosen, which any `Rsp` of plain integers accepts.
        let rsp = unsafe { (self.slot(self.rsp_cons) as *const Rsp).read_unaligned() };
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Asks to be notified of the next response and says whether one
    /// arrived meanwhile (`RING_FINAL_CHECK_FOR_RESPONSES`): call when
    /// [`FrontRing::next_response`] has none, before waiting.
    pub fn final_check_for_responses(&mut self) -> bool {
        if self.load(RSP_PROD) != self.rsp_cons {
            return true;
        }
        self.store(RSP_EVENT, self.rsp_cons.wrapping_add(1));
        fence(Ordering::SeqCst); // rsp_event before reading rsp_prod again
        self.load(RSP_PROD) != self.rsp_cons
    }

    /// The next response, asking to be notified of the next one when none
    /// is there (so a caller that gets `None` may wait for the event).
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingFault> {
        loop {
            match self.next_response()? {
                Some(rsp) => return Ok(Some(rsp)),
                None if self.final_check_for_responses() => continue,
                None => return Ok(None),
            }
        }
    }

    /// Requests written and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Req {
        id: u64,
        payload: [u64; 13],
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Rsp {
        id: u64,
        status: i16,
    }

    /// A page-aligned page, as the guest would share.
    #[repr(C, align(4096))]
    struct Page([u8; PAGE_SIZE]);

    /// The backend's side, written by hand, through the same raw pointer
    /// the ring was given (no reference to the page exists meanwhile).
    struct Backend {
        page: *mut u8,
        req_cons: u32,
        rsp_prod: u32,
    }

    impl Backend {
        fn new(page: *mut u8) -> Self {
            Backend { page, req_cons: 0, rsp_prod: 0 }
        }
        fn bytes(&self, at: usize, n: usize) -> Vec<u8> {
            assert!(at + n <= PAGE_SIZE);
            // SAFETY: in bounds (checked), the test's page, alive and only
            // accessed through raw pointers while the test runs.
            (0..n).map(|i| unsafe { self.page.add(at + i).read_volatile() }).collect()
        }
        fn put(&mut self, at: usize, b: &[u8]) {
            assert!(at + b.len() <= PAGE_SIZE);
            for (i, &x) in b.iter().enumerate() {
                // SAFETY: as in `bytes`.
                unsafe { self.page.add(at + i).write_volatile(x) };
            }
        }
        fn word(&self, at: usize) -> u32 {
            u32::from_le_bytes(self.bytes(at, 4).try_into().unwrap())
        }
        fn set_word(&mut self, at: usize, v: u32) {
            self.put(at, &v.to_le_bytes());
        }
        /// Answers every published request with its id and status 0.
        fn answer_all(&mut self, size: u32, entry: usize) {
            while self.req_cons != self.word(REQ_PROD) {
                let at = HEADER_LEN + (self.req_cons & (size - 1)) as usize * entry;
                let id = self.bytes(at, 8);
                let rsp_at = HEADER_LEN + (self.rsp_prod & (size - 1)) as usize * entry;
                self.put(rsp_at, &id);
                self.put(rsp_at + 8, &0i16.to_le_bytes());
                self.req_cons += 1;
                self.rsp_prod += 1;
            }
            let p = self.rsp_prod;
            self.set_word(RSP_PROD, p);
        }
    }

    /// A fresh page for a ring; leaked (a test's worth of memory).
    fn page() -> *mut u8 {
        Box::leak(Box::new(Page([0xAA; PAGE_SIZE]))).0.as_mut_ptr()
    }

    type Ring = FrontRing<Req, Rsp>;

    #[test]
    fn sizes_follow_ring_h() {
        assert_eq!(ring_size(112), 32, "blkif: 112-byte requests");
        assert_eq!(ring_size(16), 128);
        assert_eq!(ring_size(12), 256, "netif tx/rx entries");
        assert_eq!(Ring::SIZE, 32);
    }

    #[test]
    fn requests_go_out_and_responses_come_back_across_the_wrap() {
        let p = page();
        // SAFETY: the page is leaked (lives forever) and only the test's
        // backend writes it besides, between ring calls.
        let mut ring = unsafe { Ring::init(p) };
        let mut be = Backend::new(p);
        let mut next_id = 0u64;
        for round in 0..10 {
            let n = 7 + round * 3;
            for _ in 0..n.min(Ring::SIZE as u64) {
                assert!(ring.write_request(Req { id: next_id, payload: [next_id; 13] }));
                next_id += 1;
            }
            let notify = ring.push_requests();
            assert!(notify || round > 0, "the first push notifies (req_event starts at 1)");
            be.answer_all(Ring::SIZE, 112);
            let mut got = 0;
            while let Some(r) = ring.next_response().unwrap() {
                assert_eq!(r.status, 0);
                got += 1;
            }
            assert_eq!(got, n.min(Ring::SIZE as u64));
            assert!(!ring.final_check_for_responses());
            assert_eq!(ring.outstanding(), 0);
        }
        assert!(next_id > Ring::SIZE as u64 * 3, "wrapped several times");
    }

    #[test]
    fn a_full_ring_takes_no_more() {
        // SAFETY: as above.
        let mut ring = unsafe { Ring::init(page()) };
        for i in 0..Ring::SIZE {
            assert!(ring.write_request(Req { id: i as u64, payload: [0; 13] }));
        }
        assert_eq!(ring.free_requests(), 0);
        assert!(!ring.write_request(Req { id: 99, payload: [0; 13] }));
    }

    #[test]
    fn a_hostile_producer_index_faults_the_ring() {
        let p = page();
        // SAFETY: as above.
        let mut ring = unsafe { Ring::init(p) };
        assert!(ring.write_request(Req { id: 1, payload: [0; 13] }));
        ring.push_requests();
        let mut be = Backend::new(p);
        for bogus in [2u32, 1000, u32::MAX] {
            be.set_word(RSP_PROD, bogus);
            let e = ring.next_response().unwrap_err();
            assert!(matches!(e, RingFault::TooManyResponses { .. }), "{e:?}");
        }
        assert!(ring.fault().is_some());
        // Faulty from then on, whatever the backend writes next.
        be.set_word(RSP_PROD, 1);
        assert!(ring.next_response().is_err());
        assert!(!ring.write_request(Req { id: 2, payload: [0; 13] }));
    }

    #[test]
    fn notification_follows_req_event() {
        let p = page();
        // SAFETY: as above.
        let mut ring = unsafe { Ring::init(p) };
        ring.write_request(Req { id: 0, payload: [0; 13] });
        assert!(ring.push_requests(), "req_event 1: the first request notifies");
        ring.write_request(Req { id: 1, payload: [0; 13] });
        assert!(!ring.push_requests(), "the backend has not asked again");
        let mut be = Backend::new(p);
        be.set_word(REQ_EVENT, 3); // it wants to hear of the third
        ring.write_request(Req { id: 2, payload: [0; 13] });
        assert!(ring.push_requests());
    }
}
