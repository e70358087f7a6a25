//! One connection's whole RFC 6455 lifecycle as a sans-IO state machine.
//!
//! A [`Session`] is handshaking, open, closing or closed. It takes the
//! bytes a read produced and the current time, and gives back the events
//! the application must see ([`Inbound`]), the bytes to send (its
//! outbox, written with [`Session::write_to`]) and its next deadline
//! ([`Session::poll_timeout`]). Everything that decides what happens to a
//! connection lives here: pings and pong timeouts, the idle timeout, the
//! closing handshake and its timeout, and which close code ends it. It
//! never touches a socket, mio or a clock, so every one of those paths is
//! tested with byte vectors and a fake clock (see `tests.rs`), and fuzzed
//! in memory.
//!
//! The reactor ([`crate::Server`]) moves bytes and time and nothing else:
//! it reads into a loop-wide buffer, lends the session a decoder
//! ([`Session::lend_decoder`]), feeds the bytes frame by frame through
//! [`Session::receive`], calls the application for each message, hands
//! each control frame or protocol error back to [`Session::apply`] (after
//! queueing its pending broadcasts, which the reply must follow), writes the
//! outbox once per loop turn and acts on [`Session::after_write`] and
//! [`Session::handle_timeout`]. The HTTP head is parsed and judged by the
//! reactor, which knows the application's routes; the session keeps a
//! partial head and turns the verdict into its next state
//! ([`Session::accept`], [`Session::refuse`]).
//!
//! This module is public for the fuzzer and the benches; it is not part of
//! wsloop's documented API.
//!
//! ```
//! use std::time::Duration;
//! use wsloop::session::outbox::BufferPool;
//! use wsloop::session::{Session, SessionConfig, Tick, Timeout};
//!
//! let config = SessionConfig::default();
//! let mut pool = BufferPool::default();
//! let t0 = Tick::from_millis(0);
//! let mut session = Session::new(t0, &config);
//! session.accept(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", t0, &mut pool);
//! // Silent for the ping interval: the session queues a ping.
//! let later = t0 + config.ping_interval.unwrap();
//! assert_eq!(session.poll_timeout(&config), Some(later));
//! assert_eq!(session.handle_timeout(later, &config, &mut pool), Timeout::Queued);
//! let mut wire = Vec::new();
//! session.write_to(&mut wire, &mut pool).unwrap();
//! assert!(wire.ends_with(&[0x89, 0x00])); // the 101, then an empty ping
//! ```

pub mod outbox;
#[cfg(test)]
mod tests;
mod time;

use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

pub use self::time::Tick;

use self::outbox::{BufferPool, Outbox};
use crate::protocol::ProtocolError;
use crate::protocol::close::{CloseCode, CloseFrame, close_payload};
#[cfg(feature = "deflate")]
use crate::protocol::deflate::{DeflateParams, InflateError, Inflater};
use crate::protocol::extension::Extensions;
use crate::protocol::frame::{OpCode, encode_frame, encoded_len};
use crate::protocol::message::{Decoder, DecoderLimits, Event, Message, encode_message};

/// The timeouts and limits every session of one loop follows. Sessions
/// borrow it on each call rather than hold a copy, to stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time allowed to complete the upgrade request.
    pub handshake_timeout: Duration,
    /// Time allowed for the closing handshake.
    pub close_timeout: Duration,
    /// Ping an open connection silent for this long (`None`: never).
    pub ping_interval: Option<Duration>,
    /// End a connection that sends nothing for this long after a ping.
    pub pong_timeout: Duration,
    /// Close (1001) a connection that sends no message for this long.
    pub idle_timeout: Option<Duration>,
    /// The decoder's size limits.
    pub decoder_limits: DecoderLimits,
}

/// The defaults of [`Config`](crate::Config), which takes its timeouts and
/// limits from here.
impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            ping_interval: Some(Duration::from_secs(20)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            decoder_limits: DecoderLimits::default(),
        }
    }
}

/// Where a session is in its life, for observers. The session's own state
/// carries each phase's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a complete upgrade (or plain HTTP) request.
    Handshaking,
    /// An open WebSocket.
    Open,
    /// Our close frame (or an HTTP response) is queued or sent.
    Closing,
    /// Over: [`Session::finish`] has reported how it ended.
    Closed,
}

