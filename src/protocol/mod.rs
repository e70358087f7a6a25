//! The sans-IO RFC 6455 core (and, in [`forwarded`], the reading of
//! reverse proxies' forwarding headers).
//!
//! Nothing in this module touches a socket, a clock or mio: it turns bytes
//! into values and values into bytes, so it can be unit-tested, fuzzed and
//! benchmarked on its own. The reactor ([`crate::Server`]) drives it.

pub mod close;
#[cfg(feature = "deflate")]
pub mod deflate;
pub mod extension;
pub mod forwarded;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod utf8;

use close::CloseCode;

/// A violation of RFC 6455 or of a configured limit by the peer, with the
/// close code the connection must be closed with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProtocolError {
    /// The close code to send: 1002, 1007 or 1009.
    pub code: CloseCode,
    /// What went wrong, sent as the close reason.
    pub reason: &'static str,
}

impl ProtocolError {
    /// A protocol error closing with `code`.
    pub fn new(code: CloseCode, reason: &'static str) -> ProtocolError {
        ProtocolError { code, reason }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for ProtocolError {}
