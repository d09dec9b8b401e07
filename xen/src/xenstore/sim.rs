//! A simulated xenstored, for host tests of the client and of code built
//! on it (enable the `sim` feature from another crate's dev-dependencies).
//!
//! [`SimXenstored`] takes raw request bytes and produces raw response
//! bytes, so a test exercises the real encoding, [`Decoder`] and
//! [`Router`]. It keeps a tree of nodes, resolves relative paths under
//! `/local/domain/<domid>/`, and fires watches as xenstored does: once on
//! registration, then for every write or removal at or below the watched
//! path (a removal also fires watches below the removed node).
//! Transactions are checked for existence but not isolated: their writes
//! land at once. [`SimXenstored::fail_next_commit`] makes the next
//! committing TRANSACTION_END answer EAGAIN, to test retries.
//!
//! The simulated Xen (`crate::sim`) serves it on the guest's store ring,
//! so the kernel's own client is what tests drive.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

use super::ring::{XenstoreInterface, RING_SIZE};
use super::wire::{self, Decoder, Errno, Message, MsgType, WireError, PAYLOAD_MAX};

struct SimWatch {
    /// As the client gave it: events report paths in the same form.
    given: String,
    abs: String,
    token: String,
}

/// The simulated daemon, for one guest domain.
pub struct SimXenstored {
    domid: u32,
    /// Absolute path to value; every ancestor of a node is a node.
    nodes: BTreeMap<String, Vec<u8>>,
    watches: Vec<SimWatch>,
    transactions: BTreeSet<u32>,
    next_tx: u32,
    fail_next_commit: bool,
    decoder: Decoder,
    output: VecDeque<u8>,
    protocol_error: Option<WireError>,
}