/// A connection's lifecycle (see the module documentation).
#[derive(Debug)]
pub struct Session {
    state: State,
    outbox: Outbox,
    /// When bytes last arrived (heartbeats).
    last_seen: Tick,
    /// When a message last arrived (idle timeout).
    last_message: Tick,
}

/// The states, each holding exactly what it needs, so no flag can disagree
/// with another.
#[derive(Debug)]
enum State {
    /// `head` holds a partial request head, and stays unallocated when the
    /// whole head arrives in one read. Boxed to keep every session (most
    /// of them open, none of them with a head) two words smaller.
    Handshaking {
        // A thin pointer: `Box<[u8]>` would be two words.
        #[allow(clippy::box_collection)]
        head: Option<Box<Vec<u8>>>,
        deadline: Tick,
    },
    Open {
        /// Decoder state, kept only while the peer has stopped mid-frame or
        /// mid-message; between messages the loop-wide decoder is used.
        partial: Option<Box<Decoder>>,
        /// When the unanswered ping went out, if one did; cleared by any
        /// bytes from the peer.
        ping_sent: Option<Tick>,
        /// permessage-deflate, if negotiated. Two bytes in the enum's
        /// padding: the session does not grow.
        #[cfg(feature = "deflate")]
        deflate: Option<DeflateParams>,
    },
    /// Boxed: transient, and out of line it keeps every session small.
    Closing(Box<Closing>),
    Closed,
}

/// The closing phase: waiting for the peer, at most until `deadline`.
#[derive(Debug)]
struct Closing {
    awaiting: Awaiting,
    deadline: Tick,
    /// What the application is told when the connection ends.
    code: CloseCode,
    reason: String,
    /// Our write side is shut down: everything we will ever send is out.
    write_shut: bool,
    /// permessage-deflate, if it was negotiated: the peer's messages
    /// before its close frame may still be compressed.
    #[cfg(feature = "deflate")]
    deflate: Option<DeflateParams>,
}

/// Where our close frame goes in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOrder {
    /// After everything already queued: nothing accepted for sending is
    /// lost.
    AfterData,
    /// Ahead of queued data, which is discarded (a frame partly written is
    /// finished first).
    AheadOfData,
}

/// What a closing session still waits for from the peer.
#[derive(Debug)]
enum Awaiting {
    /// We closed first: input is decoded to find the peer's close frame.
    CloseFrame(Option<Box<Decoder>>),
    /// The input can no longer be trusted (protocol error) or is not
    /// WebSocket (plain HTTP): it is read and discarded until EOF.
    Eof,
    /// The peer's close frame arrived: the connection ends as soon as our
    /// output is written.
    Nothing,
}

/// What a step of input produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A complete data message, for the application.
    Message(Message<'a>),
    /// A complete compressed message: inflate it with [`inflate_message`],
    /// then hand the message to the application (or the error to
    /// [`Session::apply`]).
    #[cfg(feature = "deflate")]
    Compressed {
        /// A text message (else binary).
        text: bool,
        /// The payload as received, still compressed.
        payload: &'a [u8],
    },
    /// Something the session must act on: hand it to [`Session::apply`].
    Control(Control<'a>),
}

/// A control frame or a protocol error, which [`Session::apply`] turns into
/// the reply RFC 6455 asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Control<'a> {
    /// A ping, with its payload for the pong.
    Ping(&'a [u8]),
    /// The peer's close frame, validated.
    Close(CloseFrame<'a>),
    /// The peer broke the protocol or a limit.
    Error(ProtocolError),
}

/// The result of one [`Session::receive`] step.
#[derive(Debug)]
pub struct Received<'a> {
    /// Input bytes used; feed the rest next (while
    /// [`Session::wants_frames`]).
    pub consumed: usize,
    /// What the application must see, if anything.
    pub event: Option<Inbound<'a>>,
}

/// What [`Session::handle_timeout`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Nothing was due.
    Nothing,
    /// Output was queued: a ping, or the idle timeout's close frame.
    Queued,
    /// The connection is over; call [`Session::finish`].
    Expired(Expiry),
}

