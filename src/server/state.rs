//! The loop's state apart from the application and the poller: the slab of
//! connections, topics, timers, buffers and counters, with every operation
//! that does not call back into the application. Sessions decide what
//! happens to a connection; this module routes messages to them and keeps
//! the reactor's bookkeeping (dirty list, deadlines, the outbound cap).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
#[cfg(feature = "tls")]
use std::sync::Arc;

use mio::Registry;
use mio::net::TcpStream;
use slab::Slab;

#[cfg(feature = "deflate")]
use super::compression::{Compression, Variants};
use super::config::{Backpressure, Config};
use super::conn::{ConnId, Connection, SendStatus};
use super::metrics::Metrics;
use super::timers::{CONN_DEADLINE_GRID, Clock, Tick, TimerKind, Timers, heartbeat_grid};
#[cfg(feature = "tls")]
use super::tls_stream::TlsStream;
use super::topics::Topics;
use super::transport::Transport;
use crate::protocol::close::CloseCode;
use crate::protocol::frame::encoded_len;
use crate::protocol::message::{Message, encode_message};
use crate::session::outbox::BufferPool;
use crate::session::{CloseOrder, SessionConfig};

pub(crate) struct LoopState<S> {
    pub(crate) config: Config,
    /// What every session follows, derived from `config` once.
    pub(crate) session_config: SessionConfig,
    pub(crate) conns: Slab<Connection<S>>,
    pub(crate) next_generation: u64,
    pub(crate) topics: Topics,
    pub(crate) timers: Timers,
    /// The deadline grid of open connections, in milliseconds (see
    /// [`heartbeat_grid`]).
    open_grid: u64,
    pub(crate) pool: BufferPool,
    /// Connections with output to flush at the end of this turn.
    pub(crate) dirty: Vec<usize>,
    /// Connections to read from again without waiting for an event: their
    /// read budget ran out, or their reads resumed after backpressure.
    pub(crate) pending_reads: Vec<usize>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Clock,
    /// The time at the start of this loop turn.
    pub(crate) now: Tick,
    pub(crate) shutdown_requested: bool,
    /// Reused list of recipients for fan-out.
    scratch: Vec<usize>,
    /// Broadcast frames not yet queued (see [`LoopState::seal`]).
    pending: Option<PendingFanOut>,
    /// The client address of each open connection that a trusted proxy
    /// forwarded ([`Config::trusted_proxies`]), by slab key. Kept beside the
    /// slab rather than in it, so connections without a proxy stay small.
    pub(crate) forwarded_peers: HashMap<usize, SocketAddr>,
    /// permessage-deflate's loop-wide state, when [`Config::deflate`] is set.
    #[cfg(feature = "deflate")]
    pub(crate) compression: Option<Box<Compression>>,
}

/// Who a broadcast batch goes to.
#[derive(Debug, PartialEq, Eq)]
enum FanOutTarget {
    All,
    Topic(String),
}

/// Consecutive broadcast frames to the same recipients, encoded back to
/// back, waiting to be queued as one shared buffer.
#[derive(Debug)]
struct PendingFanOut {
    target: FanOutTarget,
    except: Option<usize>,
    exempt: Option<usize>,
    frames: Vec<u8>,
    messages: usize,
}

impl<S> LoopState<S> {
    pub(crate) fn new(config: Config, registry: Registry) -> LoopState<S> {
        let expected_connections = config.max_connections.min(1 << 20);
        LoopState {
            session_config: config.session_config(),
            // Reserved up front: untouched pages cost no memory, and the slab
            // never doubles (and copies) itself under a connection storm.
            conns: Slab::with_capacity(expected_connections),
            next_generation: 1,
            topics: Topics::default(),
            timers: Timers::default(),
            open_grid: heartbeat_grid(config.ping_interval, config.idle_timeout),
            pool: BufferPool::default(),
            dirty: Vec::new(),
            pending_reads: Vec::new(),
            registry,
            metrics: Metrics::default(),
            clock: Clock::new(),
            now: Clock::new().now(),
            shutdown_requested: false,
            scratch: Vec::new(),
            pending: None,
            forwarded_peers: HashMap::new(),
            #[cfg(feature = "deflate")]
            compression: config.deflate.map(|c| Box::new(Compression::new(c))),
            config,
        }
    }

