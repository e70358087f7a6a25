//! Fuzzes one connection's whole lifecycle in memory: the request head, the
//! sans-IO `wsloop::session::Session` (frames, pings, pongs, closing, every
//! timeout), an application that echoes and closes, partial writes and a
//! fake clock. No socket, no thread, no sleep.
//!
//! The target plays the reactor exactly as `src/server/dispatch.rs` and
//! `src/server/mod.rs` drive a session: the head goes through
//! `parse_request` / `validate_upgrade` / `switching_protocols` and ends in
//! `Session::accept` or `Session::refuse`; input goes `bytes_arrived` →
//! `lend_decoder` → `receive` while `wants_frames` → `return_decoder`, with
//! the loop-wide decoder and buffer pool shared by every session of the
//! run; output goes `write_to` → `after_write`; time goes `poll_timeout` →
//! `handle_timeout`; EOF, a write error, `Flushed::Finished` and
//! `Timeout::Expired` end in `finish`.
//!
//! Input layout:
//! - byte 0: bit 0 and bit 4 pick the configuration (0 default, 1 tight
//!   limits and fast timers as the old socket target's second server, 2
//!   zero timeouts and a zero outbound cap, 3 tiny frames and no
//!   heartbeat); bits 1-3 the prefix written ahead of the stream (0 none,
//!   2 upgrade with subprotocols, 3 a head cut off in `X-Echo: `, 4
//!   `GET /metrics`, 5 an upgrade the application refuses, 6 a malformed
//!   head, else a plain upgrade to `/`); bit 7 set skips running the clock
//!   through the deadlines at the end.
//! - byte 1: the length L of the script;
//! - bytes 2..2+L: the script, one step per opcode byte (low nibble) and
//!   its argument bytes (see `Harness::step`): feed the next N stream bytes
//!   as one read (or bytewise), advance the clock, jump to the next
//!   deadline, write through a socket that takes N bytes then blocks (or
//!   fails), send, broadcast, close, close urgently, EOF, or probe the
//!   shared decoder and pool with a fresh session;
//! - the rest: the client's byte stream, after the prefix.
//!
//! After the script, the rest of the stream is read and everything
//! written; unless bit 7 is set the clock then jumps from deadline to
//! deadline (pings, pong, idle and close timeouts), and the connection
//! ends with EOF if it still stands. A fresh session finally checks the
//! loop-wide decoder and pool (as the old target's fresh client did).
//! `WSLOOP_FUZZ_TRACE=1` prints each step and its outcome (with
//! `scripts/fuzz.sh --repro connection FILE`).
//!
//! The application reads the first byte of each message as a command:
//! `!` closes with the code in the next two bytes (mapped onto a legal
//! code) and the rest as reason, `X` closes urgently (1008) and tries to
//! send, `+` echoes four times, `*` `@` `=` broadcast (shared frames);
//! anything else is echoed.
//!
//! Checked after every step (a panic is a crash): `finish` returns `Some`
//! exactly once and the session sees no I/O after it, with the code of the
//! closing handshake we started (or 1006 without one); `receive` always
//! makes progress; `send` and `send_shared` succeed exactly while open;
//! `handle_timeout` acts exactly when `poll_timeout` is due and a due
//! deadline never stays due (the reactor would spin); nothing is written
//! after the write side is shut down. The server's output is parsed as it
//! is written: the 101 (or HTTP response) comes first, exactly as built;
//! nothing follows an HTTP response; frames are well formed, unmasked,
//! minimally encoded, unfragmented, and each data frame is the next
//! message sent; close codes are legal on the wire (1000-1003, 1007-1011,
//! 3000-4999) and match the closing handshake; all data queued before a
//! graceful close precedes its close frame; after an urgent close no data
//! frame starts but the one being written (alone, coalesced or in a shared
//! batch); nothing follows our close frame; the
//! loop-wide decoder comes back idle after every read. A single
//! allocation over 1 MiB (an announced length allocated up front) is a
//! crash too.
//!
//! The application only ever passes legal close codes: the session puts
//! any code it is given on the wire (`Session::close` does not check).
#![no_main]

mod largest_alloc;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use largest_alloc::{LARGEST, TRACKING};
use libfuzzer_sys::fuzz_target;
use wsloop::protocol::frame::encoded_len;
use wsloop::protocol::handshake::{
    HeadLimits, Request, http_response, parse_request, switching_protocols,
};
use wsloop::protocol::message::{Decoder, DecoderLimits, encode_message};
use wsloop::session::outbox::BufferPool;
use wsloop::session::{
    CloseOrder, Expiry, Flushed, Inbound, Phase, Session, SessionConfig, Tick, Timeout,
};
use wsloop::{CloseCode, Message, Metrics, ProtocolError};

const ALLOCATION_BOUND: usize = 1 << 20;