/// Which deadline ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The upgrade request did not complete in time.
    Handshake,
    /// Nothing arrived within the pong timeout after a ping.
    Pong,
    /// The peer did not finish the closing handshake in time.
    Close,
}

/// What is left to do after [`Session::write_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Output is still queued: the socket took only part of it.
    Pending,
    /// Everything is written; nothing else to do.
    Idle,
    /// Everything we will ever send is written: shut down the write side
    /// (after the transport's own close, such as TLS close_notify) and
    /// keep reading until the peer's close or EOF.
    ShutdownWrite,
    /// The closing handshake is complete and written: call
    /// [`Session::finish`].
    Finished,
}

/// Inflates a compressed message from [`Inbound::Compressed`] with the
/// loop-wide `inflater`: the message, or the protocol error to close with
/// (1009 when it inflates past `max_message_size`, found while inflating;
/// 1007 for corrupt data or, in a text message, invalid UTF-8).
#[cfg(feature = "deflate")]
pub fn inflate_message<'a>(
    inflater: &'a mut Inflater,
    text: bool,
    payload: &[u8],
    max_message_size: usize,
) -> Result<Message<'a>, ProtocolError> {
    inflated_message(inflater.inflate(payload, max_message_size), text)
}

/// The message an inflater's result makes (text validated as UTF-8), or
/// the protocol error to close with: 1009 past the size limit, 1007 for
/// corrupt data or invalid UTF-8. Shared by every inflater the loop uses.
#[cfg(feature = "deflate")]
pub fn inflated_message(
    inflated: Result<&[u8], InflateError>,
    text: bool,
) -> Result<Message<'_>, ProtocolError> {
    let inflated = inflated.map_err(|error| match error {
        InflateError::TooBig => ProtocolError::new(CloseCode::TOO_BIG, "message too big"),
        InflateError::Corrupt => ProtocolError::new(
            CloseCode::INVALID_PAYLOAD,
            "compressed message does not inflate",
        ),
    })?;
    if !text {
        return Ok(Message::Binary(inflated));
    }
    std::str::from_utf8(inflated)
        .map(Message::Text)
        .map_err(|_| {
            ProtocolError::new(
                CloseCode::INVALID_PAYLOAD,
                "text message is not valid UTF-8",
            )
        })
}

impl Session {
    /// A session for a connection accepted at `now`, waiting for its
    /// request head.
    pub fn new(now: Tick, config: &SessionConfig) -> Session {
        Session {
            state: State::Handshaking {
                head: None,
                deadline: now + config.handshake_timeout,
            },
            outbox: Outbox::default(),
            last_seen: now,
            last_message: now,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Handshaking { .. } => Phase::Handshaking,
            State::Open { .. } => Phase::Open,
            State::Closing(_) => Phase::Closing,
            State::Closed => Phase::Closed,
        }
    }

    /// Whether the WebSocket is open: messages may be sent and received.
    #[inline]
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub fn queued(&self) -> usize {
        self.outbox.queued()
    }

    /// The extensions negotiated for this connection.
    pub fn extensions(&self) -> Extensions {
        #[cfg(feature = "deflate")]
        if self.deflate().is_some() {
            return Extensions::PERMESSAGE_DEFLATE;
        }
        Extensions::NONE
    }

    /// permessage-deflate as negotiated for this connection, if it was.
    #[cfg(feature = "deflate")]
    #[inline]
    pub fn deflate(&self) -> Option<DeflateParams> {
        match &self.state {
            State::Open { deflate, .. } => *deflate,
            State::Closing(closing) => closing.deflate,
            _ => None,
        }
    }

    // ---- The handshake --------------------------------------------------

    /// While handshaking, the partial request head kept from earlier reads
    /// (empty if there is none), taken out to be joined with new input.
    /// `None` in any other phase.
    pub fn take_partial_head(&mut self) -> Option<Vec<u8>> {
        match &mut self.state {
            State::Handshaking { head, .. } => {
                Some(head.take().map_or_else(Vec::new, |head| *head))
            }
            _ => None,
        }
    }

