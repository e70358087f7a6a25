//! The physical-limit baseline for echo: the same single-threaded,
//! edge-triggered mio loop shape as wsloop (a slab of connections, a
//! loop-wide 64 KiB read buffer, at most 16 reads per connection per turn,
//! one corked write per dirty connection at the end of each turn, reads
//! paused above 1 MiB of unsent output) but with no handshake and no
//! framing: every byte read is written back. The one addition is a
//! one-byte greeting (`+`) sent on accept, which tells the client its
//! connection was accepted, as a `101` response does.
//!
//! `wsbench --raw` drives it with fixed-size messages, so "wsloop / raw
//! loop" ratios isolate what the WebSocket layer costs.
//!
//! With `--heartbeat SECS` it is also the baseline for idle heartbeats:
//! every connection gets a one-byte probe (`?`) once per interval, and a
//! one-byte reply (`!`, which `wsbench --raw --mode connect` sends) is read
//! and not echoed: one write and one read per connection and interval, as
//! a ping and its pong cost wsloop. The probes are spread like wsloop's
//! pings: on a grid of 1% of the interval (at least 32 ms), each tick
//! probing the connections whose turn it is.
//!
//! ```text
//! cargo run --release --example raw_echo -- --listen 127.0.0.1:9101 [--heartbeat 20]
//! ```
//!
//! It runs until killed and listens on loopback addresses only.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections use their slab keys.
const LISTENER: Token = Token(usize::MAX);
/// Size of the loop-wide read buffer (wsloop's default).
const READ_BUFFER: usize = 64 * 1024;
/// Reads from one connection per turn before others get a turn (as wsloop).
const READS_PER_TURN: usize = 16;
/// Unsent bytes above which a connection's reads pause (wsloop's default cap).
const MAX_OUTBOUND: usize = 1 << 20;

/// The byte sent to every new connection, so a client knows it was
/// accepted (the raw stand-in for the `101` response).
const GREETING: u8 = b'+';
/// The heartbeat probe, and the reply that is read but not echoed.
const PROBE: u8 = b'?';
const PROBE_REPLY: u8 = b'!';

/// One client connection.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// Bytes read and not yet written back.
    out: Vec<u8>,
    /// How much of `out` is already written.
    written: usize,
    /// Queued for a flush at the end of this turn.
    dirty: bool,
    /// Reads stopped until `out` drains below half the cap.
    paused: bool,
}

/// The event loop's state.
struct Loop {
    /// The listening socket.
    listener: TcpListener,
    /// Open connections by token.
    conns: Slab<Conn>,
    /// The loop-wide read buffer.
    buf: Vec<u8>,
    /// Connections with output to flush this turn.
    dirty: Vec<usize>,
    /// Connections whose read budget ran out, or whose reads resumed.
    pending: Vec<usize>,
    /// Probing connections, if `--heartbeat` is on.
    heartbeat: Option<Heartbeat>,
}

/// The probe schedule: the interval is cut into `slices` ticks, and at
/// tick `t` the connections with `key % slices == t % slices` are probed,
/// so each gets one probe per interval.
struct Heartbeat {
    tick: std::time::Duration,
    slices: usize,
    next: std::time::Instant,
    count: usize,
}

fn main() -> io::Result<()> {
    let (listen, heartbeat) = parse_args()?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("raw_echo listening on {}", listener.local_addr()?);
    let mut state = Loop {
        listener,
        conns: Slab::new(),
        buf: vec![0; READ_BUFFER],
        dirty: Vec::new(),
        pending: Vec::new(),
        heartbeat: heartbeat.map(|interval| {
            let tick = (interval / 100).max(std::time::Duration::from_millis(32));
            let slices = (interval.as_secs_f64() / tick.as_secs_f64())
                .round()
                .max(1.0) as usize;
            Heartbeat {
                tick,
                slices,
                next: std::time::Instant::now() + tick,
                count: 0,
            }
        }),
    };
    let mut events = Events::with_capacity(1024);
    loop {
        let timeout = if state.pending.is_empty() {
            state
                .heartbeat
                .as_ref()
                .map(|h| h.next.saturating_duration_since(std::time::Instant::now()))
        } else {
            Some(std::time::Duration::ZERO)
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => state.accept(&poll),
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        state.read(key);
                    }
                    if event.is_writable() {
                        state.mark_dirty(key);
                    }
                }
            }
        }
        for key in std::mem::take(&mut state.pending) {
            state.read(key);
        }
        state.probe_due();
        for key in std::mem::take(&mut state.dirty) {
            state.flush(key);
        }
    }
}

