//! Helpers for the realtime, heartbeat, backpressure, shutdown, playground
//! and embed tests: a server on an ephemeral port in its own thread, probes
//! that run a closure on the loop's thread, a raw-socket WebSocket client,
//! tungstenite helpers and a minimal HTTP client. Every read has a timeout,
//! every wait a deadline.
#![allow(dead_code)]

use std::any::Any;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wsloop::{Config, Ctx, Handle, Handler, Server};

/// The longest a single socket read may block.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for an expected event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The masking key of every raw client frame.
pub const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

// ------------------------------------------------------------------ server

/// A server running `run()` in a background thread. Dropping it shuts the
/// server down and waits (bounded) for the thread.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: Handle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// Binds a server on 127.0.0.1:0 in a new thread, with the handler built
/// there by `make` (servers are not `Send`).
pub fn spawn<H, F>(config: Config, make: F) -> Running
where
    H: Handler + 'static,
    F: FnOnce() -> H + Send + 'static,
{
    spawn_with(config, make, |_| {})
}

/// Like [`spawn`], with `setup` run on the bound server before `run()`.
pub fn spawn_with<H, F, G>(config: Config, make: F, setup: G) -> Running
where
    H: Handler + 'static,
    F: FnOnce() -> H + Send + 'static,
    G: FnOnce(&mut Server<H>) + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), config, make())?;
        setup(&mut server);
        ready_tx
            .send((server.local_addr(), server.handle()))
            .expect("test alive");
        server.run()
    });
    let (addr, handle) = ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server thread did not start");
    Running {
        addr,
        handle,
        thread: Some(thread),
    }
}

impl Running {
    /// Waits up to `within` for `run()` to return; returns how long it
    /// took, or `None` if it is still running.
    pub fn join_within(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        let thread = self.thread.as_ref()?;
        while !thread.is_finished() {
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let result = self.thread.take().unwrap().join();
        assert!(
            matches!(result, Ok(Ok(()))),
            "run() failed: {:?}",
            result.map(|r| r.map_err(|e| e.to_string()))
        );
        Some(start.elapsed())
    }

    /// Whether `run()` already returned.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            let _ = self.join_within(Duration::from_secs(3));
        }
    }
}

/// A closure to run on the loop's thread, delivered through
/// [`Handle::post`]. Handlers forward posts to [`run_probe`].
pub struct Probe<S>(ProbeFn<S>);

type ProbeFn<S> = Box<dyn FnOnce(&mut Ctx<'_, S>) + Send>;

/// Runs `f` on the loop's thread (the handler must pass posts to
/// [`run_probe`]) and returns its result.
pub fn probe<S: 'static, T: Send + 'static>(
    handle: &Handle,
    f: impl FnOnce(&mut Ctx<'_, S>) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let posted = handle.post(Probe::<S>(Box::new(move |ctx| {
        let _ = tx.send(f(ctx));
    })));
    assert!(posted, "Handle::post failed: the server stopped");
    rx.recv_timeout(EVENT_TIMEOUT)
        .expect("the loop did not run the probe")
}

/// For `Handler::on_post`: runs a [`Probe`], or gives the value back.
pub fn run_probe<S: 'static>(
    ctx: &mut Ctx<'_, S>,
    value: Box<dyn Any + Send>,
) -> Option<Box<dyn Any + Send>> {
    match value.downcast::<Probe<S>>() {
        Ok(probe) => {
            (probe.0)(ctx);
            None
        }
        Err(value) => Some(value),
    }
}