    /// Whether new connections speak TLS.
    #[inline]
    pub(crate) fn serves_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.config.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// The transport for a newly accepted socket: TLS when configured.
    pub(crate) fn new_transport(&self, stream: TcpStream) -> io::Result<Transport> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            let stream = TlsStream::new(stream, Arc::clone(tls.server_config()))?;
            return Ok(Transport::Tls(Box::new(stream)));
        }
        Ok(Transport::Plain(stream))
    }

    /// Swaps the TLS configuration that new connections start with.
    #[cfg(feature = "tls")]
    pub(crate) fn reload_tls(&mut self, tls: crate::tls::TlsConfig) {
        if self.config.tls.is_none() {
            log::warn!("TLS reload ignored: this server was started without TLS");
            return;
        }
        log::info!("TLS configuration reloaded: new handshakes use it");
        self.config.tls = Some(tls);
    }

    pub(crate) fn id_of(&self, key: usize) -> ConnId {
        ConnId {
            key,
            generation: self.conns[key].generation,
        }
    }

    /// The slab key of `id` if that connection is still the one in the slot.
    pub(crate) fn key_of(&self, id: ConnId) -> Option<usize> {
        self.conns
            .get(id.key)
            .filter(|c| c.generation == id.generation)
            .map(|_| id.key)
    }

    /// The slab key of `id` if it names an open connection.
    pub(crate) fn open_key(&self, id: ConnId) -> Option<usize> {
        self.key_of(id).filter(|&k| self.conns[k].is_open())
    }

    pub(crate) fn mark_dirty(&mut self, key: usize) {
        queue_flush(&mut self.conns[key], key, &mut self.dirty);
    }

    /// Makes sure a timer entry exists no later than the connection's
    /// earliest deadline.
    pub(crate) fn schedule(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Some(due) = conn.session.poll_timeout(&self.session_config) else {
            return;
        };
        let grid = if conn.is_open() {
            self.open_grid
        } else {
            CONN_DEADLINE_GRID
        };
        let due = due.round_up(grid);
        if conn.timer_at.is_some_and(|at| at <= due) {
            return;
        }
        conn.timer_at = Some(due);
        let generation = conn.generation;
        self.timers.schedule(due, TimerKind::conn(key, generation));
    }

    /// Whether `len` more bytes may join `queued` ones under the outbound
    /// cap. An empty queue always takes a message, however large.
    #[inline]
    fn within_cap(&self, queued: usize, len: usize, exempt: bool) -> bool {
        exempt || queued == 0 || queued + len <= self.config.max_outbound_buffer
    }

    /// Applies the outbound cap before queueing `len` more bytes. `exempt`
    /// is true for a connection's replies to itself: those are always
    /// queued, and its reads pause instead.
    fn admit(&mut self, key: usize, len: usize, exempt: bool) -> Result<(), SendStatus> {
        let queued = self.conns[key].queued();
        if self.within_cap(queued, len, exempt) {
            return Ok(());
        }
        self.metrics.dropped_backpressure += 1;
        match self.config.backpressure {
            Backpressure::Drop => Err(SendStatus::Dropped),
            Backpressure::Close(code) => {
                log::debug!(
                    "{} over its outbound cap ({queued} bytes queued): closing",
                    self.id_of(key)
                );
                self.close(
                    key,
                    code,
                    "outbound queue over its cap",
                    CloseOrder::AheadOfData,
                );
                Err(SendStatus::ClosedByBackpressure)
            }
        }
    }

    /// Queues a message for one open connection.
    pub(crate) fn send_message(
        &mut self,
        key: usize,
        msg: Message<'_>,
        exempt: bool,
    ) -> SendStatus {
        self.seal();
        #[cfg(feature = "deflate")]
        if let Some(params) = self.conns[key].session.deflate()
            && let Some(compression) = self.compression.as_mut()
        {
            let len = compression.frame_for(msg, params).len();
            return self.send_frame(key, len, exempt);
        }
        let len = encoded_len(msg.len());
        // One slab lookup for the common case; `admit` only when the
        // outbound cap may apply.
        if !self.within_cap(self.conns[key].queued(), len, exempt)
            && let Err(status) = self.admit(key, len, exempt)
        {
            return status;
        }
        let conn = &mut self.conns[key];
        if !conn.session.send(&mut self.pool, msg) {
            return SendStatus::Closed;
        }
        queue_flush(conn, key, &mut self.dirty);
        self.metrics.messages_out += 1;
        SendStatus::Queued
    }

    /// Queues the frame [`Compression::frame_for`] just built (`len`
    /// bytes) for `key`, as [`LoopState::send_message`] queues a message.
    #[cfg(feature = "deflate")]
    fn send_frame(&mut self, key: usize, len: usize, exempt: bool) -> SendStatus {
        if !self.within_cap(self.conns[key].queued(), len, exempt)
            && let Err(status) = self.admit(key, len, exempt)
        {
            return status;
        }
        let LoopState {
            conns,
            pool,
            compression,
            dirty,
            metrics,
            ..
        } = self;
        let frame = compression.as_ref().expect("deflate is on").last_frame();
        let conn = &mut conns[key];
        if !conn.session.send_encoded(pool, frame) {
            return SendStatus::Closed;
        }
        queue_flush(conn, key, dirty);
        metrics.messages_out += 1;
        SendStatus::Queued
    }

    /// Queues one shared buffer of `messages` frames for every open
    /// connection in `scratch` but `except`; returns how many took it.
    /// Recipients that negotiated permessage-deflate share its compressed
    /// variant, built once per window size on first use.
    /// `exempt` is the connection on whose behalf this runs (never dropped
    /// by the cap).
    fn fan_out(
        &mut self,
        frames: Rc<Vec<u8>>,
        messages: usize,
        except: Option<usize>,
        exempt: Option<usize>,
    ) -> usize {
        let mut keys = std::mem::take(&mut self.scratch);
        let mut delivered = 0;
        #[cfg(feature = "deflate")]
        let mut variants = Variants::default();
        for &key in &keys {
            if Some(key) == except || !self.conns.get(key).is_some_and(Connection::is_open) {
                continue;
            }
            #[cfg(feature = "deflate")]
            let frames = match (self.conns[key].session.deflate(), self.compression.as_mut()) {
                (Some(params), Some(compression)) => {
                    variants.for_params(compression, &frames, params)
                }
                _ => frames.clone(),
            };
            if self.admit(key, frames.len(), Some(key) == exempt).is_err() {
                // `admit` counted one drop; the batch held `messages`.
                self.metrics.dropped_backpressure += messages as u64 - 1;
                continue;
            }
            self.conns[key]
                .session
                .send_shared(&mut self.pool, frames.clone());
            self.metrics.messages_out += messages as u64;
            self.mark_dirty(key);
            delivered += 1;
        }
        keys.clear();
        self.scratch = keys;
        delivered
    }

    /// Fans `msg` out to every open connection (but `except`); returns how
    /// many connections it is addressed to.
    pub(crate) fn broadcast(
        &mut self,
        msg: Message<'_>,
        except: Option<usize>,
        exempt: Option<usize>,
    ) -> usize {
        let addressed = self.metrics.open as usize
            - usize::from(
                except.is_some_and(|k| self.conns.get(k).is_some_and(Connection::is_open)),
            );
        self.batch(FanOutTarget::All, msg, except, exempt);
        addressed
    }

    /// Fans `msg` out to the members of `topic` (but `except`); returns how
    /// many connections it is addressed to.
    pub(crate) fn publish(
        &mut self,
        topic: &str,
        msg: Message<'_>,
        except: Option<usize>,
        exempt: Option<usize>,
    ) -> usize {
        let members = self.topics.count(topic);
        if members == 0 {
            return 0;
        }
        let addressed =
            members - usize::from(except.is_some_and(|k| self.topics.contains(topic, k)));
        self.batch(FanOutTarget::Topic(topic.into()), msg, except, exempt);
        addressed
    }

    /// Adds a broadcast frame to the pending batch, or starts a new batch
    /// when the recipients differ from the pending one's.
    ///
    /// Consecutive fan-outs to the same recipients (a publisher's burst to
    /// one room, read in one go) are encoded back to back into one shared
    /// buffer: each recipient then takes one queue entry and one iovec per
    /// batch instead of one per message. The batch is queued ("sealed")
    /// before anything else touches an outbox, a phase or a membership, so
    /// every recipient still sees all its messages in the order sent.
    fn batch(
        &mut self,
        target: FanOutTarget,
        msg: Message<'_>,
        except: Option<usize>,
        exempt: Option<usize>,
    ) {
        let same = self
            .pending
            .as_ref()
            .is_some_and(|p| p.target == target && p.except == except && p.exempt == exempt);
        if !same {
            self.seal();
            self.pending = Some(PendingFanOut {
                target,
                except,
                exempt,
                frames: Vec::with_capacity(encoded_len(msg.len())),
                messages: 0,
            });
        }
        let pending = self.pending.as_mut().expect("a batch is pending");
        encode_message(&mut pending.frames, msg);
        pending.messages += 1;
    }

    /// Queues the pending broadcast batch, if any, for its recipients.
    #[inline]
    pub(crate) fn seal(&mut self) {
        // Most calls (one per send) find no batch: keep that test inlined
        // at the call sites and the work out of line.
        if self.pending.is_some() {
            self.seal_pending();
        }
    }

    fn seal_pending(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match &pending.target {
            FanOutTarget::All => self.scratch.extend(self.conns.iter().map(|(k, _)| k)),
            FanOutTarget::Topic(topic) => self.scratch.extend(self.topics.members(topic)),
        }
        self.fan_out(
            Rc::new(pending.frames),
            pending.messages,
            pending.except,
            pending.exempt,
        );
    }

    /// Queues an already encoded frame built on another thread.
    pub(crate) fn fan_out_encoded(&mut self, frame: Vec<u8>, recipients: Recipients<'_>) -> usize {
        self.seal();
        match recipients {
            Recipients::All => self.scratch.extend(self.conns.iter().map(|(k, _)| k)),
            Recipients::Topic(topic) => self.scratch.extend(self.topics.members(topic)),
            Recipients::One(key) => self.scratch.push(key),
        }
        self.fan_out(Rc::new(frame), 1, None, None)
    }

    pub(crate) fn subscribe(&mut self, key: usize, topic: &str) -> bool {
        self.seal();
        let Some(app) = self.conns[key].app.as_mut() else {
            return false;
        };
        match self.topics.subscribe(topic, key) {
            Some(name) => {
                app.topics.push(name);
                true
            }
            None => false,
        }
    }

    pub(crate) fn unsubscribe(&mut self, key: usize, topic: &str) -> bool {
        self.seal();
        let Some(app) = self.conns[key].app.as_mut() else {
            return false;
        };
        app.topics.retain(|t| &**t != topic);
        self.topics.unsubscribe(topic, key)
    }

    /// Leaves every topic (the connection is going away).
    pub(crate) fn leave_all_topics(&mut self, key: usize) {
        self.seal();
        let topics = self.conns[key]
            .app
            .as_mut()
            .map(|app| std::mem::take(&mut app.topics))
            .unwrap_or_default();
        for topic in topics {
            self.topics.unsubscribe(&topic, key);
        }
    }

    /// Starts the closing handshake from our side: after queued data (the
    /// peer gets everything sent before, then the close frame) or, for a
    /// failing connection (a limit, a timeout, a handler panic), ahead of
    /// it, discarding it.
    pub(crate) fn close(&mut self, key: usize, code: CloseCode, reason: &str, order: CloseOrder) {
        self.seal();
        let session = &mut self.conns[key].session;
        session.close_with(
            order,
            code,
            reason,
            self.now,
            &self.session_config,
            &mut self.pool,
        );
        self.mark_dirty(key);
        self.schedule(key);
    }
}

/// Puts connection `key` on the list flushed at the end of the turn, once.
#[inline]
fn queue_flush<S>(conn: &mut Connection<S>, key: usize, dirty: &mut Vec<usize>) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
}

/// Who a frame from another thread goes to.
pub(crate) enum Recipients<'a> {
    All,
    Topic(&'a str),
    One(usize),
}
