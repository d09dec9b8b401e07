//! The network backend's data path, as plain code over two ring pages and
//! [`GuestMemory`], as xen-netback does it with grant copies:
//!
//! - Transmit: a packet is a first slot, any extra-info slots it flags,
//!   and the slots `NETTXF_more_data` chains (the first slot's `size` is
//!   the whole packet's). Every slot is checked (grant readable, data in
//!   the page) before any byte moves; the frame goes to the vif's record
//!   of frames sent and every slot is answered `OKAY`, or `ERROR` for the
//!   whole packet, extra-info slots `RSP_NULL`. A chain the frontend has
//!   not published to its end, or a `req_prod` past the ring, is fatal
//!   (`xenvif_fatal_tx_err`): the vif is no longer served on this
//!   connection.
//! - Receive: each queued frame is copied at offset 0 into the next posted
//!   buffer (several with `NETRXF_more_data` if larger than a page and the
//!   frontend offered `feature-sg`), answered {id, offset 0, flags, len}.
//!   With no buffer posted the frame waits, and the backend asks to hear
//!   of the next buffer (`req_event`).

use super::{NetFault, NetFigures, NetRing};
use crate::netif::{
    RxResponse, TxRequest, TxResponse, RSP_ERROR, RSP_NULL, RSP_OKAY, RXF_MORE_DATA, TXF_EXTRA_INFO, TXF_MORE_DATA,
};
use crate::ring::PAGE_SIZE;
use crate::sim::backend::{granted_page, push_note, BackRingPage, GrantError, GuestMemory, RingOverflow};
use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

/// Bytes of a transmit ring slot (a request; responses are smaller).
pub const TX_ENTRY: usize = core::mem::size_of::<TxRequest>();
/// Bytes of a receive ring slot (requests and responses are 8 bytes).
pub const RX_ENTRY: usize = core::mem::size_of::<RxResponse>();
/// Slots of one packet beyond which netback drops it (`XEN_NETBK_LEGACY_SLOTS_MAX`).
const MAX_SLOTS: usize = 18;
/// Extra-info slots one packet may carry (`XEN_NETIF_EXTRA_TYPE_MAX - 1`).
const MAX_EXTRAS: usize = 4;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
const EXTRA_FLAG_MORE: u8 = 1;
const ETH_HLEN: usize = 14;
/// Frames waiting for a posted buffer (netback's rx queue); more are dropped.
pub const RX_QUEUE_MAX: usize = 512;
/// Frames sent by the guest kept until a test takes them (the oldest go).
pub const SENT_MAX: usize = 4096;
/// What the id faults do to an id: no id a frontend of 256 slots posts.
const BAD_ID_MASK: u16 = 0xdead;
/// What `NetFault::RxBadStatus` answers: no status the protocol defines.
const BAD_STATUS: i16 = -7;
/// How far past the responses `NetFault::RspProdBeyondRing` publishes.
const BEYOND_RING: u32 = 1000;

/// Why the backend stopped serving the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// The frontend's `req_prod` claims more than the ring holds.
    Overflow(NetRing, RingOverflow),
    /// A packet's slots (chained or extra info) run past `req_prod`.
    ChainCut { slots: usize },
    /// More extra-info slots than there are types.
    TooManyExtras,
}

/// Why a transmitted packet is answered `ERROR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Extra info (GSO, multicast) was never negotiated.
    ExtraInfo,
    TooManySlots(usize),
    /// The first slot's `size` is less than the rest of the chain holds.
    ChainLongerThanPacket {
        size: u16,
        rest: usize,
    },
    Runt(usize),
    PastThePage {
        slot: usize,
        offset: u16,
        len: usize,
    },
    Grant(GrantError),
}

/// Everything a vif's backend keeps across connections.
#[derive(Debug, Default)]
pub struct NetIo {
    pub figures: NetFigures,
    pub notes: Vec<String>,
    /// Frames the guest sent, oldest first, until a test takes them.
    pub sent: VecDeque<Vec<u8>>,
    /// Frames for the guest waiting for a posted buffer.
    pub rx_queue: VecDeque<Vec<u8>>,
    pub hold: bool,
    /// One-shot response faults armed, in order.
    pub faults: Vec<NetFault>,
    /// Set by a fatal error: not served until the next connection.
    pub halted: Option<Fatal>,
    /// The frontend's `feature-sg`: a frame may span receive buffers.
    pub front_sg: bool,
    /// How far past the responses `rsp_prod` is published, by ring (tx,
    /// rx): 0 until `RspProdBeyondRing` applies, then for the connection.
    pub skew: [u32; 2],
}