impl Loop {
    /// Accepts every waiting connection.
    fn accept(&mut self, poll: &Poll) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if poll
                        .registry()
                        .register(&mut stream, token, interest)
                        .is_ok()
                    {
                        let key = token.0;
                        entry.insert(Conn {
                            stream,
                            out: vec![GREETING],
                            written: 0,
                            dirty: false,
                            paused: false,
                        });
                        self.mark_dirty(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("raw_echo: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Queues the probes of every heartbeat tick that has come.
    fn probe_due(&mut self) {
        let Some(h) = &mut self.heartbeat else {
            return;
        };
        let now = std::time::Instant::now();
        let mut due = Vec::new();
        while h.next <= now {
            let slice = h.count % h.slices;
            due.extend(
                self.conns
                    .iter()
                    .map(|(key, _)| key)
                    .filter(|key| key % h.slices == slice),
            );
            h.count += 1;
            h.next += h.tick;
        }
        for key in due {
            self.conns[key].out.push(PROBE);
            self.mark_dirty(key);
        }
    }

    /// Queues connection `key` for a flush at the end of the turn.
    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Reads until the socket is drained, the budget is spent or the
    /// output cap is reached; everything read is queued to be written back.
    fn read(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.out.len() - conn.written > MAX_OUTBOUND {
                conn.paused = true;
                return;
            }
            match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.conns.remove(key);
                    return;
                }
                Ok(1) if self.heartbeat.is_some() && self.buf[0] == PROBE_REPLY => {
                    // A heartbeat reply: proof of life, nothing to echo.
                    return;
                }
                Ok(n) => {
                    conn.out.extend_from_slice(&self.buf[..n]);
                    self.mark_dirty(key);
                    if n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conns.remove(key);
                    return;
                }
            }
        }
        self.pending.push(key);
    }

    /// Writes what connection `key` has queued, as far as the socket takes.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        while conn.written < conn.out.len() {
            match conn.stream.write(&conn.out[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conns.remove(key);
                    return;
                }
            }
        }
        if conn.written == conn.out.len() {
            conn.out.clear();
            conn.written = 0;
            if conn.out.capacity() > 2 * READ_BUFFER {
                conn.out = Vec::new();
            }
        } else if conn.written > conn.out.len() / 2 {
            conn.out.drain(..conn.written);
            conn.written = 0;
        }
        if conn.paused && conn.out.len() - conn.written <= MAX_OUTBOUND / 2 {
            conn.paused = false;
            self.pending.push(key);
        }
    }
}

/// Parses `--listen ADDR` (default 127.0.0.1:9101; only loopback is
/// allowed) and `--heartbeat SECS` (default: none).
fn parse_args() -> io::Result<(SocketAddr, Option<std::time::Duration>)> {
    let usage = || -> ! {
        eprintln!("usage: raw_echo [--listen 127.0.0.1:PORT] [--heartbeat SECS]");
        std::process::exit(2);
    };
    let mut listen: SocketAddr = "127.0.0.1:9101".parse().expect("valid default");
    let mut heartbeat = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let value = inline.or_else(|| args.next()).unwrap_or_else(|| usage());
        match flag.as_str() {
            "--listen" => {
                listen = value.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {value}"))
                })?;
            }
            "--heartbeat" => match value.parse::<f64>() {
                Ok(secs) if secs > 0.0 && secs <= 3600.0 => {
                    heartbeat = Some(std::time::Duration::from_secs_f64(secs));
                }
                _ => usage(),
            },
            _ => usage(),
        }
    }
    if !listen.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "raw_echo only listens on loopback addresses",
        ));
    }
    Ok((listen, heartbeat))
}