    /// Keeps an incomplete request head until more bytes arrive. The
    /// head parser bounds its size (431 past the limit).
    pub fn keep_partial_head(&mut self, partial: Vec<u8>) {
        if let State::Handshaking { head, .. } = &mut self.state {
            *head = Some(Box::new(partial));
        }
    }

    /// The upgrade was accepted with permessage-deflate negotiated as
    /// `params` (its `101` carries the answer): like [`Session::accept`],
    /// and from then on RSV1 marks compressed messages both ways.
    #[cfg(feature = "deflate")]
    pub fn accept_with_deflate(
        &mut self,
        response: &[u8],
        params: DeflateParams,
        now: Tick,
        pool: &mut BufferPool,
    ) {
        self.accept(response, now, pool);
        if let State::Open { deflate, .. } = &mut self.state {
            *deflate = Some(params);
        }
    }

    /// The upgrade was accepted: queues the `101` `response` and opens.
    pub fn accept(&mut self, response: &[u8], now: Tick, pool: &mut BufferPool) {
        if !matches!(self.state, State::Handshaking { .. }) {
            return;
        }
        // Ahead of every lane: a ping that came with the request has its
        // pong queued next, and the pong must not overtake the 101.
        self.outbox.push_first(pool, response);
        self.state = State::Open {
            partial: None,
            ping_sent: None,
            #[cfg(feature = "deflate")]
            deflate: None,
        };
        self.last_seen = now;
        self.last_message = now;
    }

    /// The request is answered over plain HTTP (a refused upgrade, a route,
    /// an error status): queues `response`, then waits for the peer to
    /// hang up, discarding its input, at most the close timeout.
    pub fn refuse(
        &mut self,
        response: &[u8],
        now: Tick,
        config: &SessionConfig,
        pool: &mut BufferPool,
    ) {
        if !matches!(self.state, State::Handshaking { .. }) {
            return;
        }
        self.outbox.push_first(pool, response);
        self.enter_closing(Awaiting::Eof, CloseCode::ABNORMAL, "", now, config);
    }

    // ---- Input ----------------------------------------------------------

    /// Notes that bytes arrived at `now`: they prove the peer alive, so an
    /// outstanding ping counts as answered. Returns whether the next
    /// deadline may now be earlier than the one scheduled (the pong
    /// deadline gave way to the next ping).
    #[inline]
    pub fn bytes_arrived(&mut self, now: Tick) -> bool {
        self.last_seen = now;
        match &mut self.state {
            State::Open { ping_sent, .. } => ping_sent.take().is_some(),
            _ => false,
        }
    }

    /// Whether input is still decoded as frames: open, or closing and
    /// waiting for the peer's close frame. Otherwise input is discarded.
    #[inline]
    pub fn wants_frames(&self) -> bool {
        match &self.state {
            State::Open { .. } => true,
            State::Closing(closing) => matches!(closing.awaiting, Awaiting::CloseFrame(_)),
            _ => false,
        }
    }

    /// The decoder for this session's next input: its own, if it stopped
    /// mid-frame or mid-message, or else the loop-wide `shared` one (left
    /// empty meanwhile). Set to this session's extensions. The decoder is
    /// out of the session while input is decoded, so the application may
    /// touch the session (even close it) between events.
    pub fn lend_decoder(&mut self, shared: &mut Decoder) -> Decoder {
        let mut decoder = match self.decoder_slot().and_then(Option::take) {
            Some(partial) => *partial,
            None => std::mem::take(shared),
        };
        decoder.set_extensions(self.extensions());
        decoder
    }

    /// Takes back the decoder after input. Only an idle decoder may serve
    /// the next connection: one that stopped mid-message stays with this
    /// session, or is dropped if the session wants no more frames (a close
    /// frame arrived between two fragments), so no partial message leaks
    /// into another connection. `shared` gets an idle decoder either way.
    pub fn return_decoder(&mut self, mut decoder: Decoder, shared: &mut Decoder) {
        if decoder.is_idle() {
            decoder.release();
            *shared = decoder;
            return;
        }
        let limits = decoder.limits();
        if let Some(slot) = self.decoder_slot() {
            *slot = Some(Box::new(decoder));
        }
        *shared = Decoder::new(limits);
    }

