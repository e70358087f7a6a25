//! The client side of the integration tests: raw TCP and HTTP helpers, a
//! raw WebSocket client that writes exactly the frames a test asks for and
//! parses what the server sends, and tungstenite helpers (an independent
//! client). Every socket read has a timeout, so no test can hang.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The longest any single socket read may block.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for an expected event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The masking key of every raw client frame.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The RFC 6455 sample key and its accept value.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------- raw TCP

/// A TCP connection with a read timeout and Nagle disabled.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid upgrade request for `path` with the RFC sample key, plus `extra`
/// header lines (each without CRLF).
pub fn upgrade_request(path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes that followed the response (WebSocket frames after a 101).
    pub rest: Vec<u8>,
}

/// The values of the headers called `name` (case-insensitively), in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP response: head, then a `Content-Length` body (none for
/// 101). Panics on timeout or a premature EOF.
pub fn read_http_response(stream: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).expect("reading the HTTP response");
        assert!(
            n > 0,
            "EOF before a complete response head; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .expect("response head is UTF-8")
        .to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line has a colon");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let length = if status == 101 {
        0
    } else {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
            .map(|(_, v)| v.parse::<usize>().expect("Content-Length"))
            .expect("a non-101 response has a Content-Length")
    };
    while rest.len() < length {
        let n = stream.read(&mut chunk).expect("reading the response body");
        assert!(n > 0, "EOF inside the response body");
        rest.extend_from_slice(&chunk[..n]);
    }
    let body = rest.drain(..length).collect();
    HttpResponse {
        status,
        headers,
        body,
        rest,
    }
}

/// Sends `request` on a fresh connection and reads the response.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> (HttpResponse, TcpStream) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let response = read_http_response(&mut stream);
    (response, stream)
}

/// Asserts that the peer closed its side: the next read returns 0 (after
/// any bytes in `leftover`, which must be empty).
pub fn assert_eof(stream: &mut TcpStream) {
    let mut byte = [0u8; 64];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} more bytes: {:02x?}", &byte[..n]),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// Asserts nothing arrives on `stream` within `wait` (a timeout, not EOF).
pub fn assert_silent(stream: &mut TcpStream, wait: Duration) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 64];
    let result = stream.read(&mut byte);
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    match result {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("expected silence, got EOF"),
        Ok(n) => panic!("expected silence, got {:02x?}", &byte[..n]),
        Err(e) => panic!("expected silence, got {e}"),
    }
}

/// Writes small valid frames (empty masked pongs) until the socket reports
/// that the server's end is gone (RST after a full close). Returns how long
/// that took, or `None` if it was still there after `within`.
pub fn wait_fully_closed(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let probe = client_frame(true, 0, 0xA, &[]);
    while start.elapsed() < within {
        if stream.write_all(&probe).is_err() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
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

/// `GET path` on a fresh connection, and its response.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    http_exchange(addr, request.as_bytes()).0
}

// ----------------------------------------------------------------- frames

/// One masked client frame: FIN, RSV bits (0-7), opcode and payload,
/// masked with [`MASK`].
pub fn client_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(fin, rsv, opcode, payload.len() as u64, Some(MASK));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Just a frame header, optionally with a masking key.
pub fn frame_header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0F)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A close frame payload: code then reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame (`None` for an empty payload).
    pub fn close_code(&self) -> Option<(u16, String)> {
        assert_eq!(self.opcode, 0x8, "not a close frame: {self:?}");
        if self.payload.is_empty() {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((
            code,
            String::from_utf8(self.payload[2..].to_vec()).expect("close reason is UTF-8"),
        ))
    }
}

/// Parses one complete server frame from the front of `buf`, removing it;
/// `None` while it is incomplete. Masked frames are unmasked (and marked).
pub fn parse_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    let b = &*buf;
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
        126 | 127 => return None,
        n => (u64::from(n), 2),
    };
    let key = if masked {
        if b.len() < at + 4 {
            return None;
        }
        at += 4;
        Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
    } else {
        None
    };
    let end = at + len as usize;
    if b.len() < end {
        return None;
    }
    let mut payload = b[at..end].to_vec();
    if let Some(key) = key {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }
    let frame = Frame {
        fin: b[0] & 0x80 != 0,
        rsv: (b[0] >> 4) & 7,
        opcode: b[0] & 0x0F,
        masked,
        payload,
    };
    buf.drain(..end);
    Some(frame)
}

/// The text of a frame that must be a final text frame.
fn text_of(frame: Frame) -> String {
    assert_eq!(
        (frame.fin, frame.opcode),
        (true, 0x1),
        "expected a text frame: {frame:?}"
    );
    String::from_utf8(frame.payload).expect("server text is UTF-8")
}