/// With `WSLOOP_FUZZ_TRACE` set (e.g. with `scripts/fuzz.sh --repro`), the
/// steps and what came of them are printed to stderr.
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("WSLOOP_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// Where the fake clock starts, in milliseconds.
const START_MS: u64 = 1_000;
/// Handle_timeout calls one due moment may take before it is a livelock.
const MAX_TIMER_ROUNDS: usize = 4;

// ---- Configuration ------------------------------------------------------

/// What the reactor and its sessions are configured with.
struct Setup {
    session: SessionConfig,
    head: HeadLimits,
    read_buffer: usize,
    outbound_cap: usize,
    /// `Backpressure::Close(code)`, or `None` for `Backpressure::Drop`.
    over_cap_close: Option<CloseCode>,
}

fn setup(selector: u8) -> Setup {
    let ms = Duration::from_millis;
    let limits = |max_frame_size, max_message_size, max_fragments| DecoderLimits {
        max_frame_size,
        max_message_size,
        max_fragments,
    };
    match (selector & 1) | ((selector >> 3) & 2) {
        0 => Setup {
            session: SessionConfig::default(),
            head: HeadLimits::default(),
            read_buffer: 64 * 1024,
            outbound_cap: 1 << 20,
            over_cap_close: Some(CloseCode::POLICY),
        },
        // The old socket target's second server.
        1 => Setup {
            session: SessionConfig {
                handshake_timeout: ms(2000),
                close_timeout: ms(500),
                ping_interval: Some(ms(50)),
                pong_timeout: ms(200),
                idle_timeout: Some(ms(300)),
                decoder_limits: limits(2048, 4096, 16),
            },
            head: HeadLimits {
                max_bytes: 1024,
                max_headers: 16,
            },
            read_buffer: 1024,
            outbound_cap: 16 * 1024,
            over_cap_close: None,
        },
        // Every deadline due at once: the edges of the timer logic.
        2 => Setup {
            session: SessionConfig {
                handshake_timeout: ms(1),
                close_timeout: ms(0),
                ping_interval: Some(ms(0)),
                pong_timeout: ms(1),
                idle_timeout: Some(ms(1)),
                decoder_limits: limits(125, 300, 4),
            },
            head: HeadLimits {
                max_bytes: 512,
                max_headers: 8,
            },
            read_buffer: 1024,
            outbound_cap: 0,
            over_cap_close: Some(CloseCode::POLICY),
        },
        // Tiny frames, no heartbeat, no idle timeout.
        _ => Setup {
            session: SessionConfig {
                handshake_timeout: ms(50),
                close_timeout: ms(1),
                ping_interval: None,
                pong_timeout: ms(10_000),
                idle_timeout: None,
                decoder_limits: limits(16, 32, 3),
            },
            head: HeadLimits::default(),
            read_buffer: 4096,
            outbound_cap: 64 * 1024,
            over_cap_close: Some(CloseCode::POLICY),
        },
    }
}

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

/// The bytes written ahead of the stream (built once).
fn prefix(selector: u8) -> &'static [u8] {
    static PREFIXES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    &PREFIXES.get_or_init(|| (0u8..8).map(build_prefix).collect())[usize::from(selector & 7)]
}

fn build_prefix(selector: u8) -> Vec<u8> {
    match selector {
        0 => Vec::new(),
        2 => upgrade(
            "/chat?room=a%20b",
            "Sec-WebSocket-Protocol: chat, superchat\r\nOrigin: http://o\r\n",
            true,
        ),
        3 => upgrade("/", "X-Echo: ", false),
        4 => b"GET /metrics HTTP/1.1\r\nHost: fuzz\r\n\r\n".to_vec(),
        5 => upgrade("/deny", "", true),
        6 => b"GET / HTTP/1.1\r\nHost fuzz\r\n\r\n".to_vec(),
        _ => upgrade("/", "", true),
    }
}

/// Close codes the application uses: every legal one on the wire, and the
/// three that `close_payload` turns into an empty close frame.
/// What one receive step amounts to once its control frame is applied.
enum Applied<'a> {
    Message(Message<'a>),
    Error(ProtocolError),
}

const CODES: [u16; 16] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999, 1005, 1006, 1015,
];

fn sends_no_code(code: CloseCode) -> bool {
    !code.is_sendable()
}

/// Message sizes around every length encoding and limit.
const SIZES: [usize; 16] = [
    0, 1, 5, 16, 17, 33, 125, 126, 127, 300, 2049, 4097, 65535, 65536, 8, 3,
];

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A reason of up to 127 ASCII bytes or 63 two-byte characters (cut on
/// the wire at 123 bytes, on a character boundary).
fn reason_of(arg: u8) -> String {
    let n = usize::from(arg & 0x7F);
    if arg & 0x80 != 0 {
        "é".repeat(n / 2)
    } else {
        "r".repeat(n)
    }
}

/// A message of `len` bytes starting `fill` bytes into a fixed pattern
/// (built once: generating payloads byte by byte in instrumented code
/// would cost more than the session's own work).
fn message(len: usize, fill: u8, text: bool) -> Message<'static> {
    let pattern = pattern();
    let start = usize::from(fill);
    let text_part = &pattern[start..start + len];
    if text {
        Message::Text(text_part)
    } else {
        Message::Binary(text_part.as_bytes())
    }
}

fn pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..SIZES.iter().max().unwrap() + 256)
            .map(|i| char::from(b' ' + (i * 37 % 95) as u8))
            .collect()
    })
}

// ---- The server's output, parsed as it is written -------------------------

/// A data message queued and not yet seen on the wire.
#[derive(Debug, PartialEq, Eq)]
struct Expect {
    opcode: u8,
    /// Borrowed from the pattern, or a copy of an echoed message.
    payload: Cow<'static, [u8]>,
    /// The shared buffer (`send_shared`) it went out in, if any.
    batch: Option<u32>,
}

impl Expect {
    fn of(msg: Message<'_>, batch: Option<u32>) -> Expect {
        Expect {
            batch,
            opcode: match msg {
                Message::Text(_) => 1,
                Message::Binary(_) => 2,
            },
            payload: {
                let (bytes, pattern) = (msg.as_bytes(), pattern().as_bytes());
                match (bytes.as_ptr() as usize).checked_sub(pattern.as_ptr() as usize) {
                    Some(at) if at < pattern.len() => Cow::Borrowed(&pattern[at..at + bytes.len()]),
                    _ => Cow::Owned(bytes.to_vec()),
                }
            },
        }
    }
}

struct Frame {
    opcode: u8,
    len: u64,
    seen: u64,
    /// A control frame's payload (at most 125 bytes).
    control: Vec<u8>,
}

/// The output when `close_urgently` ran: what may still start.
struct UrgentCut {
    /// A frame header was partly written: that frame is finished.
    header_pending: bool,
}

/// The close frame the server sent.
#[derive(Debug)]
struct CloseSeen {
    code: Option<u16>,
    reason: String,
}

/// The client's view of the server's output: checks it byte by byte,
/// keeping no data payload.
#[derive(Default)]
struct Wire {
    /// The response that must come first, once the head was answered.
    head: Option<Vec<u8>>,
    head_seen: usize,
    /// Whether frames may follow the response (a `101`).
    frames_allowed: bool,
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    /// Data messages queued and not yet on the wire, in order.
    expected: VecDeque<Expect>,
    /// Our close frame, once complete.
    close: Option<CloseSeen>,
    /// Messages still expected when our close frame started.
    pending_at_close: usize,
    /// The write side is shut down.
    shut: bool,
    /// The shared buffer of the last frame started (`None` for any other).
    last_batch: Option<u32>,
    /// Where the output stood when `close_urgently` discarded queued data.
    urgent_cut: Option<UrgentCut>,
    written: usize,
}

