//! The reactor: one mio `Poll`, the listener, a waker for other threads, and
//! a slab of connections, all driven from one thread.
//!
//! Token layout: connection tokens are slab keys; the listener and the
//! waker take the two highest tokens; the application's own sources use the
//! range from [`Ctx::user_token`].

mod config;
mod conn;
mod core;
mod ctx;
mod engine;
mod handle;
mod metrics;
mod outbox;
mod timers;
mod topics;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

pub use self::config::{Backpressure, Config};
pub use self::ctx::{ConnCtx, Ctx};
pub use self::handle::Handle;
pub use self::metrics::Metrics;

use self::conn::{Connection, Phase};
use self::core::{Core, Recipients};
use self::ctx::USER_TOKEN_BASE;
use self::engine::Engine;
use self::handle::Command;
use self::timers::TimerKind;
use crate::handler::Handler;
use crate::protocol::close::CloseCode;
use crate::protocol::message::Decoder;

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
    engine: Engine<H>,
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
            engine: Engine {
                handler,
                decoder: Decoder::new(config.decoder_limits()),
                core: Core::new(config, registry),
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
        &self.engine.handler
    }

    /// The application handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.engine.handler
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.engine.core.metrics
    }

    /// The loop's mio registry, for the application's own sources (use
    /// tokens from [`Ctx::user_token`]).
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Whether a shutdown has completed: every connection is gone and the
    /// listener is closed.
    pub fn is_stopped(&self) -> bool {
        self.shutting_down && self.engine.core.conns.is_empty()
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
        self.engine.core.now = self.engine.core.clock.now();
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                WAKER => self.run_commands(),
                Token(t) if t >= USER_TOKEN_BASE => {
                    let source = t - USER_TOKEN_BASE;
                    self.engine
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
        let core = &self.engine.core;
        if !core.pending_reads.is_empty()
            || self.accept_pending
            || self.shutdown_wanted() && !self.shutting_down
        {
            return Some(Duration::ZERO);
        }
        let until_deadline = core
            .timers
            .next_deadline()
            .map(|at| core.clock.now().until(at));
        match (timeout, until_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn connection_event(&mut self, key: usize, event: &mio::event::Event) {
        if !self.engine.core.conns.contains(key) {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(key, event.is_read_closed() || event.is_error());
        }
        if event.is_writable() && self.engine.core.conns.contains(key) {
            self.engine.core.mark_dirty(key);
        }
    }

    /// Reads from connection `key` until the socket is drained, its read
    /// budget for this turn is spent, or it must pause (backpressure).
    fn read(&mut self, key: usize, hang_up: bool) {
        for _ in 0..READS_PER_TURN {
            let core = &mut self.engine.core;
            let Some(conn) = core.conns.get_mut(key) else {
                return;
            };
            if matches!(conn.phase, Phase::Removing) {
                return;
            }
            if conn.outbox.queued() > core.config.max_outbound_buffer {
                // Stop reading from a peer that does not read its replies:
                // TCP flow control slows it down until its queue drains.
                conn.read_paused = true;
                return;
            }
            let n = match conn.stream.read(&mut self.read_buf) {
                Ok(0) => return self.engine.end_of_input(key),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("{} read failed: {e}", core.id_of(key));
                    return self.engine.remove(key);
                }
            };
            // Any bytes prove the peer alive: an outstanding ping is answered.
            conn.last_seen = core.now;
            if let Phase::Open { ping_sent, .. } = &mut conn.phase
                && ping_sent.take().is_some()
            {
                // The timer entry is for the pong deadline; the next ping
                // may be due sooner (an interval shorter than the pong
                // timeout). Otherwise this adds nothing.
                core.schedule(key);
            }
            core.metrics.bytes_in += n as u64;
            self.engine.ingest(key, &mut self.read_buf[..n]);
            // A short read drained the socket; a new edge will come with
            // new data. Unless the peer hung up: then read on to the EOF.
            if n < self.read_buf.len() && !hang_up {
                return;
            }
        }
        self.engine.core.pending_reads.push(key);
    }

    fn resume_reads(&mut self) {
        // Swap in the spare list (no allocation per turn); reads may queue
        // more keys for the next turn meanwhile.
        let mut keys = std::mem::replace(
            &mut self.engine.core.pending_reads,
            std::mem::take(&mut self.spare_keys),
        );
        for &key in &keys {
            let still_reading = self
                .engine
                .core
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
                    let core = &mut self.engine.core;
                    core.timers
                        .schedule(core.now + ACCEPT_BACKOFF, TimerKind::ResumeAccept);
                    return;
                }
                Err(e) => log::debug!("accept failed: {e}"),
            }
        }
        // Budget spent: more may be waiting, and no new edge will say so.
        self.accept_pending = true;
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        let core = &mut self.engine.core;
        core.metrics.accepted += 1;
        if core.conns.len() >= core.config.max_connections {
            log::warn!(
                "connection limit ({}) reached: refusing {peer}",
                core.config.max_connections
            );
            core.metrics.handshake_failures += 1;
            let response =
                crate::Response::new(503, "server is at its connection limit\n").to_bytes();
            let _ = stream.write(&response);
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = core.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = core.registry.register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("could not register {peer}: {e}");
            return;
        }
        let generation = core.next_generation;
        core.next_generation += 1;
        entry.insert(Connection::new(stream, generation, core.now, &core.config));
        core.schedule(key);
        log::debug!("accepted {peer} as #{key}.{generation}");
    }

    fn run_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            let core = &mut self.engine.core;
            match command {
                Command::Send(id, frame) => {
                    if let Some(key) = core.open_key(id) {
                        core.fan_out_encoded(frame, Recipients::One(key));
                    }
                }
                Command::Broadcast(frame) => {
                    core.fan_out_encoded(frame, Recipients::All);
                }
                Command::Publish(topic, frame) => {
                    core.fan_out_encoded(frame, Recipients::Topic(&topic));
                }
                Command::Close(id, code, reason) => {
                    if let Some(key) = core.open_key(id) {
                        core.close_gracefully(key, code, &reason);
                    }
                }
                Command::Post(value) => self.engine.call_loop(|h, ctx| h.on_post(ctx, value)),
            }
        }
    }

    fn run_timers(&mut self) {
        let now = self.engine.core.now;
        while let Some((at, kind)) = self.engine.core.timers.pop_due(now) {
            match kind {
                TimerKind::Conn { key, generation } => {
                    let key = key as usize;
                    let core = &mut self.engine.core;
                    let Some(conn) = core.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.generation as u32 != generation || conn.timer_at != Some(at) {
                        continue; // stale: closed, or rescheduled earlier
                    }
                    conn.timer_at = None;
                    let generation = conn.generation;
                    self.engine.check_deadlines(key);
                    let core = &mut self.engine.core;
                    if core
                        .conns
                        .get(key)
                        .is_some_and(|c| c.generation == generation)
                    {
                        core.schedule(key);
                    }
                }
                TimerKind::ResumeAccept => {
                    self.accept_paused = false;
                    self.accept();
                }
                TimerKind::User(timer) => self.engine.call_loop(|h, ctx| h.on_timer(ctx, timer)),
            }
        }
    }

    fn shutdown_wanted(&self) -> bool {
        self.handle.shutdown.load(Ordering::SeqCst) || self.engine.core.shutdown_requested
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
            self.engine.core.conns.len()
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.engine.core.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.engine.core.conns[key].phase {
                Phase::Handshaking { .. } => self.engine.remove(key),
                Phase::Open { .. } => self.engine.core.close_gracefully(
                    key,
                    CloseCode::GOING_AWAY,
                    "server shutting down",
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
            self.engine.core.seal();
            if self.engine.core.dirty.is_empty() {
                break;
            }
            let mut keys = std::mem::replace(
                &mut self.engine.core.dirty,
                std::mem::take(&mut self.spare_keys),
            );
            for &key in &keys {
                self.engine.flush(key);
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
