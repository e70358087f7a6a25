//! Fuzzes the whole connection state machine: handshake, frames, handler
//! callbacks, topics, closing, timers, through real sockets.
//!
//! Two `wsloop::Server`s run for the life of the process, each on its own
//! thread on 127.0.0.1: one with the default `Config`, one with tiny limits
//! and fast timers (so 1009s, fragment limits, the 1 KiB read buffer,
//! heartbeats and idle timeouts are reached by small inputs). For each
//! input the target opens a TCP connection, writes a prefix chosen by the
//! first byte (a valid upgrade request, a partial one, a plain HTTP
//! request, or nothing) followed by the rest of the input, in pieces of
//! fuzzed sizes, half-closes, reads what comes back for a short while and
//! closes. Then it checks that the server still completes a fresh
//! handshake and echoes a message.
//!
//! A panic on a server thread, an error from `poll_once`, a server that
//! stops answering, or a single allocation over 1 MiB (a frame's announced
//! length being allocated) is a crash.
//!
//! Input layout: byte 0: bit 0 picks the server, bits 1-3 the prefix;
//! byte 1 seeds the piece sizes; the rest is written after the prefix.
//! The handler interprets the first byte of each message as a command
//! (see `FuzzHandler::on_message`), so the fuzzer can reach broadcasts,
//! topics, timers and server-initiated closes.
#![no_main]

mod largest_alloc;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use largest_alloc::{LARGEST, TRACKING};
use libfuzzer_sys::fuzz_target;
use wsloop::{
    Accept, Backpressure, CloseCode, Config, ConnCtx, Ctx, Handler, Message, ProtocolError,
    Request, Response, Server,
};

const ALLOCATION_BOUND: usize = 1 << 20;

/// The application: echoes, and treats a message's first byte as a command.
struct FuzzHandler;

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Handler for FuzzHandler {
    type State = u64;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<u64>, Response> {
        let _ = (
            req.query(),
            req.query_param("room"),
            req.origin(),
            req.peer_addr(),
        );
        let _ = req.headers().count();
        match req.path() {
            "/deny" => Err(Response::new(403, "denied\n").header("X-Reason", "fuzz")),
            path => {
                let mut accept = Accept::new(path.len() as u64);
                if let Some(protocol) = req.subprotocols().next() {
                    accept = accept.protocol(protocol);
                }
                if let Some(value) = req.header("X-Echo") {
                    accept = accept.header("X-Echo", value);
                }
                Ok(accept)
            }
        }
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, u64>) {
        conn.subscribe("all");
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, u64>, msg: Message<'_>) {
        *conn.state_mut() += 1;
        let bytes = msg.as_bytes();
        let (command, rest) = match bytes.split_first() {
            Some((c, rest)) => (*c, rest),
            None => (0, bytes),
        };
        match command {
            b'!' => {
                let code = match rest {
                    [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                    _ => 1000,
                };
                let reason = text_of(rest.get(2..).unwrap_or_default());
                conn.close(CloseCode(code), &reason);
            }
            b'#' => {
                conn.subscribe(&text_of(rest));
            }
            b'-' => {
                conn.unsubscribe(&text_of(rest));
            }
            b'@' => {
                let topic = text_of(rest.split(|&b| b == b' ').next().unwrap_or_default());
                conn.publish_others(&topic, msg);
            }
            b'=' => {
                let topic = text_of(rest);
                let _ = (conn.subscribers(&topic), conn.subscriber_count(&topic));
                conn.publish(&topic, msg);
            }
            b'*' => {
                conn.broadcast_others(msg);
            }
            b'T' => {
                let after = Duration::from_millis(u64::from(rest.first().copied().unwrap_or(0)));
                let timer = *conn.state();
                conn.set_timer(after, timer);
            }
            b'$' => {
                let id = conn.id();
                let _ = (
                    conn.topics(),
                    conn.buffered_amount(),
                    conn.peer_addr(),
                    conn.connection_count(),
                );
                let _ = (conn.metrics().to_prometheus(), conn.connections());
                conn.send_to(id, msg);
            }
            b'+' => {
                for _ in 0..4 {
                    conn.send(msg);
                }
            }
            b'X' => {
                let id = conn.id();
                conn.close_conn(id, CloseCode::POLICY, &text_of(rest));
                conn.send(msg);
            }
            _ => {
                conn.send(msg);
            }
        }
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, u64>, code: CloseCode, reason: &str) {
        let _ = (conn.state(), code, reason.len());
        conn.send(Message::Text("after close"));
    }

    fn on_error(&mut self, conn: &mut ConnCtx<'_, u64>, error: &ProtocolError) {
        let _ = error.to_string();
        conn.send(Message::Text("after error"));
    }

    fn on_drain(&mut self, conn: &mut ConnCtx<'_, u64>) {
        let _ = conn.buffered_amount();
    }

    fn on_http(&mut self, _ctx: &mut Ctx<'_, u64>, req: &Request<'_>) -> Option<Response> {
        (req.path() == "/custom").then(|| Response::new(200, "custom\n").content_type("text/plain"))
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, u64>, timer: u64) {
        ctx.publish("all", Message::Binary(&timer.to_be_bytes()));
    }
}

fn tight_config() -> Config {
    let mut config = Config::default();
    config.max_message_size = 4096;
    config.max_frame_size = 2048;
    config.max_fragments = 16;
    config.max_header_bytes = 1024;
    config.max_headers = 16;
    config.max_outbound_buffer = 16 * 1024;
    config.backpressure = Backpressure::Drop;
    config.handshake_timeout = Duration::from_secs(2);
    config.close_timeout = Duration::from_millis(500);
    config.ping_interval = Some(Duration::from_millis(50));
    config.pong_timeout = Duration::from_millis(200);
    config.idle_timeout = Some(Duration::from_millis(300));
    config.read_buffer_size = 1024;
    config
}

fn start(config: Config) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("wsloop-server".into())
        .spawn(move || {
            let addr = "127.0.0.1:0".parse().unwrap();
            let mut server = Server::bind(addr, config, FuzzHandler).expect("bind");
            tx.send(server.local_addr()).unwrap();
            loop {
                server.poll_once(None).expect("poll_once failed");
            }
        })
        .expect("spawn the server thread");
    rx.recv().expect("the server thread started")
}

