//! The xenstore client protocol (`io/xs_wire.h`), written as plain code
//! that never blocks.
//!
//! The model, from the page up:
//!
//! - [`ring`]: the shared page. The guest produces request bytes into
//!   `req` and consumes response bytes from `rsp`; xenstored does the
//!   opposite. The ring moves bytes, nothing more, and reports corrupt
//!   indices as a fault instead of overrunning the page.
//! - [`wire`]: framing. A message is a 16-byte header `{type, req_id,
//!   tx_id, len}` (little-endian `u32`s) and at most 4096 payload bytes.
//!   [`wire::Decoder`] reassembles messages from however the ring chops
//!   the byte stream; payload parsers turn peer bytes into values or
//!   errors, never panics.
//! - [`router`]: the client core. It numbers requests, remembers them
//!   until their reply arrives, files replies for waiters, queues watch
//!   events per token, and knows what to send again after a resume.
//! - [`ops`]: payload builders and reply interpreters for each operation,
//!   and the transaction retry policy.
//! - `sim` (tests, or the `sim` feature): a small xenstored that speaks the
//!   same bytes, so all of the above is tested end to end on the host.
//!
//! The kernel glue owns the waiting: it holds one lock around the ring,
//! the [`wire::Decoder`] and the [`router::Router`], writes whole encoded
//! requests (in order, never interleaving two), kicks the event channel,
//! and on each xenstore event drains the ring into the decoder, hands each
//! message to the router and wakes whoever waits on the reply or token.

pub mod ops;
pub mod ring;
pub mod router;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod wire;

pub use router::{Routed, Router};
pub use wire::{Decoder, Errno, Message, MsgType, WireError, XsError};
