//! The xenstore client core: a state machine with no waiting in it.
//!
//! Requests are numbered by the [`Router`] and kept, encoded, until their
//! reply arrives: xenstored echoes the request id, so replies are matched
//! by id and filed for the waiter to [`Router::take_reply`]. Watch events
//! may arrive at any point between a request and its reply; they carry no
//! request id, only the token given at registration, and go to a bounded
//! per-token queue read with [`Router::pop_event`].
//!
//! The router also remembers what xenstored must know about us, so that
//! after a resume (a fresh ring, a xenstored that has never seen this
//! domain) [`Router::requests_to_resend`] produces everything to send
//! again: the requests still in flight, and a WATCH for each registered
//! watch.
//!
//! Whatever the peer sends — a reply nobody asked for, an event for a
//! token we do not hold, a payload that does not parse — is counted,
//! logged and dropped; it never panics the guest.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use super::wire::{self, Errno, Message, MsgType, WireError, XsError};

/// Most events kept per watch before the oldest are dropped. A watcher
/// that falls this far behind re-reads the node anyway.
pub const EVENT_QUEUE_MAX: usize = 64;

/// A request sent and not yet answered.
struct Pending {
    ty: MsgType,
    tx_id: u32,
    encoded: Vec<u8>,
    /// For WATCH and UNWATCH: the token, to keep the registry in step.
    token: Option<String>,
    /// False when nobody will take the reply (the router's own WATCHes
    /// after a resume, or a waiter that gave up).
    waited: bool,
}

struct Watch {
    path: String,
    events: VecDeque<String>,
    dropped: u64,
}

/// What [`Router::on_message`] did with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// The reply to `req_id` is filed: wake its waiter.
    Reply { req_id: u32 },
    /// An event was queued for the watch `token`: wake its watcher.
    Event { token: String, path: String },
    /// The reply to a request nobody waits for; already consumed.
    Unwaited { req_id: u32, result: Result<(), XsError> },
    /// Dropped (and logged).
    Unexpected(Unexpected),
}

/// Messages the router had no use for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unexpected {
    /// A reply whose request id is not in flight.
    UnknownReqId { ty: MsgType, req_id: u32 },
    /// An event for a token not (or no longer) registered.
    UnknownToken { token: String, path: String },
    /// A WATCH_EVENT whose payload does not parse.
    BadEvent(XsError),
}

/// The client state for one xenstore connection.
#[derive(Default)]
pub struct Router {
    next_req_id: u32,
    in_flight: BTreeMap<u32, Pending>,
    replies: BTreeMap<u32, Result<Vec<u8>, XsError>>,
    /// Keyed by token: xenstored tells events apart by token alone.
    watches: BTreeMap<String, Watch>,
    unexpected: u64,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// An id not used by any request in flight or reply not yet taken.
    fn fresh_req_id(&mut self) -> u32 {
        loop {
            // Skip 0: watch events carry it, and it reads as "unset" in dumps.
            self.next_req_id = self.next_req_id.wrapping_add(1).max(1);
            let id = self.next_req_id;
            if !self.in_flight.contains_key(&id) && !self.replies.contains_key(&id) {
                return id;
            }
        }
    }

    fn start_inner(
        &mut self,
        ty: MsgType,
        tx_id: u32,
        payload: &[u8],
        token: Option<String>,
        waited: bool,
    ) -> Result<(u32, Vec<u8>), WireError> {
        let req_id = self.fresh_req_id();
        let encoded = wire::encode(ty, req_id, tx_id, payload)?;
        let pending = Pending { ty, tx_id, encoded: encoded.clone(), token, waited };
        self.in_flight.insert(req_id, pending);
        Ok((req_id, encoded))
    }

