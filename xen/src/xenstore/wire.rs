//! Xenstore message framing and payload formats (`io/xs_wire.h`).
//!
//! Every message, both ways, is a 16-byte header of four little-endian
//! `u32`s — type, request id, transaction id, payload length — followed by
//! the payload, at most [`PAYLOAD_MAX`] bytes. Payloads are mostly
//! NUL-terminated strings: a path is sent as `"path\0"`, a write as
//! `"path\0value"` (the value runs to the end, no NUL), a watch as
//! `"path\0token\0"`. A failed request is answered with an `ERROR`
//! message whose payload is an errno name such as `"ENOENT\0"`.
//!
//! Everything that parses peer bytes returns an error value for malformed
//! input; nothing here panics on, or allocates according to, what the
//! peer claims.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Largest payload either side may send (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Size of the message header.
pub const HEADER_LEN: usize = 16;

/// A message type. A newtype rather than an enum so that types this code
/// does not know still decode (and are then dropped by the router).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgType(pub u32);

impl MsgType {
    pub const CONTROL: Self = Self(0);
    pub const DIRECTORY: Self = Self(1);
    pub const READ: Self = Self(2);
    pub const GET_PERMS: Self = Self(3);
    pub const WATCH: Self = Self(4);
    pub const UNWATCH: Self = Self(5);
    pub const TRANSACTION_START: Self = Self(6);
    pub const TRANSACTION_END: Self = Self(7);
    pub const INTRODUCE: Self = Self(8);
    pub const RELEASE: Self = Self(9);
    pub const GET_DOMAIN_PATH: Self = Self(10);
    pub const WRITE: Self = Self(11);
    pub const MKDIR: Self = Self(12);
    pub const RM: Self = Self(13);
    pub const SET_PERMS: Self = Self(14);
    pub const WATCH_EVENT: Self = Self(15);
    pub const ERROR: Self = Self(16);
    pub const IS_DOMAIN_INTRODUCED: Self = Self(17);
    pub const RESUME: Self = Self(18);
    pub const SET_TARGET: Self = Self(19);
    pub const RESET_WATCHES: Self = Self(21);
    pub const DIRECTORY_PART: Self = Self(22);
}

/// One whole message, either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub ty: MsgType,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

/// Framing errors: the byte stream cannot be trusted past this point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A header (ours or the peer's) claims more than [`PAYLOAD_MAX`] bytes.
    PayloadTooLong(u32),
    /// A string we were asked to send contains a NUL, which would change
    /// where the peer splits the payload.
    NulInString,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadTooLong(n) => write!(f, "payload of {n} bytes exceeds {PAYLOAD_MAX}"),
            Self::NulInString => f.write_str("NUL inside a path, token or name"),
        }
    }
}

/// The errno names xenstored puts in an `ERROR` reply.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Errno {
    ENOENT,
    EACCES,
    EEXIST,
    EISDIR,
    ENOSPC,
    EIO,
    ENOTEMPTY,
    ENOSYS,
    EROFS,
    EBUSY,
    EAGAIN,
    EINVAL,
    E2BIG,
    EQUOTA,
    /// A name outside the list above, kept as sent.
    Unknown(String),
}

const ERRNO_NAMES: [(&str, Errno); 14] = [
    ("ENOENT", Errno::ENOENT),
    ("EACCES", Errno::EACCES),
    ("EEXIST", Errno::EEXIST),
    ("EISDIR", Errno::EISDIR),
    ("ENOSPC", Errno::ENOSPC),
    ("EIO", Errno::EIO),
    ("ENOTEMPTY", Errno::ENOTEMPTY),
    ("ENOSYS", Errno::ENOSYS),
    ("EROFS", Errno::EROFS),
    ("EBUSY", Errno::EBUSY),
    ("EAGAIN", Errno::EAGAIN),
    ("EINVAL", Errno::EINVAL),
    ("E2BIG", Errno::E2BIG),
    ("EQUOTA", Errno::EQUOTA),
];

impl Errno {
    /// Maps an errno name to its variant; unknown names are kept.
    pub fn from_name(name: &str) -> Self {
        ERRNO_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| Errno::Unknown(name.to_string()))
    }

    /// The name as xenstored spells it.
    pub fn name(&self) -> &str {
        match self {
            Errno::Unknown(s) => s,
            known => ERRNO_NAMES.iter().find(|(_, e)| e == known).map_or("?", |(n, _)| n),
        }
    }
}