impl NetIo {
    pub fn note(&mut self, what: String) {
        push_note(&mut self.notes, what);
    }

    /// Queues `frame` for the guest: false (counted) if it cannot be
    /// delivered on this connection, too large or the queue full.
    pub fn queue(&mut self, frame: &[u8]) -> bool {
        let fits = frame.len() <= PAGE_SIZE || self.front_sg;
        if !fits || self.rx_queue.len() >= RX_QUEUE_MAX {
            self.figures.rx_dropped += 1;
            return false;
        }
        self.rx_queue.push_back(frame.to_vec());
        true
    }

    fn halt(&mut self, why: Fatal) {
        self.figures.fatal_errors += 1;
        self.note(format!("fatal: {why:?}: the vif is no longer served"));
        self.halted = Some(why);
    }

    fn take_fault(&mut self, f: NetFault) -> bool {
        let Some(i) = self.faults.iter().position(|&g| g == f) else { return false };
        self.faults.remove(i);
        self.figures.faults_applied += 1;
        true
    }

    /// Serves both rings unless held or halted; true if the frontend is
    /// to be notified.
    pub fn serve(&mut self, tx: &mut BackRingPage, rx: &mut BackRingPage, mem: &dyn GuestMemory) -> bool {
        if self.hold {
            return false;
        }
        let sent = self.serve_tx(tx, mem);
        let delivered = self.deliver(rx, mem);
        sent || delivered
    }

    /// Consumes and answers every packet the frontend published, until no
    /// more comes. True if the frontend is to be notified.
    pub fn serve_tx(&mut self, ring: &mut BackRingPage, mem: &dyn GuestMemory) -> bool {
        let mut produced = false;
        while self.halted.is_none() {
            let mut left = match ring.unconsumed() {
                Ok(n) => n as usize,
                Err(e) => {
                    self.halt(Fatal::Overflow(NetRing::Tx, e));
                    break;
                }
            };
            while left > 0 && self.halted.is_none() {
                produced |= self.transmit_one(ring, &mut left, mem);
            }
            if self.halted.is_some() || !ring.final_check_for_requests() {
                break;
            }
        }
        produced && self.push(ring, NetRing::Tx)
    }

    /// Takes one packet's slots (at most `left` are published); answers
    /// them unless the packet is cut short (fatal). True if answered.
    fn transmit_one(&mut self, ring: &mut BackRingPage, left: &mut usize, mem: &dyn GuestMemory) -> bool {
        let first = decode_tx_request(&take_slot(ring, left));
        let (mut extras, mut slots) = (0usize, 1usize);
        let mut more_extra = first.flags & TXF_EXTRA_INFO != 0;
        while more_extra {
            if *left == 0 {
                self.halt(Fatal::ChainCut { slots });
                return false;
            }
            let raw = take_slot(ring, left);
            (extras, slots) = (extras + 1, slots + 1);
            more_extra = raw[1] & EXTRA_FLAG_MORE != 0;
            if more_extra && extras == MAX_EXTRAS {
                self.halt(Fatal::TooManyExtras);
                return false;
            }
        }
        let mut data = vec![first];
        while data.last().is_some_and(|r| r.flags & TXF_MORE_DATA != 0) {
            if *left == 0 {
                self.halt(Fatal::ChainCut { slots });
                return false;
            }
            data.push(decode_tx_request(&take_slot(ring, left)));
            slots += 1;
        }
        self.figures.tx_slots += slots as u64;
        let status = match self.copy_frame(&data, extras, mem) {
            Ok(frame) => {
                self.figures.frames_sent += 1;
                self.figures.bytes_sent += frame.len() as u64;
                if self.sent.len() == SENT_MAX {
                    self.sent.pop_front();
                    self.figures.sent_overflow += 1;
                }
                self.sent.push_back(frame);
                RSP_OKAY
            }
            Err(why) => {
                self.figures.tx_errors += 1;
                self.note(format!("transmit of id {} refused: {why:?}", first.id));
                RSP_ERROR
            }
        };
        // The first slot, its extra-info slots, then the rest of the chain.
        self.tx_respond(ring, TxResponse { id: first.id, status });
        for _ in 0..extras {
            self.tx_respond(ring, TxResponse { id: 0, status: RSP_NULL });
        }
        for r in &data[1..] {
            self.tx_respond(ring, TxResponse { id: r.id, status });
        }
        true
    }

