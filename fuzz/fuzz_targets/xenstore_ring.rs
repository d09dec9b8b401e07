//! The xenstore ring page with a peer that may move any index anywhere.
//!
//! Checked: the guest never reads or writes outside the two rings (the
//! page is a heap allocation of its exact size, so the sanitizer sees any
//! overrun); counts returned stay within the ring and the caller's
//! buffer; a fault, once seen, stops the ring until `reattach`; and while
//! the peer is honest, bytes cross both ways exactly and in order.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use xen::xenstore::ring::{XenstoreInterface, XenstoreRing, RING_SIZE};

#[derive(Arbitrary, Debug)]
enum Op {
    /// The guest sends `len` bytes (a counter pattern).
    Write {
        len: u16,
    },
    /// The guest reads into a buffer of `len` bytes.
    Read {
        len: u16,
    },
    /// An honest xenstored consumes up to `n` request bytes.
    PeerConsume {
        n: u16,
    },
    /// An honest xenstored produces `bytes` (as far as they fit).
    PeerProduce {
        bytes: Vec<u8>,
    },
    /// A hostile peer writes an index.
    SetReqCons(u32),
    SetReqProd(u32),
    SetRspCons(u32),
    SetRspProd(u32),
    /// A restore: a fresh page with every index zero.
    Reattach,
}

struct Peer {
    /// Bytes the guest wrote and the peer has not consumed, in order.
    to_peer: VecDeque<u8>,
    /// Bytes the peer produced and the guest has not read, in order.
    to_guest: VecDeque<u8>,
    honest: bool,
    next: u8,
}

fuzz_target!(|ops: Vec<Op>| {
    let raw = Box::into_raw(Box::new(XenstoreInterface::zeroed()));
    // SAFETY: `raw` is a live heap allocation, freed only at the end; the
    // guest side reaches it through this ring alone.
    let mut ring = unsafe { XenstoreRing::new(raw) };
    // The peer's view, used only between the ring's calls (as xenstored
    // would, but without the concurrency: the order of events is the input).
    // SAFETY: as above; no reference to the page outlives one step.
    let peer_page = || unsafe { &mut *raw };
    let mut peer = Peer { to_peer: VecDeque::new(), to_guest: VecDeque::new(), honest: true, next: 0 };
    let mut buf = vec![0u8; 4 * RING_SIZE];
    for op in ops.into_iter().take(512) {
        let faulted = ring.fault().is_some();
        let st = ring.state();
        assert!(ring.request_space() <= RING_SIZE);
        let page = peer_page();
        let reattach = matches!(op, Op::Reattach);
        match op {
            Op::Write { len } => {
                let bytes: Vec<u8> =
                    (0..len as usize % (2 * RING_SIZE)).map(|i| peer.next.wrapping_add(i as u8)).collect();
                let n = ring.write_request(&bytes);
                assert!(n <= bytes.len() && n <= RING_SIZE);
                if faulted {
                    assert_eq!(n, 0);
                }
                let after = ring.state();
                if ring.fault().is_none() {
                    assert_eq!(after.req_prod, st.req_prod.wrapping_add(n as u32));
                }
                if peer.honest {
                    assert_eq!(n, bytes.len().min(RING_SIZE - peer.to_peer.len()));
                    peer.to_peer.extend(&bytes[..n]);
                }
                peer.next = peer.next.wrapping_add(n as u8);
            }
            Op::Read { len } => {
                let len = len as usize % buf.len();
                let n = ring.read_response(&mut buf[..len]);
                assert!(n <= len && n <= RING_SIZE);
                if faulted {
                    assert_eq!(n, 0);
                }
                if peer.honest {
                    assert_eq!(n, len.min(peer.to_guest.len()));
                    for b in &buf[..n] {
                        assert_eq!(Some(*b), peer.to_guest.pop_front());
                    }
                }
            }
            Op::PeerConsume { n } => {
                if peer.honest {
                    let n = (n as usize).min(peer.to_peer.len());
                    for i in 0..n {
                        let at = st.req_cons.wrapping_add(i as u32) as usize % RING_SIZE;
                        assert_eq!(page.req[at], peer.to_peer.pop_front().unwrap());
                    }
                    page.req_cons = st.req_cons.wrapping_add(n as u32);
                }
            }
            Op::PeerProduce { bytes } => {
                if peer.honest {
                    let n = bytes.len().min(RING_SIZE - peer.to_guest.len());
                    for (i, b) in bytes[..n].iter().enumerate() {
                        page.rsp[st.rsp_prod.wrapping_add(i as u32) as usize % RING_SIZE] = *b;
                    }
                    peer.to_guest.extend(&bytes[..n]);
                    page.rsp_prod = st.rsp_prod.wrapping_add(n as u32);
                }
            }
            Op::SetReqCons(v) => (page.req_cons, peer.honest) = (v, false),
            Op::SetReqProd(v) => (page.req_prod, peer.honest) = (v, false),
            Op::SetRspCons(v) => (page.rsp_cons, peer.honest) = (v, false),
            Op::SetRspProd(v) => (page.rsp_prod, peer.honest) = (v, false),
            Op::Reattach => {
                *page = XenstoreInterface::zeroed();
                // SAFETY: as for `new`: the same live allocation.
                unsafe { ring.reattach(raw) };
                peer = Peer { to_peer: VecDeque::new(), to_guest: VecDeque::new(), honest: true, next: peer.next };
                assert!(ring.fault().is_none());
            }
        }
        if faulted && !reattach {
            assert!(ring.fault().is_some(), "a fault cleared without reattach");
        }
    }
    // SAFETY: allocated above by `Box::into_raw`; the ring is not used again.
    drop(unsafe { Box::from_raw(raw) });
});