    /// Numbers a request and remembers it until its reply. Returns the id
    /// to wait on and the bytes to write to the ring, whole and in order.
    /// For watches use [`Self::register_watch`] instead, which keeps the
    /// registry in step.
    pub fn start(&mut self, ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<(u32, Vec<u8>), WireError> {
        self.start_inner(ty, tx_id, payload, None, true)
    }

    /// Requests sent and not answered, in id order, with their bytes.
    pub fn in_flight(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        self.in_flight.iter().map(|(id, p)| (*id, p.encoded.as_slice()))
    }

    /// Takes the reply to `req_id` if it has arrived: the payload, or the
    /// error xenstored (or a malformed reply) produced.
    pub fn take_reply(&mut self, req_id: u32) -> Option<Result<Vec<u8>, XsError>> {
        self.replies.remove(&req_id)
    }

    /// For a waiter that gives up: its reply, now or later, is discarded.
    pub fn forget(&mut self, req_id: u32) {
        self.replies.remove(&req_id);
        if let Some(p) = self.in_flight.get_mut(&req_id) {
            p.waited = false;
        }
    }

    /// Messages dropped as unexpected so far.
    pub fn unexpected_count(&self) -> u64 {
        self.unexpected
    }

    /// Routes one decoded message from xenstored.
    pub fn on_message(&mut self, msg: Message) -> Routed {
        if msg.ty == MsgType::WATCH_EVENT {
            return self.on_event(&msg.payload);
        }
        let Some(pending) = self.in_flight.remove(&msg.req_id) else {
            return self.unexpected(Unexpected::UnknownReqId { ty: msg.ty, req_id: msg.req_id });
        };
        let result = if msg.ty == MsgType::ERROR {
            Err(wire::parse_error(&msg.payload).map_or_else(|e| e, XsError::Errno))
        } else if msg.ty != pending.ty {
            Err(XsError::Malformed("reply type differs from the request's"))
        } else {
            Ok(msg.payload)
        };
        if pending.ty == MsgType::WATCH && result.is_err() {
            // xenstored holds no such watch: neither should we, or it
            // would be re-registered after a resume.
            self.drop_watch_if_unsent(pending.token.as_deref());
        }
        if pending.waited {
            self.replies.insert(msg.req_id, result);
            Routed::Reply { req_id: msg.req_id }
        } else {
            if let Err(e) = &result {
                log::warn!("xenstore: request {} ({:?}) failed: {}", msg.req_id, pending.ty, e);
            }
            Routed::Unwaited { req_id: msg.req_id, result: result.map(|_| ()) }
        }
    }

    /// Removes `token` from the registry unless another WATCH for it is
    /// still in flight.
    fn drop_watch_if_unsent(&mut self, token: Option<&str>) {
        let Some(token) = token else { return };
        let again = self.in_flight.values().any(|p| p.ty == MsgType::WATCH && p.token.as_deref() == Some(token));
        if !again {
            self.watches.remove(token);
        }
    }

    fn on_event(&mut self, payload: &[u8]) -> Routed {
        let (path, token) = match wire::parse_watch_event(payload) {
            Ok(pt) => pt,
            Err(e) => return self.unexpected(Unexpected::BadEvent(e)),
        };
        let Some(watch) = self.watches.get_mut(&token) else {
            return self.unexpected(Unexpected::UnknownToken { token, path });
        };
        if watch.events.len() >= EVENT_QUEUE_MAX {
            watch.events.pop_front();
            watch.dropped += 1;
        }
        watch.events.push_back(path.clone());
        Routed::Event { token, path }
    }

    fn unexpected(&mut self, what: Unexpected) -> Routed {
        self.unexpected += 1;
        log::warn!("xenstore: dropped unexpected message: {:?}", what);
        Routed::Unexpected(what)
    }

    /// Registers a watch and starts its WATCH request. Events for `token`
    /// are queued from now on (xenstored fires once on registration). A
    /// token already registered is refused with EEXIST, as xenstored would.
    pub fn register_watch(&mut self, path: &str, token: &str) -> Result<(u32, Vec<u8>), XsError> {
        if self.watches.contains_key(token) {
            return Err(XsError::Errno(Errno::EEXIST));
        }
        let payload = wire::watch_payload(path, token)?;
        let started = self.start_inner(MsgType::WATCH, 0, &payload, Some(token.into()), true)?;
        let watch = Watch { path: path.into(), events: VecDeque::new(), dropped: 0 };
        self.watches.insert(token.into(), watch);
        Ok(started)
    }

    /// Forgets a watch, with its queued events, and starts its UNWATCH
    /// request. Events still on their way are dropped as unexpected.
    pub fn unregister_watch(&mut self, token: &str) -> Result<(u32, Vec<u8>), XsError> {
        let Some(watch) = self.watches.remove(token) else {
            return Err(XsError::Errno(Errno::ENOENT));
        };
        let payload = wire::watch_payload(&watch.path, token)?;
        Ok(self.start_inner(MsgType::UNWATCH, 0, &payload, Some(token.into()), true)?)
    }

    /// Registered watches as `(path, token)`.
    pub fn watches(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.watches.iter().map(|(token, w)| (w.path.as_str(), token.as_str()))
    }

    /// The oldest queued event path for `token`.
    pub fn pop_event(&mut self, token: &str) -> Option<String> {
        self.watches.get_mut(token)?.events.pop_front()
    }

    /// Events dropped from `token`'s full queue so far.
    pub fn dropped_events(&self, token: &str) -> u64 {
        self.watches.get(token).map_or(0, |w| w.dropped)
    }

    /// After a resume onto a fresh ring: what to write, whole messages in
    /// request-id order. The new xenstored knows nothing of this domain,
    /// so:
    ///
    /// - requests in a transaction, and TRANSACTION_END, are completed
    ///   here with EAGAIN (the transaction died with the old xenstored;
    ///   the retry policy starts it again);
    /// - UNWATCH is completed here with OK (the watch died too), and so is
    ///   a WATCH whose token was unregistered since;
    /// - every other request in flight is sent again under its old id
    ///   (WRITE, MKDIR and RM are idempotent enough: an RM that had
    ///   already happened may come back ENOENT);
    /// - every registered watch without a WATCH in flight gets a new one,
    ///   whose reply nobody waits for (failures are logged).
    ///
    /// The glue must then wake every waiter: some replies were just filed.
    /// Reset the [`wire::Decoder`] too; a half-read reply is gone.
    pub fn requests_to_resend(&mut self) -> Vec<Vec<u8>> {
        let mut resend = Vec::new();
        let ids: Vec<u32> = self.in_flight.keys().copied().collect();
        for id in ids {
            let Some(p) = self.in_flight.get(&id) else {
                continue;
            };
            let local: Option<Result<Vec<u8>, XsError>> = if p.tx_id != 0 || p.ty == MsgType::TRANSACTION_END {
                Some(Err(XsError::Errno(Errno::EAGAIN)))
            } else if p.ty == MsgType::UNWATCH
                || (p.ty == MsgType::WATCH && !p.token.as_ref().is_some_and(|t| self.watches.contains_key(t)))
            {
                Some(Ok(b"OK\0".to_vec()))
            } else {
                None
            };
            match local {
                None => resend.push(p.encoded.clone()),
                Some(result) => {
                    if let Some(p) = self.in_flight.remove(&id) {
                        if p.waited {
                            self.replies.insert(id, result);
                        }
                    }
                }
            }
        }
        let rewatch: Vec<(String, String)> = self
            .watches
            .iter()
            .filter(|(token, _)| {
                !self.in_flight.values().any(|p| p.ty == MsgType::WATCH && p.token.as_deref() == Some(token.as_str()))
            })
            .map(|(token, w)| (w.path.clone(), token.clone()))
            .collect();
        for (path, token) in rewatch {
            // These encoded once already, so they encode again.
            let started = wire::watch_payload(&path, &token)
                .and_then(|p| self.start_inner(MsgType::WATCH, 0, &p, Some(token.clone()), false));
            match started {
                Ok((_, bytes)) => resend.push(bytes),
                Err(e) => log::warn!("xenstore: cannot re-register watch {token}: {e}"),
            }
        }
        resend
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn reply(ty: MsgType, req_id: u32, payload: &[u8]) -> Message {
        Message { ty, req_id, tx_id: 0, payload: payload.to_vec() }
    }

    fn event(path: &str, token: &str) -> Message {
        let payload = wire::watch_payload(path, token).unwrap();
        Message { ty: MsgType::WATCH_EVENT, req_id: 0, tx_id: 0, payload }
    }

    fn header(bytes: &[u8]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        (w(0), w(1), w(2))
    }

    #[test]
    fn events_interleave_with_replies() {
        let mut r = Router::new();
        let (w, _) = r.register_watch("control/shutdown", "shutdown").unwrap();
        let (a, bytes) = r.start(MsgType::READ, 0, b"memory/target\0").unwrap();
        assert_ne!(a, w);
        assert_eq!(header(&bytes), (2, a, 0));
        // The first firing can overtake the WATCH reply, and events can
        // sit between a request and its reply.
        assert_eq!(
            r.on_message(event("control/shutdown", "shutdown")),
            Routed::Event { token: "shutdown".into(), path: "control/shutdown".into() }
        );
        assert_eq!(r.on_message(reply(MsgType::WATCH, w, b"OK\0")), Routed::Reply { req_id: w });
        r.on_message(event("control/shutdown", "shutdown"));
        assert_eq!(r.take_reply(a), None);
        assert_eq!(r.on_message(reply(MsgType::READ, a, b"1024")), Routed::Reply { req_id: a });
        assert_eq!(r.take_reply(a), Some(Ok(b"1024".to_vec())));
        assert_eq!(r.take_reply(a), None);
        assert_eq!(r.take_reply(w), Some(Ok(b"OK\0".to_vec())));
        assert_eq!(r.pop_event("shutdown").as_deref(), Some("control/shutdown"));
        assert_eq!(r.pop_event("shutdown").as_deref(), Some("control/shutdown"));
        assert_eq!(r.pop_event("shutdown"), None);
        assert_eq!(r.in_flight().count(), 0);
    }

    #[test]
    fn errors_and_strays_do_not_panic() {
        let mut r = Router::new();
        let (a, _) = r.start(MsgType::READ, 0, b"nope\0").unwrap();
        let (b, _) = r.start(MsgType::READ, 0, b"x\0").unwrap();
        let (c, _) = r.start(MsgType::WRITE, 0, b"x\0v").unwrap();
        r.on_message(reply(MsgType::ERROR, a, b"ENOENT\0"));
        r.on_message(reply(MsgType::ERROR, b, b"garbage"));
        r.on_message(reply(MsgType::READ, c, b"OK\0"));
        assert_eq!(r.take_reply(a), Some(Err(XsError::Errno(Errno::ENOENT))));
        assert!(matches!(r.take_reply(b), Some(Err(XsError::Malformed(_)))));
        assert!(matches!(r.take_reply(c), Some(Err(XsError::Malformed(_)))));

        let stray = r.on_message(reply(MsgType::READ, 4242, b"?"));
        assert_eq!(stray, Routed::Unexpected(Unexpected::UnknownReqId { ty: MsgType::READ, req_id: 4242 }));
        assert!(matches!(r.on_message(event("/p", "who")), Routed::Unexpected(Unexpected::UnknownToken { .. })));
        let bad = Message { ty: MsgType::WATCH_EVENT, req_id: 0, tx_id: 0, payload: b"x".to_vec() };
        assert!(matches!(r.on_message(bad), Routed::Unexpected(Unexpected::BadEvent(_))));
        assert_eq!(r.unexpected_count(), 3);

        // A waiter that gives up: the late reply is consumed, not kept.
        let (d, _) = r.start(MsgType::READ, 0, b"slow\0").unwrap();
        r.forget(d);
        assert!(matches!(r.on_message(reply(MsgType::READ, d, b"v")), Routed::Unwaited { .. }));
        assert_eq!(r.take_reply(d), None);
    }

    #[test]
    fn watch_registry_and_bounded_queue() {
        let mut r = Router::new();
        let (w, _) = r.register_watch("/a", "t").unwrap();
        assert_eq!(r.register_watch("/b", "t"), Err(XsError::Errno(Errno::EEXIST)));
        r.on_message(reply(MsgType::WATCH, w, b"OK\0"));
        for i in 0..EVENT_QUEUE_MAX + 3 {
            r.on_message(event(&std::format!("/a/{i}"), "t"));
        }
        assert_eq!(r.dropped_events("t"), 3);
        assert_eq!(r.pop_event("t").as_deref(), Some("/a/3"));
        assert_eq!(r.watches().collect::<Vec<_>>(), vec![("/a", "t")]);

        let (u, bytes) = r.unregister_watch("t").unwrap();
        assert_eq!(&bytes[16..], b"/a\0t\0");
        assert_eq!(r.watches().count(), 0);
        assert_eq!(r.pop_event("t"), None);
        r.on_message(reply(MsgType::UNWATCH, u, b"OK\0"));
        assert_eq!(r.unregister_watch("t"), Err(XsError::Errno(Errno::ENOENT)));

        // A refused WATCH leaves nothing to re-register after a resume.
        let (x, _) = r.register_watch("/secret", "s").unwrap();
        r.on_message(reply(MsgType::ERROR, x, b"EACCES\0"));
        assert_eq!(r.take_reply(x), Some(Err(XsError::Errno(Errno::EACCES))));
        assert_eq!(r.watches().count(), 0);
    }

    #[test]
    fn resume_resends_in_order_and_rewatches() {
        let mut r = Router::new();
        let (w1, _) = r.register_watch("control/shutdown", "sd").unwrap();
        r.on_message(reply(MsgType::WATCH, w1, b"OK\0"));
        let (read, read_bytes) = r.start(MsgType::READ, 0, b"memory/target\0").unwrap();
        let (w2, w2_bytes) = r.register_watch("memory/target", "mem").unwrap();
        let (in_tx, _) = r.start(MsgType::WRITE, 7, b"data/x\0y").unwrap();
        let (end, _) = r.start(MsgType::TRANSACTION_END, 7, b"T\0").unwrap();
        let (_, _) = r.register_watch("gone", "g").unwrap();
        let (unw, _) = r.unregister_watch("g").unwrap();
        let (write, write_bytes) = r.start(MsgType::WRITE, 0, b"data/y\0z").unwrap();
        assert_eq!(r.in_flight().count(), 7);

        let resend = r.requests_to_resend();
        // Old ids first, in order, bytes unchanged; then a new WATCH for
        // the watch whose registration had already completed.
        assert_eq!(resend.len(), 4);
        assert_eq!(resend[0], read_bytes);
        assert_eq!(resend[1], w2_bytes);
        assert_eq!(resend[2], write_bytes);
        let (ty, id, tx) = header(&resend[3]);
        assert_eq!((ty, tx), (MsgType::WATCH.0, 0));
        assert!(id > write);
        assert_eq!(&resend[3][16..], b"control/shutdown\0sd\0");

        // Completed locally: the transaction is dead, the unwatch moot.
        assert_eq!(r.take_reply(in_tx), Some(Err(XsError::Errno(Errno::EAGAIN))));
        assert_eq!(r.take_reply(end), Some(Err(XsError::Errno(Errno::EAGAIN))));
        assert_eq!(r.take_reply(unw), Some(Ok(b"OK\0".to_vec())));
        assert_eq!(r.take_reply(read), None);

        // The new xenstored answers under the old ids.
        assert_eq!(r.on_message(reply(MsgType::READ, read, b"5")), Routed::Reply { req_id: read });
        r.on_message(reply(MsgType::WATCH, w2, b"OK\0"));
        assert_eq!(r.on_message(reply(MsgType::WATCH, id, b"OK\0")), Routed::Unwaited { req_id: id, result: Ok(()) });
        assert_eq!(r.take_reply(read), Some(Ok(b"5".to_vec())));
        let mut tokens: Vec<&str> = r.watches().map(|(_, t)| t).collect();
        tokens.sort();
        assert_eq!(tokens, ["mem", "sd"]);
    }

    #[test]
    fn request_ids_skip_ids_still_in_use() {
        let mut r = Router::new();
        r.next_req_id = u32::MAX - 1;
        let (a, _) = r.start(MsgType::READ, 0, b"a\0").unwrap();
        let (b, _) = r.start(MsgType::READ, 0, b"b\0").unwrap();
        assert_eq!((a, b), (u32::MAX, 1));
        r.next_req_id = u32::MAX - 1;
        let (c, _) = r.start(MsgType::READ, 0, b"c\0").unwrap();
        assert_eq!(c, 2);
        assert!(r.start(MsgType::WRITE, 0, &[0u8; wire::PAYLOAD_MAX + 1]).is_err());
    }
}
