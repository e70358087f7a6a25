//! The reactor: one mio `Poll`, the listener, a waker for other threads, and
//! a slab of connections, all driven from one thread. It moves bytes
//! between transports and sessions and tells sessions the time; what the
//! bytes and the time mean is the sessions' business
//! ([`crate::session`]).
//!
//! Modules, in the order they depend on each other (imports point down):
//! `mod.rs` (this reactor) → `dispatch` (calls into the application) →
//! `handler` → `ctx` → `state` (the slab, topics, fan-out) → `conn`,
//! `transport`, `timers`, `topics`, `metrics`, `config` → the session and
//! the codec.
//!
//! Token layout: connection tokens are slab keys; the listener and the
//! waker take the two highest tokens; the application's own sources use the
//! range from [`Ctx::user_token`].

#[cfg(feature = "deflate")]
mod compression;
mod config;
mod conn;
mod ctx;
mod dispatch;
mod handle;
mod handler;
mod metrics;
mod state;
mod timers;
#[cfg(feature = "tls")]
mod tls_stream;
mod topics;
mod transport;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

#[cfg(feature = "deflate")]
pub use self::compression::DeflateConfig;
pub use self::config::{Backpressure, Config};
pub use self::conn::{ConnId, SendStatus};
pub use self::ctx::{ConnCtx, Ctx};
pub use self::handle::Handle;
pub use self::handler::{Accept, Handler, Response};
pub use self::metrics::Metrics;

use self::conn::Connection;
use self::ctx::USER_TOKEN_BASE;
use self::dispatch::Dispatch;
use self::handle::Command;
use self::state::{LoopState, Recipients};
use self::timers::TimerKind;
use self::transport::Input;
use crate::protocol::close::CloseCode;
use crate::protocol::message::Decoder;
use crate::session::{CloseOrder, Phase};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Reads from one connection per loop turn before others get a turn.
const READS_PER_TURN: usize = 16;
/// Connections accepted per loop turn before other work gets a turn.
const ACCEPTS_PER_TURN: usize = 256;
/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A WebSocket server: a listener and its event loop, single-threaded.
///
/// Start it in one call with [`Server::run`], or drive it yourself with
/// [`Server::poll_once`] from your own loop.
///
/// ```no_run
/// use wsloop::{Accept, Config, ConnCtx, Handler, Message, Request, Response, Server};
///
/// struct Echo;
/// impl Handler for Echo {
///     type State = ();
///     fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
///         Ok(Accept::new(()))
///     }
///     fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
///         conn.send(msg);
///     }
/// }
///
/// Server::bind("127.0.0.1:9001".parse().unwrap(), Config::default(), Echo)?.run()
/// # ;Ok::<(), std::io::Error>(())
/// ```
pub struct Server<H: Handler> {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    dispatch: Dispatch<H>,
    read_buf: Vec<u8>,
    commands: Receiver<Command>,
    handle: Handle,
    accept_paused: bool,
    accept_pending: bool,
    shutting_down: bool,
    /// The other half of the double-buffered key lists (`dirty`,
    /// `pending_reads`), so walking them allocates nothing.
    spare_keys: Vec<usize>,
}