    fn decoder_slot(&mut self) -> Option<&mut Option<Box<Decoder>>> {
        match &mut self.state {
            State::Open { partial, .. } => Some(partial),
            State::Closing(closing) => match &mut closing.awaiting {
                Awaiting::CloseFrame(partial) => Some(partial),
                _ => None,
            },
            _ => None,
        }
    }

    /// Decodes one step of `input` with `decoder` (from
    /// [`Session::lend_decoder`]). Data messages come back for the
    /// application; control frames and protocol errors come back as a
    /// [`Control`] for [`Session::apply`], which queues the reply (a pong,
    /// the answer to a close, the error's close code). The step between
    /// lets the caller queue first whatever must precede that reply: the
    /// loop's pending broadcast batch, which a close frame must follow.
    ///
    /// Call it while [`Session::wants_frames`] and input remains; every
    /// call with input consumes some or returns an event.
    #[inline]
    pub fn receive<'a>(
        &mut self,
        decoder: &'a mut Decoder,
        input: &'a mut [u8],
        now: Tick,
    ) -> Received<'a> {
        let input_len = input.len();
        let decoded = match decoder.decode(input) {
            Ok(decoded) => decoded,
            // The rest of the input is discarded: after the error is
            // applied the session wants no more frames, and
            // `return_decoder` drops a decoder left mid-message (one that
            // is idle holds nothing of this connection's).
            Err(error) => {
                return Received {
                    consumed: input_len,
                    event: Some(Inbound::Control(Control::Error(error))),
                };
            }
        };
        let open = self.is_open();
        let event = match decoded.event {
            Some(Event::Text(text)) if open => {
                self.last_message = now;
                Some(Inbound::Message(Message::Text(text)))
            }
            Some(Event::Binary(bytes)) if open => {
                self.last_message = now;
                Some(Inbound::Message(Message::Binary(bytes)))
            }
            #[cfg(feature = "deflate")]
            Some(Event::Compressed { text, payload }) if open => {
                self.last_message = now;
                Some(Inbound::Compressed { text, payload })
            }
            Some(Event::Ping(payload)) if open => Some(Inbound::Control(Control::Ping(payload))),
            Some(Event::Close(frame)) => Some(Inbound::Control(Control::Close(frame))),
            // Pongs only prove liveness, already noted when the bytes were
            // read. Data and pings after our close frame are ignored.
            _ => None,
        };
        Received {
            consumed: decoded.consumed,
            event,
        }
    }

    /// Acts on a control frame or protocol error from
    /// [`Session::receive`]: a ping queues its pong (ahead of data); a
    /// close frame is answered after queued data and starts the closing
    /// handshake, or completes ours; an error queues its close code after
    /// queued data and stops decoding. Returns the error when the
    /// application must hear of it (the session was open).
    pub fn apply(
        &mut self,
        control: Control<'_>,
        now: Tick,
        config: &SessionConfig,
        pool: &mut BufferPool,
    ) -> Option<ProtocolError> {
        match control {
            Control::Ping(payload) => {
                if self.is_open() {
                    let mut pong = pool.take(2 + payload.len());
                    encode_frame(&mut pong, OpCode::Pong, payload);
                    self.outbox.push_pong(pool, pong);
                }
                None
            }
            Control::Close(frame) => {
                self.peer_closed(frame.code, frame.reason, now, config, pool);
                None
            }
            Control::Error(error) => {
                let was_open = self.is_open();
                self.fail(&error, now, config, pool);
                was_open.then_some(error)
            }
        }
    }

    // ---- Output ---------------------------------------------------------

    /// Queues `msg` after the data already queued. Returns `false` (and
    /// queues nothing) unless the session is open: nothing is sent after a
    /// close frame.
    #[inline]
    pub fn send(&mut self, pool: &mut BufferPool, msg: Message<'_>) -> bool {
        if !self.is_open() {
            return false;
        }
        self.outbox
            .push_frame_with(pool, encoded_len(msg.len()), |buf| encode_message(buf, msg));
        true
    }

    /// Queues one frame already encoded for this connection (a compressed
    /// message), after the data already queued. Returns `false` unless
    /// open.
    pub fn send_encoded(&mut self, pool: &mut BufferPool, frame: &[u8]) -> bool {
        if !self.is_open() {
            return false;
        }
        self.outbox
            .push_frame_with(pool, frame.len(), |buf| buf.extend_from_slice(frame));
        true
    }

    /// Queues frames encoded once for many recipients (a broadcast), after
    /// the data already queued. Returns `false` unless open.
    pub fn send_shared(&mut self, pool: &mut BufferPool, frames: Rc<Vec<u8>>) -> bool {
        if !self.is_open() {
            return false;
        }
        self.outbox.push_shared(pool, frames);
        true
    }

    /// Writes as much queued output as `out` takes (one `write` or
    /// `writev` per call it makes). Returns the bytes written; `WouldBlock`
    /// is not an error.
    pub fn write_to(&mut self, out: &mut impl Write, pool: &mut BufferPool) -> io::Result<usize> {
        if self.outbox.is_empty() {
            return Ok(0);
        }
        self.outbox.flush(out, pool)
    }

    /// What a write leaves to do (see [`Flushed`]).
    pub fn after_write(&mut self) -> Flushed {
        if !self.outbox.is_empty() {
            return Flushed::Pending;
        }
        match &mut self.state {
            State::Closing(closing) => match closing.awaiting {
                Awaiting::Nothing => Flushed::Finished,
                _ if !closing.write_shut => {
                    closing.write_shut = true;
                    Flushed::ShutdownWrite
                }
                _ => Flushed::Idle,
            },
            _ => Flushed::Idle,
        }
    }

    // ---- Closing --------------------------------------------------------

    /// Starts the closing handshake from our side, only when open: our
    /// close frame goes after queued data ([`CloseOrder::AfterData`], the
    /// peer gets everything sent before) or ahead of it, discarding it
    /// ([`CloseOrder::AheadOfData`], for a failing connection: a limit, a
    /// timeout, a handler panic). Input is still decoded to find the
    /// peer's close frame.
    pub fn close_with(
        &mut self,
        order: CloseOrder,
        code: CloseCode,
        reason: &str,
        now: Tick,
        config: &SessionConfig,
        pool: &mut BufferPool,
    ) {
        let State::Open { partial, .. } = &mut self.state else {
            return;
        };
        let partial = partial.take();
        // A code no endpoint may send (1005, 1006, 1015, out of range)
        // goes out as a close without a code, and is reported as such.
        let (code, reason) = if code.is_sendable() {
            (code, reason)
        } else {
            log::warn!("close code {code} may not be sent: closing without a code");
            (CloseCode::NO_STATUS, "")
        };
        let frame = close_frame(code, reason);
        match order {
            CloseOrder::AfterData => self.queue_after_data(pool, &frame),
            CloseOrder::AheadOfData => self.outbox.push_urgent(pool, frame, true),
        }
        self.enter_closing(Awaiting::CloseFrame(partial), code, reason, now, config);
    }

    /// The peer broke the protocol: after what was already queued (replies
    /// to its valid messages), send the error's close code, stop decoding
    /// its input, and wait for it to hang up.
    fn fail(
        &mut self,
        error: &ProtocolError,
        now: Tick,
        config: &SessionConfig,
        pool: &mut BufferPool,
    ) {
        match &mut self.state {
            State::Open { .. } => {
                self.queue_after_data(pool, &close_frame(error.code, error.reason));
                self.enter_closing(Awaiting::Eof, error.code, error.reason, now, config);
            }
            State::Closing(closing) => closing.awaiting = Awaiting::Eof,
            _ => {}
        }
    }

    /// The peer sent a close frame. When open, it is answered (with its
    /// code, or 1000 for an empty close) after queued data; when we had
    /// closed first, the handshake is complete.
    fn peer_closed(
        &mut self,
        code: CloseCode,
        reason: &str,
        now: Tick,
        config: &SessionConfig,
        pool: &mut BufferPool,
    ) {
        match &mut self.state {
            State::Open { .. } => {
                let echo = if code == CloseCode::NO_STATUS {
                    CloseCode::NORMAL
                } else {
                    code
                };
                self.queue_after_data(pool, &close_frame(echo, ""));
                self.enter_closing(Awaiting::Nothing, code, reason, now, config);
            }
            State::Closing(closing) => closing.awaiting = Awaiting::Nothing,
            _ => {}
        }
    }

    fn enter_closing(
        &mut self,
        awaiting: Awaiting,
        code: CloseCode,
        reason: &str,
        now: Tick,
        config: &SessionConfig,
    ) {
        #[cfg(feature = "deflate")]
        let deflate = self.deflate();
        self.state = State::Closing(Box::new(Closing {
            awaiting,
            deadline: now + config.close_timeout,
            code,
            reason: reason.to_owned(),
            write_shut: false,
            #[cfg(feature = "deflate")]
            deflate,
        }));
    }

    /// Queues one whole frame after the data already queued.
    fn queue_after_data(&mut self, pool: &mut BufferPool, bytes: &[u8]) {
        self.outbox
            .push_frame_with(pool, bytes.len(), |buf| buf.extend_from_slice(bytes));
    }

    /// Ends the session, whatever its phase (a finished handshake, a
    /// deadline, the peer's EOF or a failed socket), and returns what the
    /// application is told: the code and reason of the closing handshake,
    /// or 1006 when it ended without one. `None` if it had already ended,
    /// so a connection is reported exactly once.
    pub fn finish(&mut self) -> Option<(CloseCode, String)> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Closing(closing) => Some((closing.code, closing.reason)),
            State::Closed => None,
            State::Handshaking { .. } | State::Open { .. } => {
                Some((CloseCode::ABNORMAL, String::new()))
            }
        }
    }

    // ---- Time -----------------------------------------------------------

    /// The earliest moment [`Session::handle_timeout`] has something to do.
    pub fn poll_timeout(&self, config: &SessionConfig) -> Option<Tick> {
        match &self.state {
            State::Handshaking { deadline, .. } => Some(*deadline),
            State::Closing(closing) => Some(closing.deadline),
            State::Open { ping_sent, .. } => {
                let heartbeat = config.ping_interval.map(|interval| match ping_sent {
                    Some(sent) => *sent + config.pong_timeout,
                    None => self.last_seen + interval,
                });
                let idle = config.idle_timeout.map(|idle| self.last_message + idle);
                match (heartbeat, idle) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Closed => None,
        }
    }

    /// Acts on the deadlines due at `now`: a ping after the ping interval
    /// of silence, a 1001 close after the idle timeout, and the end of a
    /// connection whose handshake, pong or closing handshake is overdue.
    pub fn handle_timeout(
        &mut self,
        now: Tick,
        config: &SessionConfig,
        pool: &mut BufferPool,
    ) -> Timeout {
        let State::Open { ping_sent, .. } = &mut self.state else {
            return match &self.state {
                State::Handshaking { deadline, .. } if *deadline <= now => {
                    Timeout::Expired(Expiry::Handshake)
                }
                State::Closing(closing) if closing.deadline <= now => {
                    Timeout::Expired(Expiry::Close)
                }
                _ => Timeout::Nothing,
            };
        };
        let mut outcome = Timeout::Nothing;
        match *ping_sent {
            Some(sent) if sent + config.pong_timeout <= now => {
                return Timeout::Expired(Expiry::Pong);
            }
            Some(_) => {}
            None if config
                .ping_interval
                .is_some_and(|interval| self.last_seen + interval <= now) =>
            {
                *ping_sent = Some(now);
                let mut ping = pool.take(2);
                encode_frame(&mut ping, OpCode::Ping, b"");
                self.outbox.push_urgent(pool, ping, false);
                outcome = Timeout::Queued;
            }
            None => {}
        }
        if config
            .idle_timeout
            .is_some_and(|idle| self.last_message + idle <= now)
        {
            let order = CloseOrder::AfterData;
            self.close_with(
                order,
                CloseCode::GOING_AWAY,
                "idle timeout",
                now,
                config,
                pool,
            );
            outcome = Timeout::Queued;
        }
        outcome
    }
}

fn close_frame(code: CloseCode, reason: &str) -> Vec<u8> {
    let payload = close_payload(code, reason);
    let mut frame = Vec::with_capacity(encoded_len(payload.len()));
    encode_frame(&mut frame, OpCode::Close, &payload);
    frame
}