impl Wire {
    fn push(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        assert!(
            !self.shut,
            "{} bytes written after Flushed::ShutdownWrite",
            bytes.len()
        );
        self.written += bytes.len();
        while !bytes.is_empty() {
            assert!(
                self.close.is_none(),
                "bytes after our close frame {:?}: {:02x?}",
                self.close,
                &bytes[..bytes.len().min(16)]
            );
            let Some(head) = &self.head else {
                panic!(
                    "output before the request head was answered: {:?}",
                    text_of(&bytes[..bytes.len().min(64)])
                );
            };
            if self.head_seen < head.len() {
                let n = (head.len() - self.head_seen).min(bytes.len());
                assert!(
                    bytes[..n] == head[self.head_seen..self.head_seen + n],
                    "the response is not the first thing written: {:?}",
                    text_of(&bytes[..n])
                );
                self.head_seen += n;
                bytes = &bytes[n..];
                continue;
            }
            assert!(
                self.frames_allowed,
                "bytes after an HTTP response: {:02x?}",
                &bytes[..bytes.len().min(16)]
            );
            match &mut self.frame {
                Some(frame) => {
                    let n = usize::try_from(frame.len - frame.seen)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    let part = &bytes[..n];
                    if frame.opcode >= 8 {
                        frame.control.extend_from_slice(part);
                    } else {
                        let expected = self.expected.front().expect("checked at its header");
                        let at = frame.seen as usize;
                        assert!(
                            expected.payload[at..at + n] == *part,
                            "a data frame's payload differs from the message sent, at byte {at}"
                        );
                    }
                    frame.seen += n as u64;
                    bytes = &bytes[n..];
                    if frame.seen == frame.len {
                        let frame = self.frame.take().expect("a frame in progress");
                        self.complete(frame);
                    }
                }
                None => {
                    self.header[self.header_len] = bytes[0];
                    self.header_len += 1;
                    bytes = &bytes[1..];
                    if let Some(frame) = self.parse_header() {
                        self.header_len = 0;
                        self.start(frame);
                    }
                }
            }
        }
    }

    fn parse_header(&self) -> Option<Frame> {
        let h = &self.header[..self.header_len];
        if h.len() < 2 {
            return None;
        }
        let (b0, b1) = (h[0], h[1]);
        assert_eq!(b0 & 0x70, 0, "RSV bits set without an extension: {h:02x?}");
        assert_eq!(b1 & 0x80, 0, "a server frame is masked: {h:02x?}");
        let opcode = b0 & 0x0F;
        assert!(
            matches!(opcode, 1 | 2 | 8 | 9 | 10),
            "unexpected opcode {opcode:#x} (the server never fragments): {h:02x?}"
        );
        assert!(b0 & 0x80 != 0, "a server frame without FIN: {h:02x?}");
        let len = match b1 & 0x7F {
            126 if h.len() < 4 => return None,
            126 => {
                let len = u64::from(u16::from_be_bytes([h[2], h[3]]));
                assert!(len >= 126, "non-minimal 16-bit length {len}");
                len
            }
            127 if h.len() < 10 => return None,
            127 => {
                let len = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                assert!(len > 0xFFFF && len >> 63 == 0, "bad 64-bit length {len}");
                len
            }
            n => u64::from(n),
        };
        if opcode >= 8 {
            assert!(len <= 125, "a control frame of {len} bytes");
        }
        Some(Frame {
            opcode,
            len,
            seen: 0,
            control: Vec::new(),
        })
    }

    fn start(&mut self, frame: Frame) {
        let header_pending = self
            .urgent_cut
            .as_mut()
            .is_some_and(|cut| std::mem::take(&mut cut.header_pending));
        let mut batch = None;
        match frame.opcode {
            1 | 2 => {
                let expected = self
                    .expected
                    .front()
                    .unwrap_or_else(|| panic!("a data frame nobody sent ({} bytes)", frame.len));
                assert_eq!(
                    (expected.opcode, expected.payload.len() as u64),
                    (frame.opcode, frame.len),
                    "a data frame out of order"
                );
                batch = expected.batch;
                if self.urgent_cut.is_some() {
                    // Only a frame already started is finished, whether it
                    // was alone, coalesced or in a shared batch.
                    assert!(
                        header_pending,
                        "a data frame ({} bytes) started after close_urgently",
                        frame.len
                    );
                }
            }
            8 => self.pending_at_close = self.expected.len(),
            _ => {}
        }
        self.last_batch = batch;
        if frame.len == 0 {
            self.complete(frame);
        } else {
            self.frame = Some(frame);
        }
    }

    fn complete(&mut self, frame: Frame) {
        match frame.opcode {
            1 | 2 => {
                self.expected.pop_front().expect("checked at its header");
            }
            8 => {
                let (code, reason) = match frame.control.as_slice() {
                    [] => (None, ""),
                    [_] => panic!("a close payload of one byte"),
                    [hi, lo, reason @ ..] => {
                        let code = u16::from_be_bytes([*hi, *lo]);
                        assert!(
                            CloseCode(code).is_valid_on_wire(),
                            "close code {code} is not legal on the wire"
                        );
                        let reason = std::str::from_utf8(reason).expect("a UTF-8 close reason");
                        (Some(code), reason)
                    }
                };
                self.close = Some(CloseSeen {
                    code,
                    reason: reason.to_owned(),
                });
            }
            9 => assert!(frame.control.is_empty(), "the session's pings are empty"),
            _ => {}
        }
    }
}

/// A socket's write side, writing into the parser.
struct Sink<'a> {
    wire: &'a mut Wire,
    mode: SinkMode,
    taken: usize,
}

#[derive(Clone, Copy)]
enum Then {
    Block,
    Reset,
    Zero,
}

/// A socket that takes `budget` bytes (at most `per_call` per call, after
/// one `Interrupted` if `interrupt`), then does what `then` says.
#[derive(Clone, Copy)]
struct SinkMode {
    budget: usize,
    per_call: usize,
    interrupt: bool,
    then: Then,
}

impl SinkMode {
    const ALL: SinkMode = SinkMode {
        budget: usize::MAX,
        per_call: usize::MAX,
        interrupt: false,
        then: Then::Block,
    };