    /// The packet's bytes, once every slot has been checked.
    fn copy_frame(&self, data: &[TxRequest], extras: usize, mem: &dyn GuestMemory) -> Result<Vec<u8>, Refused> {
        if extras > 0 {
            return Err(Refused::ExtraInfo);
        }
        if data.len() > MAX_SLOTS {
            return Err(Refused::TooManySlots(data.len()));
        }
        let size = data[0].size;
        let rest: usize = data[1..].iter().map(|r| r.size as usize).sum();
        let first_len = (size as usize).checked_sub(rest).ok_or(Refused::ChainLongerThanPacket { size, rest })?;
        if (size as usize) < ETH_HLEN {
            return Err(Refused::Runt(size as usize));
        }
        let mut pieces = Vec::with_capacity(data.len());
        for (slot, r) in data.iter().enumerate() {
            let len = if slot == 0 { first_len } else { r.size as usize };
            if r.offset as usize + len > PAGE_SIZE {
                return Err(Refused::PastThePage { slot, offset: r.offset, len });
            }
            pieces.push((granted_page(mem, r.gref, false).map_err(Refused::Grant)?, r.offset as usize, len));
        }
        let mut frame = vec![0u8; size as usize];
        let mut at = 0;
        for (page, offset, len) in pieces {
            // SAFETY: `page` is a live page of the domain (the `GuestMemory`
            // contract) and offset + len <= 4096 (checked above); the
            // lengths add up to the frame's.
            unsafe { core::ptr::copy_nonoverlapping(page.add(offset), frame[at..at + len].as_mut_ptr(), len) };
            at += len;
        }
        Ok(frame)
    }

    /// Writes a transmit response, spoilt by `TxIdNeverSent` if armed.
    fn tx_respond(&mut self, ring: &mut BackRingPage, mut rsp: TxResponse) {
        if rsp.status != RSP_NULL && self.take_fault(NetFault::TxIdNeverSent) {
            rsp.id ^= BAD_ID_MASK;
        }
        ring.put_response(&encode_tx_response(&rsp));
    }

    /// Delivers queued frames into posted buffers while there are some;
    /// true if the frontend is to be notified.
    pub fn deliver(&mut self, ring: &mut BackRingPage, mem: &dyn GuestMemory) -> bool {
        let mut produced = false;
        while self.halted.is_none() {
            let Some(len) = self.rx_queue.front().map(Vec::len) else { break };
            let needed = len.div_ceil(PAGE_SIZE).max(1);
            let posted = match ring.unconsumed() {
                Ok(n) => n as usize,
                Err(e) => {
                    self.halt(Fatal::Overflow(NetRing::Rx, e));
                    break;
                }
            };
            if posted < needed {
                // Ask to hear of the next buffer, unless enough came meanwhile.
                ring.final_check_for_requests();
                if ring.unconsumed().is_ok_and(|n| n as usize >= needed) {
                    continue;
                }
                break;
            }
            let frame = self.rx_queue.pop_front().unwrap_or_default();
            self.deliver_one(ring, &frame, mem);
            produced = true;
        }
        produced && self.push(ring, NetRing::Rx)
    }

