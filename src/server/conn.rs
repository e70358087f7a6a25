//! One connection: its socket, its phase, its output and its deadlines.

use std::net::SocketAddr;
use std::rc::Rc;

use mio::net::TcpStream;

use super::config::Config;
use super::outbox::Outbox;
use super::timers::Tick;
use crate::protocol::close::CloseCode;
use crate::protocol::message::Decoder;

/// Where a connection is in its life. Each variant holds exactly what that
/// phase needs, so no flag can disagree with another.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for a complete upgrade (or plain HTTP) request. `buf` holds
    /// a partial request head and stays unallocated when the whole head
    /// arrives in one read.
    Handshaking { buf: Vec<u8>, deadline: Tick },
    /// An open WebSocket.
    Open {
        /// Decoder state, kept only while the peer has stopped mid-frame or
        /// mid-message; between messages the loop-wide decoder is used.
        partial: Option<Box<Decoder>>,
        /// When the unanswered ping went out, if one did; cleared by any
        /// bytes from the peer.
        ping_sent: Option<Tick>,
    },
    /// Our close frame (or an HTTP response) is queued or sent. Boxed: it
    /// is transient, and keeping it out of line keeps every connection small.
    Closing(Box<Closing>),
    /// Being removed; `on_close` is running.
    Removing,
}

/// The closing phase: waiting for the peer's close frame or EOF, at most
/// until `deadline`.
#[derive(Debug)]
pub(crate) struct Closing {
    /// Whether input is still parsed for the peer's close frame; after a
    /// protocol error, or for plain HTTP, it is read and discarded.
    pub(crate) parse_input: bool,
    pub(crate) partial: Option<Box<Decoder>>,
    pub(crate) deadline: Tick,
    /// Whether the peer's close frame has arrived.
    pub(crate) peer_closed: bool,
    /// What the application is told in `on_close`.
    pub(crate) code: CloseCode,
    pub(crate) reason: String,
}

impl Phase {
    /// Where the decoder state lives while frames are still wanted.
    pub(crate) fn decoder_slot(&mut self) -> Option<&mut Option<Box<Decoder>>> {
        match self {
            Phase::Open { partial, .. } => Some(partial),
            Phase::Closing(closing) if closing.parse_input => Some(&mut closing.partial),
            _ => None,
        }
    }

    pub(crate) fn wants_frames(&self) -> bool {
        match self {
            Phase::Open { .. } => true,
            Phase::Closing(closing) => closing.parse_input,
            _ => false,
        }
    }
}

/// The application's part of an open connection.
#[derive(Debug)]
pub(crate) struct AppSlot<S> {
    pub(crate) state: S,
    pub(crate) topics: Vec<Rc<str>>,
}

/// A connection in the slab.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    pub(crate) stream: TcpStream,
    pub(crate) generation: u64,
    pub(crate) phase: Phase,
    pub(crate) outbox: Outbox,
    /// Present from `on_open` until removal.
    pub(crate) app: Option<AppSlot<S>>,
    /// When bytes last arrived (heartbeats).
    pub(crate) last_seen: Tick,
    /// When a message last arrived (idle timeout).
    pub(crate) last_message: Tick,
    /// The deadline of this connection's live timer entry.
    pub(crate) timer_at: Option<Tick>,
    /// Queued for a flush at the end of this loop turn.
    pub(crate) dirty: bool,
    /// Reads stopped because the outbound queue is over its cap.
    pub(crate) read_paused: bool,
    /// A flush left bytes behind; `on_drain` fires when the queue empties.
    pub(crate) congested: bool,
    /// Our write side is shut down (everything we will ever send is out).
    pub(crate) write_shut: bool,
}

impl<S> Connection<S> {
    pub(crate) fn new(stream: TcpStream, generation: u64, now: Tick, config: &Config) -> Self {
        Connection {
            stream,
            generation,
            phase: Phase::Handshaking {
                buf: Vec::new(),
                deadline: now + config.handshake_timeout,
            },
            outbox: Outbox::default(),
            app: None,
            last_seen: now,
            last_message: now,
            timer_at: None,
            dirty: false,
            read_paused: false,
            congested: false,
            write_shut: false,
        }
    }

    /// The peer's address; asked of the socket rather than stored, to keep
    /// connections small. `None` once the socket is disconnected.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open { .. })
    }

    /// The earliest moment something must happen to this connection.
    pub(crate) fn next_deadline(&self, config: &Config) -> Option<Tick> {
        match &self.phase {
            Phase::Handshaking { deadline, .. } => Some(*deadline),
            Phase::Closing(closing) => Some(closing.deadline),
            Phase::Open { ping_sent, .. } => {
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
            Phase::Removing => None,
        }
    }
}