    fn from_arg(arg: u8) -> SinkMode {
        let low = usize::from(arg & 63);
        let mode = |budget, per_call| SinkMode {
            budget,
            per_call,
            interrupt: false,
            then: Then::Block,
        };
        match arg >> 6 {
            0 => mode(low, usize::MAX),
            1 => mode(low * 97 + 64, usize::MAX),
            2 if low == 63 => SinkMode::ALL,
            // A trickle: at most 32 calls of low + 1 bytes.
            2 => SinkMode {
                interrupt: low & 1 == 1,
                ..mode((low + 1) * 32, low + 1)
            },
            _ if low < 8 => SinkMode {
                then: if low & 1 == 0 {
                    Then::Reset
                } else {
                    Then::Zero
                },
                ..mode(low >> 1, usize::MAX)
            },
            _ => SinkMode::ALL,
        }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mode = &mut self.mode;
        if std::mem::take(&mut mode.interrupt) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if mode.budget == 0 {
            return match mode.then {
                Then::Block => Err(io::ErrorKind::WouldBlock.into()),
                Then::Reset => Err(io::ErrorKind::ConnectionReset.into()),
                Then::Zero => Ok(0),
            };
        }
        let mut room = mode.budget.min(mode.per_call);
        let mut n = 0;
        for buf in bufs {
            let take = room.min(buf.len());
            self.wire.push(&buf[..take]);
            n += take;
            room -= take;
            if room == 0 {
                break;
            }
        }
        self.mode.budget -= n;
        self.taken += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---- The reactor and the application --------------------------------------

/// Who started the closing handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// Still handshaking or open.
    None,
    /// The request was answered over plain HTTP.
    Refused,
    /// We closed (the application, the idle timeout, the outbound cap) or
    /// failed the connection (a protocol error), with this code.
    Ours { code: CloseCode, reason: String },
    /// The peer's close frame came first.
    Peer,
}

enum Head {
    NeedMore,
    Respond(Vec<u8>),
    Open { response: Vec<u8>, head_len: usize },
}

/// The reactor's view of the head: `Dispatch::evaluate_head` and the old
/// target's `on_upgrade` / `on_http`.
fn evaluate_head(setup: &Setup, source: &[u8]) -> Head {
    // Copied whole from a constant: `[EMPTY_HEADER; 64]` would be
    // initialised header by header, 64 checked copies per parse.
    const NO_HEADERS: [httparse::Header<'static>; 64] = [httparse::EMPTY_HEADER; 64];
    let mut headers = NO_HEADERS;
    let headers = &mut headers[..setup.head.max_headers];
    let (request, head_len) = match parse_request(source, headers, setup.head) {
        Ok(None) => return Head::NeedMore,
        Ok(Some(parsed)) => parsed,
        Err(e) => return Head::Respond(e.response()),
    };
    assert!(head_len <= source.len() && head_len <= setup.head.max_bytes);
    if !request.wants_upgrade() {
        return Head::Respond(serve_http(&request));
    }
    let key = match request.validate_upgrade() {
        Ok(key) => key,
        Err(e) => return Head::Respond(e.response()),
    };
    let _ = (
        request.query(),
        request.query_param("room"),
        request.origin(),
        request.headers().count(),
    );
    if request.path() == "/deny" {
        return Head::Respond(http_response(
            403,
            &[("X-Reason", "fuzz")],
            "text/plain; charset=utf-8",
            b"denied\n",
        ));
    }
    let extra: Vec<(String, String)> = request
        .header("X-Echo")
        .map(|value| vec![("X-Echo".to_owned(), value.to_owned())])
        .unwrap_or_default();
    let response = switching_protocols(key, request.subprotocols().next(), &extra);
    Head::Open { response, head_len }
}

fn serve_http(request: &Request<'_>) -> Vec<u8> {
    let plain = "text/plain; charset=utf-8";
    let head_only = request.method() == "HEAD";
    if request.method() != "GET" && !head_only {
        return http_response(
            405,
            &[("Allow", "GET, HEAD")],
            plain,
            b"method not allowed\n",
        );
    }
    let (status, content_type, body): (_, _, &[u8]) = match request.path() {
        "/custom" => (200, "text/plain", b"custom\n"),
        "/healthz" => (200, plain, b"ok\n"),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_body(),
        ),
        _ => (404, plain, b"not found\n"),
    };
    let mut bytes = http_response(status, &[], content_type, body);
    if head_only {
        bytes.truncate(bytes.len() - body.len());
    }
    bytes
}

/// What `GET /metrics` shows (a fresh server's counters).
fn metrics_body() -> &'static [u8] {
    static BODY: OnceLock<String> = OnceLock::new();
    BODY.get_or_init(|| Metrics::default().to_prometheus())
        .as_bytes()
}

fn probe_response() -> &'static [u8] {
    static RESPONSE: OnceLock<Vec<u8>> = OnceLock::new();
    RESPONSE.get_or_init(|| switching_protocols(KEY, None, &[]))
}

struct Harness {
    setup: Setup,
    /// Loop-wide: shared by every session of the run, as in the reactor.
    pool: BufferPool,
    decoder: Decoder,
    millis: u64,
    now: Tick,
    /// The client's bytes and how many were read.
    stream: Vec<u8>,
    at: usize,
    read_buf: Vec<u8>,
    // The connection under test.
    session: Session,
    wire: Wire,
    finished: bool,
    opened: bool,
    cause: Cause,
    /// `close_urgently` ran: queued data may have been discarded.
    urgent: bool,
    /// Shared buffers queued so far.
    batches: u32,
    close_checked: bool,
}

impl Harness {
    fn new(setup: Setup, stream: Vec<u8>) -> Harness {
        let now = Tick::from_millis(START_MS);
        Harness {
            session: Session::new(now, &setup.session),
            decoder: Decoder::new(setup.session.decoder_limits),
            pool: BufferPool::default(),
            millis: START_MS,
            now,
            read_buf: Vec::with_capacity(setup.read_buffer.min(stream.len())),
            stream,
            at: 0,
            wire: Wire::default(),
            finished: false,
            opened: false,
            cause: Cause::None,
            urgent: false,
            batches: 0,
            close_checked: false,
            setup,
        }
    }

