//! A xenstore client over xenstored's Unix socket, with the project's own
//! wire codec (`xen::xenstore`): one request at a time, the reply read
//! back before the next is sent. ballastd polls, so it sets no watches;
//! a reply to an earlier request (one that timed out) is dropped, and a
//! stream that broke is replaced by a new connection at the next call.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use xen::xenstore::ops::{self, Request};
use xen::xenstore::wire::{self, Decoder, Errno, Message, MsgType, XsError};

pub const SOCKET: &str = "/var/run/xenstored/socket";

#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    Xs(XsError),
    /// xenstored sent a reply to another request, or closed the socket.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "xenstore socket: {e}"),
            Error::Xs(e) => write!(f, "{e}"),
            Error::Protocol(s) => write!(f, "xenstore protocol: {s}"),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<XsError> for Error {
    fn from(e: XsError) -> Self {
        Error::Xs(e)
    }
}

impl From<wire::WireError> for Error {
    fn from(e: wire::WireError) -> Self {
        Error::Xs(e.into())
    }
}

impl Error {
    pub fn is_enoent(&self) -> bool {
        matches!(self, Error::Xs(XsError::Errno(Errno::ENOENT)))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub struct Xenstore {
    path: String,
    sock: UnixStream,
    decoder: Decoder,
    /// Bytes read but not yet decoded (the start of the next message).
    pending: Vec<u8>,
    next_id: u32,
    /// The byte stream can no longer be trusted (a read timed out, the
    /// peer closed, or it sent garbage): the next call reconnects first.
    broken: bool,
}

/// A reply slower than this breaks the connection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Xenstore {
    pub fn connect(path: &str) -> Result<Self> {
        let sock = Self::open(path)?;
        Ok(Self { path: path.into(), sock, decoder: Decoder::new(), pending: Vec::new(), next_id: 1, broken: false })
    }

    fn open(path: &str) -> Result<UnixStream> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(sock)
    }

    /// Sends `req` (in transaction `tx`, 0 for none) and returns the reply
    /// payload, or xenstored's error. A connection whose stream broke is
    /// made again first; a broken stream breaks the connection.
    fn call(&mut self, req: Request, tx: u32) -> Result<Vec<u8>> {
        if self.broken {
            self.sock = Self::open(&self.path)?;
            self.decoder.reset();
            self.pending.clear();
            self.broken = false;
        }
        let r = self.exchange(req, tx);
        if matches!(r, Err(Error::Io(_) | Error::Protocol(_)) | Err(Error::Xs(XsError::Wire(_)))) {
            self.broken = true;
        }
        r
    }

    fn exchange(&mut self, req: Request, tx: u32) -> Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.sock.write_all(&wire::encode(req.ty, id, tx, &req.payload)?)?;
        // One request at a time: anything else is a late reply to an
        // earlier one (dropped), or the stream is lost.
        let reply = loop {
            let m = self.read_message()?;
            if m.req_id == id {
                break m;
            }
            if id.wrapping_sub(m.req_id) > 1 << 16 {
                return Err(Error::Protocol(format!("reply to request {} while waiting for {}", m.req_id, id)));
            }
        };
        if reply.ty == MsgType::ERROR {
            return Err(Error::Xs(XsError::Errno(wire::parse_error(&reply.payload)?)));
        }
        Ok(reply.payload)
    }

    fn read_message(&mut self) -> Result<Message> {
        let mut buf = [0u8; 4096];
        loop {
            // Bytes left over from the last read first.
            while !self.pending.is_empty() {
                let (used, msg) = self.decoder.feed(&self.pending)?;
                self.pending.drain(..used);
                if let Some(m) = msg {
                    if m.ty == MsgType::WATCH_EVENT {
                        continue; // none are set; a stray one is dropped
                    }
                    return Ok(m);
                }
            }
            let n = self.sock.read(&mut buf)?;
            if n == 0 {
                return Err(Error::Protocol("xenstored closed the connection".into()));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    pub fn read(&mut self, path: &str) -> Result<String> {
        let payload = self.call(ops::read(path)?, 0)?;
        Ok(ops::read_reply(payload)?)
    }

    /// A value that may be absent: None for ENOENT.
    pub fn read_opt(&mut self, path: &str) -> Result<Option<String>> {
        match self.read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_enoent() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&mut self, path: &str, value: &str) -> Result<()> {
        let payload = self.call(ops::write(path, value.as_bytes())?, 0)?;
        Ok(ops::ok_reply(&payload)?)
    }

    pub fn rm(&mut self, path: &str) -> Result<()> {
        match self.call(ops::rm(path)?, 0) {
            Ok(p) => Ok(ops::ok_reply(&p)?),
            Err(e) if e.is_enoent() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
