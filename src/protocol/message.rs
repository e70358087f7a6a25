//! The message decoder: client bytes in, complete messages and control
//! frames out (RFC 6455 §5.4-5.6).
//!
//! The decoder is fed whatever bytes a read produced, in any split. It never
//! holds more than it must: a partial header is kept in a 14-byte array, and
//! payload bytes are copied only when a message cannot be handed out whole
//! from the caller's buffer (it is fragmented, or its frame is still
//! arriving). A complete unfragmented frame is unmasked in place and returned
//! as a slice of the caller's buffer. Announced lengths are checked against
//! the limits before anything is buffered, so a header that claims 2^62 bytes
//! costs nothing.

use super::ProtocolError;
use super::close::{CloseCode, CloseFrame};
use super::extension::{Extensions, RSV1};
use super::frame::{
    FrameHeader, MAX_HEADER_LEN, OpCode, apply_mask, encode_frame, unmask_reporting_ascii,
};
use super::utf8::Utf8Validator;

/// A data message, received or to be sent.
///
/// Received messages borrow the server's buffers: copy what you keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A UTF-8 text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// The frame opcode that carries this message.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(s: &'a str) -> Self {
        Message::Text(s)
    }
}

impl<'a> From<&'a [u8]> for Message<'a> {
    fn from(b: &'a [u8]) -> Self {
        Message::Binary(b)
    }
}

/// Appends `msg` to `out` as one unfragmented server frame.
///
/// Every data frame the server sends is encoded here, whether for one
/// connection, a broadcast shared by thousands, or another thread's
/// [`Handle`](crate::Handle): an extension that transforms payloads
/// (permessage-deflate) has one place to do it.
///
/// ```
/// use wsloop::Message;
/// use wsloop::protocol::message::encode_message;
/// let mut out = Vec::new();
/// encode_message(&mut out, Message::Text("hi"));
/// assert_eq!(out, [0x81, 2, b'h', b'i']);
/// ```
#[inline(always)]
pub fn encode_message(out: &mut Vec<u8>, msg: Message<'_>) {
    encode_frame(out, msg.opcode(), msg.as_bytes());
}

/// Size limits enforced while decoding. Exceeding one closes with 1009.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// The largest payload one frame may announce.
    pub max_frame_size: usize,
    /// The largest message, summed over its fragments.
    pub max_message_size: usize,
    /// The most frames one message may be split into.
    pub max_fragments: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_fragments: 100_000,
        }
    }
}

/// Something the peer sent that the application or the reactor must act on.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A complete text message, validated as UTF-8.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping; the reactor answers with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame, validated.
    Close(CloseFrame<'a>),
    /// A complete permessage-deflate message (RSV1 on its first frame):
    /// its frames' payloads joined and unmasked, still compressed. Inflate
    /// it (`protocol::deflate::Inflater`) and, if `text`, validate the
    /// result as UTF-8.
    #[cfg(feature = "deflate")]
    Compressed {
        /// A text message (else binary).
        text: bool,
        /// The compressed payload, without the `00 00 ff ff` tail.
        payload: &'a [u8],
    },
}

/// The result of one [`Decoder::decode`] call.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// How many bytes of the input were used. Feed the rest next.
    pub consumed: usize,
    /// The event completed by those bytes, if any.
    pub event: Option<Event<'a>>,
}

/// The header length of a masked frame with a 7-bit payload length.
const SMALL_HEADER_LEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

#[derive(Debug)]
struct FrameInProgress {
    header: FrameHeader,
    received: usize,
}

