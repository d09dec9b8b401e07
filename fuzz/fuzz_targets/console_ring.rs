//! The PV console ring with a xenconsoled that may move any index.
//!
//! Checked: no access outside the page's two rings (an exact-size heap
//! allocation, so the sanitizer sees an overrun); counts stay within the
//! ring and the buffer; corrupt input indices are dropped rather than
//! read through; while the peer is honest, bytes cross both ways exactly
//! and in order.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use xen::console::{ConsoleInterface, ConsoleRing, IN_SIZE, OUT_SIZE};

#[derive(Arbitrary, Debug)]
enum Op {
    Write { len: u16 },
    Read { len: u16 },
    PeerConsume { n: u16 },
    PeerProduce { bytes: Vec<u8> },
    SetInCons(u32),
    SetInProd(u32),
    SetOutCons(u32),
    SetOutProd(u32),
}

fuzz_target!(|ops: Vec<Op>| {
    let raw = Box::into_raw(Box::new(ConsoleInterface::zeroed()));
    // SAFETY: `raw` is a live heap allocation, freed only at the end.
    let mut ring = unsafe { ConsoleRing::new(raw) };
    let mut to_peer: VecDeque<u8> = VecDeque::new();
    let mut to_guest: VecDeque<u8> = VecDeque::new();
    let mut honest = true;
    let mut next = 0u8;
    let mut buf = vec![0u8; 2 * IN_SIZE];
    for op in ops.into_iter().take(512) {
        // SAFETY: as above; the peer's reference ends with this step and
        // the ring is not called while it is used.
        let page = unsafe { &mut *raw };
        let (in_prod, out_cons) = (page.in_prod, page.out_cons);
        match op {
            Op::Write { len } => {
                let bytes: Vec<u8> = (0..len as usize % (2 * OUT_SIZE)).map(|i| next.wrapping_add(i as u8)).collect();
                let n = ring.write(&bytes);
                assert!(n <= bytes.len() && n <= OUT_SIZE);
                if honest {
                    assert_eq!(n, bytes.len().min(OUT_SIZE - to_peer.len()));
                    assert_eq!(ring.pending_output(), to_peer.len() + n);
                    to_peer.extend(&bytes[..n]);
                }
                next = next.wrapping_add(n as u8);
            }
            Op::Read { len } => {
                let len = len as usize % buf.len();
                let n = ring.read(&mut buf[..len]);
                assert!(n <= len && n <= IN_SIZE);
                if honest {
                    assert_eq!(n, len.min(to_guest.len()));
                    for b in &buf[..n] {
                        assert_eq!(Some(*b), to_guest.pop_front());
                    }
                }
            }
            Op::PeerConsume { n } => {
                if honest {
                    let n = (n as usize).min(to_peer.len());
                    for i in 0..n {
                        assert_eq!(
                            page.output[out_cons.wrapping_add(i as u32) as usize % OUT_SIZE],
                            to_peer.pop_front().unwrap()
                        );
                    }
                    page.out_cons = out_cons.wrapping_add(n as u32);
                }
            }
            Op::PeerProduce { bytes } => {
                if honest {
                    let n = bytes.len().min(IN_SIZE - to_guest.len());
                    for (i, b) in bytes[..n].iter().enumerate() {
                        page.input[in_prod.wrapping_add(i as u32) as usize % IN_SIZE] = *b;
                    }
                    to_guest.extend(&bytes[..n]);
                    page.in_prod = in_prod.wrapping_add(n as u32);
                }
            }
            Op::SetInCons(v) => (page.in_cons, honest) = (v, false),
            Op::SetInProd(v) => (page.in_prod, honest) = (v, false),
            Op::SetOutCons(v) => (page.out_cons, honest) = (v, false),
            Op::SetOutProd(v) => (page.out_prod, honest) = (v, false),
        }
    }
    // SAFETY: allocated above by `Box::into_raw`; the ring is not used again.
    drop(unsafe { Box::from_raw(raw) });
});