/// Whether `path` is `base` or lies below it.
fn at_or_below(path: &str, base: &str) -> bool {
    path == base || base == "/" || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        _ if path == "/" => None,
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Splits a request payload into `n` NUL-terminated strings.
fn cstr_args(payload: &[u8], n: usize) -> Result<Vec<&str>, Errno> {
    let body = payload.strip_suffix(&[0]).ok_or(Errno::EINVAL)?;
    let args: Vec<&str> = body
        .split(|&b| b == 0)
        .map(|s| core::str::from_utf8(s).map_err(|_| Errno::EINVAL))
        .collect::<Result<_, _>>()?;
    if args.len() == n {
        Ok(args)
    } else {
        Err(Errno::EINVAL)
    }
}

impl SimXenstored {
    pub fn new(domid: u32) -> Self {
        let mut sim = Self {
            domid,
            nodes: BTreeMap::new(),
            watches: Vec::new(),
            transactions: BTreeSet::new(),
            next_tx: 0,
            fail_next_commit: false,
            decoder: Decoder::new(),
            output: VecDeque::new(),
            protocol_error: None,
        };
        sim.nodes.insert("/".into(), Vec::new());
        let home = sim.home();
        sim.create(&home);
        sim
    }

    /// The guest's domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// `/local/domain/<domid>`.
    pub fn home(&self) -> String {
        format!("/local/domain/{}", self.domid)
    }

    /// The next committing TRANSACTION_END fails with EAGAIN.
    pub fn fail_next_commit(&mut self) {
        self.fail_next_commit = true;
    }

    /// The framing error that stopped the simulator, if any.
    pub fn protocol_error(&self) -> Option<WireError> {
        self.protocol_error
    }

    /// A node's value, by absolute or relative path.
    pub fn value(&self, path: &str) -> Option<&[u8]> {
        let abs = self.resolve(path).ok()?;
        self.nodes.get(&abs).map(Vec::as_slice)
    }

    /// Writes as the toolstack would (`xl mem-set`, `xl shutdown`): the
    /// node and its parents are created and watches fire.
    pub fn toolstack_write(&mut self, path: &str, value: &[u8]) {
        if let Ok(abs) = self.resolve(path) {
            self.set(&abs, value.to_vec());
        }
    }

    /// Removes a node and everything below it as the toolstack would
    /// (`xl block-detach`): watches fire as for a guest's RM.
    pub fn toolstack_remove(&mut self, path: &str) {
        if let Ok(abs) = self.resolve(path) {
            if abs != "/" && self.nodes.contains_key(&abs) {
                self.nodes.retain(|p, _| !at_or_below(p, &abs));
                self.fire(&abs, true);
            }
        }
    }

    /// Starts over as the xenstored a restored domain meets: the tree is
    /// kept, but it knows no watches or transactions of ours, and anything
    /// half sent or unsent is gone.
    pub fn restart(&mut self) {
        self.watches.clear();
        self.transactions.clear();
        self.decoder.reset();
        self.output.clear();
        self.protocol_error = None;
    }

    /// Takes request bytes, cut anywhere, and queues the responses.
    pub fn process(&mut self, bytes: &[u8]) {
        if self.protocol_error.is_some() {
            return;
        }
        let mut msgs = Vec::new();
        if let Err(e) = self.decoder.feed_all(bytes, |m| msgs.push(m)) {
            // A real xenstored would drop the connection here.
            self.protocol_error = Some(e);
        }
        for m in msgs {
            self.handle(m);
        }
    }

    /// Response bytes not yet taken.
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// Takes up to `max` response bytes.
    pub fn take_output(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.output.len());
        self.output.drain(..n).collect()
    }

    /// Plays xenstored's side of a ring page: consumes every request byte
    /// and produces as many response bytes as fit. Returns whether
    /// anything moved.
    ///
    /// # Safety
    /// `page` must point to a live `XenstoreInterface` that nothing else
    /// accesses during the call except through raw pointers.
    pub unsafe fn serve_ring(&mut self, page: *mut XenstoreInterface) -> bool {
        // SAFETY: the caller keeps the page alive; each index is reduced
        // modulo RING_SIZE and each fill level checked, so accesses stay in
        // `req` and `rsp`.
        unsafe {
            let req_cons = addr_of!((*page).req_cons).read_volatile();
            let req_prod = addr_of!((*page).req_prod).read_volatile();
            fence(Ordering::Acquire);
            let avail = (req_prod.wrapping_sub(req_cons) as usize).min(RING_SIZE);
            let req = addr_of!((*page).req) as *const u8;
            let bytes: Vec<u8> =
                (0..avail).map(|i| req.add((req_cons as usize).wrapping_add(i) % RING_SIZE).read_volatile()).collect();
            fence(Ordering::Release);
            addr_of_mut!((*page).req_cons).write_volatile(req_cons.wrapping_add(avail as u32));
            self.process(&bytes);

            let rsp_cons = addr_of!((*page).rsp_cons).read_volatile();
            let rsp_prod = addr_of!((*page).rsp_prod).read_volatile();
            fence(Ordering::Acquire);
            let used = (rsp_prod.wrapping_sub(rsp_cons) as usize).min(RING_SIZE);
            let out = self.take_output(RING_SIZE - used);
            let rsp = addr_of_mut!((*page).rsp) as *mut u8;
            for (i, b) in out.iter().enumerate() {
                rsp.add((rsp_prod as usize).wrapping_add(i) % RING_SIZE).write_volatile(*b);
            }
            fence(Ordering::Release);
            addr_of_mut!((*page).rsp_prod).write_volatile(rsp_prod.wrapping_add(out.len() as u32));
            avail != 0 || !out.is_empty()
        }
    }

    fn resolve(&self, path: &str) -> Result<String, Errno> {
        let abs = if path.starts_with('/') { path.to_string() } else { format!("{}/{}", self.home(), path) };
        let valid_chars = abs.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-@".contains(&b));
        let well_formed = abs == "/" || (!abs.ends_with('/') && !abs.contains("//"));
        if path.is_empty() || !valid_chars || !well_formed {
            return Err(Errno::EINVAL);
        }
        Ok(abs)
    }

    /// Creates `abs` and missing ancestors with empty values.
    fn create(&mut self, abs: &str) {
        let mut at = Some(abs);
        while let Some(p) = at {
            if self.nodes.contains_key(p) {
                break;
            }
            self.nodes.insert(p.to_string(), Vec::new());
            at = parent(p);
        }
    }

    fn set(&mut self, abs: &str, value: Vec<u8>) {
        self.create(abs);
        self.nodes.insert(abs.to_string(), value);
        self.fire(abs, false);
    }

    /// Queues events for a change at `abs`; `removed` also fires watches
    /// below it, reporting their own path.
    fn fire(&mut self, abs: &str, removed: bool) {
        let mut events = Vec::new();
        for w in &self.watches {
            let node = if at_or_below(abs, &w.abs) {
                abs
            } else if removed && at_or_below(&w.abs, abs) {
                w.abs.as_str()
            } else {
                continue;
            };
            events.push((self.as_given(node, w), w.token.clone()));
        }
        for (path, token) in events {
            self.emit_event(&path, &token);
        }
    }

    /// `node` in the form the watch was registered in (relative watches
    /// get relative paths).
    fn as_given(&self, node: &str, w: &SimWatch) -> String {
        if w.given.starts_with('/') {
            return node.to_string();
        }
        let prefix = format!("{}/", self.home());
        node.strip_prefix(prefix.as_str()).unwrap_or(node).to_string()
    }

    fn emit(&mut self, ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) {
        match wire::encode(ty, req_id, tx_id, payload) {
            Ok(bytes) => self.output.extend(bytes),
            Err(_) => self.emit_error(req_id, tx_id, Errno::E2BIG),
        }
    }

    fn emit_error(&mut self, req_id: u32, tx_id: u32, e: Errno) {
        let mut payload = e.name().as_bytes().to_vec();
        payload.push(0);
        self.emit(MsgType::ERROR, req_id, tx_id, &payload);
    }

    fn emit_event(&mut self, path: &str, token: &str) {
        if let Ok(payload) = wire::watch_payload(path, token) {
            self.emit(MsgType::WATCH_EVENT, 0, 0, &payload);
        }
    }

    fn handle(&mut self, m: Message) {
        let result = self.answer(&m);
        let new_watch = m.ty == MsgType::WATCH && result.is_ok();
        match result {
            Ok(payload) => self.emit(m.ty, m.req_id, m.tx_id, &payload),
            Err(e) => self.emit_error(m.req_id, m.tx_id, e),
        }
        // xenstored fires a new watch once, after acknowledging it.
        if new_watch {
            if let Ok([path, token]) = cstr_args(&m.payload, 2).as_deref() {
                self.emit_event(path, token);
            }
        }
    }

    fn answer(&mut self, m: &Message) -> Result<Vec<u8>, Errno> {
        const OK: &[u8] = b"OK\0";
        if m.tx_id != 0 && !self.transactions.contains(&m.tx_id) {
            return Err(Errno::ENOENT);
        }
        match m.ty {
            MsgType::READ => {
                let abs = self.resolve(cstr_args(&m.payload, 1)?[0])?;
                self.nodes.get(&abs).cloned().ok_or(Errno::ENOENT)
            }
            MsgType::WRITE => {
                let split = m.payload.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
                let path = core::str::from_utf8(&m.payload[..split]).map_err(|_| Errno::EINVAL)?;
                let abs = self.resolve(path)?;
                self.set(&abs, m.payload[split + 1..].to_vec());
                Ok(OK.to_vec())
            }
            MsgType::MKDIR => {
                let abs = self.resolve(cstr_args(&m.payload, 1)?[0])?;
                if !self.nodes.contains_key(&abs) {
                    self.set(&abs, Vec::new());
                }
                Ok(OK.to_vec())
            }
            MsgType::RM => {
                let abs = self.resolve(cstr_args(&m.payload, 1)?[0])?;
                if abs == "/" {
                    return Err(Errno::EINVAL);
                }
                if !self.nodes.contains_key(&abs) {
                    // Already gone is fine as long as the parent exists.
                    let parent_exists = parent(&abs).is_some_and(|p| self.nodes.contains_key(p));
                    return if parent_exists { Ok(OK.to_vec()) } else { Err(Errno::ENOENT) };
                }
                self.nodes.retain(|p, _| !at_or_below(p, &abs));
                self.fire(&abs, true);
                Ok(OK.to_vec())
            }
            MsgType::DIRECTORY => {
                let abs = self.resolve(cstr_args(&m.payload, 1)?[0])?;
                if !self.nodes.contains_key(&abs) {
                    return Err(Errno::ENOENT);
                }
                let mut out = Vec::new();
                for p in self.nodes.keys() {
                    if p != &abs && parent(p) == Some(abs.as_str()) {
                        out.extend_from_slice(&p.as_bytes()[p.rfind('/').map_or(0, |i| i + 1)..]);
                        out.push(0);
                    }
                }
                if out.len() > PAYLOAD_MAX {
                    return Err(Errno::E2BIG);
                }
                Ok(out)
            }
            MsgType::WATCH => {
                let args = cstr_args(&m.payload, 2)?;
                let (given, token) = (args[0], args[1]);
                let abs = self.resolve(given)?;
                if self.watches.iter().any(|w| w.token == token && w.abs == abs) {
                    return Err(Errno::EEXIST);
                }
                let watch = SimWatch { given: given.into(), abs, token: token.into() };
                self.watches.push(watch);
                Ok(OK.to_vec())
            }
            MsgType::UNWATCH => {
                let args = cstr_args(&m.payload, 2)?;
                let abs = self.resolve(args[0])?;
                let at = self.watches.iter().position(|w| w.token == args[1] && w.abs == abs);
                self.watches.remove(at.ok_or(Errno::ENOENT)?);
                Ok(OK.to_vec())
            }
            MsgType::TRANSACTION_START => {
                if m.tx_id != 0 {
                    return Err(Errno::EBUSY);
                }
                self.next_tx += 1;
                self.transactions.insert(self.next_tx);
                Ok(format!("{}\0", self.next_tx).into_bytes())
            }
            MsgType::TRANSACTION_END => {
                let commit = match m.payload.as_slice() {
                    b"T\0" => true,
                    b"F\0" => false,
                    _ => return Err(Errno::EINVAL),
                };
                if !self.transactions.remove(&m.tx_id) {
                    return Err(Errno::ENOENT);
                }
                if commit && core::mem::take(&mut self.fail_next_commit) {
                    return Err(Errno::EAGAIN);
                }
                Ok(OK.to_vec())
            }
            MsgType::GET_DOMAIN_PATH => {
                let domid: u32 = cstr_args(&m.payload, 1)?[0].parse().map_err(|_| Errno::EINVAL)?;
                Ok(format!("/local/domain/{domid}\0").into_bytes())
            }
            _ => Err(Errno::ENOSYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_refuses_an_oversize_header() {
        let mut s = SimXenstored::new(0);
        let mut bytes = wire::encode(MsgType::READ, 1, 0, b"").unwrap();
        bytes[12..16].copy_from_slice(&5000u32.to_le_bytes());
        s.process(&bytes);
        assert_eq!(s.protocol_error(), Some(WireError::PayloadTooLong(5000)));
        assert_eq!(s.pending_output(), 0);
    }
}