/// A streaming decoder for the frames of one connection.
///
/// ```
/// use wsloop::protocol::message::{Decoder, Event};
/// let mut decoder = Decoder::default();
/// // A masked "Hello" (RFC 6455 §5.7), fed in two pieces.
/// let mut bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
/// let (first, second) = bytes.split_at_mut(4);
/// let d = decoder.decode(first).unwrap();
/// assert_eq!((d.consumed, d.event), (4, None));
/// let d = decoder.decode(second).unwrap();
/// assert_eq!(d.event, Some(Event::Text("Hello")));
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecoderLimits,
    /// What the connection's negotiated extensions allow (reserved bits).
    extensions: Extensions,
    head: [u8; MAX_HEADER_LEN],
    head_len: u8,
    frame: Option<FrameInProgress>,
    message: Option<MessageKind>,
    /// The message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
    fragments: usize,
    payload: Vec<u8>,
    control: Vec<u8>,
    utf8: Utf8Validator,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: DecoderLimits) -> Decoder {
        Decoder {
            limits,
            ..Decoder::default()
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> DecoderLimits {
        self.limits
    }

    /// Sets the extensions negotiated for the connection whose bytes come
    /// next; frames may use only the reserved bits they allow (1002
    /// otherwise). A session sets this each time it lends its input to a
    /// decoder.
    pub fn set_extensions(&mut self, extensions: Extensions) {
        self.extensions = extensions;
    }

    /// Whether the decoder holds no partial frame or message, so that the
    /// peer stopped at a message boundary.
    pub fn is_idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.message.is_none()
    }

    /// Bytes of a message or frame held while waiting for the rest.
    pub fn buffered(&self) -> usize {
        self.payload.len() + self.control.len() + usize::from(self.head_len)
    }

    /// Frees assembly buffers that hold nothing still needed. Called by the
    /// reactor after each batch so an idle connection keeps no heap memory.
    pub fn release(&mut self) {
        if self.message.is_none() && self.frame.is_none() {
            self.payload = Vec::new();
        }
        if self.frame.is_none() {
            self.control = Vec::new();
        }
    }

    /// Decodes from the front of `input`, unmasking it in place.
    ///
    /// Returns how many bytes were used and the event they completed, if
    /// any. Call again with the remaining bytes until all are consumed; a
    /// call with non-empty input always consumes at least one byte or
    /// returns an event. Errors carry the close code to send.
    pub fn decode<'a>(&'a mut self, input: &'a mut [u8]) -> Result<Decoded<'a>, ProtocolError> {
        if self.frame.is_none() && self.head_len == 0 {
            if let Some((opcode, key, len)) = self.small_data_frame_at(input) {
                let end = SMALL_HEADER_LEN + len;
                let event = unmask_and_lend(opcode, &mut input[SMALL_HEADER_LEN..end], key)?;
                return Ok(Decoded {
                    consumed: end,
                    event: Some(event),
                });
            }
            if let Some((header, used)) = self.whole_frame_at(input)? {
                return self.lend_whole_frame(input, header, used);
            }
        }
        let mut consumed = 0;
        if self.frame.is_none() {
            let Some(used) = self.read_header(input)? else {
                return Ok(Decoded {
                    consumed: input.len(),
                    event: None,
                });
            };
            consumed = used;
        }
        let input = &mut input[consumed..];
        let frame = self.frame.as_mut().expect("a frame header was read");
        let header = frame.header;
        let mask = header.mask.unwrap_or_default();
        let remaining = header.payload_len as usize - frame.received;

        // Fast path: a whole frame that is a whole message or a control frame
        // is unmasked in place and lent out without a copy.
        let whole_message = header.fin && header.opcode != OpCode::Continuation;
        if frame.received == 0 && input.len() >= remaining && whole_message {
            self.frame = None;
            if !header.opcode.is_control() {
                self.message = None;
            }
            let event = lend_frame(&header, &mut input[..remaining], mask)?;
            return Ok(Decoded {
                consumed: consumed + remaining,
                event: Some(event),
            });
        }

        // Slow path: copy what has arrived into the assembly buffer.
        let take = remaining.min(input.len());
        let chunk = &mut input[..take];
        apply_mask(chunk, mask, frame.received);
        frame.received += take;
        consumed += take;
        let frame_done = take == remaining;
        if header.opcode.is_control() {
            self.control.extend_from_slice(chunk);
            if !frame_done {
                return Ok(Decoded {
                    consumed,
                    event: None,
                });
            }
            self.frame = None;
            let event = lend_event(header.opcode, &self.control)?;
            return Ok(Decoded {
                consumed,
                event: Some(event),
            });
        }
        // A compressed message is validated once inflated.
        if self.message == Some(MessageKind::Text) && !self.compressed && !self.utf8.feed(chunk) {
            return Err(invalid_utf8());
        }
        self.payload.extend_from_slice(chunk);
        if !frame_done {
            return Ok(Decoded {
                consumed,
                event: None,
            });
        }
        self.frame = None;
        if !header.fin {
            return Ok(Decoded {
                consumed,
                event: None,
            });
        }
        let kind = self.message.take().expect("a message is in progress");
        #[cfg(feature = "deflate")]
        if self.compressed {
            return Ok(Decoded {
                consumed,
                event: Some(Event::Compressed {
                    text: kind == MessageKind::Text,
                    payload: &self.payload,
                }),
            });
        }
        let event = match kind {
            MessageKind::Binary => Event::Binary(&self.payload),
            MessageKind::Text => {
                if !self.utf8.is_complete() {
                    return Err(invalid_utf8());
                }
                Event::Text(std::str::from_utf8(&self.payload).map_err(|_| invalid_utf8())?)
            }
        };
        Ok(Decoded {
            consumed,
            event: Some(event),
        })
    }

    /// Recognises the most common frame without the general header
    /// parser: a complete, masked text or binary frame under 126 bytes that
    /// is a whole message, arriving between messages and within the limits.
    /// Returns its opcode, masking key and payload length (the header is
    /// [`SMALL_HEADER_LEN`] bytes). Anything else, every error included, is
    /// left to the general path.
    fn small_data_frame_at(&self, input: &[u8]) -> Option<(OpCode, [u8; 4], usize)> {
        // FIN, no reserved bits, text or binary; the mask bit and a 7-bit
        // length; the key.
        let [b0 @ (0x81 | 0x82), b1, k0, k1, k2, k3, ..] = *input else {
            return None;
        };
        // Below 126 only if the mask bit is set and the length is 7-bit.
        let len = usize::from(b1 ^ 0x80);
        if len >= 126
            || input.len() < SMALL_HEADER_LEN + len
            || self.message.is_some()
            || len > self.limits.max_frame_size
            || len > self.limits.max_message_size
        {
            return None;
        }
        let opcode = if b0 == 0x81 {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        Some((opcode, [k0, k1, k2, k3], len))
    }

    /// The header of the frame at the front of `input`, and its length, if
    /// that frame can be lent out as it is without recording any frame or
    /// message state: a complete unfragmented data frame between messages,
    /// or a complete control frame. This is the common case (a read holds
    /// whole small frames); when it is not, the slow path decodes the
    /// header again.
    fn whole_frame_at(&self, input: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let Some((header, used)) = FrameHeader::decode(input)? else {
            return Ok(None);
        };
        let whole_data = header.fin
            && matches!(header.opcode, OpCode::Text | OpCode::Binary)
            && self.message.is_none();
        let arrived = (input.len() - used) as u64 >= header.payload_len;
        Ok((arrived && (whole_data || header.opcode.is_control())).then_some((header, used)))
    }

    /// Unmasks and lends out the whole frame at the front of `input`, whose
    /// `header` takes `used` bytes (see [`Decoder::whole_frame_at`]), after
    /// the same checks as any frame.
    fn lend_whole_frame<'a>(
        &self,
        input: &'a mut [u8],
        header: FrameHeader,
        used: usize,
    ) -> Result<Decoded<'a>, ProtocolError> {
        self.check_frame_header(&header)?;
        if !header.opcode.is_control() && header.payload_len > self.limits.max_message_size as u64 {
            return Err(message_too_big());
        }
        let end = used + header.payload_len as usize;
        let payload = &mut input[used..end];
        Ok(Decoded {
            consumed: end,
            event: Some(lend_frame(
                &header,
                payload,
                header.mask.unwrap_or_default(),
            )?),
        })
    }

    /// The checks every frame header gets before its payload is used: only
    /// the reserved bits the negotiated extensions allow, the client must
    /// mask, and the frame must fit the frame size limit.
    fn check_frame_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if !self.extensions.allows_reserved_bits(header.rsv) {
            return Err(ProtocolError::new(
                CloseCode::PROTOCOL_ERROR,
                "reserved bits set without a negotiated extension",
            ));
        }
        // RFC 7692 §6.1: RSV1 marks a compressed message on its first
        // frame only; on a continuation or control frame it is an error.
        if header.rsv & RSV1 != 0
            && (header.opcode.is_control() || header.opcode == OpCode::Continuation)
        {
            return Err(ProtocolError::new(
                CloseCode::PROTOCOL_ERROR,
                "RSV1 on a continuation or control frame",
            ));
        }
        if header.mask.is_none() {
            return Err(ProtocolError::new(
                CloseCode::PROTOCOL_ERROR,
                "client frame is not masked",
            ));
        }
        if header.payload_len > self.limits.max_frame_size as u64 {
            return Err(ProtocolError::new(CloseCode::TOO_BIG, "frame too big"));
        }
        Ok(())
    }

    /// Reads (the rest of) a frame header and starts the frame. Returns the
    /// bytes of `input` used, or `None` when all of it went into a still
    /// partial header.
    fn read_header(&mut self, input: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let held = usize::from(self.head_len);
        let decoded = if held == 0 {
            FrameHeader::decode(input)?
        } else {
            let take = (MAX_HEADER_LEN - held).min(input.len());
            let mut joined = self.head;
            joined[held..held + take].copy_from_slice(&input[..take]);
            FrameHeader::decode(&joined[..held + take])?.map(|(h, len)| (h, len - held))
        };
        let Some((header, used)) = decoded else {
            // A partial header is always shorter than MAX_HEADER_LEN.
            let take = input.len();
            self.head[held..held + take].copy_from_slice(input);
            self.head_len = (held + take) as u8;
            return Ok(None);
        };
        self.head_len = 0;
        self.start_frame(header)?;
        Ok(Some(used))
    }

    fn start_frame(&mut self, header: FrameHeader) -> Result<(), ProtocolError> {
        self.check_frame_header(&header)?;
        let len = header.payload_len as usize;
        match header.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => self.control.clear(),
            OpCode::Continuation => {
                if self.message.is_none() {
                    return Err(ProtocolError::new(
                        CloseCode::PROTOCOL_ERROR,
                        "continuation frame without a message to continue",
                    ));
                }
                self.check_message_growth(len)?;
            }
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::new(
                        CloseCode::PROTOCOL_ERROR,
                        "new message started before the previous one ended",
                    ));
                }
                if len > self.limits.max_message_size {
                    return Err(message_too_big());
                }
                self.message = Some(if header.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                });
                self.compressed = header.rsv & RSV1 != 0;
                self.fragments = 1;
                self.payload.clear();
                self.utf8.reset();
            }
        }
        self.frame = Some(FrameInProgress {
            header,
            received: 0,
        });
        Ok(())
    }

    fn check_message_growth(&mut self, len: usize) -> Result<(), ProtocolError> {
        self.fragments += 1;
        if self.fragments > self.limits.max_fragments {
            return Err(ProtocolError::new(
                CloseCode::TOO_BIG,
                "message split into too many fragments",
            ));
        }
        if self.payload.len().saturating_add(len) > self.limits.max_message_size {
            return Err(message_too_big());
        }
        Ok(())
    }
}