    /// One step of the script: an opcode byte and its arguments.
    fn step(&mut self, op: u8, script: &mut Script<'_>) {
        trace!(
            "[{} ms] step {} ({:?}, {} queued, {} of {} read)",
            self.millis,
            op & 15,
            self.session.phase(),
            self.session.queued(),
            self.at,
            self.stream.len()
        );
        match op & 15 {
            0 => self.feed(usize::from(script.arg()) + 1),
            1 => self.feed((usize::from(script.arg()) + 1) * 64),
            2 => {
                for _ in 0..=(script.arg() & 31) {
                    self.feed(1);
                }
            }
            3 => self.feed_rest(),
            4 => self.advance(u64::from(script.arg())),
            5 => self.advance(u64::from(script.arg()) * 256),
            6 => self.jump_to_deadline(script.arg()),
            7 => self.write(SinkMode::from_arg(script.arg())),
            8 => {
                let arg = script.arg();
                let (text, fill) = (arg & 1 == 1, arg >> 5);
                self.send(message(SIZES[usize::from(arg >> 1) & 15], fill, text));
            }
            9 => {
                let arg = script.arg();
                let msgs: Vec<Message<'_>> = (0..=(arg & 1))
                    .map(|i| {
                        let text = (arg >> 1) & 1 == i;
                        message(SIZES[usize::from((arg >> 2) + i) & 15], i, text)
                    })
                    .collect();
                self.broadcast(&msgs, false);
            }
            10 | 11 => {
                let code = CloseCode(CODES[usize::from(script.arg()) & 15]);
                let reason = reason_of(script.arg());
                if op & 15 == 10 {
                    self.close(code, &reason);
                } else {
                    self.close_urgently(code, &reason);
                }
            }
            12 => self.eof(SinkMode::from_arg(script.arg())),
            13 => self.probe(),
            14 => {
                // One reactor turn: a read, deadlines, a flush.
                self.feed(self.setup.read_buffer);
                self.advance(u64::from(script.arg()));
                self.write(SinkMode::ALL);
            }
            _ => self.write(SinkMode::ALL),
        }
        // Every loop turn ends with the due deadlines.
        self.run_timers();
        self.check();
    }

    // ---- Input (`Server::read`, `Dispatch::ingest`) ----

