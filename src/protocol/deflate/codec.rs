//! Compressing and inflating whole messages (RFC 7692 §7.2).

/// Loop-wide compressors, one per window size in use, reset per message.
#[derive(Debug)]
pub struct Deflater {}

impl Deflater {
    /// Compressors at zlib `level` (0..=9), created on first use.
    pub fn new(level: u32) -> Deflater {
        let _ = level;
        todo!("being written")
    }

    /// Appends the compressed form of one whole message `payload` to `out`,
    /// with an LZ77 window of at most `window_bits` (9..=15), from a fresh
    /// context, without the final `00 00 ff ff` (RFC 7692 §7.2.1).
    pub fn compress(&mut self, payload: &[u8], window_bits: u8, out: &mut Vec<u8>) {
        let _ = (payload, window_bits, out);
        todo!("being written")
    }
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (close 1009).
    TooBig,
    /// It is not a valid deflate stream (close 1007).
    Corrupt,
}

/// An inflater for whole messages, reset per message.
#[derive(Debug)]
pub struct Inflater {}

impl Inflater {
    /// A 15-bit-window inflater (it inflates any smaller window too).
    pub fn new() -> Inflater {
        todo!("being written")
    }

    /// Inflates one whole compressed message (its frames' payloads joined,
    /// without the tail, which this appends), from a fresh context.
    /// Output beyond `limit` bytes is `TooBig`, found while inflating,
    /// with no more than `limit` (plus one chunk) ever allocated.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        let _ = (compressed, limit);
        todo!("being written")
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}
