//! The extension seam: what the extensions negotiated for one connection
//! allow on the wire.
//!
//! The frame parser passes the reserved bits on
//! ([`FrameHeader::rsv`](super::frame::FrameHeader::rsv)); the decoder
//! judges them against the connection's [`Extensions`], which its session
//! hands over with the input. With nothing negotiated, any reserved bit
//! is a protocol error (1002), as RFC 6455 §5.2 requires.

/// The extensions in force on one connection: [`Extensions::NONE`], or
/// with the `deflate` feature [`Extensions::PERMESSAGE_DEFLATE`], which
/// claims RSV1 (RFC 7692 §6) on the first frame of a data message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extensions {
    /// The reserved bits frames may carry, as in `FrameHeader::rsv`.
    reserved_bits: u8,
}

impl Extensions {
    /// No extension: every reserved bit must be zero.
    pub const NONE: Extensions = Extensions { reserved_bits: 0 };

    /// permessage-deflate: RSV1 marks a compressed message.
    pub const PERMESSAGE_DEFLATE: Extensions = Extensions {
        reserved_bits: RSV1,
    };

    /// These extensions, also allowing the reserved `bits` (RSV1 = 4,
    /// RSV2 = 2, RSV3 = 1).
    ///
    /// ```
    /// use wsloop::protocol::extension::Extensions;
    /// let rsv1 = Extensions::NONE.with_reserved_bits(0b100);
    /// assert!(rsv1.allows_reserved_bits(0b100));
    /// assert!(!rsv1.allows_reserved_bits(0b010));
    /// assert!(Extensions::NONE.allows_reserved_bits(0));
    /// ```
    pub const fn with_reserved_bits(self, bits: u8) -> Extensions {
        Extensions {
            reserved_bits: self.reserved_bits | (bits & 0b111),
        }
    }

    /// Whether a frame may carry the reserved bits `rsv`.
    #[inline]
    pub const fn allows_reserved_bits(self, rsv: u8) -> bool {
        rsv & !self.reserved_bits == 0
    }

    /// Whether RSV1 marks a compressed message (permessage-deflate).
    #[inline]
    pub const fn compresses(self) -> bool {
        self.reserved_bits & RSV1 != 0
    }
}

/// RSV1 in [`FrameHeader::rsv`](super::frame::FrameHeader::rsv).
pub const RSV1: u8 = 0b100;
