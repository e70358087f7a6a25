//! Frame headers (RFC 6455 §5.2): decoding, encoding and masking.
//!
//! Nothing here allocates or performs I/O. Decoding reads a header from the
//! front of a byte slice and reports how many bytes it used, or that more
//! bytes are needed; encoding writes a header into a caller-provided buffer.

use super::ProtocolError;
use super::close::CloseCode;

/// The longest possible frame header: 2 bytes, 8 bytes of extended length
/// and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message (0x0).
    Continuation,
    /// First frame of a text message (0x1).
    Text,
    /// First frame of a binary message (0x2).
    Binary,
    /// Close control frame (0x8).
    Close,
    /// Ping control frame (0x9).
    Ping,
    /// Pong control frame (0xA).
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of a frame's first byte.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The opcode's wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final fragment of its message.
    pub fin: bool,
    /// The reserved bits RSV1-RSV3, as the header's bits 0x70 shifted down
    /// (RSV1 = 4, RSV2 = 2, RSV3 = 1). The parser passes them on; what they
    /// mean is up to the extensions negotiated for the connection, which
    /// the [`Decoder`](super::message::Decoder) is given.
    pub rsv: u8,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// The payload length announced by the header.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header, and
    /// `Ok(Some((header, header_len)))` once it is complete. Violations of
    /// RFC 6455 that can be seen in the header alone are errors carrying
    /// close code 1002: unknown opcodes, fragmented or oversized control frames, and 64-bit
    /// lengths with the most significant bit set.
    ///
    /// ```
    /// use wsloop::protocol::frame::{FrameHeader, OpCode};
    /// // A masked text frame with a 5-byte payload.
    /// let bytes = [0x81, 0x85, 1, 2, 3, 4];
    /// let (header, len) = FrameHeader::decode(&bytes).unwrap().unwrap();
    /// assert_eq!(len, 6);
    /// assert_eq!(header.opcode, OpCode::Text);
    /// assert_eq!(header.payload_len, 5);
    /// assert_eq!(header.mask, Some([1, 2, 3, 4]));
    /// ```
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let rsv = (b0 >> 4) & 0x07;
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_bits(b0 & 0x0F)
            .ok_or_else(|| ProtocolError::new(CloseCode::PROTOCOL_ERROR, "unknown opcode"))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        let length_bytes = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + length_bytes + if masked { 4 } else { 0 };
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL_ERROR,
                    "fragmented control frame",
                ));
            }
            if len7 as usize > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::new(
                    CloseCode::PROTOCOL_ERROR,
                    "control frame payload over 125 bytes",
                ));
            }
        }
        if buf.len() < header_len {
            return Ok(None);
        }
        let payload_len = match len7 {
            126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(ProtocolError::new(
                        CloseCode::PROTOCOL_ERROR,
                        "64-bit payload length with the top bit set",
                    ));
                }
                len
            }
            n => u64::from(n),
        };
        let mask = if masked {
            let at = 2 + length_bytes;
            // In bounds: `buf` holds the whole header (checked above).
            buf.get(at..at + 4)
                .and_then(|key| <[u8; 4]>::try_from(key).ok())
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// Writes this header into `out` and returns the number of bytes used
    /// (at most [`MAX_HEADER_LEN`]). Lengths use the shortest encoding.
    ///
    /// ```
    /// use wsloop::protocol::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
    /// let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, payload_len: 300 };
    /// let mut out = [0u8; MAX_HEADER_LEN];
    /// let n = header.encode(&mut out);
    /// assert_eq!(&out[..n], &[0x82, 126, 0x01, 0x2C]);
    /// ```
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            n if n < 126 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n if n <= u64::from(u16::MAX) => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// Appends one complete unmasked (server-to-client) frame to `out`.
///
/// ```
/// use wsloop::protocol::frame::{encode_frame, OpCode};
/// let mut out = Vec::new();
/// encode_frame(&mut out, OpCode::Text, b"hi");
/// assert_eq!(out, [0x81, 2, b'h', b'i']);
/// ```
#[inline(always)]
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode_server_frame(out, 0x80 | opcode.bits(), payload);
}