/// A raw client connection after a successful handshake: writes masked
/// frames and parses what the server sends.
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl RawWs {
    /// Connects and performs the opening handshake on `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut stream = connect(addr);
        stream
            .write_all(upgrade_request(path, &[]).as_bytes())
            .unwrap();
        let response = read_http_response(&mut stream);
        assert_eq!(response.status, 101, "upgrade refused: {response:?}");
        assert_eq!(response.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
        RawWs {
            stream,
            buf: response.rest,
        }
    }

    /// Wraps a stream whose handshake is done, with bytes already read.
    pub fn from_parts(stream: TcpStream, buf: Vec<u8>) -> RawWs {
        RawWs { stream, buf }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&client_frame(fin, 0, opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(true, 0x1, text.as_bytes());
    }

    pub fn send_close(&mut self, code: u16, reason: &str) {
        self.send(true, 0x8, &close_payload(code, reason));
    }

    /// Reads bytes into the buffer; `Ok(false)` on EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next frame; `Err` on timeout, EOF or a socket error.
    pub fn try_read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = parse_frame(&mut self.buf) {
                return Ok(frame);
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("EOF with {} bytes of a partial frame", self.buf.len()),
                ));
            }
        }
    }

    /// The next frame; panics on timeout or EOF. Server frames must be
    /// unmasked and have no RSV bits.
    pub fn read_frame(&mut self) -> Frame {
        let frame = self
            .try_read_frame()
            .expect("reading a frame from the server");
        assert!(!frame.masked, "server frames must not be masked: {frame:?}");
        assert_eq!(
            frame.rsv, 0,
            "server frames must not set RSV bits: {frame:?}"
        );
        frame
    }

    /// The next frame that is not a ping (heartbeats may come any time).
    pub fn read_non_ping(&mut self) -> Frame {
        loop {
            let frame = self.read_frame();
            if frame.opcode != 0x9 {
                return frame;
            }
        }
    }

    /// Reads a frame and checks it is a final text frame (a ping fails:
    /// the tests that use this run without heartbeats).
    pub fn read_text(&mut self) -> String {
        let frame = self.read_frame();
        text_of(frame)
    }

    /// Like [`RawWs::read_text`], skipping pings first (for tests with
    /// heartbeats on).
    pub fn read_text_skipping_pings(&mut self) -> String {
        let frame = self.read_non_ping();
        text_of(frame)
    }

    /// Reads a close frame and returns its code and reason.
    pub fn read_close(&mut self) -> (u16, String) {
        let frame = self.read_frame();
        assert_eq!(frame.opcode, 0x8, "expected a close frame: {frame:?}");
        assert!(frame.fin, "control frames are never fragmented");
        frame.close_code().expect("close frame carries a code")
    }

    /// Asserts the server closed its side with no more bytes.
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unread bytes before EOF: {:02x?}",
            self.buf
        );
        assert_eof(&mut self.stream);
    }

    /// Expects a close frame with `code`, then EOF.
    pub fn expect_close_then_eof(&mut self, code: u16) -> String {
        let (got, reason) = self.read_close();
        assert_eq!(got, code, "close code (reason {reason:?})");
        self.expect_eof();
        reason
    }

    /// Whether the server closed the TCP connection within `within`
    /// (after any frames still buffered, which are discarded).
    pub fn eof_within(&mut self, within: Duration) -> bool {
        read_to_end_within(&mut self.stream, within).1
    }

    /// Asserts no frame and no EOF arrive within `wait`.
    pub fn expect_silence(&mut self, wait: Duration) {
        assert!(self.buf.is_empty(), "unexpected bytes: {:02x?}", self.buf);
        assert_silent(&mut self.stream, wait);
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

/// Reads the next data message, skipping pings/pongs.
pub fn ws_read(ws: &mut Client) -> tungstenite::Message {
    loop {
        match ws.read().expect("tungstenite read") {
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// Sends `text` and asserts it comes back.
pub fn assert_echo(ws: &mut Client, text: &str) {
    ws_send(ws, text);
    assert_eq!(ws_read_text(ws), text);
}

/// Sets the read timeout of a tungstenite client's socket.
pub fn set_timeout(ws: &mut Client, timeout: Duration) {
    ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
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

/// Closes a tungstenite client politely, bounded by the read timeout.
pub fn ws_close(mut ws: Client) {
    let _ = ws.close(None);
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        if ws.read().is_err() {
            break;
        }
    }
}