/// The next value on `rx` matching `pred` within `timeout`.
pub fn recv_matching<E, T>(
    rx: &Receiver<E>,
    timeout: Duration,
    mut pred: impl FnMut(&E) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => {
                if let Some(found) = pred(&event) {
                    return Some(found);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ----------------------------------------------------------------- raw TCP

/// A TCP connection with read and write timeouts and Nagle disabled.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid upgrade request for `target` (path and query).
pub fn upgrade_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads until the peer closes (EOF or reset) or `within` passes. Returns
/// the bytes read and whether the end was seen.
pub fn read_to_end_within(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (`None` if it has no payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 0x8, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Parses one unmasked server frame from the front of `buf`, removing it.
pub fn parse_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    assert_eq!(buf[0] & 0x70, 0, "server frames must not set RSV bits");
    let (len, at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < at + len {
        return None;
    }
    let frame = Frame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0F,
        payload: buf[at..at + len].to_vec(),
    };
    buf.drain(..at + len);
    Some(frame)
}

/// A raw WebSocket client: its own frame writer and parser, so a test
/// controls exactly what is sent (or not sent, or not read).
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl RawWs {
    /// Connects and upgrades on `target`.
    pub fn connect(addr: SocketAddr, target: &str) -> RawWs {
        let mut stream = connect(addr);
        stream
            .write_all(upgrade_request(target).as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut chunk).expect("reading the 101 response");
            assert!(n > 0, "EOF during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "upgrade refused: {head:?}"
        );
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&client_frame(opcode, payload))
            .expect("write to the server");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes());
    }

    pub fn send_close(&mut self, code: u16) {
        self.send_frame(0x8, &code.to_be_bytes());
    }

    /// The next frame, or an error on timeout/EOF.
    pub fn try_read_frame(&mut self) -> io::Result<Frame> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = parse_frame(&mut self.buf) {
                return Ok(frame);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("EOF with {} buffered bytes", self.buf.len()),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame; panics on timeout or EOF.
    pub fn read_frame(&mut self) -> Frame {
        self.try_read_frame().expect("reading a server frame")
    }

    /// The next frame that is not a ping.
    pub fn read_non_ping(&mut self) -> Frame {
        loop {
            let frame = self.read_frame();
            if frame.opcode != 0x9 {
                return frame;
            }
        }
    }

    /// The next data frame as text (pings skipped).
    pub fn read_text(&mut self) -> String {
        let frame = self.read_non_ping();
        assert_eq!(frame.opcode, 0x1, "expected text, got {frame:?}");
        String::from_utf8(frame.payload).expect("UTF-8 text")
    }

    /// Whether the server closed the TCP connection within `within`
    /// (after any frames still buffered, which are discarded).
    pub fn eof_within(&mut self, within: Duration) -> bool {
        read_to_end_within(&mut self.stream, within).1
    }
}

// ------------------------------------------------------------- tungstenite

pub type Client = tungstenite::WebSocket<TcpStream>;

/// A tungstenite client on `target` (path and query).
pub fn ws_connect(addr: SocketAddr, target: &str) -> Client {
    let stream = connect(addr);
    let url = format!("ws://{addr}{target}");
    let (ws, response) = tungstenite::client::client(url, stream)
        .unwrap_or_else(|e| panic!("handshake on {target} failed: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// Sets the read timeout of a tungstenite client's socket.
pub fn set_timeout(ws: &mut Client, timeout: Duration) {
    ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
}

/// The next data or close message (pings and pongs skipped); panics on
/// timeout or error.
pub fn ws_read(ws: &mut Client) -> tungstenite::Message {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => continue,
            Ok(other) => return other,
            Err(e) => panic!("tungstenite read failed: {e}"),
        }
    }
}

/// The next data message as text.
pub fn ws_read_text(ws: &mut Client) -> String {
    match ws_read(ws) {
        tungstenite::Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message.
pub fn ws_send(ws: &mut Client, text: &str) {
    ws.send(tungstenite::Message::text(text))
        .expect("tungstenite send");
}

/// Whether a read times out within `wait` (nothing arrives), restoring the
/// normal timeout after.
pub fn ws_silent_for(ws: &mut Client, wait: Duration) -> Result<(), String> {
    set_timeout(ws, wait);
    let result = loop {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => continue,
            Ok(msg) => break Err(format!("unexpected message {msg:?}")),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break Ok(());
            }
            Err(e) => break Err(format!("unexpected error {e}")),
        }
    };
    set_timeout(ws, READ_TIMEOUT);
    result
}

/// Reads until a close frame arrives and returns its code; the client
/// answers it (tungstenite does so automatically).
pub fn ws_expect_close(ws: &mut Client) -> u16 {
    match ws_read(ws) {
        tungstenite::Message::Close(Some(frame)) => {
            let code = u16::from(frame.code);
            // Flush tungstenite's automatic close reply.
            let _ = ws.flush();
            code
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Closes politely and reads until the server ends the connection.
pub fn ws_close(mut ws: Client) {
    let _ = ws.close(None);
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        if ws.read().is_err() {
            break;
        }
    }
}

// -------------------------------------------------------------------- HTTP

/// An HTTP response read to EOF.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a fresh connection; reads the response until the server
/// closes the connection (or the `Content-Length` body is complete).
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let mut stream = connect(addr);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse_http(&buf) {
            return response;
        }
        assert!(Instant::now() < deadline, "incomplete HTTP response");
        match stream.read(&mut chunk) {
            Ok(0) => return parse_http(&buf).expect("EOF before a complete response"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the HTTP response: {e}"),
        }
    }
}

fn parse_http(buf: &[u8]) -> Option<HttpResponse> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))?
        .1
        .parse()
        .ok()?;
    if buf.len() < head_end + length {
        return None;
    }
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned(),
    })
}