/// Appends one complete server frame of a compressed message (FIN and
/// RSV1 set, RFC 7692 §6) to `out`.
///
/// ```
/// use wsloop::protocol::frame::{encode_frame_rsv1, OpCode};
/// let mut out = Vec::new();
/// // "Hello", compressed (RFC 7692 §7.2.3.1).
/// encode_frame_rsv1(&mut out, OpCode::Text, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
/// assert_eq!(out[..2], [0xc1, 7]);
/// ```
#[cfg(feature = "deflate")]
pub fn encode_frame_rsv1(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode_server_frame(out, 0xc0 | opcode.bits(), payload);
}

#[inline(always)]
fn encode_server_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
    // Written out rather than through `FrameHeader::encode`: this runs for
    // every message sent, and a server frame's header is only its first
    // byte and the length.
    let len = payload.len();
    out.reserve(encoded_len(len));
    if len < 126 {
        out.extend_from_slice(&[b0, len as u8]);
    } else if let Ok(short) = u16::try_from(len) {
        let [hi, lo] = short.to_be_bytes();
        out.extend_from_slice(&[b0, 126, hi, lo]);
    } else {
        let mut head = [0u8; 10];
        head[0] = b0;
        head[1] = 127;
        head[2..].copy_from_slice(&(len as u64).to_be_bytes());
        out.extend_from_slice(&head);
    }
    out.extend_from_slice(payload);
}

/// The number of bytes [`encode_frame`] produces for a payload of `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    let head = match len {
        n if n < 126 => 2,
        n if n <= usize::from(u16::MAX) => 4,
        _ => 10,
    };
    head + len
}

#[doc(hidden)] // for benches and fuzzing, not part of the documented API
/// XORs `data` with `key`, starting `offset` bytes into the key's cycle.
///
/// Works a machine word at a time; the compiler vectorises the inner loop.
/// Calling it twice with the same arguments restores the input.
///
/// ```
/// use wsloop::protocol::frame::apply_mask;
/// let mut data = *b"Hello";
/// apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// ```
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    let word_key = repeat_key(key);
    let (words, tail) = data.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ word_key).to_ne_bytes();
    }
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

#[doc(hidden)] // for benches and fuzzing, not part of the documented API
/// Unmasks a whole payload (key offset 0) like [`apply_mask`], and reports
/// whether every unmasked byte is ASCII.
///
/// The check rides along with the unmasking, one OR per word, so a text
/// message that is all ASCII (most JSON is) needs no separate UTF-8 pass:
/// ASCII is valid UTF-8.
///
/// ```
/// use wsloop::protocol::frame::{apply_mask, unmask_reporting_ascii};
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut ascii = *b"Hello";
/// apply_mask(&mut ascii, key, 0);
/// assert!(unmask_reporting_ascii(&mut ascii, key));
/// assert_eq!(&ascii, b"Hello");
/// let mut euro = "€".as_bytes().to_vec();
/// apply_mask(&mut euro, key, 0);
/// assert!(!unmask_reporting_ascii(&mut euro, key));
/// assert_eq!(euro, "€".as_bytes());
/// ```
pub fn unmask_reporting_ascii(data: &mut [u8], key: [u8; 4]) -> bool {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let word_key = repeat_key(key);
    let mut seen = 0u64;
    let (words, tail) = data.as_chunks_mut::<8>();
    for word in words {
        let plain = u64::from_ne_bytes(*word) ^ word_key;
        seen |= plain;
        *word = plain.to_ne_bytes();
    }
    let mut tail_seen = 0u8;
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[i & 3];
        tail_seen |= *byte;
    }
    seen & HIGH_BITS == 0 && tail_seen & 0x80 == 0
}

