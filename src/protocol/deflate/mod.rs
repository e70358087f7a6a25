//! permessage-deflate (RFC 7692), cargo feature `deflate`: the
//! negotiation ([`negotiate()`]) and the codec ([`codec`]).
//!
//! Memory does not scale with connections: the server compresses with
//! loop-wide compressors reset for every message (valid whatever the
//! client offered), and asks clients for `client_no_context_takeover`, so
//! one loop-wide inflater, reset per message, serves every connection.
//! What a connection keeps is its [`DeflateParams`], two bytes.

pub mod codec;
pub mod negotiate;

pub use codec::{Deflater, InflateError, Inflater};
pub use negotiate::{DeflatePolicy, Negotiated, negotiate};

/// The smallest window the server compresses with. zlib (and zlib-rs)
/// cannot produce a raw deflate stream with an 8-bit window, so an offer
/// that limits the server to 8 bits is declined.
pub const MIN_WINDOW_BITS: u8 = 9;
/// The largest LZ77 window, and the default on both sides.
pub const MAX_WINDOW_BITS: u8 = 15;

/// What one connection negotiated: how the server compresses for it and
/// what it promised about its own compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The largest window the server may compress with
    /// (`server_max_window_bits`, 9..=15).
    pub server_max_window_bits: u8,
    /// The client resets its compression context for every message
    /// (`client_no_context_takeover` in the response), so its messages
    /// inflate with a fresh, shared inflater.
    pub client_no_context_takeover: bool,
}