    /// Copies `frame` into the next posted buffers and answers them.
    fn deliver_one(&mut self, ring: &mut BackRingPage, frame: &[u8], mem: &dyn GuestMemory) {
        let chunks: Vec<&[u8]> = frame.chunks(PAGE_SIZE).collect();
        let posted: Vec<(u16, u32)> = chunks
            .iter()
            .map(|_| {
                let mut raw = [0u8; RX_ENTRY];
                ring.take_request(&mut raw);
                (u16_at(&raw, 0), u32_at(&raw, 4))
            })
            .collect();
        let pages: Result<Vec<*mut u8>, GrantError> =
            posted.iter().map(|&(_, gref)| granted_page(mem, gref, true)).collect();
        let pages = match pages {
            Ok(p) => Some(p),
            Err(e) => {
                self.figures.rx_errors += 1;
                self.note(format!("receive buffer refused: {e:?}"));
                None
            }
        };
        for (i, (&(id, _), chunk)) in posted.iter().zip(&chunks).enumerate() {
            let more = if i + 1 < chunks.len() { RXF_MORE_DATA } else { 0 };
            let status = match &pages {
                Some(pages) => {
                    // SAFETY: a live page of the domain (the `GuestMemory`
                    // contract); a chunk is at most a page, copied at 0.
                    unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), pages[i], chunk.len()) };
                    chunk.len() as i16
                }
                None => RSP_ERROR,
            };
            self.rx_respond(ring, RxResponse { id, offset: 0, flags: more, status });
        }
        if pages.is_some() {
            self.figures.frames_delivered += 1;
            self.figures.bytes_delivered += frame.len() as u64;
        }
    }

    /// Writes a receive response, spoilt by the first receive fault armed
    /// (one a response).
    fn rx_respond(&mut self, ring: &mut BackRingPage, mut rsp: RxResponse) {
        let applies = |f: &NetFault| match f {
            NetFault::RxIdNeverPosted | NetFault::RxBadStatus => true,
            NetFault::RxLenPastPage => rsp.status > 0,
            _ => false,
        };
        if let Some(&f) = self.faults.iter().find(|f| applies(f)) {
            self.take_fault(f);
            match f {
                NetFault::RxIdNeverPosted => rsp.id ^= BAD_ID_MASK,
                NetFault::RxLenPastPage => rsp.offset = (PAGE_SIZE + 1 - rsp.status as usize) as u16,
                _ => rsp.status = BAD_STATUS,
            }
        }
        ring.put_response(&encode_rx_response(&rsp));
    }

    /// Publishes what was produced on `which`, past the responses once
    /// `RspProdBeyondRing` applied to it (so that a later batch does not
    /// mend the index before the frontend looked).
    fn push(&mut self, ring: &mut BackRingPage, which: NetRing) -> bool {
        let at = which as usize;
        if self.skew[at] == 0 && self.take_fault(NetFault::RspProdBeyondRing(which)) {
            self.skew[at] = BEYOND_RING;
        }
        if self.skew[at] != 0 {
            ring.publish_rsp_prod(ring.rsp_prod_pvt().wrapping_add(self.skew[at]));
            return true;
        }
        ring.push_responses()
    }
}

/// Copies the next transmit slot off the ring, one fewer `left`.
fn take_slot(ring: &mut BackRingPage, left: &mut usize) -> [u8; TX_ENTRY] {
    let mut raw = [0u8; TX_ENTRY];
    ring.take_request(&mut raw);
    *left -= 1;
    raw
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `struct netif_tx_request` from its slot's bytes.
pub fn decode_tx_request(b: &[u8; TX_ENTRY]) -> TxRequest {
    TxRequest { gref: u32_at(b, 0), offset: u16_at(b, 4), flags: u16_at(b, 6), id: u16_at(b, 8), size: u16_at(b, 10) }
}

/// `struct netif_tx_response`'s bytes.
pub fn encode_tx_response(r: &TxResponse) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&r.id.to_le_bytes());
    b[2..].copy_from_slice(&r.status.to_le_bytes());
    b
}

/// `struct netif_rx_response`'s bytes.
pub fn encode_rx_response(r: &RxResponse) -> [u8; RX_ENTRY] {
    let mut b = [0u8; RX_ENTRY];
    b[..2].copy_from_slice(&r.id.to_le_bytes());
    b[2..4].copy_from_slice(&r.offset.to_le_bytes());
    b[4..6].copy_from_slice(&r.flags.to_le_bytes());
    b[6..].copy_from_slice(&r.status.to_le_bytes());
    b
}
