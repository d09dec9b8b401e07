//! The xenstore client core fed arbitrary interleavings of our own
//! requests and watch registrations with whatever a hostile xenstored
//! answers: replies to ids in flight or never sent, of the wrong type,
//! errors, watch events for any token, resumes onto a fresh ring.
//!
//! Checked against a model of what is in flight: ids are never reused
//! while a request or its reply is outstanding; a reply reaches only the
//! request it names, once; anything else is counted as unexpected; event
//! queues stay bounded; after a resume every request still in flight is
//! sent again exactly once, as a well-formed message.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};
use xen::xenstore::router::{Unexpected, EVENT_QUEUE_MAX};
use xen::xenstore::wire::{self, Decoder, Message, MsgType};
use xen::xenstore::{Routed, Router};

const TOKENS: [&str; 4] = ["t0", "t1", "t2", ""];
const PATHS: [&str; 3] = ["memory/target", "control/shutdown", "device/vbd/51712/state"];

#[derive(Arbitrary, Debug)]
enum Op {
    Start {
        ty: u8,
        tx_id: u8,
        payload: Vec<u8>,
    },
    Watch {
        path: u8,
        token: u8,
    },
    Unwatch {
        token: u8,
    },
    /// A reply for the `nth` request in flight (or, past the end, any id).
    Reply {
        nth: u8,
        raw_id: u32,
        ty: u8,
        payload: Vec<u8>,
    },
    Event {
        path: u8,
        token: u8,
        raw: Option<Vec<u8>>,
    },
    Take {
        nth: u8,
    },
    Forget {
        nth: u8,
    },
    Pop {
        token: u8,
    },
    Resume,
}

fn msg_type(b: u8) -> MsgType {
    // Mostly the types the guest sends; sometimes anything.
    const COMMON: [MsgType; 8] = [
        MsgType::READ,
        MsgType::WRITE,
        MsgType::DIRECTORY,
        MsgType::MKDIR,
        MsgType::RM,
        MsgType::TRANSACTION_START,
        MsgType::TRANSACTION_END,
        MsgType::ERROR,
    ];
    COMMON.get(b as usize).copied().unwrap_or(MsgType(u32::from(b) % 24))
}

struct Model {
    /// Request id -> whether a waiter will take the reply.
    in_flight: BTreeMap<u32, bool>,
    /// Replies filed and not yet taken.
    filed: BTreeSet<u32>,
    watches: BTreeSet<&'static str>,
    unexpected: u64,
}

impl Model {
    fn pick(&self, nth: u8) -> Option<u32> {
        let ids: Vec<u32> = self.in_flight.keys().chain(self.filed.iter()).copied().collect();
        ids.get(nth as usize).copied()
    }
}

