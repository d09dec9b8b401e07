//! The xenbus handshake between a PV frontend and its backend
//! (`io/xenbus.h`): each side publishes its state under its own xenstore
//! directory (`state`), and a frontend moves through its states in answer
//! to the backend's.
//!
//! Only the protocol lives here, as a pure decision: given where the
//! frontend stands and what the backend's `state` node says, what the
//! frontend does next. Reading nodes, publishing ring references and event
//! channels, and watching `state` are the driver's business.
//!
//! The connection, from the frontend's side:
//!
//! 1. The frontend starts in `Initialising` and waits for the backend to
//!    reach `InitWait` (it has published its features).
//! 2. It publishes what the backend needs (ring references, event channel,
//!    protocol) and moves to `Initialised`.
//! 3. Once the backend is `Connected` it reads the backend's details and
//!    moves to `Connected`: the device works.
//! 4. A backend going `Closing` is answered by `Closing`, then `Closed`
//!    once the frontend has stopped using the device.
//!
//! Anything else the backend says (an unknown number, a state that skips
//! ahead of the frontend, going backwards while connected) is an error for
//! that device, never for the guest.

use core::fmt;

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum XenbusState {
    Unknown = 0,
    Initialising = 1,
    /// The backend has published its features and waits for the frontend.
    InitWait = 2,
    /// The frontend has published its details (rings, event channel).
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

/// Why a `state` value was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadState {
    NotANumber,
    /// A number, but no state.
    OutOfRange(u64),
}

impl fmt::Display for BadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadState::NotANumber => f.write_str("not a number"),
            BadState::OutOfRange(n) => write!(f, "{n} is no xenbus state"),
        }
    }
}

impl XenbusState {
    const ALL: [XenbusState; 9] = [
        XenbusState::Unknown,
        XenbusState::Initialising,
        XenbusState::InitWait,
        XenbusState::Initialised,
        XenbusState::Connected,
        XenbusState::Closing,
        XenbusState::Closed,
        XenbusState::Reconfiguring,
        XenbusState::Reconfigured,
    ];

    /// Parses a `state` node: a decimal number, surrounding whitespace
    /// allowed.
    pub fn parse(raw: &str) -> Result<Self, BadState> {
        let s = raw.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadState::NotANumber);
        }
        let n: u64 = s.parse().map_err(|_| BadState::OutOfRange(u64::MAX))?;
        Self::ALL.get(n as usize).filter(|_| n < Self::ALL.len() as u64).copied().ok_or(BadState::OutOfRange(n))
    }

    /// The value to write into a `state` node.
    pub fn as_number(self) -> u32 {
        self as u32
    }
}

/// What the frontend does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendStep {
    /// Nothing yet: wait for the backend's next state.
    Wait,
    /// Publish rings, event channel and protocol, then `Initialised`.
    Publish,
    /// Read the backend's details, then `Connected`: the device works.
    Connect,
    /// Stop submitting, then `Closing`.
    Close,
    /// The backend is gone: `Closed`; the device no longer works.
    Closed,
    /// The backend broke the protocol: the device is marked failed.
    Fail(ProtocolError),
}

/// How a backend broke the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// It claims to be connected before the frontend published anything.
    ConnectedTooEarly,
    /// It went back to an earlier state while connected.
    WentBack(XenbusState),
    /// It asked for a reconfiguration, which no frontend here supports.
    Reconfiguration,
}

/// The frontend's next step, standing at `frontend`, with the backend at
/// `backend`.
pub fn frontend_step(frontend: XenbusState, backend: XenbusState) -> FrontendStep {
    use XenbusState as S;
    match (frontend, backend) {
        (S::Closed, _) => FrontendStep::Wait,
        (_, S::Closed) => FrontendStep::Closed,
        (S::Closing, _) => FrontendStep::Wait,
        (_, S::Closing) => FrontendStep::Close,
        (_, S::Reconfiguring | S::Reconfigured) => FrontendStep::Fail(ProtocolError::Reconfiguration),
        (S::Unknown | S::Initialising, S::InitWait) => FrontendStep::Publish,
        (S::Unknown | S::Initialising, S::Connected) => FrontendStep::Fail(ProtocolError::ConnectedTooEarly),
        (S::Unknown | S::Initialising, _) => FrontendStep::Wait,
        // A backend may reach Connected straight from InitWait once it has
        // read what the frontend published.
        (S::Initialised | S::InitWait, S::Connected) => FrontendStep::Connect,
        (S::Initialised | S::InitWait, _) => FrontendStep::Wait,
        (S::Connected, S::Connected) => FrontendStep::Wait,
        (S::Connected, earlier) => FrontendStep::Fail(ProtocolError::WentBack(earlier)),
        (S::Reconfiguring | S::Reconfigured, _) => FrontendStep::Fail(ProtocolError::Reconfiguration),
    }
}

#[cfg(test)]
mod tests {
    use super::XenbusState as S;
    use super::*;

    #[test]
    fn states_parse_and_garbage_does_not() {
        assert_eq!(S::parse("4"), Ok(S::Connected));
        assert_eq!(S::parse(" 2\n"), Ok(S::InitWait));
        assert_eq!(S::parse("0"), Ok(S::Unknown));
        assert_eq!(S::parse("8"), Ok(S::Reconfigured));
        assert_eq!(S::parse("9"), Err(BadState::OutOfRange(9)));
        assert_eq!(S::parse("99999999999999999999999"), Err(BadState::OutOfRange(u64::MAX)));
        for bad in ["", " ", "-1", "+4", "4x", "Connected", "4 4"] {
            assert_eq!(S::parse(bad), Err(BadState::NotANumber), "{bad:?}");
        }
        for s in S::ALL {
            assert_eq!(S::parse(&s.as_number().to_string()), Ok(s));
        }
    }

    #[test]
    fn the_handshake_from_start_to_connected_and_closed() {
        assert_eq!(frontend_step(S::Initialising, S::Initialising), FrontendStep::Wait);
        assert_eq!(frontend_step(S::Initialising, S::InitWait), FrontendStep::Publish);
        assert_eq!(frontend_step(S::Initialised, S::InitWait), FrontendStep::Wait);
        assert_eq!(frontend_step(S::Initialised, S::Connected), FrontendStep::Connect);
        assert_eq!(frontend_step(S::Connected, S::Connected), FrontendStep::Wait);
        assert_eq!(frontend_step(S::Connected, S::Closing), FrontendStep::Close);
        assert_eq!(frontend_step(S::Closing, S::Closing), FrontendStep::Wait);
        assert_eq!(frontend_step(S::Closing, S::Closed), FrontendStep::Closed);
        assert_eq!(frontend_step(S::Connected, S::Closed), FrontendStep::Closed);
        assert_eq!(frontend_step(S::Closed, S::InitWait), FrontendStep::Wait, "closed stays closed");
    }

    #[test]
    fn a_misbehaving_backend_fails_the_device_only() {
        assert_eq!(frontend_step(S::Initialising, S::Connected), FrontendStep::Fail(ProtocolError::ConnectedTooEarly));
        assert_eq!(frontend_step(S::Connected, S::InitWait), FrontendStep::Fail(ProtocolError::WentBack(S::InitWait)));
        assert_eq!(frontend_step(S::Connected, S::Unknown), FrontendStep::Fail(ProtocolError::WentBack(S::Unknown)));
        assert_eq!(frontend_step(S::Connected, S::Reconfiguring), FrontendStep::Fail(ProtocolError::Reconfiguration));
        assert_eq!(frontend_step(S::Initialising, S::Closed), FrontendStep::Closed, "a backend that never connects");
    }
}