impl<H: Handler> Server<H> {
    /// Binds `addr` and prepares the loop. Nothing runs until
    /// [`Server::run`] or [`Server::poll_once`].
    pub fn bind(addr: SocketAddr, config: Config, handler: H) -> io::Result<Server<H>> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (sender, commands) = mpsc::channel();
        let registry = poll.registry().try_clone()?;
        let read_buf = vec![0; config.read_buffer_size.max(1024)];
        Ok(Server {
            poll,
            events: Events::with_capacity(1024),
            listener: Some(listener),
            local_addr,
            dispatch: Dispatch {
                handler,
                decoder: Decoder::new(config.decoder_limits()),
                state: LoopState::new(config, registry),
            },
            read_buf,
            commands,
            handle: Handle {
                commands: sender,
                waker,
                shutdown: Arc::new(AtomicBool::new(false)),
            },
            accept_paused: false,
            accept_pending: false,
            shutting_down: false,
            spare_keys: Vec::new(),
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The application handler.
    pub fn handler(&self) -> &H {
        &self.dispatch.handler
    }

    /// The application handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.dispatch.handler
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.dispatch.state.metrics
    }

    /// The loop's mio registry, for the application's own sources (use
    /// tokens from [`Ctx::user_token`]).
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Whether a shutdown has completed: every connection is gone and the
    /// listener is closed.
    pub fn is_stopped(&self) -> bool {
        self.shutting_down && self.dispatch.state.conns.is_empty()
    }

    /// Runs the loop until a graceful shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        while !self.is_stopped() {
            self.poll_once(None)?;
        }
        Ok(())
    }

    /// Runs one loop turn: waits for events up to `timeout` (or the next
    /// deadline, whichever is sooner; `None` waits for either), handles
    /// them, fires due deadlines and flushes output.
    pub fn poll_once(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let wait = self.next_wait(timeout);
        match self.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.dispatch.state.now = self.dispatch.state.clock.now();
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                WAKER => self.run_commands(),
                Token(t) if t >= USER_TOKEN_BASE => {
                    let source = t - USER_TOKEN_BASE;
                    self.dispatch
                        .call_loop(|h, ctx| h.on_source_event(ctx, source, event));
                }
                Token(key) => self.connection_event(key, event),
            }
        }
        self.events = events;
        if self.accept_pending {
            self.accept();
        }
        self.resume_reads();
        self.run_timers();
        self.check_shutdown();
        self.flush_dirty();
        Ok(())
    }

    fn next_wait(&self, timeout: Option<Duration>) -> Option<Duration> {
        let state = &self.dispatch.state;
        if !state.pending_reads.is_empty()
            || self.accept_pending
            || self.shutdown_wanted() && !self.shutting_down
        {
            return Some(Duration::ZERO);
        }
        let until_deadline = state
            .timers
            .next_deadline()
            .map(|at| state.clock.now().until(at));
        match (timeout, until_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn connection_event(&mut self, key: usize, event: &mio::event::Event) {
        if !self.dispatch.state.conns.contains(key) {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(key, event.is_read_closed() || event.is_error());
        }
        if event.is_writable() && self.dispatch.state.conns.contains(key) {
            self.dispatch.state.mark_dirty(key);
        }
    }

    /// Reads from connection `key` until the socket is drained, its read
    /// budget for this turn is spent, or it must pause (backpressure).
    fn read(&mut self, key: usize, hang_up: bool) {
        for _ in 0..READS_PER_TURN {
            let state = &mut self.dispatch.state;
            let Some(conn) = state.conns.get_mut(key) else {
                return;
            };
            if conn.queued() > state.config.max_outbound_buffer {
                // Stop reading from a peer that does not read its replies:
                // TCP flow control slows it down until its queue drains.
                conn.read_paused = true;
                return;
            }
            let input = conn.transport.read(&mut self.read_buf);
            let handshaking = conn.transport.is_handshaking();
            let has_output = conn.transport.has_output();
            if has_output {
                // A TLS handshake flight or alert to send, whatever the
                // read returned.
                state.mark_dirty(key);
            }
            let (n, drained) = match input {
                Ok(Input::Data { len, drained }) => (len, drained),
                Ok(Input::Eof) if handshaking => {
                    // A FIN before the TLS handshake finished (a truncated
                    // ClientHello, a client that rejected the certificate
                    // without an alert): a failed handshake, and nothing
                    // of a session to flush.
                    log::debug!(
                        "TLS handshake from {:?} ended by the peer",
                        state.conns[key].transport.peer_addr()
                    );
                    state.metrics.handshake_failures += 1;
                    state.metrics.tls_handshake_failures += 1;
                    return self.dispatch.remove(key);
                }
                Ok(Input::Eof) => return self.dispatch.end_of_input(key),
                Ok(Input::WouldBlock) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if handshaking {
                        log::debug!(
                            "TLS handshake from {:?} failed: {e}",
                            state.conns[key].transport.peer_addr()
                        );
                        state.metrics.handshake_failures += 1;
                        state.metrics.tls_handshake_failures += 1;
                    } else {
                        log::debug!("{} read failed: {e}", state.id_of(key));
                    }
                    // The alert, if any, is already written.
                    return self.dispatch.remove(key);
                }
            };
            if state.conns[key].session.bytes_arrived(state.now) {
                // The timer entry was for the pong deadline; the next ping
                // may be due sooner (an interval shorter than the pong
                // timeout).
                state.schedule(key);
            }
            state.metrics.bytes_in += n as u64;
            self.dispatch.ingest(key, &mut self.read_buf[..n]);
            // A drained socket sends a new edge with new data. Unless the
            // peer hung up: then read on to the EOF.
            if drained && !hang_up {
                return;
            }
        }
        self.dispatch.state.pending_reads.push(key);
    }

    fn resume_reads(&mut self) {
        // Swap in the spare list (no allocation per turn); reads may queue
        // more keys for the next turn meanwhile.
        let mut keys = std::mem::replace(
            &mut self.dispatch.state.pending_reads,
            std::mem::take(&mut self.spare_keys),
        );
        for &key in &keys {
            let still_reading = self
                .dispatch
                .state
                .conns
                .get(key)
                .is_some_and(|c| !c.read_paused);
            if still_reading {
                self.read(key, true);
            }
        }
        keys.clear();
        self.spare_keys = keys;
    }

    fn accept(&mut self) {
        self.accept_pending = false;
        if self.accept_paused {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    // The connection stays in the backlog; retrying at once
                    // would spin. Back off and try again.
                    log::warn!("accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused = true;
                    let state = &mut self.dispatch.state;
                    state
                        .timers
                        .schedule(state.now + ACCEPT_BACKOFF, TimerKind::ResumeAccept);
                    return;
                }
                Err(e) => log::debug!("accept failed: {e}"),
            }
        }
        // Budget spent: more may be waiting, and no new edge will say so.
        self.accept_pending = true;
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        let state = &mut self.dispatch.state;
        state.metrics.accepted += 1;
        if state.conns.len() >= state.config.max_connections {
            log::warn!(
                "connection limit ({}) reached: refusing {peer}",
                state.config.max_connections
            );
            state.metrics.handshake_failures += 1;
            if !state.serves_tls() {
                // (A TLS client could not read a plain answer.)
                let response = Response::new(503, "server is at its connection limit\n").to_bytes();
                let _ = stream.write(&response);
            }
            return;
        }
        let _ = stream.set_nodelay(true);
        let mut transport = match state.new_transport(stream) {
            Ok(transport) => transport,
            Err(e) => {
                log::warn!("could not set up {peer}: {e}");
                return;
            }
        };
        let entry = state.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = state.registry.register(
            transport.source(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("could not register {peer}: {e}");
            return;
        }
        let generation = state.next_generation;
        state.next_generation += 1;
        entry.insert(Connection::new(
            transport,
            generation,
            state.now,
            &state.session_config,
        ));
        state.schedule(key);
        log::debug!("accepted {peer} as #{key}.{generation}");
    }

    fn run_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            let state = &mut self.dispatch.state;
            match command {
                Command::Send(id, frame) => {
                    if let Some(key) = state.open_key(id) {
                        state.fan_out_encoded(frame, Recipients::One(key));
                    }
                }
                Command::Broadcast(frame) => {
                    state.fan_out_encoded(frame, Recipients::All);
                }
                Command::Publish(topic, frame) => {
                    state.fan_out_encoded(frame, Recipients::Topic(&topic));
                }
                Command::Close(id, code, reason) => {
                    if let Some(key) = state.open_key(id) {
                        state.close(key, code, &reason, CloseOrder::AfterData);
                    }
                }
                Command::Post(value) => self.dispatch.call_loop(|h, ctx| h.on_post(ctx, value)),
                #[cfg(feature = "tls")]
                Command::ReloadTls(tls) => state.reload_tls(tls),
            }
        }
    }

    fn run_timers(&mut self) {
        let now = self.dispatch.state.now;
        while let Some((at, kind)) = self.dispatch.state.timers.pop_due(now) {
            match kind {
                TimerKind::Conn { key, generation } => {
                    let key = key as usize;
                    let state = &mut self.dispatch.state;
                    let Some(conn) = state.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.generation as u32 != generation || conn.timer_at != Some(at) {
                        continue; // stale: closed, or rescheduled earlier
                    }
                    conn.timer_at = None;
                    let generation = conn.generation;
                    self.dispatch.check_deadlines(key);
                    let state = &mut self.dispatch.state;
                    if state
                        .conns
                        .get(key)
                        .is_some_and(|c| c.generation == generation)
                    {
                        state.schedule(key);
                    }
                }
                TimerKind::ResumeAccept => {
                    self.accept_paused = false;
                    self.accept();
                }
                TimerKind::User(timer) => self.dispatch.call_loop(|h, ctx| h.on_timer(ctx, timer)),
            }
        }
    }

    fn shutdown_wanted(&self) -> bool {
        self.handle.shutdown.load(Ordering::SeqCst) || self.dispatch.state.shutdown_requested
    }

    fn check_shutdown(&mut self) {
        if self.shutting_down || !self.shutdown_wanted() {
            return;
        }
        // Whatever other threads sent before asking for the shutdown is
        // queued ahead of the close frames.
        self.run_commands();
        self.shutting_down = true;
        log::info!(
            "shutting down: closing {} connections",
            self.dispatch.state.conns.len()
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.dispatch.state.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.dispatch.state.conns[key].session.phase() {
                Phase::Handshaking => self.dispatch.remove(key),
                Phase::Open => self.dispatch.state.close(
                    key,
                    CloseCode::GOING_AWAY,
                    "server shutting down",
                    CloseOrder::AfterData,
                ),
                _ => {}
            }
        }
    }

    fn flush_dirty(&mut self) {
        // Flushing may remove connections and call back into the
        // application, which may broadcast or dirty more connections: loop
        // until quiet. Pending broadcast batches are queued first.
        loop {
            self.dispatch.state.seal();
            if self.dispatch.state.dirty.is_empty() {
                break;
            }
            let mut keys = std::mem::replace(
                &mut self.dispatch.state.dirty,
                std::mem::take(&mut self.spare_keys),
            );
            for &key in &keys {
                self.dispatch.flush(key);
            }
            keys.clear();
            self.spare_keys = keys;
        }
    }
}

/// Whether an accept error means the process or system is out of
/// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}
