//! A connection in the slab: its transport, its session, the
//! application's state, and the reactor's bookkeeping; and the ids the
//! application holds for it.

use std::rc::Rc;

use super::transport::Transport;
use crate::session::{Session, SessionConfig, Tick};

/// Identifies one connection for its whole life.
///
/// It is the connection's slab slot plus a generation number unique to this
/// connection, so an id kept after its connection closed never reaches a
/// later connection that reuses the slot: sends to it report
/// [`SendStatus::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) key: usize,
    pub(crate) generation: u64,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}.{}", self.key, self.generation)
    }
}

/// What happened to a message handed to `send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendStatus {
    /// Queued for writing (and usually written before the loop sleeps).
    Queued,
    /// Skipped because the connection's outbound queue is over its cap and
    /// the policy is [`Backpressure::Drop`](crate::Backpressure::Drop).
    Dropped,
    /// The connection's queue was over its cap and the policy closed it.
    ClosedByBackpressure,
    /// No such open connection (it closed, or the id is stale).
    Closed,
}

/// The application's part of an open connection.
#[derive(Debug)]
pub(crate) struct AppSlot<S> {
    pub(crate) state: S,
    pub(crate) topics: Vec<Rc<str>>,
}

/// A connection in the slab. The flags are the reactor's, each an
/// independent fact; the protocol's state is all in `session`.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    pub(crate) transport: Transport,
    pub(crate) generation: u64,
    pub(crate) session: Session,
    /// Present from `on_open` until removal.
    pub(crate) app: Option<AppSlot<S>>,
    /// The deadline of this connection's live timer entry.
    pub(crate) timer_at: Option<Tick>,
    /// Queued for a flush at the end of this loop turn.
    pub(crate) dirty: bool,
    /// Reads stopped because the outbound queue is over its cap.
    pub(crate) read_paused: bool,
    /// A flush left bytes behind; `on_drain` fires when the queue empties.
    pub(crate) congested: bool,
}

impl<S> Connection<S> {
    pub(crate) fn new(
        transport: Transport,
        generation: u64,
        now: Tick,
        config: &SessionConfig,
    ) -> Self {
        Connection {
            transport,
            generation,
            session: Session::new(now, config),
            app: None,
            timer_at: None,
            dirty: false,
            read_paused: false,
            congested: false,
        }
    }

    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.session.is_open()
    }

    /// Outbound bytes not yet on the socket: the session's queue and what
    /// the transport holds. The outbound cap applies to this.
    #[inline]
    pub(crate) fn queued(&self) -> usize {
        self.session.queued() + self.transport.pending_out()
    }
}

#[cfg(test)]
#[test]
fn an_idle_connection_stays_small() {
    use std::mem::size_of;
    // The slab holds one of these per connection, idle or not; growth here
    // is paid 19,000 times on a full server (the idle RSS cell of `make
    // bench`). The transport enum costs nothing over the socket (mio's
    // socket is 4 bytes in release builds, more with debug assertions), and
    // the session is its state, its queue and two ticks.
    // Without the `tls` feature the enum costs nothing over the socket;
    // with it, one pointer (the boxed TLS state) and its tag.
    #[cfg(not(feature = "tls"))]
    assert_eq!(size_of::<Transport>(), size_of::<mio::net::TcpStream>());
    #[cfg(feature = "tls")]
    assert!(size_of::<Transport>() <= 2 * size_of::<usize>());
    assert!(
        size_of::<Session>() <= 56,
        "Session grew to {} bytes",
        size_of::<Session>()
    );
    let rest = size_of::<Connection<()>>() - size_of::<Transport>() - size_of::<Session>();
    assert!(
        rest <= 48,
        "the connection's own fields grew to {rest} bytes"
    );
}