/// Why a xenstore request did not produce the value asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XsError {
    /// xenstored answered with an `ERROR` message.
    Errno(Errno),
    /// The reply, or an event, does not have the shape its type promises.
    Malformed(&'static str),
    /// A request could not be encoded.
    Wire(WireError),
}

impl XsError {
    /// Whether this is xenstored's "try the transaction again".
    pub fn is_eagain(&self) -> bool {
        *self == XsError::Errno(Errno::EAGAIN)
    }
}

impl From<WireError> for XsError {
    fn from(e: WireError) -> Self {
        XsError::Wire(e)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Errno(e) => write!(f, "xenstored: {}", e.name()),
            Self::Malformed(what) => write!(f, "malformed xenstore payload: {what}"),
            Self::Wire(e) => write!(f, "{e}"),
        }
    }
}

// ---- encoding -------------------------------------------------------------

/// Encodes one message: header then payload.
pub fn encode(ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    if payload.len() > PAYLOAD_MAX {
        return Err(WireError::PayloadTooLong(payload.len().min(u32::MAX as usize) as u32));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    for word in [ty.0, req_id, tx_id, payload.len() as u32] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// Appends `s` and its terminating NUL, refusing strings that hold a NUL.
fn push_cstr(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    if s.as_bytes().contains(&0) {
        return Err(WireError::NulInString);
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

/// `"path\0"`: the payload of READ, DIRECTORY, MKDIR, RM and GET_PERMS.
pub fn path_payload(path: &str) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(path.len() + 1);
    push_cstr(&mut out, path)?;
    Ok(out)
}

/// `"path\0value"`: the payload of WRITE. The value is raw bytes and may be
/// empty (how a guest acknowledges `control/shutdown`).
pub fn write_payload(path: &str, value: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(path.len() + 1 + value.len());
    push_cstr(&mut out, path)?;
    out.extend_from_slice(value);
    Ok(out)
}

/// `"path\0token\0"`: the payload of WATCH and UNWATCH.
pub fn watch_payload(path: &str, token: &str) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(path.len() + token.len() + 2);
    push_cstr(&mut out, path)?;
    push_cstr(&mut out, token)?;
    Ok(out)
}

/// `"\0"`: the payload of TRANSACTION_START (sent with tx_id 0).
pub fn transaction_start_payload() -> Vec<u8> {
    alloc::vec![0]
}

/// `"T\0"` to commit or `"F\0"` to abort: the payload of TRANSACTION_END.
pub fn transaction_end_payload(commit: bool) -> Vec<u8> {
    alloc::vec![if commit { b'T' } else { b'F' }, 0]
}

// ---- decoding -------------------------------------------------------------

/// Reassembles messages from a byte stream cut at arbitrary points.
///
/// Feed it whatever the ring yields; it holds at most one header and one
/// payload of at most [`PAYLOAD_MAX`] bytes. After a [`WireError`] the
/// stream is out of step and the decoder refuses more input until
/// [`Decoder::reset`] (done on reconnect, with a fresh ring).
#[derive(Debug, Default)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Set once the header is complete: the message being filled.
    body: Option<Message>,
    body_len: usize,
    failed: Option<WireError>,
}

impl Decoder {
    pub const fn new() -> Self {
        Self { header: [0; HEADER_LEN], header_len: 0, body: None, body_len: 0, failed: None }
    }

    /// Drops any partial message and any error: for a fresh ring.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether a message has been started but not finished.
    pub fn is_mid_message(&self) -> bool {
        self.header_len != 0 || self.body.is_some()
    }

    /// Consumes bytes up to the end of at most one message. Returns how
    /// many bytes were used and the message if one was completed; call
    /// again with the rest of `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(usize, Option<Message>), WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut used = 0;
        if self.body.is_none() {
            let take = (HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            used += take;
            if self.header_len < HEADER_LEN {
                return Ok((used, None));
            }
            let word = |i: usize| {
                let mut w = [0u8; 4];
                w.copy_from_slice(&self.header[4 * i..4 * i + 4]);
                u32::from_le_bytes(w)
            };
            let len = word(3);
            if len as usize > PAYLOAD_MAX {
                // Checked before allocating: the peer's length is not trusted.
                let e = WireError::PayloadTooLong(len);
                self.failed = Some(e);
                return Err(e);
            }
            self.body_len = len as usize;
            self.body = Some(Message {
                ty: MsgType(word(0)),
                req_id: word(1),
                tx_id: word(2),
                payload: Vec::with_capacity(self.body_len),
            });
            self.header_len = 0;
        }
        let want = self.body_len;
        let Some(msg) = self.body.as_mut() else {
            return Ok((used, None));
        };
        let take = (want - msg.payload.len()).min(bytes.len() - used);
        msg.payload.extend_from_slice(&bytes[used..used + take]);
        used += take;
        if msg.payload.len() == want {
            Ok((used, self.body.take()))
        } else {
            Ok((used, None))
        }
    }

    /// Feeds all of `bytes`, handing each completed message to `sink`.
    pub fn feed_all(&mut self, mut bytes: &[u8], mut sink: impl FnMut(Message)) -> Result<(), WireError> {
        while !bytes.is_empty() {
            let (used, msg) = self.feed(bytes)?;
            if let Some(m) = msg {
                sink(m);
            }
            bytes = &bytes[used..];
        }
        Ok(())
    }
}

// ---- payload parsing ------------------------------------------------------

/// Splits a payload made of NUL-terminated strings. The last string must
/// be terminated too; every string must be UTF-8.
fn split_cstrs(payload: &[u8]) -> Result<Vec<&str>, XsError> {
    let Some((&last, body)) = payload.split_last() else {
        return Ok(Vec::new());
    };
    if last != 0 {
        return Err(XsError::Malformed("string not NUL-terminated"));
    }
    body.split(|&b| b == 0).map(|s| core::str::from_utf8(s).map_err(|_| XsError::Malformed("not UTF-8"))).collect()
}

/// Parses the payload of an `ERROR` message: `"ENOENT\0"`.
pub fn parse_error(payload: &[u8]) -> Result<Errno, XsError> {
    match split_cstrs(payload)?.as_slice() {
        [name] if !name.is_empty() => Ok(Errno::from_name(name)),
        _ => Err(XsError::Malformed("error reply is not one errno name")),
    }
}

/// Parses a DIRECTORY reply: each child name NUL-terminated; no children
/// is an empty payload.
pub fn parse_directory(payload: &[u8]) -> Result<Vec<String>, XsError> {
    let names = split_cstrs(payload)?;
    if names.iter().any(|n| n.is_empty() || n.contains('/')) {
        return Err(XsError::Malformed("directory entry empty or holds '/'"));
    }
    Ok(names.into_iter().map(String::from).collect())
}

/// Parses a WATCH_EVENT payload `"path\0token\0"` into `(path, token)`.
pub fn parse_watch_event(payload: &[u8]) -> Result<(String, String), XsError> {
    match split_cstrs(payload)?.as_slice() {
        [path, token] if !path.is_empty() => Ok((String::from(*path), String::from(*token))),
        _ => Err(XsError::Malformed("watch event is not path and token")),
    }
}

/// Parses a TRANSACTION_START reply: the id in decimal, NUL-terminated
/// (a missing NUL is tolerated). Zero means "no transaction", so it is
/// not a valid answer.
pub fn parse_tx_id(payload: &[u8]) -> Result<u32, XsError> {
    let digits = payload.strip_suffix(&[0]).unwrap_or(payload);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(XsError::Malformed("transaction id is not a decimal number"));
    }
    let id = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    match u32::try_from(id) {
        Ok(0) | Err(_) => Err(XsError::Malformed("transaction id out of range")),
        Ok(id) => Ok(id),
    }
}