fn invalid_utf8() -> ProtocolError {
    ProtocolError::new(
        CloseCode::INVALID_PAYLOAD,
        "text message is not valid UTF-8",
    )
}

fn message_too_big() -> ProtocolError {
    ProtocolError::new(CloseCode::TOO_BIG, "message too big")
}

/// Unmasks a whole frame (a whole message, or a control frame) in place
/// and turns it into an event that borrows it; a compressed message stays
/// compressed.
#[inline(always)]
fn lend_frame<'a>(
    header: &FrameHeader,
    payload: &'a mut [u8],
    key: [u8; 4],
) -> Result<Event<'a>, ProtocolError> {
    #[cfg(feature = "deflate")]
    if header.rsv & RSV1 != 0 {
        apply_mask(payload, key, 0);
        return Ok(Event::Compressed {
            text: header.opcode == OpCode::Text,
            payload,
        });
    }
    unmask_and_lend(header.opcode, payload, key)
}

/// Unmasks a whole frame's payload in place and turns it into an event
/// that borrows it.
#[inline(always)]
fn unmask_and_lend(
    opcode: OpCode,
    payload: &mut [u8],
    key: [u8; 4],
) -> Result<Event<'_>, ProtocolError> {
    if opcode == OpCode::Text {
        return unmask_text(payload, key).map(Event::Text);
    }
    apply_mask(payload, key, 0);
    lend_event(opcode, payload)
}

