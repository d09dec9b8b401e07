//! blkfront's table of requests in flight, fed response ids a hostile
//! backend chooses: ids of requests never issued, of a slot's earlier
//! use, answered twice, or none at all; interleaved with submissions,
//! collections and resumes (every request in flight issued again).
//!
//! Checked against a model: a response completes only the request whose
//! id it names, once; any other id is refused and changes nothing; the
//! table never holds more than its slots; after a resume, exactly the
//! requests still unanswered are issued again, in their first order.
#![no_main]

use arbitrary::Arbitrary;
use drivers::blkfront::shadow::{IdError, Shadow, Ticket};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

#[derive(Arbitrary, Debug)]
enum Op {
    Insert,
    /// A response naming the `nth` ticket ever issued (its true id).
    Respond {
        nth: u8,
    },
    /// A response with an id of the backend's choosing.
    RespondRaw(u64),
    Take {
        nth: u8,
    },
    Resume,
    FailAll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Issued,
    Done,
    Collected,
}

fuzz_target!(|input: (u8, Vec<Op>)| {
    let (slots, ops) = input;
    let slots = (slots as usize % 32) + 1;
    let mut shadow: Shadow<u64, bool> = Shadow::new(slots);
    // Every ticket ever issued, by issue number, with its request and state.
    let mut tickets: Vec<(Ticket, u64, State)> = Vec::new();
    let mut next_req = 0u64;
    for op in ops.into_iter().take(512) {
        match op {
            Op::Insert => {
                let live = tickets.iter().filter(|t| t.2 != State::Collected).count();
                match shadow.insert(next_req) {
                    Ok(t) => {
                        assert!(live < slots);
                        assert!(tickets.iter().all(|(o, _, _)| o.id() != t.id()), "an id issued twice");
                        tickets.push((t, next_req, State::Issued));
                    }
                    Err(r) => {
                        assert_eq!(r, next_req);
                        assert_eq!(live, slots);
                    }
                }
                next_req += 1;
            }
            Op::Respond { nth } => {
                if let Some(i) = (!tickets.is_empty()).then(|| nth as usize % tickets.len()) {
                    let (t, req, state) = tickets[i];
                    let mut seen = None;
                    let r = shadow.complete(t.id(), |q| {
                        seen = Some(*q);
                        true
                    });
                    match state {
                        State::Issued => {
                            assert_eq!(r, Ok(()));
                            assert_eq!(seen, Some(req));
                            tickets[i].2 = State::Done;
                        }
                        _ => {
                            assert!(matches!(r, Err(IdError::Duplicate(_)) | Err(IdError::NeverIssued(_))));
                            assert_eq!(seen, None);
                        }
                    }
                }
            }
            Op::RespondRaw(id) => {
                let before = shadow.in_flight();
                let matching = tickets.iter().position(|(t, _, _)| t.id() == id);
                let r = shadow.complete(id, |_| true);
                match matching {
                    Some(i) if tickets[i].2 == State::Issued => {
                        assert_eq!(r, Ok(()));
                        tickets[i].2 = State::Done;
                    }
                    _ => {
                        assert!(r.is_err());
                        assert_eq!(shadow.in_flight(), before);
                    }
                }
            }
            Op::Take { nth } => {
                if let Some(i) = (!tickets.is_empty()).then(|| nth as usize % tickets.len()) {
                    let (t, req, state) = tickets[i];
                    let got = shadow.take(t);
                    if state == State::Done {
                        assert_eq!(got.map(|(r, _)| r), Some(req));
                        tickets[i].2 = State::Collected;
                    } else {
                        assert!(got.is_none());
                    }
                    assert!(!shadow.holds(t) || state == State::Issued);
                }
            }
            Op::Resume => {
                let again: Vec<u64> = shadow.issued_mut().into_iter().map(|(_, r)| *r).collect();
                let model: Vec<u64> = tickets.iter().filter(|t| t.2 == State::Issued).map(|t| t.1).collect();
                assert_eq!(again, model);
            }
            Op::FailAll => {
                let n = shadow.fail_all(|| false);
                let mut model = 0;
                for t in tickets.iter_mut().filter(|t| t.2 == State::Issued) {
                    t.2 = State::Done;
                    model += 1;
                }
                assert_eq!(n, model);
            }
        }
        let issued: BTreeMap<u64, ()> =
            tickets.iter().filter(|t| t.2 == State::Issued).map(|t| (t.0.id(), ())).collect();
        assert_eq!(shadow.in_flight(), issued.len());
    }
});
