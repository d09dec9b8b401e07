//! The xenstore wire decoder and every payload parser, fed the bytes a
//! hostile xenstored could put in the response ring.
//!
//! Checked: the decoder never panics or allocates past `PAYLOAD_MAX`;
//! however the stream is cut (the ring hands it over in arbitrary pieces)
//! it yields the same messages and the same error; a decoded message
//! encodes back to the bytes it came from; each parser's answer obeys its
//! documented contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen::xenstore::wire::{self, Decoder, Message, WireError, HEADER_LEN, PAYLOAD_MAX};
use xen::xenstore::{ops, XsError};

/// Decodes `stream` cut into pieces whose sizes come from `cuts`.
fn decode(stream: &[u8], cuts: &[u8]) -> (Vec<Message>, Option<WireError>) {
    let mut decoder = Decoder::new();
    let mut messages = Vec::new();
    let mut rest = stream;
    let mut sizes = cuts.iter().cycle();
    while !rest.is_empty() {
        let piece = (*sizes.next().unwrap_or(&255) as usize).max(1).min(rest.len());
        let (now, later) = rest.split_at(piece);
        if let Err(e) = decoder.feed_all(now, |m| messages.push(m)) {
            // Once out of step the decoder refuses everything after.
            assert_eq!(decoder.feed(later), Err(e));
            return (messages, Some(e));
        }
        rest = later;
    }
    (messages, None)
}

fn check_parsers(payload: &[u8]) {
    if let Ok(names) = wire::parse_directory(payload) {
        assert!(names.iter().all(|n| !n.is_empty() && !n.contains('/') && !n.contains('\0')));
        let joined: usize = names.iter().map(|n| n.len() + 1).sum();
        assert_eq!(joined, payload.len());
    }
    if let Ok((path, token)) = wire::parse_watch_event(payload) {
        assert!(!path.is_empty());
        assert_eq!(path.len() + token.len() + 2, payload.len());
    }
    if let Ok(id) = wire::parse_tx_id(payload) {
        assert_ne!(id, 0);
        let digits = payload.strip_suffix(&[0]).unwrap_or(payload);
        assert_eq!(core::str::from_utf8(digits).unwrap().parse::<u64>().unwrap(), u64::from(id));
    }
    if wire::parse_ok(payload).is_ok() {
        assert!(payload == b"OK\0" || payload == b"OK");
    }
    match wire::parse_error(payload) {
        Ok(errno) => assert!(!errno.name().is_empty()),
        Err(XsError::Malformed(_)) => {}
        Err(other) => panic!("parse_error gave {other:?}"),
    }
    if let Ok(text) = ops::read_reply(payload.to_vec()) {
        assert_eq!(text.as_bytes(), payload);
    }
    if let Ok(n) = ops::read_u64_reply(payload.to_vec()) {
        assert_eq!(core::str::from_utf8(payload).unwrap().trim().parse::<u64>().unwrap(), n);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose where the ring cuts the stream.
    let (cuts, stream) = data.split_at(data.len().min(4));
    let (whole, whole_err) = decode(stream, &[255]);
    let (cut, cut_err) = decode(stream, if cuts.is_empty() { &[1] } else { cuts });
    assert_eq!(whole, cut);
    assert_eq!(whole_err, cut_err);

    let mut offset = 0;
    for m in &whole {
        assert!(m.payload.len() <= PAYLOAD_MAX);
        let bytes = wire::encode(m.ty, m.req_id, m.tx_id, &m.payload).expect("a decoded payload fits");
        assert_eq!(&stream[offset..offset + bytes.len()], bytes.as_slice());
        offset += HEADER_LEN + m.payload.len();
        check_parsers(&m.payload);
    }
    if whole_err.is_none() {
        // Whatever is left is an unfinished message: less than a header,
        // or a header and part of its payload.
        assert!(stream.len() - offset < HEADER_LEN + PAYLOAD_MAX);
    }
    check_parsers(stream);
});
