//! Close codes and close-frame payloads (RFC 6455 §5.5.1, §7.4).

use super::ProtocolError;

/// A WebSocket close status code.
///
/// ```
/// use wsloop::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode(4000).is_valid_on_wire());
/// assert!(!CloseCode(1005).is_valid_on_wire()); // reserved for "no code received"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, idle timeout).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection was lost without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: payload data inconsistent with the message type (bad UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a policy was violated.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message or frame was too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition (for example a handler panic).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later (used for overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// The numeric value.
    pub fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether a peer may send this code in a close frame: 1000-1003,
    /// 1007-1011, and the registered and private ranges 3000-4999.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }

    /// Whether this server may send this code: the codes valid on the wire
    /// and 1012-1014 (service restart, try again later, bad gateway), which
    /// IANA registered after RFC 6455. Any other code an application asks
    /// to close with goes out as a close frame without a code.
    ///
    /// ```
    /// use wsloop::CloseCode;
    /// assert!(CloseCode::TRY_AGAIN_LATER.is_sendable());
    /// assert!(!CloseCode(1004).is_sendable());
    /// assert!(!CloseCode(65535).is_sendable());
    /// ```
    pub fn is_sendable(self) -> bool {
        self.is_valid_on_wire() || matches!(self.0, 1012..=1014)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A parsed close-frame payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code; [`CloseCode::NO_STATUS`] when the payload was empty.
    pub code: CloseCode,
    /// The UTF-8 reason, possibly empty.
    pub reason: &'a str,
}

impl<'a> CloseFrame<'a> {
    /// Parses and validates an (already unmasked) close payload: empty, or a
    /// valid code followed by a UTF-8 reason. Anything else is a protocol
    /// error (1002), or 1007 for a reason that is not UTF-8.
    ///
    /// ```
    /// use wsloop::protocol::close::CloseFrame;
    /// use wsloop::CloseCode;
    /// let frame = CloseFrame::parse(&[0x03, 0xE8, b'o', b'k']).unwrap();
    /// assert_eq!(frame.code, CloseCode::NORMAL);
    /// assert_eq!(frame.reason, "ok");
    /// assert!(CloseFrame::parse(&[0x03]).is_err());
    /// ```
    pub fn parse(payload: &'a [u8]) -> Result<CloseFrame<'a>, ProtocolError> {
        match payload {
            [] => Ok(CloseFrame {
                code: CloseCode::NO_STATUS,
                reason: "",
            }),
            [_] => Err(ProtocolError::new(
                CloseCode::PROTOCOL_ERROR,
                "close payload of one byte",
            )),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::new(
                        CloseCode::PROTOCOL_ERROR,
                        "invalid close code",
                    ));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| {
                    ProtocolError::new(CloseCode::INVALID_PAYLOAD, "close reason is not UTF-8")
                })?;
                Ok(CloseFrame { code, reason })
            }
        }
    }
}

/// Builds a close payload: the code, then `reason` cut to fit the 125-byte
/// control-frame limit at a character boundary. Codes this server may not
/// send (see [`CloseCode::is_sendable`]) produce an empty payload.
pub fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    if !code.is_sendable() {
        return Vec::new();
    }
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.0.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_validity_follows_rfc_ranges() {
        for code in [
            0, 999, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn invalid_utf8_reason_is_1007() {
        let err = CloseFrame::parse(&[0x03, 0xE8, 0xFF]).unwrap_err();
        assert_eq!(err.code, CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(CloseCode::NORMAL, &reason);
        assert!(payload.len() <= 125);
        let parsed = CloseFrame::parse(&payload).unwrap();
        assert!(reason.starts_with(parsed.reason));
    }
}