/// Checks the `"OK\0"` that acknowledges WRITE, MKDIR, RM, WATCH, UNWATCH,
/// TRANSACTION_END and SET_PERMS.
pub fn parse_ok(payload: &[u8]) -> Result<(), XsError> {
    match payload {
        b"OK\0" | b"OK" => Ok(()),
        _ => Err(XsError::Malformed("expected OK")),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::vec;

    fn decode_in_chunks(stream: &[u8], chunk: usize) -> Result<Vec<Message>, WireError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            d.feed_all(piece, |m| out.push(m))?;
        }
        assert!(!d.is_mid_message());
        Ok(out)
    }

    #[test]
    fn header_is_little_endian_and_payloads_are_as_xenstored_expects() {
        let m = encode(MsgType::WRITE, 0x0102_0304, 7, &write_payload("a/b", b"v").unwrap()).unwrap();
        assert_eq!(&m[..16], &[11, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(&m[16..], b"a/b\0v");
        assert_eq!(path_payload("/x").unwrap(), b"/x\0");
        assert_eq!(write_payload("p", b"").unwrap(), b"p\0");
        assert_eq!(watch_payload("p", "tok").unwrap(), b"p\0tok\0");
        assert_eq!(transaction_start_payload(), b"\0");
        assert_eq!(transaction_end_payload(true), b"T\0");
        assert_eq!(transaction_end_payload(false), b"F\0");
        assert_eq!(path_payload("a\0b"), Err(WireError::NulInString));
        assert_eq!(watch_payload("a", "t\0"), Err(WireError::NulInString));
    }

    #[test]
    fn encode_refuses_oversize_payloads() {
        assert!(encode(MsgType::WRITE, 1, 0, &[0u8; PAYLOAD_MAX]).is_ok());
        assert_eq!(
            encode(MsgType::WRITE, 1, 0, &[0u8; PAYLOAD_MAX + 1]),
            Err(WireError::PayloadTooLong(PAYLOAD_MAX as u32 + 1))
        );
    }

    #[test]
    fn round_trip_across_every_chunk_size() {
        let msgs = vec![
            Message { ty: MsgType::READ, req_id: 1, tx_id: 0, payload: b"/a\0".to_vec() },
            Message { ty: MsgType::TRANSACTION_START, req_id: 2, tx_id: 0, payload: vec![] },
            Message { ty: MsgType::WRITE, req_id: 3, tx_id: 9, payload: vec![0xAB; PAYLOAD_MAX] },
            Message { ty: MsgType(999), req_id: u32::MAX, tx_id: 5, payload: b"?".to_vec() },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(encode(m.ty, m.req_id, m.tx_id, &m.payload).unwrap());
        }
        for chunk in [1, 2, 3, 15, 16, 17, 1000, stream.len()] {
            assert_eq!(decode_in_chunks(&stream, chunk).unwrap(), msgs, "chunk {chunk}");
        }
    }

    #[test]
    fn oversize_header_is_an_error_and_sticks() {
        let mut hdr = encode(MsgType::READ, 1, 0, b"").unwrap();
        hdr[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = Decoder::new();
        assert_eq!(d.feed(&hdr[..10]), Ok((10, None)));
        assert_eq!(d.feed(&hdr[10..]), Err(WireError::PayloadTooLong(u32::MAX)));
        assert_eq!(d.feed(b"more"), Err(WireError::PayloadTooLong(u32::MAX)));
        d.reset();
        let ok = encode(MsgType::READ, 2, 0, b"x").unwrap();
        assert_eq!(decode_in_chunks(&ok, 1).unwrap()[0].req_id, 2);
        // One past the limit is already too long.
        hdr[12..16].copy_from_slice(&(PAYLOAD_MAX as u32 + 1).to_le_bytes());
        assert!(Decoder::new().feed(&hdr).is_err());
    }

    #[test]
    fn error_payloads() {
        assert_eq!(parse_error(b"ENOENT\0"), Ok(Errno::ENOENT));
        assert_eq!(parse_error(b"EQUOTA\0"), Ok(Errno::EQUOTA));
        assert_eq!(parse_error(b"EWHAT\0"), Ok(Errno::Unknown("EWHAT".into())));
        assert_eq!(Errno::E2BIG.name(), "E2BIG");
        for bad in [&b""[..], b"ENOENT", b"\0", b"EN\0OENT\0", b"\xff\xfe\0"] {
            assert!(matches!(parse_error(bad), Err(XsError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn directory_payloads() {
        assert_eq!(parse_directory(b""), Ok(vec![]));
        assert_eq!(parse_directory(b"a\0bc\0"), Ok(vec!["a".into(), "bc".into()]));
        for bad in [&b"a\0b"[..], b"\0", b"a\0\0", b"a/b\0", b"\xc3\0"] {
            assert!(parse_directory(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn watch_event_payloads() {
        assert_eq!(parse_watch_event(b"/p/q\0tok\0"), Ok(("/p/q".into(), "tok".into())));
        for bad in [&b""[..], b"/p\0", b"/p\0tok", b"/p\0tok\0extra\0", b"\0tok\0", b"/\xff\0t\0"] {
            assert!(parse_watch_event(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transaction_id_and_ok_payloads() {
        assert_eq!(parse_tx_id(b"17\0"), Ok(17));
        assert_eq!(parse_tx_id(b"4294967295"), Ok(u32::MAX));
        for bad in [&b""[..], b"\0", b"0\0", b"-1\0", b"12a\0", b"4294967296\0", b"99999999999\0"] {
            assert!(parse_tx_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_ok(b"OK\0"), Ok(()));
        assert!(parse_ok(b"NO\0").is_err());
    }
}