    fn feed(&mut self, n: usize) {
        if self.finished {
            return;
        }
        if self.session.queued() > self.setup.outbound_cap {
            return; // reads pause until the peer reads its replies
        }
        let n = n
            .min(self.setup.read_buffer)
            .min(self.stream.len() - self.at);
        if n == 0 {
            return;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.clear();
        buf.extend_from_slice(&self.stream[self.at..self.at + n]);
        self.at += n;
        let was_pinged = self.session.bytes_arrived(self.now);
        if was_pinged {
            assert!(
                self.session.is_open(),
                "only an open session has a ping out"
            );
        }
        if let Some(partial) = self.session.take_partial_head() {
            self.handshake_input(partial, &mut buf);
        } else if self.session.wants_frames() {
            self.frame_input(&mut buf);
        }
        self.read_buf = buf;
    }

    fn feed_rest(&mut self) {
        while !self.finished && self.at < self.stream.len() {
            let before = self.at;
            self.feed(usize::MAX);
            if self.at == before {
                break; // reads paused
            }
        }
    }

    fn handshake_input(&mut self, mut pending: Vec<u8>, data: &mut [u8]) {
        assert_eq!(self.session.phase(), Phase::Handshaking);
        if !pending.is_empty() {
            pending.extend_from_slice(data);
        }
        let outcome = {
            let source: &[u8] = if pending.is_empty() { data } else { &pending };
            evaluate_head(&self.setup, source)
        };
        match outcome {
            Head::NeedMore => {
                if pending.is_empty() {
                    pending.extend_from_slice(data);
                }
                assert!(
                    pending.len() < self.setup.head.max_bytes,
                    "an incomplete head of {} bytes is kept",
                    pending.len()
                );
                self.session.keep_partial_head(pending);
                assert_eq!(self.session.phase(), Phase::Handshaking);
            }
            Head::Respond(response) => {
                trace!(
                    "  refused: {:?}",
                    text_of(&response[..response.len().min(40)])
                );
                assert!(
                    response.starts_with(b"HTTP/1.1 ") && !response.starts_with(b"HTTP/1.1 101")
                );
                let s = &self.setup.session;
                self.session.refuse(&response, self.now, s, &mut self.pool);
                assert_eq!(self.session.phase(), Phase::Closing);
                assert!(!self.session.wants_frames());
                assert_eq!(self.session.queued(), response.len());
                self.wire.head = Some(response);
                self.cause = Cause::Refused;
            }
            Head::Open { response, head_len } => {
                trace!("  accepted ({head_len}-byte head)");
                assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
                assert!(response.ends_with(b"\r\n\r\n"));
                self.session.accept(&response, self.now, &mut self.pool);
                assert!(self.session.is_open());
                assert_eq!(self.session.queued(), response.len());
                self.wire.head = Some(response);
                self.wire.frames_allowed = true;
                self.opened = true;
                // Bytes after the head are the client's first frames.
                let rest: &mut [u8] = if pending.is_empty() {
                    &mut data[head_len..]
                } else {
                    &mut pending[head_len..]
                };
                if !rest.is_empty() {
                    self.frame_input(rest);
                }
            }
        }
    }

    /// `Dispatch::frame_input`, with the application's callbacks.
    fn frame_input(&mut self, data: &mut [u8]) {
        let mut decoder = self.session.lend_decoder(&mut self.decoder);
        let mut at = 0;
        while at < data.len() {
            let was_open = self.session.is_open();
            let left = data.len() - at;
            let received = self
                .session
                .receive(&mut decoder, &mut data[at..], self.now);
            assert!(received.consumed <= left, "consumed more than given");
            assert!(
                received.consumed > 0 || received.event.is_some(),
                "receive made no progress on {left} bytes"
            );
            at += received.consumed;
            // A control frame or an error is applied at once, as the
            // reactor does (after sealing its broadcast batch).
            let event = match received.event {
                Some(Inbound::Control(control)) => {
                    let s = &self.setup.session;
                    self.session
                        .apply(control, self.now, s, &mut self.pool)
                        .map(Applied::Error)
                }
                Some(Inbound::Message(msg)) => Some(Applied::Message(msg)),
                // This harness never negotiates permessage-deflate (the
                // `inflate` target covers the codec), so RSV1 is refused
                // by the decoder before a compressed message can form.
                Some(Inbound::Compressed { .. }) => {
                    panic!("a compressed message without permessage-deflate")
                }
                None => None,
            };
            let closed_now = was_open && !self.session.is_open();
            trace!(
                "  receive: {} bytes, {:?}{}",
                received.consumed,
                event.as_ref().map(|e| match e {
                    Applied::Message(m) => format!("message of {} bytes", m.len()),
                    Applied::Error(e) => format!("error {e}"),
                }),
                if closed_now { ", closing" } else { "" }
            );
            match event {
                Some(Applied::Message(msg)) => {
                    assert!(was_open && !closed_now, "a message outside the open phase");
                    self.on_message(msg);
                }
                Some(Applied::Error(error)) => {
                    assert!(closed_now, "an error event outside the open phase");
                    assert!(
                        matches!(error.code.0, 1002 | 1007 | 1009),
                        "protocol error with code {}",
                        error.code
                    );
                    assert!(
                        !self.session.wants_frames(),
                        "frames decoded after an error"
                    );
                    self.closed_by(Cause::Ours {
                        code: error.code,
                        reason: error.reason.to_owned(),
                    });
                    let _ = error.to_string();
                    // The application's `on_error` sends: refused.
                    self.send(Message::Text("after error"));
                }
                None if closed_now => {
                    assert_eq!(self.session.phase(), Phase::Closing);
                    self.closed_by(Cause::Peer);
                }
                None => {}
            }
            if !self.session.wants_frames() {
                break;
            }
        }
        self.session.return_decoder(decoder, &mut self.decoder);
        assert!(
            self.decoder.is_idle() && self.decoder.buffered() == 0,
            "the loop-wide decoder came back holding another connection's input"
        );
        assert_eq!(self.decoder.limits(), self.setup.session.decoder_limits);
    }

    fn closed_by(&mut self, cause: Cause) {
        // A code no endpoint may send goes out (and is reported) as a close
        // without a code.
        let cause = match cause {
            Cause::Ours { code, .. } if sends_no_code(code) => Cause::Ours {
                code: CloseCode::NO_STATUS,
                reason: String::new(),
            },
            cause => cause,
        };
        trace!("  closing handshake: {cause:?}");
        assert_eq!(
            self.cause,
            Cause::None,
            "a second closing handshake: {cause:?}"
        );
        self.cause = cause;
    }

    /// The application's `on_message`: echo, and commands.
    fn on_message(&mut self, msg: Message<'_>) {
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
                let code = if CloseCode(code).is_valid_on_wire() {
                    code
                } else {
                    CODES[usize::from(code) % CODES.len()]
                };
                let reason = text_of(rest.get(2..).unwrap_or_default());
                self.close(CloseCode(code), &reason);
            }
            b'X' => {
                self.close_urgently(CloseCode::POLICY, &text_of(rest));
                assert!(!self.send(msg), "sent after close_urgently");
            }
            b'+' => {
                for _ in 0..4 {
                    self.send(msg);
                }
            }
            b'*' | b'@' | b'=' => self.broadcast(&[msg], true),
            _ => {
                self.send(msg);
            }
        }
    }

    // ---- Output ----

    fn send(&mut self, msg: Message<'_>) -> bool {
        let open = self.session.is_open();
        let before = self.session.queued();
        let sent = self.session.send(&mut self.pool, msg);
        assert_eq!(sent, open, "send() while {:?}", self.session.phase());
        if sent {
            assert_eq!(self.session.queued(), before + encoded_len(msg.len()));
            self.wire.expected.push_back(Expect::of(msg, None));
        } else {
            assert_eq!(self.session.queued(), before);
        }
        sent
    }

    /// A broadcast reaching this connection (`LoopState::fan_out`):
    /// `exempt` when on its own behalf, else subject to the outbound cap.
    fn broadcast(&mut self, msgs: &[Message<'_>], exempt: bool) {
        let mut frames = Vec::new();
        for &msg in msgs {
            encode_message(&mut frames, msg);
        }
        let frames = Rc::new(frames);
        let before = self.session.queued();
        if !self.session.is_open() {
            assert!(!self.session.send_shared(&mut self.pool, frames));
            assert_eq!(self.session.queued(), before);
            return;
        }
        if !exempt && before != 0 && before + frames.len() > self.setup.outbound_cap {
            if let Some(code) = self.setup.over_cap_close {
                self.close_urgently(code, "outbound queue over its cap");
            }
            return;
        }
        assert!(self.session.send_shared(&mut self.pool, frames.clone()));
        assert_eq!(self.session.queued(), before + frames.len());
        let batch = self.batches;
        self.batches += 1;
        self.wire
            .expected
            .extend(msgs.iter().map(|&m| Expect::of(m, Some(batch))));
    }

    fn write(&mut self, mode: SinkMode) {
        if self.finished {
            return;
        }
        let before = self.session.queued();
        let mut sink = Sink {
            wire: &mut self.wire,
            mode,
            taken: 0,
        };
        let result = self.session.write_to(&mut sink, &mut self.pool);
        let taken = sink.taken;
        trace!("  write: {result:?} ({} queued)", self.session.queued());
        self.check_close();
        match result {
            Ok(n) => {
                assert_eq!(
                    n, taken,
                    "write_to reported {n} bytes, the socket took {taken}"
                );
                assert_eq!(self.session.queued(), before - n);
            }
            // `Dispatch::flush`: a failed write removes the connection.
            Err(_) => return self.end(),
        }
        let flushed = self.session.after_write();
        trace!("  after_write: {flushed:?}");
        match flushed {
            Flushed::Pending => assert!(self.session.queued() > 0),
            Flushed::Idle => assert_eq!(self.session.queued(), 0),
            Flushed::ShutdownWrite => {
                assert_eq!(self.session.queued(), 0);
                assert_eq!(self.session.phase(), Phase::Closing);
                assert!(!self.wire.shut, "ShutdownWrite twice");
                assert_eq!(self.session.after_write(), Flushed::Idle);
                self.wire.shut = true;
            }
            Flushed::Finished => {
                assert_eq!(self.session.queued(), 0);
                assert_eq!(self.session.phase(), Phase::Closing);
                assert!(
                    matches!(self.cause, Cause::Ours { .. } | Cause::Peer),
                    "Finished without a closing handshake"
                );
                self.end();
            }
        }
    }

    /// Checks our close frame, once it is on the wire, against the closing
    /// handshake that queued it.
    fn check_close(&mut self) {
        let Some(close) = &self.wire.close else {
            return;
        };
        if std::mem::replace(&mut self.close_checked, true) {
            return;
        }
        match &self.cause {
            Cause::Ours { code, reason } => {
                if sends_no_code(*code) {
                    assert_eq!(close.code, None, "code {code} sent on the wire");
                } else {
                    assert_eq!(
                        close.code,
                        Some(code.0),
                        "our close frame carries another code"
                    );
                    assert!(close.reason.len() <= 123 && reason.starts_with(&close.reason));
                    if reason.len() <= 123 {
                        assert_eq!(&close.reason, reason);
                    }
                }
                if !self.urgent {
                    assert_eq!(
                        self.wire.pending_at_close, 0,
                        "data queued before a graceful close was not sent before it"
                    );
                }
            }
            Cause::Peer => {
                assert!(
                    close.code.is_some(),
                    "the reply to a close frame has no code"
                );
                assert!(close.reason.is_empty());
                assert_eq!(
                    self.wire.pending_at_close, 0,
                    "data queued before the close reply was not sent before it"
                );
            }
            cause => panic!("a close frame without a closing handshake ({cause:?})"),
        }
    }

    // ---- Closing ----

    fn close(&mut self, code: CloseCode, reason: &str) {
        self.close_with(CloseOrder::AfterData, code, reason);
    }

    fn close_urgently(&mut self, code: CloseCode, reason: &str) {
        self.close_with(CloseOrder::AheadOfData, code, reason);
    }

    /// Closes as the application does, and records what the wire must
    /// then show; a session that is not open must not change at all.
    fn close_with(&mut self, order: CloseOrder, code: CloseCode, reason: &str) {
        let (open, phase, before) = (
            self.session.is_open(),
            self.session.phase(),
            self.session.queued(),
        );
        let s = &self.setup.session;
        self.session
            .close_with(order, code, reason, self.now, s, &mut self.pool);
        if !open {
            assert_eq!(
                (self.session.phase(), self.session.queued()),
                (phase, before)
            );
            return;
        }
        assert_eq!(self.session.phase(), Phase::Closing);
        match order {
            CloseOrder::AfterData => {
                assert!(self.session.queued() > before, "close() queued nothing");
            }
            _ => {
                self.urgent = true;
                trace!(
                    "  urgent cut: header {:02x?}, frame {:?}, last batch {:?}, next {:?}",
                    &self.wire.header[..self.wire.header_len],
                    self.wire.frame.as_ref().map(|f| (f.opcode, f.len, f.seen)),
                    self.wire.last_batch,
                    self.wire
                        .expected
                        .iter()
                        .take(4)
                        .map(|e| (e.payload.len(), e.batch))
                        .collect::<Vec<_>>()
                );
                self.wire.urgent_cut = Some(UrgentCut {
                    header_pending: self.wire.header_len > 0,
                });
            }
        }
        self.closed_by(Cause::Ours {
            code,
            reason: reason.to_owned(),
        });
    }

    /// `Dispatch::end_of_input`: one write, then removal.
    fn eof(&mut self, mode: SinkMode) {
        if self.finished {
            return;
        }
        let mut sink = Sink {
            wire: &mut self.wire,
            mode,
            taken: 0,
        };
        let _ = self.session.write_to(&mut sink, &mut self.pool);
        self.check_close();
        self.end();
    }

    /// `Dispatch::remove`: the slot is freed, exactly once.
    fn end(&mut self) {
        assert!(!self.finished, "the connection is removed twice");
        let (code, reason) = self
            .session
            .finish()
            .expect("finish() returned None for a live session");
        assert!(
            self.session.finish().is_none(),
            "finish() returned Some twice"
        );
        trace!(
            "  finish: {code} {reason:?} ({} bytes written, close frame {:?})",
            self.wire.written, self.wire.close
        );
        self.finished = true;
        match &self.cause {
            Cause::None | Cause::Refused => {
                assert_eq!((code, reason.as_str()), (CloseCode::ABNORMAL, ""));
            }
            Cause::Ours {
                code: ours,
                reason: why,
            } => {
                assert_eq!(
                    (code, &reason),
                    (*ours, why),
                    "finish() reports another close"
                );
            }
            Cause::Peer => {
                assert!(
                    code.is_valid_on_wire() || code == CloseCode::NO_STATUS,
                    "the peer's close code {code} was accepted"
                );
                if let Some(echo) = self.wire.close.as_ref().and_then(|c| c.code) {
                    assert!(
                        echo == code.0 || (code == CloseCode::NO_STATUS && echo == 1000),
                        "the reply {echo} to the peer's close does not match {code}"
                    );
                }
            }
        }
        // The application's `on_close` sends: refused.
        if self.opened {
            assert!(
                !self
                    .session
                    .send(&mut self.pool, Message::Text("after close"))
            );
        }
        let s = &self.session;
        assert_eq!(s.phase(), Phase::Closed);
        assert!(!s.is_open() && !s.wants_frames());
        assert_eq!(s.poll_timeout(&self.setup.session), None);
    }

    // ---- Time ----

    fn advance(&mut self, ms: u64) {
        self.millis += ms;
        self.now = Tick::from_millis(self.millis);
        self.run_timers();
    }

    /// Moves the clock to the next deadline: one millisecond before it,
    /// at it, or a little after (the reactor's slack).
    fn jump_to_deadline(&mut self, arg: u8) {
        if self.finished {
            return;
        }
        let Some(due) = self.session.poll_timeout(&self.setup.session) else {
            return;
        };
        let due_ms = u64::try_from(Tick::from_millis(0).until(due).as_millis()).unwrap_or(u64::MAX);
        let target = (due_ms + u64::from(arg % 4)).saturating_sub(1);
        if target > self.millis {
            self.advance(target - self.millis);
        } else {
            self.run_timers();
        }
    }

    /// `Server::run_timers` + `Dispatch::check_deadlines`.
    fn run_timers(&mut self) {
        for round in 0.. {
            if self.finished {
                return;
            }
            let due = self.session.poll_timeout(&self.setup.session);
            let before = (self.session.phase(), self.session.queued());
            if due.is_none_or(|due| due > self.now) {
                // Nothing is due: handle_timeout must do nothing.
                let outcome =
                    self.session
                        .handle_timeout(self.now, &self.setup.session, &mut self.pool);
                assert_eq!(
                    outcome,
                    Timeout::Nothing,
                    "acted before the deadline {due:?}"
                );
                assert_eq!((self.session.phase(), self.session.queued()), before);
                return;
            }
            assert!(
                round < MAX_TIMER_ROUNDS,
                "deadline {due:?} stays due at {:?} after {round} handle_timeout calls",
                self.now
            );
            let was_open = self.session.is_open();
            let outcome =
                self.session
                    .handle_timeout(self.now, &self.setup.session, &mut self.pool);
            trace!("  [{} ms] handle_timeout: {outcome:?}", self.millis);
            match outcome {
                Timeout::Nothing => panic!(
                    "poll_timeout says {due:?} is due at {:?}, handle_timeout does nothing: \
                     the reactor would spin",
                    self.now
                ),
                Timeout::Queued => {
                    assert!(was_open, "Queued outside the open phase");
                    assert!(
                        self.session.queued() > before.1,
                        "Queued but nothing queued"
                    );
                    if !self.session.is_open() {
                        self.closed_by(Cause::Ours {
                            code: CloseCode::GOING_AWAY,
                            reason: "idle timeout".to_owned(),
                        });
                    }
                }
                Timeout::Expired(expiry) => {
                    let phase = match expiry {
                        Expiry::Handshake => Phase::Handshaking,
                        Expiry::Pong => Phase::Open,
                        Expiry::Close => Phase::Closing,
                    };
                    assert_eq!(before.0, phase, "{expiry:?} expired");
                    return self.end();
                }
            }
        }
    }

    // ---- Invariants and the end ----

    fn check(&self) {
        if self.finished {
            return;
        }
        let s = &self.session;
        let phase = s.phase();
        assert_ne!(phase, Phase::Closed, "Closed before finish()");
        assert_eq!(s.is_open(), phase == Phase::Open);
        if s.wants_frames() {
            assert!(matches!(phase, Phase::Open | Phase::Closing));
        }
        match phase {
            Phase::Handshaking => {
                assert_eq!(self.cause, Cause::None);
                assert_eq!(s.queued(), 0, "output while handshaking");
            }
            Phase::Open => assert_eq!(self.cause, Cause::None),
            _ => assert_ne!(self.cause, Cause::None),
        }
        if self.wire.shut {
            assert_eq!(
                s.queued(),
                0,
                "output queued after the write side was shut down"
            );
        }
        let config = &self.setup.session;
        match s.poll_timeout(config) {
            None => assert!(
                phase == Phase::Open
                    && config.ping_interval.is_none()
                    && config.idle_timeout.is_none(),
                "no deadline while {phase:?}"
            ),
            Some(due) => assert!(due > self.now, "a deadline left due after the timers ran"),
        }
    }

    /// After the script: the rest of the input, everything written, the
    /// deadlines (if `run_clock`), and EOF.
    fn finale(&mut self, run_clock: bool) {
        trace!("[{} ms] finale ({:?})", self.millis, self.session.phase());
        while !self.finished && self.at < self.stream.len() {
            self.write(SinkMode::ALL);
            let before = self.at;
            self.feed(self.setup.read_buffer);
            self.run_timers();
            if self.at == before {
                break;
            }
        }
        self.write(SinkMode::ALL);
        self.check();
        if run_clock {
            for _ in 0..8 {
                if self.finished {
                    break;
                }
                self.jump_to_deadline(1);
                self.write(SinkMode::ALL);
                self.check();
            }
        }
        self.eof(SinkMode::ALL);
        assert!(self.finished);
    }

    /// A fresh session on the same loop-wide decoder and pool: a text frame
    /// "alive" must be that message (a decoder left mid-frame or
    /// mid-message by another connection would fail it or deliver other
    /// bytes), and its echo must follow the 101 exactly (no stale bytes
    /// from a pooled buffer).
    fn probe(&mut self) {
        const ALIVE: [u8; 11] = [
            0x81,
            0x85,
            1,
            2,
            3,
            4,
            b'a' ^ 1,
            b'l' ^ 2,
            b'i' ^ 3,
            b'v' ^ 4,
            b'e' ^ 1,
        ];
        let config = &self.setup.session;
        let response = probe_response();
        let mut session = Session::new(self.now, config);
        session.accept(response, self.now, &mut self.pool);
        let mut input = ALIVE;
        let mut decoder = session.lend_decoder(&mut self.decoder);
        let received = session.receive(&mut decoder, &mut input, self.now);
        assert_eq!(received.consumed, ALIVE.len());
        match received.event {
            Some(Inbound::Message(Message::Text("alive"))) => {}
            other => panic!("a fresh session got {other:?} for a text frame \"alive\""),
        }
        assert!(session.send(&mut self.pool, Message::Text("alive")));
        session.return_decoder(decoder, &mut self.decoder);
        let mut out = [0u8; 512];
        let mut rest = &mut out[..];
        session
            .write_to(&mut rest, &mut self.pool)
            .expect("the buffer takes it all");
        let left = rest.len();
        let written = &out[..out.len() - left];
        assert!(
            written.starts_with(response) && written[response.len()..] == *b"\x81\x05alive",
            "a fresh session wrote {:?}",
            text_of(written)
        );
        assert!(session.finish().is_some());
    }
}

/// The script's bytes; arguments past its end read as zero.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn arg(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

fn run(data: &[u8]) {
    let selector = data[0];
    let script_len = usize::from(data[1]).min(data.len() - 2);
    let mut script = Script(&data[2..2 + script_len]);
    let prefix = prefix(selector >> 1);
    let mut stream = Vec::with_capacity(prefix.len() + data.len() - 2 - script_len);
    stream.extend_from_slice(prefix);
    stream.extend_from_slice(&data[2 + script_len..]);
    let mut harness = Harness::new(setup(selector), stream);
    harness.run_timers();
    harness.check();
    while let Some(op) = script.next() {
        harness.step(op, &mut script);
    }
    harness.finale(selector & 0x80 == 0);
    harness.probe();
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    LARGEST.store(0, Ordering::Relaxed);
    TRACKING.store(true, Ordering::Relaxed);
    run(data);
    TRACKING.store(false, Ordering::Relaxed);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= ALLOCATION_BOUND,
        "a single allocation of {largest} bytes"
    );
});
