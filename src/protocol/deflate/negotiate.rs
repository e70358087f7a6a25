//! Negotiating permessage-deflate from the client's
//! `Sec-WebSocket-Extensions` offers (RFC 7692 §5, §7.1).

use super::DeflateParams;

/// How the server negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// The largest window the server compresses with (9..=15); answered as
    /// `server_max_window_bits` when below 15 or when the client asked.
    pub server_max_window_bits: u8,
    /// Ask the client for `client_no_context_takeover` (so one shared
    /// inflater serves every connection).
    pub client_no_context_takeover: bool,
}

/// An accepted offer: the parameters in force and the response value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The parameters in force for the connection.
    pub params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value of the `101`.
    pub response: String,
}

/// The first acceptable permessage-deflate offer among `header_values`
/// (every `Sec-WebSocket-Extensions` header of the request, in order), or
/// `None` to open without the extension.
pub fn negotiate<'h>(
    header_values: impl IntoIterator<Item = &'h [u8]>,
    policy: &DeflatePolicy,
) -> Option<Negotiated> {
    let _ = (header_values.into_iter().next(), policy);
    todo!("being written")
}