/// Unmasks a whole text payload in place and returns it as validated text.
///
/// An all-ASCII payload, seen as such while it is unmasked, is valid UTF-8
/// as it stands, so the general validator runs only on payloads with a
/// byte of 0x80 or above. Skipping it for a 64-byte message removes about
/// a fifth of the server's user-space instructions per echoed message
/// (callgrind; see docs/PERFORMANCE.md).
#[allow(unsafe_code)]
fn unmask_text(payload: &mut [u8], key: [u8; 4]) -> Result<&str, ProtocolError> {
    if unmask_reporting_ascii(payload, key) {
        debug_assert!(payload.is_ascii());
        // SAFETY: `unmask_reporting_ascii` returned true, so every byte of
        // `payload` is below 0x80 (its unit tests check this against
        // `<[u8]>::is_ascii` for every length and position of a high
        // byte), and a sequence of ASCII bytes is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(payload) })
    } else {
        std::str::from_utf8(payload).map_err(|_| invalid_utf8())
    }
}

/// Turns a complete, unmasked payload into an event that borrows it.
fn lend_event(opcode: OpCode, payload: &[u8]) -> Result<Event<'_>, ProtocolError> {
    Ok(match opcode {
        OpCode::Text => Event::Text(std::str::from_utf8(payload).map_err(|_| invalid_utf8())?),
        OpCode::Binary => Event::Binary(payload),
        OpCode::Ping => Event::Ping(payload),
        OpCode::Pong => Event::Pong(payload),
        OpCode::Close => Event::Close(CloseFrame::parse(payload)?),
        OpCode::Continuation => unreachable!("continuations are assembled"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::MAX_HEADER_LEN;

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    /// A masked client frame.
    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask: Some(KEY),
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let mut body = payload.to_vec();
        apply_mask(&mut body, KEY, 0);
        out.extend_from_slice(&body);
        out
    }

    #[derive(Debug, PartialEq)]
    enum Owned {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(u16, String),
        #[cfg(feature = "deflate")]
        Compressed(bool, Vec<u8>),
    }

    /// Feeds `bytes` in pieces of `piece` bytes; collects events or the error.
    fn run(decoder: &mut Decoder, bytes: &[u8], piece: usize) -> Result<Vec<Owned>, ProtocolError> {
        let mut events = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            let mut chunk = chunk.to_vec();
            let mut at = 0;
            while at < chunk.len() {
                let decoded = decoder.decode(&mut chunk[at..])?;
                assert!(
                    decoded.consumed > 0 || decoded.event.is_some(),
                    "no progress"
                );
                at += decoded.consumed;
                events.extend(decoded.event.map(|e| match e {
                    Event::Text(t) => Owned::Text(t.to_string()),
                    Event::Binary(b) => Owned::Binary(b.to_vec()),
                    Event::Ping(p) => Owned::Ping(p.to_vec()),
                    Event::Pong(p) => Owned::Pong(p.to_vec()),
                    Event::Close(c) => Owned::Close(c.code.as_u16(), c.reason.to_string()),
                    #[cfg(feature = "deflate")]
                    Event::Compressed { text, payload } => {
                        Owned::Compressed(text, payload.to_vec())
                    }
                }));
            }
            decoder.release();
        }
        Ok(events)
    }

    #[test]
    fn fragmented_message_with_interleaved_ping_in_any_split() {
        let text = "héllo wörld €";
        let bytes = text.as_bytes();
        let mut stream = frame(false, OpCode::Text, &bytes[..2]); // splits 'é'
        stream.extend(frame(true, OpCode::Ping, b"p"));
        stream.extend(frame(false, OpCode::Continuation, &bytes[2..9]));
        stream.extend(frame(true, OpCode::Continuation, &bytes[9..]));
        stream.extend(frame(true, OpCode::Binary, &[1, 2, 3]));
        stream.extend(frame(true, OpCode::Close, &[0x03, 0xE8, b'b', b'y', b'e']));
        for piece in 1..=stream.len() {
            let events = run(&mut Decoder::default(), &stream, piece).unwrap();
            assert_eq!(
                events,
                [
                    Owned::Ping(b"p".to_vec()),
                    Owned::Text(text.to_string()),
                    Owned::Binary(vec![1, 2, 3]),
                    Owned::Close(1000, "bye".into()),
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn reserved_bits_are_judged_by_the_negotiated_extensions() {
        let mut rsv1_text = frame(true, OpCode::Text, b"hi");
        rsv1_text[0] |= 0x40;
        // No extension negotiated: 1002, in the whole-frame and the
        // byte-by-byte paths alike.
        for piece in [1, rsv1_text.len()] {
            let err = run(&mut Decoder::default(), &rsv1_text, piece).unwrap_err();
            assert_eq!(err.code, CloseCode::PROTOCOL_ERROR, "piece {piece}");
        }
        // An extension that owns RSV1 lets the frame through; RSV2 stays
        // refused.
        let mut decoder = Decoder::default();
        decoder.set_extensions(Extensions::NONE.with_reserved_bits(0b100));
        #[cfg(not(feature = "deflate"))]
        let expected = Owned::Text("hi".into());
        // With permessage-deflate built in, RSV1 is its mark.
        #[cfg(feature = "deflate")]
        let expected = Owned::Compressed(true, b"hi".to_vec());
        assert_eq!(run(&mut decoder, &rsv1_text, 64).unwrap(), [expected]);
        let mut rsv2 = frame(true, OpCode::Binary, b"x");
        rsv2[0] |= 0x20;
        assert_eq!(
            run(&mut decoder, &rsv2, 64).unwrap_err().code,
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn whole_frames_are_lent_from_the_input_without_copying() {
        let mut decoder = Decoder::default();
        let mut bytes = frame(true, OpCode::Binary, &[7; 300]);
        let start = bytes.as_ptr() as usize;
        let decoded = decoder.decode(&mut bytes).unwrap();
        let Some(Event::Binary(payload)) = decoded.event else {
            panic!("expected a binary message");
        };
        let at = payload.as_ptr() as usize;
        assert!(
            at > start && at < start + 20,
            "payload is a slice of the input"
        );
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn oversized_announcements_fail_before_buffering() {
        let limits = DecoderLimits {
            max_frame_size: 1 << 20,
            max_message_size: 1000,
            max_fragments: 3,
        };
        // Only the header of a 2^40-byte frame: refused, nothing allocated.
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(KEY),
            payload_len: 1 << 40,
        }
        .encode(&mut header);
        let err = run(&mut Decoder::new(limits), &header[..n], n).unwrap_err();
        assert_eq!(err.code, CloseCode::TOO_BIG);
        // A message whose fragments add up past the limit.
        let mut stream = frame(false, OpCode::Binary, &[0; 600]);
        stream.extend(frame(true, OpCode::Continuation, &[0; 600]));
        let mut decoder = Decoder::new(limits);
        let err = run(&mut decoder, &stream, 700).unwrap_err();
        assert_eq!(err.code, CloseCode::TOO_BIG);
        assert!(decoder.buffered() <= 600);
        // Too many fragments.
        let mut stream = frame(false, OpCode::Binary, b"x");
        for _ in 0..3 {
            stream.extend(frame(false, OpCode::Continuation, b"x"));
        }
        assert_eq!(
            run(&mut Decoder::new(limits), &stream, 64)
                .unwrap_err()
                .code,
            CloseCode::TOO_BIG
        );
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_not_the_end() {
        let mut stream = frame(false, OpCode::Text, b"ok");
        stream.extend(frame(false, OpCode::Continuation, &[0xF4, 0x90])); // > U+10FFFF
        let err = run(&mut Decoder::default(), &stream, 3).unwrap_err();
        assert_eq!(err.code, CloseCode::INVALID_PAYLOAD);
        let incomplete = frame(true, OpCode::Text, &[b'a', 0xE2, 0x82]);
        assert_eq!(
            run(&mut Decoder::default(), &incomplete, 2)
                .unwrap_err()
                .code,
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn sequencing_errors_are_protocol_errors() {
        let cases = [
            frame(true, OpCode::Continuation, b"x"),
            [
                frame(false, OpCode::Text, b"a"),
                frame(true, OpCode::Text, b"b"),
            ]
            .concat(),
            [0x81, 0x01, b'x'].to_vec(), // unmasked
            frame(true, OpCode::Close, &[0x03]),
        ];
        for stream in cases {
            let err = run(&mut Decoder::default(), &stream, 1).unwrap_err();
            assert_eq!(err.code, CloseCode::PROTOCOL_ERROR, "{stream:02x?}");
        }
    }

    #[test]
    fn small_whole_frames_get_the_answers_of_the_general_path() {
        // Fed whole, these frames meet the small-frame fast path; fed a
        // byte at a time, the general path. Both must decide alike.
        let default = DecoderLimits::default();
        let frame_limit = DecoderLimits {
            max_frame_size: 4,
            ..default
        };
        let message_limit = DecoderLimits {
            max_message_size: 4,
            ..default
        };
        let cases: Vec<(DecoderLimits, Vec<u8>, Result<usize, CloseCode>)> = vec![
            (default, frame(true, OpCode::Text, b"plain ascii"), Ok(1)),
            (
                default,
                frame(true, OpCode::Text, "h\u{e9}llo \u{20ac}".as_bytes()),
                Ok(1),
            ),
            (default, frame(true, OpCode::Text, &[0x7F; 125]), Ok(1)),
            (default, frame(true, OpCode::Binary, &[0x80; 125]), Ok(1)),
            (
                default,
                frame(true, OpCode::Text, &[b'a', 0xFF]),
                Err(CloseCode::INVALID_PAYLOAD),
            ),
            (
                default,
                frame(true, OpCode::Text, &[0xE2, 0x82]),
                Err(CloseCode::INVALID_PAYLOAD),
            ),
            (
                default,
                [
                    frame(false, OpCode::Text, b"a"),
                    frame(true, OpCode::Text, b"b"),
                ]
                .concat(),
                Err(CloseCode::PROTOCOL_ERROR),
            ),
            (
                default,
                [0x81, 0x01, b'x'].to_vec(),
                Err(CloseCode::PROTOCOL_ERROR),
            ),
            (
                frame_limit,
                frame(true, OpCode::Binary, b"12345"),
                Err(CloseCode::TOO_BIG),
            ),
            (frame_limit, frame(true, OpCode::Binary, b"1234"), Ok(1)),
            (
                message_limit,
                frame(true, OpCode::Text, b"12345"),
                Err(CloseCode::TOO_BIG),
            ),
        ];
        for (limits, stream, expected) in cases {
            let whole = run(&mut Decoder::new(limits), &stream, stream.len());
            let bytewise = run(&mut Decoder::new(limits), &stream, 1);
            let whole = whole.map_err(|e| e.code);
            assert_eq!(whole, bytewise.map_err(|e| e.code), "{stream:02x?}");
            assert_eq!(whole.map(|events| events.len()), expected, "{stream:02x?}");
        }
    }

    #[test]
    fn release_frees_buffers_between_messages() {
        let mut decoder = Decoder::default();
        let stream = frame(true, OpCode::Binary, &[1; 5000]);
        run(&mut decoder, &stream, 100).unwrap();
        assert!(decoder.is_idle());
        assert_eq!(decoder.payload.capacity(), 0);
    }

    /// With permessage-deflate, RSV1 marks the first frame of a compressed
    /// message: its frames come out joined and still compressed, in any
    /// split, with control frames in between; RSV1 anywhere else is 1002.
    #[cfg(feature = "deflate")]
    #[test]
    fn rsv1_marks_a_compressed_message_on_its_first_frame_only() {
        let rsv1 = |mut f: Vec<u8>| {
            f[0] |= 0x40;
            f
        };
        // Not UTF-8 while compressed: validated only once inflated.
        let mut stream = rsv1(frame(false, OpCode::Text, &[0xf2, 0x48]));
        stream.extend(frame(true, OpCode::Ping, b"p"));
        stream.extend(frame(
            true,
            OpCode::Continuation,
            &[0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ));
        stream.extend(rsv1(frame(true, OpCode::Binary, &[0xff, 0xfe])));
        stream.extend(frame(true, OpCode::Text, b"plain"));
        for piece in 1..=stream.len() {
            let mut decoder = Decoder::default();
            decoder.set_extensions(Extensions::PERMESSAGE_DEFLATE);
            assert_eq!(
                run(&mut decoder, &stream, piece).unwrap(),
                [
                    Owned::Ping(b"p".to_vec()),
                    Owned::Compressed(true, vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
                    Owned::Compressed(false, vec![0xff, 0xfe]),
                    Owned::Text("plain".into()),
                ],
                "piece {piece}"
            );
        }
        let refused = [
            // RSV1 on a continuation frame.
            [
                frame(false, OpCode::Text, b"a"),
                rsv1(frame(true, OpCode::Continuation, b"b")),
            ]
            .concat(),
            // RSV1 on control frames.
            rsv1(frame(true, OpCode::Ping, b"p")),
            rsv1(frame(true, OpCode::Close, &[0x03, 0xe8])),
            // RSV2 and RSV3 still belong to no one.
            {
                let mut f = frame(true, OpCode::Text, b"x");
                f[0] |= 0x60;
                f
            },
        ];
        for (i, bytes) in refused.iter().enumerate() {
            for piece in [1, bytes.len()] {
                let mut decoder = Decoder::default();
                decoder.set_extensions(Extensions::PERMESSAGE_DEFLATE);
                let err = run(&mut decoder, bytes, piece).unwrap_err();
                assert_eq!(
                    err.code,
                    CloseCode::PROTOCOL_ERROR,
                    "case {i}, piece {piece}"
                );
            }
        }
    }

    /// The limits apply to a compressed message as received too: a
    /// fragmented one cannot grow its assembly buffer past the message
    /// limit (the inflated size is judged while inflating).
    #[cfg(feature = "deflate")]
    #[test]
    fn a_compressed_message_is_bounded_as_received() {
        let mut decoder = Decoder::new(DecoderLimits {
            max_message_size: 8,
            ..DecoderLimits::default()
        });
        decoder.set_extensions(Extensions::PERMESSAGE_DEFLATE);
        let mut stream = frame(false, OpCode::Binary, &[0; 5]);
        stream[0] |= 0x40;
        stream.extend(frame(true, OpCode::Continuation, &[0; 5]));
        let err = run(&mut decoder, &stream, 64).unwrap_err();
        assert_eq!(err.code, CloseCode::TOO_BIG);
    }
}
