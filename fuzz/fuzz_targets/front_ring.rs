//! The frontend side of the blkif and netif shared rings, with a backend
//! that may write any index and any bytes.
//!
//! Checked: no access outside the page (an exact, page-aligned heap
//! allocation, so the sanitizer sees an overrun); never more responses
//! handed out than requests were written, so a slot still holding a
//! request is never read as a response; no arithmetic overflow (the
//! counts are checked in debug builds); a fault, once seen, stops the
//! ring for good; while the backend is honest, responses come back
//! exactly as it wrote them, in order.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::VecDeque;
use xen::ring::{FrontRing, HEADER_LEN, PAGE_SIZE};
use xen::{blkif, netif};

#[derive(Arbitrary, Debug)]
enum Op {
    /// The frontend writes up to `n` requests and publishes them.
    Submit {
        n: u8,
    },
    /// The frontend takes up to `n` responses.
    Take {
        n: u8,
    },
    /// An honest backend answers up to `n` published requests with
    /// responses made of `fill`.
    Answer {
        n: u8,
        fill: u8,
    },
    /// A hostile backend: any producer index, any event index, any bytes.
    SetRspProd(u32),
    BumpRspProd(u8),
    SetReqEvent(u32),
    SetReqProd(u32),
    Scribble {
        at: u16,
        bytes: Vec<u8>,
    },
}

const RSP_PROD: usize = 8;
const REQ_EVENT: usize = 4;
const REQ_PROD: usize = 0;

fn word(page: *mut u8, at: usize) -> *mut u32 {
    page.wrapping_add(at) as *mut u32
}

fn run<Req: Copy + Default, Rsp: Copy + PartialEq + std::fmt::Debug>(ops: Vec<Op>, status_ok: impl Fn(&Rsp)) {
    let layout = Layout::from_size_align(PAGE_SIZE, PAGE_SIZE).unwrap();
    // SAFETY: a non-zero size.
    let page = unsafe { alloc_zeroed(layout) };
    assert!(!page.is_null());
    // SAFETY: a page-aligned, writable page of our own, freed at the end.
    let mut ring: FrontRing<Req, Rsp> = unsafe { FrontRing::init(page) };
    let size = FrontRing::<Req, Rsp>::SIZE;
    let entry = std::mem::size_of::<Req>().max(std::mem::size_of::<Rsp>());
    assert!(HEADER_LEN + size as usize * entry <= PAGE_SIZE);
    let mut written = 0u64;
    let mut taken = 0u64;
    // Requests published and not yet answered by the honest backend.
    let mut published = 0u32;
    let mut answered: VecDeque<Rsp> = VecDeque::new();
    let mut rsp_prod = 0u32;
    let mut honest = true;
    for op in ops.into_iter().take(512) {
        let faulted = ring.fault().is_some();
        assert!(ring.outstanding() <= size);
        assert!(ring.free_requests() <= size);
        match op {
            Op::Submit { n } => {
                for _ in 0..n {
                    if !ring.write_request(Req::default()) {
                        assert!(faulted || ring.free_requests() == 0);
                        break;
                    }
                    assert!(!faulted);
                    written += 1;
                    published += 1;
                }
                ring.push_requests();
            }
            Op::Take { n } => {
                for _ in 0..n {
                    match ring.take_response() {
                        Ok(Some(rsp)) => {
                            assert!(!faulted);
                            taken += 1;
                            status_ok(&rsp);
                            if honest {
                                assert_eq!(Some(rsp), answered.pop_front());
                            }
                        }
                        Ok(None) => {
                            assert!(!honest || answered.is_empty());
                            break;
                        }
                        Err(_) => {
                            assert!(ring.fault().is_some());
                            break;
                        }
                    }
                }
            }
            Op::Answer { n, fill } => {
                if honest {
                    let n = u32::from(n).min(published);
                    for _ in 0..n {
                        let slot = page.wrapping_add(HEADER_LEN + (rsp_prod & (size - 1)) as usize * entry);
                        // SAFETY: the slot lies inside the page (index masked).
                        let rsp = unsafe {
                            std::ptr::write_bytes(slot, fill, std::mem::size_of::<Rsp>());
                            (slot as *const Rsp).read_unaligned()
                        };
                        answered.push_back(rsp);
                        rsp_prod = rsp_prod.wrapping_add(1);
                    }
                    published -= n;
                    // SAFETY: a header word of our page.
                    unsafe { word(page, RSP_PROD).write_volatile(rsp_prod) };
                }
            }
            // SAFETY (these four): header words and bytes inside our page.
            Op::SetRspProd(v) => {
                honest = false;
                unsafe { word(page, RSP_PROD).write_volatile(v) }
            }
            Op::BumpRspProd(d) => {
                honest = false;
                unsafe {
                    let p = word(page, RSP_PROD);
                    p.write_volatile(p.read_volatile().wrapping_add(u32::from(d)));
                }
            }
            Op::SetReqEvent(v) => unsafe { word(page, REQ_EVENT).write_volatile(v) },
            Op::SetReqProd(v) => unsafe { word(page, REQ_PROD).write_volatile(v) },
            Op::Scribble { at, bytes } => {
                let at = at as usize % PAGE_SIZE;
                let n = bytes.len().min(PAGE_SIZE - at);
                honest = false;
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), page.add(at), n) };
            }
        }
        assert!(taken <= written, "{taken} responses for {written} requests");
        if faulted {
            assert!(ring.fault().is_some(), "a fault cleared");
        }
    }
    // SAFETY: allocated above with the same layout; the ring is dropped first.
    drop(ring);
    unsafe { dealloc(page, layout) };
}

fuzz_target!(|input: (u8, Vec<Op>)| {
    let (which, ops) = input;
    match which % 3 {
        0 => run::<blkif::Request, blkif::Response>(ops, |r| {
            // Any status either names a protocol value or is refused.
            let _ = r.status();
        }),
        1 => run::<netif::TxRequest, netif::TxResponse>(ops, |_| {}),
        _ => run::<netif::RxRequest, netif::RxResponse>(ops, |_| {}),
    }
});