/// The key twice over, as a native-endian word: XORing a word of payload
/// with it masks those eight bytes. (Built from one `u32` rather than byte
/// by byte, which compiled to some twenty shifts and ORs per call.)
#[inline]
fn repeat_key(key: [u8; 4]) -> u64 {
    let half = u64::from(u32::from_ne_bytes(key));
    half | (half << 32)
}

fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let s = offset & 3;
    [key[s], key[(s + 1) & 3], key[(s + 2) & 3], key[(s + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn encode_frame_writes_the_shortest_header_for_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Binary, &payload);
            let mut expected = [0u8; MAX_HEADER_LEN];
            let header = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: None,
                payload_len: len as u64,
            };
            let head_len = header.encode(&mut expected);
            assert_eq!(out.len(), encoded_len(len), "length {len}");
            assert_eq!(&out[..head_len], &expected[..head_len], "length {len}");
            assert_eq!(&out[head_len..], &payload[..], "length {len}");
            assert_eq!(FrameHeader::decode(&out).unwrap(), Some((header, head_len)));
        }
    }

    #[test]
    fn mask_matches_naive_for_every_length_and_offset() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            for offset in 0..4 {
                let original: Vec<u8> = (0..len as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast, key, offset);
                naive_mask(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn ascii_report_matches_unmasking_then_checking() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..70 {
            // Plain ASCII, then one byte at a time with its high bit set
            // (every position within and outside the word loop).
            let ascii: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut samples = vec![ascii.clone()];
            for at in 0..len {
                let mut high = ascii.clone();
                high[at] |= 0x80;
                samples.push(high);
            }
            for plain in samples {
                let mut masked = plain.clone();
                apply_mask(&mut masked, key, 0);
                let reported = unmask_reporting_ascii(&mut masked, key);
                assert_eq!(masked, plain, "len {len}");
                assert_eq!(reported, plain.is_ascii(), "{plain:02x?}");
            }
        }
    }

    #[test]
    fn header_round_trips_through_all_length_forms() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let header = FrameHeader {
                    fin: len % 2 == 0,
                    rsv: (len % 8) as u8,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = header.encode(&mut out);
                let (decoded, used) = FrameHeader::decode(&out[..n]).unwrap().unwrap();
                assert_eq!(decoded, header);
                assert_eq!(used, n);
                // Every strict prefix is reported as incomplete, never as an error.
                for cut in 0..n {
                    assert_eq!(FrameHeader::decode(&out[..cut]).unwrap(), None);
                }
            }
        }
    }

    #[test]
    fn header_rejects_protocol_violations() {
        let cases: &[&[u8]] = &[
            &[0x83, 0x80, 0, 0, 0, 0],                            // reserved opcode 3
            &[0x8B, 0x80, 0, 0, 0, 0],                            // reserved control opcode 0xB
            &[0x09, 0x80, 0, 0, 0, 0],                            // fragmented ping
            &[0x89, 0xFE, 0, 126, 0, 0, 0, 0],                    // ping with 126-byte payload
            &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // top bit of 64-bit length
        ];
        for bytes in cases {
            let err = FrameHeader::decode(bytes).unwrap_err();
            assert_eq!(err.code, CloseCode::PROTOCOL_ERROR, "{bytes:02x?}");
        }
    }

    #[test]
    fn header_passes_the_reserved_bits_on_for_the_extensions_to_judge() {
        for (b0, rsv) in [(0xC1, 4), (0xA1, 2), (0x91, 1), (0xF1, 7), (0x81, 0)] {
            let (header, _) = FrameHeader::decode(&[b0, 0x80, 0, 0, 0, 0])
                .unwrap()
                .unwrap();
            assert_eq!(
                (header.rsv, header.opcode, header.fin),
                (rsv, OpCode::Text, true)
            );
        }
    }

    #[test]
    fn encoded_len_matches_encode_frame() {
        for len in [0, 5, 125, 126, 65535, 65536, 70000] {
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Binary, &vec![0u8; len]);
            assert_eq!(out.len(), encoded_len(len));
        }
    }
}
