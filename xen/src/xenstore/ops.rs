//! Each xenstore operation as a request to build and a reply to
//! interpret, with no waiting in between: the kernel glue sends
//! [`Request`]s through the [`super::Router`], waits its own way, and
//! hands the reply payload to the matching `*_reply` function.
//!
//! Paths may be absolute (`/local/domain/0/...`) or relative to the
//! domain's home, `/local/domain/<domid>/` (`control/shutdown`).
//!
//! [`with_transaction`] and [`TransactionRetry`] are the retry policy for
//! transactions: xenstored answers TRANSACTION_END with EAGAIN when
//! another writer got in first, and the whole transaction is run again.

use alloc::string::String;
use alloc::vec::Vec;

use super::wire::{self, MsgType, WireError, XsError};

/// How many times [`with_transaction`] runs a transaction before it gives
/// up and returns the EAGAIN.
pub const DEFAULT_TRANSACTION_ATTEMPTS: u32 = 8;

/// A request ready for [`super::Router::start`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub ty: MsgType,
    pub payload: Vec<u8>,
}

fn path_op(ty: MsgType, path: &str) -> Result<Request, WireError> {
    Ok(Request { ty, payload: wire::path_payload(path)? })
}

pub fn read(path: &str) -> Result<Request, WireError> {
    path_op(MsgType::READ, path)
}

pub fn directory(path: &str) -> Result<Request, WireError> {
    path_op(MsgType::DIRECTORY, path)
}

pub fn mkdir(path: &str) -> Result<Request, WireError> {
    path_op(MsgType::MKDIR, path)
}

/// Removes `path` and everything below it.
pub fn rm(path: &str) -> Result<Request, WireError> {
    path_op(MsgType::RM, path)
}

/// Writes `value` (creating missing parents). An empty value is allowed.
pub fn write(path: &str, value: &[u8]) -> Result<Request, WireError> {
    Ok(Request { ty: MsgType::WRITE, payload: wire::write_payload(path, value)? })
}

/// Sent with tx_id 0; the reply names the new transaction.
pub fn transaction_start() -> Request {
    Request { ty: MsgType::TRANSACTION_START, payload: wire::transaction_start_payload() }
}

/// Sent with the transaction's id: commit (`true`) or abort.
pub fn transaction_end(commit: bool) -> Request {
    Request { ty: MsgType::TRANSACTION_END, payload: wire::transaction_end_payload(commit) }
}

/// The value of a READ, as text.
pub fn read_reply(payload: Vec<u8>) -> Result<String, XsError> {
    String::from_utf8(payload).map_err(|_| XsError::Malformed("value is not UTF-8"))
}

/// The value of a READ as a decimal number (e.g. `memory/target`),
/// surrounding whitespace allowed.
pub fn read_u64_reply(payload: Vec<u8>) -> Result<u64, XsError> {
    read_reply(payload)?.trim().parse().map_err(|_| XsError::Malformed("value is not a number"))
}

/// The child names of a DIRECTORY.
pub fn parse_directory(payload: &[u8]) -> Result<Vec<String>, XsError> {
    wire::parse_directory(payload)
}

/// The id of the transaction a TRANSACTION_START opened.
pub fn tx_id(payload: &[u8]) -> Result<u32, XsError> {
    wire::parse_tx_id(payload)
}

/// The acknowledgement of WRITE, MKDIR, RM, WATCH, UNWATCH and
/// TRANSACTION_END.
pub fn ok_reply(payload: &[u8]) -> Result<(), XsError> {
    wire::parse_ok(payload)
}

/// What to do after one attempt at a transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Run the whole transaction again, from TRANSACTION_START.
    Retry,
    /// Finished: the result to return.
    Done(Result<T, XsError>),
}

/// The retry policy as a value, for glue that cannot run a closure to
/// completion (an event loop, say): feed it each attempt's outcome.
#[derive(Debug)]
pub struct TransactionRetry {
    max_attempts: u32,
    attempts: u32,
}

impl TransactionRetry {
    /// `max_attempts` counts the first try; zero is treated as one.
    pub fn new(max_attempts: u32) -> Self {
        Self { max_attempts: max_attempts.max(1), attempts: 0 }
    }

    /// Attempts judged so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Judges one attempt. EAGAIN, from TRANSACTION_END or from any step
    /// of a transaction that died (as across a resume), means retry while
    /// attempts remain; anything else is final.
    pub fn after_attempt<T>(&mut self, outcome: Result<T, XsError>) -> Next<T> {
        self.attempts += 1;
        match outcome {
            Err(e) if e.is_eagain() && self.attempts < self.max_attempts => Next::Retry,
            done => Next::Done(done),
        }
    }
}

/// Runs `attempt` until it does not fail with EAGAIN, at most
/// `max_attempts` times. Each call must be a whole transaction: start it,
/// do the work under its id, and end it (aborting if the work failed).
pub fn with_transaction<T>(max_attempts: u32, mut attempt: impl FnMut() -> Result<T, XsError>) -> Result<T, XsError> {
    let mut policy = TransactionRetry::new(max_attempts);
    loop {
        match policy.after_attempt(attempt()) {
            Next::Retry => continue,
            Next::Done(result) => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::wire::Errno;

    const EAGAIN: XsError = XsError::Errno(Errno::EAGAIN);

    #[test]
    fn requests_carry_their_payloads() {
        assert_eq!(read("a").unwrap(), Request { ty: MsgType::READ, payload: b"a\0".to_vec() });
        assert_eq!(write("a", b"1").unwrap().payload, [b'a', 0, b'1']);
        assert_eq!(rm("a").unwrap().ty, MsgType::RM);
        assert_eq!(transaction_end(false).payload, b"F\0");
        assert!(mkdir("bad\0path").is_err());
    }

    #[test]
    fn replies_are_interpreted_or_refused() {
        assert_eq!(read_reply(b"suspend".to_vec()).as_deref(), Ok("suspend"));
        assert!(read_reply(b"\xff".to_vec()).is_err());
        assert_eq!(read_u64_reply(b"262144\n".to_vec()), Ok(262144));
        assert!(read_u64_reply(b"-1".to_vec()).is_err());
        assert_eq!(tx_id(b"3\0"), Ok(3));
        assert_eq!(ok_reply(b"OK\0"), Ok(()));
    }

    #[test]
    fn retries_only_eagain_and_only_so_often() {
        let mut calls = 0;
        let r = with_transaction(5, || {
            calls += 1;
            if calls < 3 {
                Err(EAGAIN)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(3));

        let mut calls = 0;
        let r: Result<(), _> = with_transaction(4, || {
            calls += 1;
            Err(EAGAIN)
        });
        assert_eq!((r, calls), (Err(EAGAIN), 4));

        let mut calls = 0;
        let r: Result<(), _> = with_transaction(4, || {
            calls += 1;
            Err(XsError::Errno(Errno::EACCES))
        });
        assert_eq!((r, calls), (Err(XsError::Errno(Errno::EACCES)), 1));

        let mut policy = TransactionRetry::new(0);
        assert_eq!(policy.after_attempt::<()>(Err(EAGAIN)), Next::Done(Err(EAGAIN)));
        assert_eq!(policy.attempts(), 1);
    }
}