fn servers() -> &'static [SocketAddr; 2] {
    static SERVERS: OnceLock<[SocketAddr; 2]> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // The fuzz binary has libFuzzer's main, not Rust's, so SIGPIPE is
        // not ignored as in a normal Rust program. A server writing to a
        // reset peer must get EPIPE, not a fatal signal.
        // SAFETY: setting a signal disposition to SIG_IGN before any other
        // thread of ours exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let addrs = [start(Config::default()), start(tight_config())];
        TRACKING.store(true, Ordering::Relaxed);
        addrs
    })
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade(target: &str, extra: &str, end: bool) -> Vec<u8> {
    let mut head = format!(
        "GET {target} HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}"
    );
    if end {
        head.push_str("\r\n");
    }
    head.into_bytes()
}

fn prefix(selector: u8) -> Vec<u8> {
    match selector & 7 {
        0 => Vec::new(),
        2 => upgrade(
            "/chat?room=a%20b",
            "Sec-WebSocket-Protocol: chat, superchat\r\nOrigin: http://o\r\n",
            true,
        ),
        3 => upgrade("/", "X-Echo: ", false),
        4 => b"GET /metrics HTTP/1.1\r\nHost: fuzz\r\n\r\n".to_vec(),
        5 => upgrade("/deny", "", true),
        _ => upgrade("/", "", true),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let mut tries = 0;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => return stream,
            // Out of ephemeral ports for a moment: wait for TIME_WAITs.
            Err(e) if tries < 500 && e.kind() != ErrorKind::ConnectionRefused => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot connect to the server at {addr}: {e}"),
        }
    }
}

/// Reads until EOF, an error, or `limit` has passed; returns what came.
fn read_all(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    while Instant::now() < deadline && got.len() < (1 << 20) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    got
}

/// Piece sizes for the writes, from a small xorshift seeded by the input.
struct Pieces(u32, usize);

impl Pieces {
    fn next(&mut self) -> usize {
        if self.1 == 0 {
            return usize::MAX;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        1 + self.0 as usize % self.1
    }
}

/// A fresh client must still get its `101` and an echo of a message.
fn check_alive(addr: SocketAddr) {
    let mut stream = connect(addr);
    let _ = stream.set_nodelay(true);
    let mut request = upgrade("/", "", true);
    // A masked text frame "alive" with the all-zero key.
    request.extend_from_slice(&[0x81, 0x85, 0, 0, 0, 0]);
    request.extend_from_slice(b"alive");
    stream.write_all(&request).expect("write to the server");
    let echo = [0x81, 5, b'a', b'l', b'i', b'v', b'e'];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    while !got.windows(echo.len()).any(|w| w == echo) {
        assert!(
            Instant::now() < deadline,
            "server at {addr} stopped answering: got {:?}",
            String::from_utf8_lossy(&got)
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "server at {addr} hung up on a valid client: got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("server at {addr} failed a valid client: {e}"),
        }
    }
    assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    // A clean close: our close frame, then EOF.
    let _ = stream.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]);
    let _ = stream.shutdown(Shutdown::Write);
    read_all(&mut stream, Duration::from_secs(1));
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let addr = servers()[usize::from(data[0] & 1)];
    LARGEST.store(0, Ordering::Relaxed);

    let mut input = prefix(data[0] >> 1);
    input.extend_from_slice(&data[2..]);
    let mut pieces = Pieces(
        u32::from(data[1]).wrapping_mul(2_654_435_761) | 1,
        usize::from(data[1] % 64),
    );

    let mut stream = connect(addr);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut at = 0;
    while at < input.len() {
        let end = input.len().min(at.saturating_add(pieces.next()));
        if stream.write_all(&input[at..end]).is_err() {
            break; // the server closed on us: fine
        }
        at = end;
    }
    let _ = stream.shutdown(Shutdown::Write);
    read_all(&mut stream, Duration::from_millis(500));
    drop(stream);

    check_alive(addr);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= ALLOCATION_BOUND,
        "a single allocation of {largest} bytes"
    );
});
