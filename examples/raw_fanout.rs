//! The physical-limit baseline for broadcast: the same single-threaded,
//! edge-triggered mio loop shape as wsloop, with no handshake and no
//! framing. Every chunk read from a connection is shared (`Rc`, never
//! copied per recipient) into the queue of every *other* connection, and
//! each dirty connection is flushed with one `writev` of up to 64 chunks at
//! the end of the turn. A connection with more than 1 MiB queued is
//! dropped, as wsloop closes it under its default backpressure policy. A
//! one-byte greeting (`+`) goes to every new connection, which tells the
//! client its connection was accepted, as a `101` response does.
//!
//! `wsbench --mode broadcast --raw` drives it: one publisher writes
//! fixed-size messages and the subscribers parse the byte stream back into
//! them (only the publisher writes, so every subscriber's stream is the
//! publisher's, in order).
//!
//! ```text
//! cargo run --release --example raw_fanout -- --listen 127.0.0.1:9102
//! ```
//!
//! It runs until killed and listens on loopback addresses only.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections use their slab keys.
const LISTENER: Token = Token(usize::MAX);
/// Size of the loop-wide read buffer (wsloop's default).
const READ_BUFFER: usize = 64 * 1024;
/// Reads from one connection per turn before others get a turn (as wsloop).
const READS_PER_TURN: usize = 16;
/// Queued bytes above which a connection is dropped (wsloop's default cap).
const MAX_OUTBOUND: usize = 1 << 20;
/// The most chunks handed to one `writev` (as wsloop).
const MAX_IOVECS: usize = 64;

/// One client connection.
struct Conn {
    /// The socket.
    stream: TcpStream,
    /// Shared chunks waiting to be written, oldest first.
    queue: VecDeque<Rc<Vec<u8>>>,
    /// How much of the front chunk is already written.
    offset: usize,
    /// Unwritten bytes in `queue`.
    queued: usize,
    /// Queued for a flush at the end of this turn.
    dirty: bool,
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
    /// Connections whose read budget ran out.
    pending: Vec<usize>,
    /// Reused list of recipients.
    scratch: Vec<usize>,
    /// The byte sent to every new connection, so a client knows it was
    /// accepted (the raw stand-in for the `101` response).
    greeting: Rc<Vec<u8>>,
}

fn main() -> io::Result<()> {
    let listen = parse_listen()?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("raw_fanout listening on {}", listener.local_addr()?);
    let mut state = Loop {
        listener,
        conns: Slab::new(),
        buf: vec![0; READ_BUFFER],
        dirty: Vec::new(),
        pending: Vec::new(),
        scratch: Vec::new(),
        greeting: Rc::new(b"+".to_vec()),
    };
    let mut events = Events::with_capacity(1024);
    loop {
        let timeout = (!state.pending.is_empty()).then_some(std::time::Duration::ZERO);
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
                            queue: VecDeque::from([Rc::clone(&self.greeting)]),
                            offset: 0,
                            queued: self.greeting.len(),
                            dirty: false,
                        });
                        self.mark_dirty(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("raw_fanout: accept failed: {e}");
                    return;
                }
            }
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

    /// Reads until the socket is drained or the budget is spent; each
    /// chunk goes to every other connection.
    fn read(&mut self, key: usize) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.conns.remove(key);
                    return;
                }
                Ok(n) => {
                    let chunk = Rc::new(self.buf[..n].to_vec());
                    self.fan_out(key, &chunk);
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

    /// Shares `chunk` into the queue of every connection but `from`.
    fn fan_out(&mut self, from: usize, chunk: &Rc<Vec<u8>>) {
        let mut keys = std::mem::take(&mut self.scratch);
        keys.extend(self.conns.iter().map(|(k, _)| k).filter(|&k| k != from));
        for &key in &keys {
            let conn = &mut self.conns[key];
            if conn.queued + chunk.len() > MAX_OUTBOUND {
                eprintln!("raw_fanout: dropping #{key}: over {MAX_OUTBOUND} bytes queued");
                self.conns.remove(key);
                continue;
            }
            conn.queued += chunk.len();
            conn.queue.push_back(Rc::clone(chunk));
            self.mark_dirty(key);
        }
        keys.clear();
        self.scratch = keys;
    }

    /// Writes what connection `key` has queued, as far as the socket takes.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        while conn.queued > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in conn.queue.iter().take(MAX_IOVECS).enumerate() {
                let skip = if i == 0 { conn.offset } else { 0 };
                slices[count] = IoSlice::new(&chunk[skip..]);
                count += 1;
            }
            let mut n = match conn.stream.write_vectored(&slices[..count]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.conns.remove(key);
                    return;
                }
            };
            conn.queued -= n;
            while n > 0 {
                let left = conn.queue[0].len() - conn.offset;
                if n < left {
                    conn.offset += n;
                    break;
                }
                n -= left;
                conn.offset = 0;
                conn.queue.pop_front();
            }
        }
    }
}

/// Parses `--listen ADDR` (default 127.0.0.1:9102); only loopback is allowed.
fn parse_listen() -> io::Result<SocketAddr> {
    let mut listen: SocketAddr = "127.0.0.1:9102".parse().expect("valid default");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.split_once('=') {
            Some(("--listen", v)) => v.to_string(),
            _ if arg == "--listen" => args.next().unwrap_or_default(),
            _ => {
                eprintln!("usage: raw_fanout [--listen 127.0.0.1:PORT]");
                std::process::exit(2);
            }
        };
        listen = value.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad address {value}"))
        })?;
    }
    if !listen.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "raw_fanout only listens on loopback addresses",
        ));
    }
    Ok(listen)
}