fn check_sync(router: &Router, model: &Model) {
    let ids: BTreeSet<u32> = router.in_flight().map(|(id, _)| id).collect();
    assert_eq!(ids, model.in_flight.keys().copied().collect::<BTreeSet<_>>());
    let tokens: BTreeSet<&str> = router.watches().map(|(_, t)| t).collect();
    assert_eq!(tokens, model.watches.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(router.unexpected_count(), model.unexpected);
    for (_, bytes) in router.in_flight() {
        let mut d = Decoder::new();
        let (used, m) = d.feed(bytes).expect("our own request decodes");
        assert_eq!(used, bytes.len());
        assert!(m.is_some());
    }
}

fn started(model: &mut Model, id: u32) {
    assert_ne!(id, 0);
    assert!(!model.in_flight.contains_key(&id) && !model.filed.contains(&id), "id {id} reused");
    model.in_flight.insert(id, true);
}

fuzz_target!(|ops: Vec<Op>| {
    let mut router = Router::new();
    let mut model =
        Model { in_flight: BTreeMap::new(), filed: BTreeSet::new(), watches: BTreeSet::new(), unexpected: 0 };
    for op in ops.into_iter().take(256) {
        match op {
            Op::Start { ty, tx_id, payload } => {
                let ty = msg_type(ty);
                if ty == MsgType::WATCH || ty == MsgType::UNWATCH || ty == MsgType::WATCH_EVENT {
                    continue; // the glue sends those through (un)register_watch only
                }
                if let Ok((id, _)) = router.start(ty, u32::from(tx_id % 3), &payload) {
                    started(&mut model, id);
                }
            }
            Op::Watch { path, token } => {
                let token = TOKENS[token as usize % TOKENS.len()];
                let path = PATHS[path as usize % PATHS.len()];
                match router.register_watch(path, token) {
                    Ok((id, _)) => {
                        assert!(model.watches.insert(token), "a token registered twice");
                        started(&mut model, id);
                    }
                    Err(_) => assert!(model.watches.contains(token)),
                }
            }
            Op::Unwatch { token } => {
                let token = TOKENS[token as usize % TOKENS.len()];
                match router.unregister_watch(token) {
                    Ok((id, _)) => {
                        assert!(model.watches.remove(token));
                        started(&mut model, id);
                    }
                    Err(_) => assert!(!model.watches.contains(token)),
                }
            }
            Op::Reply { nth, raw_id, ty, payload } => {
                let req_id = model.pick(nth).unwrap_or(raw_id);
                let ty = msg_type(ty);
                if ty == MsgType::WATCH_EVENT {
                    continue;
                }
                let routed = router.on_message(Message { ty, req_id, tx_id: 0, payload });
                match model.in_flight.remove(&req_id) {
                    Some(true) => {
                        assert_eq!(routed, Routed::Reply { req_id });
                        model.filed.insert(req_id);
                    }
                    Some(false) => assert!(matches!(routed, Routed::Unwaited { req_id: r, .. } if r == req_id)),
                    None => {
                        assert!(matches!(routed, Routed::Unexpected(Unexpected::UnknownReqId { .. })));
                        model.unexpected += 1;
                    }
                }
                // A failed WATCH leaves the registry: resync from the router.
                model.watches.retain(|t| router.watches().any(|(_, rt)| rt == *t));
            }
            Op::Event { path, token, raw } => {
                let token = TOKENS[token as usize % TOKENS.len()];
                let payload =
                    raw.unwrap_or_else(|| format!("{}\0{}\0", PATHS[path as usize % PATHS.len()], token).into_bytes());
                let parsed = wire::parse_watch_event(&payload);
                match router.on_message(Message { ty: MsgType::WATCH_EVENT, req_id: 0, tx_id: 0, payload }) {
                    Routed::Event { token, path } => {
                        assert!(model.watches.contains(token.as_str()));
                        assert_eq!(parsed.unwrap(), (path, token));
                    }
                    Routed::Unexpected(Unexpected::BadEvent(_)) => {
                        assert!(parsed.is_err());
                        model.unexpected += 1;
                    }
                    Routed::Unexpected(Unexpected::UnknownToken { token, .. }) => {
                        assert!(!model.watches.contains(token.as_str()));
                        model.unexpected += 1;
                    }
                    other => panic!("an event routed as {other:?}"),
                }
            }
            Op::Take { nth } => {
                if let Some(id) = model.pick(nth) {
                    let got = router.take_reply(id);
                    assert_eq!(got.is_some(), model.filed.remove(&id));
                    assert!(router.take_reply(id).is_none(), "a reply taken twice");
                }
            }
            Op::Forget { nth } => {
                if let Some(id) = model.pick(nth) {
                    router.forget(id);
                    model.filed.remove(&id);
                    if let Some(waited) = model.in_flight.get_mut(&id) {
                        *waited = false;
                    }
                }
            }
            Op::Pop { token } => {
                let token = TOKENS[token as usize % TOKENS.len()];
                let mut n = 0;
                while router.pop_event(token).is_some() {
                    n += 1;
                }
                assert!(n <= EVENT_QUEUE_MAX);
            }
            Op::Resume => {
                let before = model.in_flight.clone();
                let resend = router.requests_to_resend();
                let mut sent = BTreeSet::new();
                for bytes in &resend {
                    let mut d = Decoder::new();
                    let (used, m) = d.feed(bytes).expect("a resent request decodes");
                    assert_eq!(used, bytes.len());
                    assert!(sent.insert(m.expect("a whole message").req_id), "a request resent twice");
                }
                let now: BTreeMap<u32, bool> = router.in_flight().map(|(id, _)| (id, true)).collect();
                assert_eq!(sent, now.keys().copied().collect::<BTreeSet<_>>(), "in flight but not resent");
                for (id, waited) in &before {
                    if !now.contains_key(id) && *waited {
                        // Completed locally: the waiter finds its reply.
                        model.filed.insert(*id);
                    }
                }
                // Re-watches are new ids nobody waits for; old ones keep their waiter.
                model.in_flight = now.keys().map(|id| (*id, before.get(id).copied().unwrap_or(false))).collect();
                model.watches.retain(|t| router.watches().any(|(_, rt)| rt == *t));
            }
        }
        check_sync(&router, &model);
    }
});
