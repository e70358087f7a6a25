//! `wsbench`: a load generator for wsloop (and for the raw TCP baselines in
//! `examples/raw_echo.rs` and `examples/raw_fanout.rs`).
//!
//! It is a real WebSocket client: every connection performs the opening
//! handshake and checks `Sec-WebSocket-Accept`, sends masked frames, answers
//! pings and closes with a close frame. It is built to cost far less per
//! message than a server: frames are encoded and masked once into a
//! template and only a few stamp bytes are patched per message, replies
//! are parsed just enough to check them, each connection gets at most one
//! write per loop turn, and reads take 256 KiB at a time.
//!
//! Modes (`--mode`):
//!
//! - `echo`: `--conns N` connections each keep `--inflight D` messages of
//!   `--size S` bytes (`--kind text|binary`) in flight for `--duration T`
//!   seconds. Every reply is checked byte for byte (a sequence number is
//!   stamped into each payload, so a lost, duplicated or reordered reply is
//!   caught).
//!   Reports round trips/s, payload MB/s each way and round-trip latency
//!   percentiles. For soak runs, `--size-max S2` makes each message's size
//!   random in `S..=S2`, and `--pause P` turns the closed loop into a slow
//!   random one: each slot waits a random time, uniform in `0..2P`, before
//!   every message (connections silent for a while get the server's pings).
//! - `broadcast`: `--conns N` subscribers and one publisher, against a server
//!   that sends every message to every *other* connection. Each payload
//!   carries a sequence number and the publish time, so each subscriber
//!   measures publish-to-receipt latency and counts lost, duplicated and
//!   reordered messages. Pacing: the publisher keeps at most `--window W`
//!   messages outstanding, where a message is outstanding until the
//!   *slowest* subscriber has received it (every worker thread publishes the
//!   minimum received count over its subscribers; the publisher compares
//!   against the minimum over threads). So no subscriber's backlog in the
//!   server ever exceeds W frames, whatever N is: the server is never
//!   drowned, and the figure is the fan-out rate at a bounded queue.
//! - `connect`: opens `--conns N` idle connections (at most
//!   `--connect-window` handshakes at a time, and with `--connect-rate R` at
//!   most R per second, so their heartbeats come spread out as with real
//!   clients rather than all in one burst), reports the connect rate and,
//!   with `--server-pid PID`, the server's VmRSS before and after as bytes
//!   per connection, then holds them `--hold SECS` (answering pings) and
//!   reports the server's CPU use over the hold from `/proc/PID/stat`.
//!   With `--raw`, idle connections answer the raw echo's heartbeat probes
//!   (`raw_echo --heartbeat`), one reply byte per probe byte.
//!
//! `--raw` runs the same traffic against a raw TCP echo or fan-out server
//! (no handshake, no framing: fixed-size messages; the server's one-byte
//! greeting stands in for the `101`): the physical-limit baseline. Every run is bounded in time, targets loopback addresses only,
//! prints progress once a second on long runs, a human summary, and exactly
//! one line `RESULT {json}` on stdout.
//!
//! `--tls` (or `--scheme wss`, cargo feature `tls`) runs every mode over
//! TLS: each connection is a rustls `ClientConnection` (the buffered API,
//! on the same non-blocking socket, with the crypto provider the server
//! uses, `wsloop::tls::provider()`, its key exchange groups and cipher
//! suites reordered to what browsers offer first: X25519, AES-128-GCM;
//! the server follows the client's order), and the TLS handshake counts within
//! the connect phase (connect latency, connect rate). Certificates are
//! verified against `--ca FILE` for `--server-name` (`localhost`), or,
//! with `--insecure`, any certificate is accepted (its handshake signature
//! is still checked, so the client's work per handshake stays that of a
//! verifying client). Session resumption is off: every connection makes
//! a full handshake, as distinct clients would. The TLS path keeps the
//! client's cost per message low: one socket read per readiness (of up to
//! 256 KiB; a short read says the socket is drained) whose ciphertext is
//! fed to rustls from memory, decrypted, and parsed in one piece; each
//! turn's frames go into rustls in one `write_vectored`, and its
//! ciphertext to the socket in one `write_tls` (a `writev`).
//!
//! `--deflate` (cargo feature `deflate`) negotiates permessage-deflate
//! (RFC 7692) on every connection: the upgrade request offers what
//! browsers send, `Sec-WebSocket-Extensions: permessage-deflate;
//! client_max_window_bits`, and a `101` that does not accept it fails the
//! connection (counted as a failed connect: a run never measures
//! uncompressed traffic by accident). Every outgoing data message is
//! compressed, as browsers do (raw deflate at `--deflate-level`, default
//! 6, zlib's default and browsers'; sync flush, the `00 00 ff ff` tail
//! stripped, RSV1 set), with at most the window the response's
//! `client_max_window_bits` allows. Incoming frames with RSV1 are inflated
//! (the tail appended) before the usual checks; frames without it are
//! taken as they are (the server leaves small messages uncompressed).
//! Contexts follow the response: with `client_no_context_takeover` (or
//! `server_no_context_takeover`) every message is compressed (inflated)
//! from a fresh context by one per-thread compressor (inflater), reset
//! each time, so connections cost no zlib memory; without, the connection
//! gets its own compressor (inflater), created on its first message and
//! kept across messages. Control frames are never compressed. The buffers
//! of both directions are reused. `--tls --deflate` is allowed.
//!
//! The client's cost per compressed message: zlib-rs clears a 128 KiB hash
//! table on every reset, about 3 µs, which alone would make the client
//! the bottleneck on small messages (and a server measured below its
//! capacity batches less, which inflates its CPU per message). So, from a
//! fresh context, a `--size` message is compressed once per thread and
//! window size, as a valid stream from a fresh context with its stamps
//! (8 bytes in echo, 16 in broadcast) in a stored block (see
//! `deflate::Codec::prepare`: the bytes before the stamps compressed, the
//! stamps stored, the bytes after them compressed with a preset
//! dictionary that cannot match the stamps), and each message copies
//! that frame and patches its stamps in, as plain messages do. It inflates
//! like any other message and costs the server the same (measured: the
//! same server CPU per 16 KiB message either way), but is 10 to 20 bytes
//! longer than the message compressed whole (the stamps not compressed,
//! a stored block's header, a second compressed block); the summary and
//! `deflate_prepared_extra_bytes` give the difference, to subtract from
//! `wire_bytes_out_per_msg` for what a browser would send.
//! `--deflate-full` compresses every message from scratch instead, as
//! browsers do; so are messages of other sizes and every message with the
//! client's context kept. Likewise on the receiving side, in broadcast
//! mode: a compressed message (from a fresh context) in the same bytes as
//! one the thread inflated lately, as a broadcast reaches every
//! subscriber, is not inflated again but copied from a cache of the last
//! few hundred (compared whole): it would give the same bytes, which are
//! then checked as ever.
//!
//! Payloads (`--payload KIND`): `filler` (the default: `--size` bytes of
//! `abc…z` repeated), or a realistic JSON text with a size of its own:
//! `chat` (79 B: `{"type":"chat","id":"…","payload":{"from":"alice",
//! "text":"brb"}}`), `ticker` (a 200 B quote update of five symbols) or
//! `json16k` (a 16,384 B snapshot: an array of objects with the same keys
//! and varied numbers and strings). Stamps: each message carries a
//! sequence number (and, in broadcast, the publish time) as [`STAMP`]-byte
//! stamps in the alphabet `0-9A-Za-z-_` (valid in JSON strings and in
//! UTF-8 text frames). Filler payloads carry them at the start, as ever;
//! JSON payloads in their 16-character `"id"` string (at a fixed offset:
//! the sequence number first, then the publish time; an echo stamp leaves
//! the second half `0`s), so every message stays valid JSON and the rest
//! of it is compared byte for byte as with filler. Only the stamps change
//! from message to message: with context takeover (which wsloop never
//! grants) repeated documents would compress unrealistically well.
//!
//! Wire bytes: every byte written to or read from the sockets during the
//! measured window is counted (WebSocket frames with their headers and
//! masks, or TLS records with `--tls`; not TCP/IP headers), and the
//! summary reports them per message: `wire_bytes_out_per_msg` is bytes
//! written per message sent (echo: per request; broadcast: per publish),
//! `wire_bytes_in_per_msg` bytes read per message received (echo: per
//! reply; broadcast: per delivery to a subscriber). With `--deflate`
//! these show what compression saves; `compressed_in_pct` is the share of
//! received messages that came compressed.
//!
//! ```text
//! cargo run --release --example wsbench -- --addr 127.0.0.1:9001 --mode echo \
//!     --conns 100 --inflight 16 --size 64 --duration 5
//! ```
//!
//! Source addresses: one source address has only the ephemeral port range
//! (about 28,000 ports by default), so when `--conns` needs more, or with
//! `--sources K`, connections are spread round-robin over the loopback
//! sources 127.0.0.1 ..= 127.0.0.K, each socket bound before `connect`
//! (with `socket2`, a dev-dependency: std and mio cannot bind a connecting
//! socket).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3, appended to the key for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// `--deflate`: the `Sec-WebSocket-Extensions` offer, as browsers send it.
const OFFER_DEFLATE: &str = "permessage-deflate; client_max_window_bits";
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 * 1024;
/// The byte the raw servers send on accept.
const RAW_GREETING: u8 = b'+';
/// The raw echo's heartbeat probe, and the answer it wants.
const RAW_PROBE: u8 = b'?';
const RAW_PROBE_REPLY: u8 = b'!';
/// Bytes of a sequence number or timestamp stamp (6 bits per ASCII byte).
const STAMP: usize = 8;
/// The largest frame payload accepted from the server.
const MAX_PAYLOAD: usize = 64 << 20;
/// How long to wait for outstanding replies after the measured window.
const DRAIN: Duration = Duration::from_secs(3);
/// How long to wait for the server's close frames and EOFs at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long connections settle before the server's RSS is read.
const SETTLE: Duration = Duration::from_millis(500);
/// Descriptors kept free besides the connections.
const SPARE_FDS: usize = 32;
/// Room in the plaintext buffer beyond one read's ciphertext: a record
/// left incomplete by the previous read decrypts with this one.
#[cfg(feature = "tls")]
const PLAIN_SLACK: usize = 64 * 1024;

const USAGE: &str = "\
wsbench — load generator for wsloop and its raw TCP baselines (loopback only)

USAGE:
    wsbench [FLAGS]

FLAGS:
    --addr ADDR:PORT        server address, loopback only [default: 127.0.0.1:9001]
    --path PATH             request path [default: /]
    --mode MODE             echo | broadcast | connect [default: echo]
    --conns N               echo connections, broadcast subscribers or idle
                            connections [default: 10]
    --inflight D            echo: messages in flight per connection [default: 1]
    --payload KIND          filler | chat | ticker | json16k: filler bytes of --size,
                            or a JSON text of its own size (chat 79 B, ticker 200 B,
                            json16k 16,384 B) stamped in its \"id\" string [default: filler]
    --size S                payload bytes per message [default: 64, or the --payload
                            kind's size (giving another is an error); broadcast >= 16]
    --size-max S2           echo: a random payload size in S..=S2 per message
                            (WebSocket only) [default: S]
    --pause SECS            echo: each slot waits a random time, uniform in
                            0..2*SECS, before each message [default: 0, closed loop]
    --kind KIND             text | binary [default: text]
    --duration SECS         measured time (connect: time allowed to connect) [default: 5]
    --window W              broadcast: publishes outstanding until the slowest
                            subscriber has them [default: 32]
    --threads N             worker threads [default: 1]
    --connect-window N      connects + handshakes in flight per thread [default: 64]
    --hold SECS             connect: hold the idle connections this long [default: 0]
    --connect-rate R        open at most R connections per second, so that
                            timers such as heartbeats are spread out as with
                            real clients [default: as fast as possible]
    --server-pid PID        read the server's VmRSS and CPU time from /proc/PID
    --sources K             spread connections over the source addresses
                            127.0.0.1..=127.0.0.K (IPv4 loopback servers only)
                            [default: as many as the ephemeral port range needs]
    --raw                   raw TCP: no handshake, no framing (fixed-size messages)
    --tls                   wss://: every connection runs a TLS handshake (rustls)
                            before the upgrade, and every mode runs over TLS; needs
                            --ca or --insecure, and wsbench built with `--features tls`
    --scheme ws|wss         the same as no flag or --tls [default: ws]
    --ca FILE               TLS: trust the PEM certificate(s) in FILE and verify the
                            server's chain, validity and name properly
    --server-name NAME      TLS: the name to verify and to send as SNI [default: localhost]
    --insecure              TLS: accept ANY server certificate (the handshake signature
                            is still checked). For benchmarking a server you run on
                            loopback only: it gives no protection against anyone
    --deflate               permessage-deflate: offer it as browsers do, fail connections
                            whose 101 declines it, compress every message sent and
                            inflate compressed ones received; needs wsbench built with
                            `--features deflate`
    --deflate-level N       the client's zlib level, 0..=9 [default: 6, as browsers]
    --deflate-full          compress every message from scratch, as browsers do
                            (about 3 us each), rather than copying a message
                            compressed once and patching its stamps in
    --label TEXT            copied into the JSON result
    --progress              print progress every second even on short runs
    --quiet                 no progress lines
    -h, --help              print this help

The last line on stdout is `RESULT {json}`; the exit status is 1 if any
reply was wrong, lost or missing, or a connection failed. Bytes written to
and read from the sockets in the measured window are reported per message
sent and received (wire_bytes_out_per_msg, wire_bytes_in_per_msg).
";

/// What the run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Closed-loop echo round trips.
    Echo,
    /// One publisher, N subscribers.
    Broadcast,
    /// N idle connections.
    Connect,
}

impl Mode {
    /// The mode's name on the command line and in the JSON.
    fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
            Mode::Connect => "connect",
        }
    }
}

/// What the messages carry (`--payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// `--size` bytes of `abc…z` repeated, stamps at the start.
    Filler,
    /// A chat line of about 80 bytes.
    Chat,
    /// A quote update of about 200 bytes.
    Ticker,
    /// A 16 KiB JSON snapshot.
    Json16k,
}

impl Payload {
    /// The kind's name on the command line and in the JSON.
    fn name(self) -> &'static str {
        match self {
            Payload::Filler => "filler",
            Payload::Chat => "chat",
            Payload::Ticker => "ticker",
            Payload::Json16k => "json16k",
        }
    }

    /// A JSON kind's document and the offset of its 16-byte stamp field
    /// (the value of `"id"`, `0`s until stamped); `None` for filler.
    fn document(self) -> Option<(Vec<u8>, usize)> {
        let doc = match self {
            Payload::Filler => return None,
            Payload::Chat => concat!(
                r#"{"type":"chat","id":"0000000000000000","#,
                r#""payload":{"from":"alice","text":"brb"}}"#
            )
            .to_string(),
            Payload::Ticker => concat!(
                r#"{"type":"ticker","id":"0000000000000000","quotes":["#,
                r#"{"s":"AAPL","p":189.4,"d":-0.5},{"s":"MSFT","p":411.07,"d":1.1},"#,
                r#"{"s":"NVDA","p":875.3,"d":12},{"s":"AMZN","p":178.15,"d":-1},"#,
                r#"{"s":"TSLA","p":171.6}]}"#
            )
            .to_string(),
            Payload::Json16k => json_snapshot(16 * 1024),
        };
        let at = doc.find(r#""id":""#).expect("a stamp field") + 6;
        debug_assert_eq!(&doc[at..at + 2 * STAMP], "0".repeat(2 * STAMP));
        Some((doc.into_bytes(), at))
    }
}

/// A JSON snapshot of exactly `size` bytes: `{"type":"snapshot","id":…,
/// "items":[…],"note":…}`, an array of objects with the same keys and
/// pseudo-random (but fixed) numbers and strings, padded by the note.
fn json_snapshot(size: usize) -> String {
    const NAMES: [&str; 12] = [
        "anchor", "bracket", "cable", "dial", "flange", "gasket", "hinge", "lever", "nozzle",
        "pivot", "spring", "valve",
    ];
    const COLORS: [&str; 8] = [
        "red", "green", "blue", "black", "white", "silver", "amber", "teal",
    ];
    const SITES: [&str; 6] = ["lisbon", "oslo", "quito", "osaka", "perth", "tallinn"];
    const TAIL: &str = r#"],"note":""}"#;
    const FILL: &str = "restocked weekly; prices in EUR, excluding VAT. ";
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut doc = String::from(r#"{"type":"snapshot","id":"0000000000000000","items":["#);
    let mut item = String::new();
    for i in 0.. {
        let mut pick = |n: usize| (rng.next() % n as u64) as usize;
        item.clear();
        let _ = write!(
            item,
            r#"{}{{"id":{},"name":"{}-{}","sku":"{}{:05}","price":{}.{:02},"qty":{},"#,
            if i == 0 { "" } else { "," },
            10_000 + i,
            NAMES[pick(NAMES.len())],
            COLORS[pick(COLORS.len())],
            &NAMES[pick(NAMES.len())][..3].to_ascii_uppercase(),
            pick(100_000),
            1 + pick(500),
            pick(100),
            pick(250),
        );
        let _ = write!(
            item,
            r#""tags":["{}","{}"],"site":"{}","active":{},"updated":"2025-{:02}-{:02}T{:02}:{:02}:{:02}Z"}}"#,
            COLORS[pick(COLORS.len())],
            ["new", "sale", "bulk", "eco"][pick(4)],
            SITES[pick(SITES.len())],
            pick(5) != 0,
            1 + pick(12),
            1 + pick(28),
            pick(24),
            pick(60),
            pick(60),
        );
        if doc.len() + item.len() + TAIL.len() > size {
            break;
        }
        doc.push_str(&item);
    }
    let (head, tail) = TAIL.split_at(TAIL.len() - 2);
    doc.push_str(head);
    while doc.len() + tail.len() < size {
        let room = size - tail.len() - doc.len();
        doc.push_str(&FILL[..room.min(FILL.len())]);
    }
    doc.push_str(tail);
    doc
}

/// The parsed command line.
#[derive(Debug, Clone)]
struct Config {
    /// The server's address (loopback).
    addr: SocketAddr,
    /// The request path.
    path: String,
    /// The run's mode.
    mode: Mode,
    /// Connections (echo), subscribers (broadcast) or idle connections.
    conns: usize,
    /// Echo: messages in flight per connection.
    inflight: usize,
    /// What the messages carry.
    payload: Payload,
    /// Payload bytes per message (the smallest, with `size_max`).
    size: usize,
    /// Echo: the largest random payload size (equal to `size` when fixed).
    size_max: usize,
    /// Echo: the mean random wait before each message (zero: closed loop).
    pause: Duration,
    /// Binary rather than text frames.
    binary: bool,
    /// The measured time (connect mode: time allowed to connect).
    duration: Duration,
    /// Broadcast: outstanding publishes allowed.
    window: u64,
    /// Worker threads.
    threads: usize,
    /// Connects and handshakes in flight per thread.
    connect_window: usize,
    /// Connect mode: how long to hold the connections.
    hold: Duration,
    /// Connections opened per second at most (all threads together).
    connect_rate: Option<f64>,
    /// The server's process id, for RSS and CPU readings.
    server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (0: as many
    /// as the ephemeral port range needs).
    sources: usize,
    /// Raw TCP instead of WebSocket.
    raw: bool,
    /// WebSocket over TLS.
    tls: bool,
    /// TLS: the PEM file of the certificates to trust.
    ca: Option<String>,
    /// TLS: the name verified and sent as SNI.
    server_name: String,
    /// TLS: accept any certificate.
    insecure: bool,
    /// TLS: the client configuration, built once the flags are checked.
    #[cfg(feature = "tls")]
    tls_client: Option<tls::Client>,
    /// permessage-deflate on every connection.
    deflate: bool,
    /// The client's zlib level (0..=9).
    deflate_level: u32,
    /// Compress every message from scratch (no prepared frames).
    deflate_full: bool,
    /// Free text copied into the JSON result.
    label: String,
    /// Print progress lines: `Some(true)` always, `Some(false)` never,
    /// `None` on runs of three seconds or more.
    progress: Option<bool>,
}

impl Config {
    /// Parses the arguments (without the program name).
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Config, String> {
        let mut c = Config {
            addr: "127.0.0.1:9001".parse().expect("valid default"),
            path: "/".into(),
            mode: Mode::Echo,
            conns: 10,
            inflight: 1,
            payload: Payload::Filler,
            size: 64,
            size_max: 0,
            pause: Duration::ZERO,
            binary: false,
            duration: Duration::from_secs(5),
            window: 32,
            threads: 1,
            connect_window: 64,
            hold: Duration::ZERO,
            connect_rate: None,
            server_pid: None,
            sources: 0,
            raw: false,
            tls: false,
            ca: None,
            server_name: "localhost".into(),
            insecure: false,
            #[cfg(feature = "tls")]
            tls_client: None,
            deflate: false,
            deflate_level: 6,
            deflate_full: false,
            label: String::new(),
            progress: None,
        };
        let mut size = None;
        let mut level_given = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                "--addr" => {
                    let v = value()?;
                    c.addr = v
                        .parse()
                        .map_err(|_| format!("--addr: `{v}` is not ADDR:PORT"))?;
                }
                "--path" => c.path = value()?,
                "--mode" => {
                    c.mode = match value()?.as_str() {
                        "echo" => Mode::Echo,
                        "broadcast" => Mode::Broadcast,
                        "connect" => Mode::Connect,
                        other => return Err(format!("--mode: unknown mode `{other}`")),
                    }
                }
                "--conns" => c.conns = number(&flag, &value()?)?,
                "--inflight" => c.inflight = number(&flag, &value()?)?,
                "--size" => size = Some(number(&flag, &value()?)?),
                "--payload" => {
                    c.payload = match value()?.as_str() {
                        "filler" => Payload::Filler,
                        "chat" => Payload::Chat,
                        "ticker" => Payload::Ticker,
                        "json16k" => Payload::Json16k,
                        other => return Err(format!("--payload: unknown kind `{other}`")),
                    }
                }
                "--size-max" => c.size_max = number(&flag, &value()?)?,
                "--pause" => c.pause = seconds(&flag, &value()?)?,
                "--kind" => {
                    c.binary = match value()?.as_str() {
                        "text" => false,
                        "binary" => true,
                        other => return Err(format!("--kind: unknown kind `{other}`")),
                    }
                }
                "--duration" => c.duration = seconds(&flag, &value()?)?,
                "--window" => c.window = number(&flag, &value()?)? as u64,
                "--threads" => c.threads = number(&flag, &value()?)?,
                "--connect-window" => c.connect_window = number(&flag, &value()?)?,
                "--hold" => c.hold = seconds(&flag, &value()?)?,
                "--connect-rate" => {
                    let v = value()?;
                    match v.parse::<f64>() {
                        Ok(r) if r >= 1.0 && r.is_finite() => c.connect_rate = Some(r),
                        _ => return Err(format!("--connect-rate: `{v}` is not a rate >= 1")),
                    }
                }
                "--server-pid" => c.server_pid = Some(number(&flag, &value()?)? as u32),
                "--sources" => c.sources = number(&flag, &value()?)?,
                "--raw" => c.raw = true,
                "--tls" => c.tls = true,
                "--scheme" => {
                    c.tls = match value()?.as_str() {
                        "ws" => false,
                        "wss" => true,
                        other => return Err(format!("--scheme: `{other}` is not ws or wss")),
                    }
                }
                "--ca" => c.ca = Some(value()?),
                "--server-name" => c.server_name = value()?,
                "--insecure" => c.insecure = true,
                "--deflate" => c.deflate = true,
                "--deflate-full" => c.deflate_full = true,
                "--deflate-level" => {
                    let v = value()?;
                    c.deflate_level = match v.parse::<u32>() {
                        Ok(n) if n <= 9 => n,
                        _ => return Err(format!("--deflate-level: `{v}` is not 0..=9")),
                    };
                    level_given = true;
                }
                "--label" => c.label = value()?,
                "--progress" => c.progress = Some(true),
                "--quiet" => c.progress = Some(false),
                other => return Err(format!("unknown flag `{other}` (see --help)")),
            }
        }
        if !c.addr.ip().is_loopback() {
            return Err(format!(
                "--addr {}: only loopback targets are allowed",
                c.addr
            ));
        }
        match c.payload.document() {
            None => c.size = size.unwrap_or(c.size),
            Some((doc, _)) => {
                let kind = c.payload.name();
                if size.is_some_and(|s| s != doc.len()) {
                    return Err(format!(
                        "--size: --payload {kind} is {} bytes; drop --size or give that",
                        doc.len()
                    ));
                }
                if c.size_max != 0 && c.size_max != doc.len() {
                    return Err(format!(
                        "--size-max: --payload {kind} has one size; use --payload filler"
                    ));
                }
                c.size = doc.len();
            }
        }
        if c.mode == Mode::Broadcast && c.size < 2 * STAMP {
            return Err(format!(
                "--size: broadcast payloads need at least {} bytes",
                2 * STAMP
            ));
        }
        if c.size_max == 0 {
            c.size_max = c.size;
        }
        if c.size_max < c.size {
            return Err("--size-max: smaller than --size".into());
        }
        if (c.size_max > c.size || !c.pause.is_zero()) && (c.mode != Mode::Echo || c.raw) {
            return Err("--size-max and --pause apply to WebSocket echo runs only".into());
        }
        if c.size_max > MAX_PAYLOAD {
            return Err(format!("--size, --size-max: at most {MAX_PAYLOAD} bytes"));
        }
        if c.pause > Duration::from_secs(3600) {
            return Err("--pause is limited to one hour".into());
        }
        if c.duration > Duration::from_secs(3600) || c.hold > Duration::from_secs(3600) {
            return Err("--duration and --hold are limited to one hour".into());
        }
        if c.sources > 254 {
            return Err("--sources: at most 254 (127.0.0.1 ..= 127.0.0.254)".into());
        }
        if c.sources > 1 && !c.addr.is_ipv4() {
            return Err("--sources: several source addresses need an IPv4 server".into());
        }
        if c.threads > 64 || c.inflight > 100_000 || c.conns > 1_000_000 {
            return Err("--threads, --inflight or --conns is unreasonably large".into());
        }
        if !c.tls && (c.ca.is_some() || c.insecure || c.server_name != "localhost") {
            return Err("--ca, --insecure and --server-name need --tls".into());
        }
        if c.tls {
            if !cfg!(feature = "tls") {
                return Err(
                    "--tls: this wsbench was built without TLS; rebuild it with \
                     `cargo build --release --features tls --example wsbench`"
                        .into(),
                );
            }
            if c.raw {
                return Err("--tls and --raw: the raw servers speak no TLS".into());
            }
            if c.ca.is_some() == c.insecure {
                return Err("--tls needs one of --ca FILE (verify) or --insecure".into());
            }
        }
        if (level_given || c.deflate_full) && !c.deflate {
            return Err("--deflate-level and --deflate-full need --deflate".into());
        }
        if c.deflate {
            if !cfg!(feature = "deflate") {
                return Err(
                    "--deflate: this wsbench was built without permessage-deflate; rebuild \
                     it with `cargo build --release --features deflate --example wsbench`"
                        .into(),
                );
            }
            if c.raw {
                return Err("--deflate and --raw: the raw servers have no extensions".into());
            }
        }
        #[cfg(feature = "tls")]
        if c.tls {
            c.tls_client = Some(tls::Client::new(&c)?);
        }
        Ok(c)
    }

    /// The opcode of data frames.
    fn opcode(&self) -> u8 {
        if self.binary { 0x2 } else { 0x1 }
    }
}

/// Parses a positive whole number.
fn number(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: `{value}` is not a positive whole number")),
    }
}

/// Parses a number of seconds (fractions allowed).
fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if (0.0..1e6).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{flag}: `{value}` is not a number of seconds")),
    }
}

/// A log-linear latency histogram in nanoseconds: 32 buckets per power of
/// two (about 3% precision) from 1 ns to hours, in 15 KiB.
#[derive(Clone)]
struct Histogram {
    /// Counts per bucket.
    counts: Vec<u64>,
    /// Values recorded.
    total: u64,
    /// The largest value recorded.
    max: u64,
}

impl Histogram {
    /// log2 of the buckets per power of two.
    const SUB_BITS: u32 = 5;
    /// Buckets per power of two.
    const SUB: usize = 1 << Self::SUB_BITS;

    /// An empty histogram.
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; (64 - Self::SUB_BITS as usize + 1) * Self::SUB],
            total: 0,
            max: 0,
        }
    }

    /// The bucket holding `v`.
    fn index(v: u64) -> usize {
        if v < Self::SUB as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let shift = exp - Self::SUB_BITS;
        let sub = ((v >> shift) as usize) & (Self::SUB - 1);
        (shift as usize + 1) * Self::SUB + sub
    }

    /// The middle of bucket `i`.
    fn value_at(i: usize) -> u64 {
        if i < Self::SUB {
            return i as u64;
        }
        let (block, sub) = (i / Self::SUB, i % Self::SUB);
        let width = 1u64 << (block - 1);
        ((Self::SUB + sub) as u64) * width + width / 2
    }

    /// Records one value.
    fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds another histogram's values.
    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), or 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let target = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= target {
                return Self::value_at(i).min(self.max);
            }
        }
        self.max
    }

    /// The value at quantile `q` in microseconds.
    fn us(&self, q: f64) -> f64 {
        self.quantile(q) as f64 / 1e3
    }
}

/// The 64 stamp digits: ASCII that needs no escape in a JSON string (nor
/// in a URL), so text frames and JSON payloads can carry stamps; zero is
/// `'0'`.
const STAMP_DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

/// Writes `v` as stamp bytes (6 bits each, least significant first, see
/// [`STAMP_DIGITS`]), as many as `out` holds.
fn put_stamp(out: &mut [u8], v: u64) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = STAMP_DIGITS[((v >> (6 * i)) & 63) as usize];
    }
}

/// Reads a stamp written by [`put_stamp`].
fn get_stamp(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        v |= u64::from(digit) << (6 * i);
    }
    Some(v)
}

/// A small xorshift generator for masking and handshake keys.
struct Rng(u64);

impl Rng {
    /// The next pseudo-random value.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What goes on the wire for each message: a pre-encoded (and, for
/// WebSocket, pre-masked) template into which stamps are patched.
struct Wire {
    /// Raw TCP: no handshake, no framing.
    raw: bool,
    /// The masking key of every frame this thread sends.
    key: [u8; 4],
    /// One complete message as sent: frame header and masked payload.
    template: Vec<u8>,
    /// Where the payload starts in `template`.
    payload_at: usize,
    /// The payload length of `template` (`--size`).
    size: usize,
    /// The plain payload (the filler or JSON document around the stamps),
    /// `--size-max` bytes; a message of length `n` carries its first `n`
    /// bytes.
    plain: Vec<u8>,
    /// `plain` masked with `key` (random-size messages copy a prefix).
    masked: Vec<u8>,
    /// Where the stamps go in a payload: 0 for filler, the `"id"` string
    /// of a JSON payload.
    stamp_at: usize,
    /// The opcode of data frames.
    opcode: u8,
    /// `--deflate`: this thread's compressor, inflater and buffers.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<deflate::Codec>>,
    /// `--deflate` without `--deflate-full`: per client window size
    /// (9..=15) and number of stamps (1, 2), the masked frame of a
    /// `--size` message compressed from a fresh context, its stamps in a
    /// stored block (see [`deflate::Codec::prepare`]), built on first use.
    #[cfg(feature = "deflate")]
    prepared: [[Prepared; 2]; 7],
    /// How many bytes longer the first prepared message was than the same
    /// message compressed whole.
    #[cfg(feature = "deflate")]
    prepared_extra: Option<i64>,
    /// `--deflate-full`: compress every message from scratch.
    #[cfg(feature = "deflate")]
    deflate_full: bool,
}

/// A message frame compressed once, into which stamps are patched.
#[cfg(feature = "deflate")]
enum Prepared {
    /// Not built yet.
    Unbuilt,
    /// The masked frame; where the stamp field's bytes are in it, and
    /// where in the payload (for the mask).
    Frame {
        frame: Vec<u8>,
        stamps_at: usize,
        mask_at: usize,
    },
    /// The payload does not fit the scheme: compress every message.
    Unfit,
}

impl Wire {
    /// Builds the template for `size`-byte messages.
    fn new(cfg: &Config, key: [u8; 4]) -> Wire {
        let (plain, stamp_at) = cfg.payload.document().unwrap_or_else(|| {
            let filler = (0..cfg.size_max).map(|i| b'a' + (i % 26) as u8).collect();
            (filler, 0)
        });
        debug_assert_eq!(plain.len(), cfg.size_max);
        if cfg.raw {
            return Wire {
                raw: true,
                key: [0; 4],
                template: plain.clone(),
                payload_at: 0,
                size: cfg.size,
                masked: plain.clone(),
                plain,
                stamp_at,
                opcode: cfg.opcode(),
                #[cfg(feature = "deflate")]
                deflate: None,
                #[cfg(feature = "deflate")]
                prepared: std::array::from_fn(|_| [Prepared::Unfit, Prepared::Unfit]),
                #[cfg(feature = "deflate")]
                prepared_extra: None,
                #[cfg(feature = "deflate")]
                deflate_full: true,
            };
        }
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i & 3])
            .collect();
        let mut template = frame_header(0x80 | cfg.opcode(), cfg.size, key);
        let payload_at = template.len();
        template.extend_from_slice(&masked[..cfg.size]);
        Wire {
            raw: false,
            key,
            template,
            payload_at,
            size: cfg.size,
            plain,
            masked,
            stamp_at,
            opcode: cfg.opcode(),
            #[cfg(feature = "deflate")]
            deflate: cfg.deflate.then(|| {
                Box::new(deflate::Codec::new(
                    cfg.deflate_level,
                    cfg.mode == Mode::Broadcast,
                ))
            }),
            #[cfg(feature = "deflate")]
            prepared: std::array::from_fn(|_| [Prepared::Unbuilt, Prepared::Unbuilt]),
            #[cfg(feature = "deflate")]
            prepared_extra: None,
            #[cfg(feature = "deflate")]
            deflate_full: cfg.deflate_full,
        }
    }

    /// Appends one message of `len` payload bytes (`--size` or, for
    /// WebSocket, up to `--size-max`) carrying `stamps` (each written as
    /// [`STAMP`] bytes from `stamp_at`, truncated to the payload) to `out`.
    fn push(&self, out: &mut Vec<u8>, len: usize, stamps: &[u64]) {
        let at = if self.raw || len == self.size {
            let at = out.len() + self.payload_at;
            out.extend_from_slice(&self.template);
            at
        } else {
            out.extend_from_slice(&frame_header(0x80 | self.opcode, len, self.key));
            let at = out.len();
            out.extend_from_slice(&self.masked[..len]);
            at
        };
        let payload = &mut out[at..at + len];
        let (bytes, n) = self.stamps(len, stamps);
        let from = self.stamp_at.min(len);
        for (i, (p, b)) in payload[from..from + n].iter_mut().zip(&bytes).enumerate() {
            *p = b ^ self.key[(from + i) & 3];
        }
    }

    /// The stamp bytes of `stamps` and how many of them fit in a payload
    /// of `len` bytes from `stamp_at`.
    fn stamps(&self, len: usize, stamps: &[u64]) -> ([u8; 2 * STAMP], usize) {
        stamp_bytes(self.stamp_at, len, stamps)
    }

    /// `--deflate`: appends one message like [`Wire::push`], its payload
    /// compressed for `session`, in a frame with RSV1 set. A `--size`
    /// message from a fresh context (the client's context not kept)
    /// copies a frame compressed once and patches the stamps in it, as
    /// plain messages do; others (and all with `--deflate-full`) are
    /// compressed from scratch.
    #[cfg(feature = "deflate")]
    fn push_deflated(
        &mut self,
        out: &mut Vec<u8>,
        session: &mut deflate::Session,
        len: usize,
        stamps: &[u64],
    ) -> Result<(), String> {
        let (bytes, n) = self.stamps(len, stamps);
        let Some(codec) = self.deflate.as_mut() else {
            return Err("--deflate without a compressor".into());
        };
        let params = session.params();
        let count = stamps.len();
        if len == self.size
            && !params.client_takeover
            && !self.deflate_full
            && (1..=2).contains(&count)
        {
            let bits = params.client_window_bits;
            let slot = &mut self.prepared[usize::from(bits - 9)][count - 1];
            if let Prepared::Unbuilt = slot {
                let from = self.stamp_at.min(len);
                let region = (count * STAMP).min(len - from);
                // Stamps as a run carries them: a sequence number in the
                // hundred thousands, a publish time seconds into the run.
                let (sample, _) = stamp_bytes(from, len, &[123_456, 2_345_678_901][..count]);
                *slot = match codec.prepare(bits, &self.plain[..len], from, &sample[..region]) {
                    Some((packed, at, whole)) => {
                        if self.prepared_extra.is_none() {
                            self.prepared_extra = Some(packed.len() as i64 - whole as i64);
                        }
                        let mut frame = frame_header(0xC0 | self.opcode, packed.len(), self.key);
                        let payload_at = frame.len();
                        let key = self.key;
                        frame.extend(packed.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
                        Prepared::Frame {
                            frame,
                            stamps_at: payload_at + at,
                            mask_at: at,
                        }
                    }
                    None => Prepared::Unfit,
                };
            }
            if let Prepared::Frame {
                frame,
                stamps_at,
                mask_at,
            } = slot
            {
                let base = out.len() + *stamps_at;
                out.extend_from_slice(frame);
                for (i, (p, b)) in out[base..base + n].iter_mut().zip(&bytes).enumerate() {
                    *p = b ^ self.key[(*mask_at + i) & 3];
                }
                return Ok(());
            }
        }
        codec.plain.clear();
        codec.plain.extend_from_slice(&self.plain[..len]);
        let from = self.stamp_at.min(len);
        codec.plain[from..from + n].copy_from_slice(&bytes[..n]);
        codec.compress(session)?;
        put_frame_header(out, 0xC0 | self.opcode, codec.packed.len(), self.key);
        let key = self.key;
        out.extend(codec.packed.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        Ok(())
    }

    /// Appends a masked control frame (a pong or a close) to `out`.
    fn push_control(&self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        put_frame_header(out, 0x80 | opcode, payload.len(), self.key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ self.key[i & 3]));
    }
}

/// The stamp bytes of `stamps` and how many of them fit in a payload of
/// `len` bytes from `stamp_at` (see [`Wire::push`]).
fn stamp_bytes(stamp_at: usize, len: usize, stamps: &[u64]) -> ([u8; 2 * STAMP], usize) {
    let mut bytes = [0u8; 2 * STAMP];
    for (i, &v) in stamps.iter().enumerate() {
        put_stamp(&mut bytes[i * STAMP..(i + 1) * STAMP], v);
    }
    let room = len.saturating_sub(stamp_at);
    (bytes, (stamps.len() * STAMP).min(room))
}

/// A masked frame header with the shortest length encoding.
fn frame_header(b0: u8, len: usize, key: [u8; 4]) -> Vec<u8> {
    let mut head = Vec::with_capacity(14);
    put_frame_header(&mut head, b0, len, key);
    head
}

/// Appends a masked frame header (see [`frame_header`]) to `out`.
fn put_frame_header(out: &mut Vec<u8>, b0: u8, len: usize, key: [u8; 4]) {
    out.push(b0);
    match len {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent; waiting for `101`.
    Handshaking,
    /// Ready for traffic.
    Open,
    /// Our close frame is sent; waiting for the server's close and EOF.
    Closing,
    /// Closed, failed or never opened.
    Done,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Sends messages and checks their echoes.
    Echo,
    /// Receives the publisher's messages.
    Subscriber,
    /// Sends the broadcast messages.
    Publisher,
    /// Holds a connection open.
    Idle,
}

/// One client connection.
struct Conn {
    /// The socket, until the connection is done.
    stream: Option<TcpStream>,
    /// `--tls`: the TLS session over `stream`; `out` and `inbuf` hold
    /// plaintext.
    #[cfg(feature = "tls")]
    tls: Option<Box<rustls::ClientConnection>>,
    /// Where it is in its life.
    phase: Phase,
    /// What it is for.
    role: Role,
    /// Bytes waiting to be written.
    out: Vec<u8>,
    /// How much of `out` is written.
    out_pos: usize,
    /// Queued for a write at the end of this turn.
    dirty: bool,
    /// Received bytes not yet forming a complete head, frame or message.
    inbuf: Vec<u8>,
    /// The `Sec-WebSocket-Accept` the server must answer with.
    accept: String,
    /// When the connect started (ns since the run's base instant).
    started: u64,
    /// Echo: the next sequence number to send.
    next_seq: u64,
    /// Echo: the sequence number the next reply must carry; subscriber:
    /// the next sequence number expected from the publisher.
    expect_seq: u64,
    /// Echo: when each outstanding message was sent and its payload
    /// length, oldest first.
    sent_at: VecDeque<(u64, usize)>,
    /// Echo: queued for a refill this turn.
    refill: bool,
    /// Echo with `--pause`: slots waiting for their random pause to end.
    paused: usize,
    /// Subscriber: messages received.
    received: u64,
    /// Subscriber: sequence numbers skipped and not (yet) seen.
    missing: HashSet<u64>,
    /// `--deflate`: what the `101` settled, once open.
    #[cfg(feature = "deflate")]
    deflate: Option<deflate::Session>,
}

impl Conn {
    /// Whether this connection counts for the slowest-subscriber minimum.
    fn live_subscriber(&self) -> bool {
        self.role == Role::Subscriber && matches!(self.phase, Phase::Open | Phase::Closing)
    }
}

/// Per-thread results, merged at the end.
struct Stats {
    /// Echo round-trip or broadcast publish-to-receipt latencies.
    latency: Histogram,
    /// Connect-plus-handshake times.
    connect: Histogram,
    /// Round trips or deliveries completed inside the measured window.
    done: u64,
    /// Round trips or deliveries completed in all (drain included).
    done_total: u64,
    /// Echo: payload bytes of the round trips in the measured window.
    done_bytes: u64,
    /// Data messages sent inside the measured window (echo requests,
    /// publishes).
    sent: u64,
    /// Data messages received compressed inside the measured window.
    compressed_in: u64,
    /// Bytes written to the sockets inside the measured window.
    wire_out: u64,
    /// Bytes read from the sockets inside the measured window.
    wire_in: u64,
    /// `--deflate`: the first `Sec-WebSocket-Extensions` response seen.
    deflate_response: Option<String>,
    /// `--deflate`: how many bytes longer a prepared message was than the
    /// same message compressed whole (the first thread's figure).
    deflate_prepared_extra: Option<i64>,
    /// Connections opened.
    opened: u64,
    /// Connections that failed to open.
    connect_failed: u64,
    /// Wrong replies, unexpected closes, protocol errors.
    errors: u64,
    /// The first few error messages.
    error_samples: Vec<String>,
    /// Echo replies still missing after the drain; broadcast messages a
    /// subscriber never received.
    lost: u64,
    /// Broadcast messages a subscriber received twice.
    duplicated: u64,
    /// Broadcast messages that arrived after a later one.
    reordered: u64,
    /// Broadcast messages published.
    published: u64,
    /// Pings answered.
    pings: u64,
    /// Connect mode: pings answered during the measured part of the hold.
    pings_in_hold: u64,
    /// Leader only: measurements of the server and of this process.
    probe: Probe,
}

/// Readings the leader thread takes at fixed points of the run.
#[derive(Default, Clone)]
struct Probe {
    /// The length of the measured window in seconds.
    window_s: f64,
    /// Server CPU time (ns) at the start and end of the window.
    server_cpu: Option<(u64, u64)>,
    /// This process's CPU time (ns) at the start and end of the window.
    client_cpu: Option<(u64, u64)>,
    /// The server's VmRSS (KiB) once the connections settled.
    rss_after_kb: Option<u64>,
    /// Connect mode: seconds from the first connect until all were open.
    connect_s: f64,
}

impl Stats {
    /// Empty statistics.
    fn new() -> Stats {
        Stats {
            latency: Histogram::new(),
            connect: Histogram::new(),
            done: 0,
            done_total: 0,
            done_bytes: 0,
            sent: 0,
            compressed_in: 0,
            wire_out: 0,
            wire_in: 0,
            deflate_response: None,
            deflate_prepared_extra: None,
            opened: 0,
            connect_failed: 0,
            errors: 0,
            error_samples: Vec::new(),
            lost: 0,
            duplicated: 0,
            reordered: 0,
            published: 0,
            pings: 0,
            pings_in_hold: 0,
            probe: Probe::default(),
        }
    }

    /// Counts an error and keeps the first few messages.
    fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(message());
        }
    }

    /// Adds another thread's statistics.
    fn merge(&mut self, other: Stats) {
        self.latency.merge(&other.latency);
        self.connect.merge(&other.connect);
        self.done += other.done;
        self.done_total += other.done_total;
        self.done_bytes += other.done_bytes;
        self.sent += other.sent;
        self.compressed_in += other.compressed_in;
        self.wire_out += other.wire_out;
        self.wire_in += other.wire_in;
        if self.deflate_response.is_none() {
            self.deflate_response = other.deflate_response;
        }
        if self.deflate_prepared_extra.is_none() {
            self.deflate_prepared_extra = other.deflate_prepared_extra;
        }
        self.opened += other.opened;
        self.connect_failed += other.connect_failed;
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.published += other.published;
        self.pings += other.pings;
        self.pings_in_hold += other.pings_in_hold;
    }
}

/// State shared by the worker threads and the progress printer.
struct Shared {
    /// Timestamps are nanoseconds since this instant.
    base: Instant,
    /// Synchronises the phases of the workers.
    barrier: Barrier,
    /// Connections opened so far (progress).
    opened: AtomicU64,
    /// Round trips or deliveries so far (progress).
    done: AtomicU64,
    /// Broadcast: per thread, the fewest messages any of its subscribers
    /// has received (`u64::MAX` when it has none).
    min_received: Vec<AtomicU64>,
    /// Broadcast: the final number of messages published, once publishing
    /// has stopped.
    published: AtomicU64,
    /// Broadcast: publishing has stopped and `published` is final.
    publishing_done: AtomicBool,
    /// What the workers are doing, for the progress lines.
    stage: Mutex<&'static str>,
    /// Worker threads finished.
    finished: AtomicUsize,
}

impl Shared {
    /// Nanoseconds since the base instant.
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The fewest messages received by any subscriber on any thread.
    fn global_min(&self) -> u64 {
        self.min_received
            .iter()
            .map(|m| m.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Sets the stage shown on progress lines.
    fn set_stage(&self, stage: &'static str) {
        if let Ok(mut s) = self.stage.lock() {
            *s = stage;
        }
    }
}

/// The state the input path needs besides the connection itself.
struct Ctx {
    /// This thread's index.
    thread: usize,
    /// The run's configuration.
    cfg: Arc<Config>,
    /// State shared with the other threads.
    shared: Arc<Shared>,
    /// The message template.
    wire: Wire,
    /// Results so far.
    stats: Stats,
    /// The time of the latest read (ns since base).
    now: u64,
    /// Whether completions count towards the measured window.
    measuring: bool,
    /// Connections to write at the end of this turn.
    dirty: Vec<usize>,
    /// Echo connections to refill at the end of this turn.
    refill: Vec<usize>,
    /// Echo with `--pause`: when each paused slot may send (ns since base)
    /// and its connection, earliest first.
    pauses: BinaryHeap<Reverse<(u64, usize)>>,
    /// Connects and handshakes in flight.
    connecting: usize,
    /// Broadcast: the fewest messages any subscriber on this thread has.
    min: u64,
    /// Broadcast: how many subscribers on this thread are at `min`.
    at_min: u64,
    /// Completions not yet added to the shared progress counter.
    unreported: u64,
    /// For handshake keys.
    rng: Rng,
}

impl Ctx {
    /// Queues `conn` (index `idx`) for a write at the end of the turn.
    fn mark_dirty(&mut self, conn: &mut Conn, idx: usize) {
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Marks `conn` done after an error or EOF, counting what that means.
    fn finish(&mut self, conn: &mut Conn, why: Option<String>) {
        match conn.phase {
            Phase::Connecting | Phase::Handshaking => {
                self.connecting -= 1;
                self.stats.connect_failed += 1;
                if let Some(why) = why {
                    self.stats.error(|| format!("connect failed: {why}"));
                }
            }
            Phase::Open => {
                let why = why.unwrap_or_else(|| "server closed the connection".into());
                self.stats
                    .error(|| format!("{:?} connection lost: {why}", conn.role));
            }
            Phase::Closing | Phase::Done => {}
        }
        if conn.live_subscriber() && conn.received == self.min {
            // It no longer holds the minimum back.
            self.at_min = self.at_min.saturating_sub(1);
        }
        conn.phase = Phase::Done;
        conn.stream = None;
        #[cfg(feature = "tls")]
        {
            conn.tls = None;
        }
        #[cfg(feature = "deflate")]
        {
            conn.deflate = None;
        }
        conn.out = Vec::new();
        conn.inbuf = Vec::new();
    }

    /// Feeds ciphertext read from `conn`'s socket to its TLS session and
    /// ingests the plaintext in one piece; false once `conn` is done (a
    /// TLS error, or the server's close_notify).
    #[cfg(feature = "tls")]
    fn decrypt(&mut self, conn: &mut Conn, idx: usize, cipher: &[u8], plain: &mut Vec<u8>) -> bool {
        let Some(session) = conn.tls.as_mut() else {
            return false;
        };
        let decrypted = tls::receive(session, cipher, plain);
        if session.wants_write() {
            // Handshake messages, or an alert.
            self.mark_dirty(conn, idx);
        }
        match decrypted {
            Ok(peer_closed) => {
                if !plain.is_empty() {
                    self.ingest(conn, idx, plain);
                }
                if peer_closed && conn.phase != Phase::Done {
                    if conn.phase == Phase::Closing {
                        conn.phase = Phase::Done;
                        conn.stream = None;
                        conn.tls = None;
                    } else {
                        self.finish(conn, None);
                    }
                }
                conn.phase != Phase::Done
            }
            Err(why) => {
                self.finish(conn, Some(why));
                false
            }
        }
    }

    /// The connection is ready for traffic.
    fn opened(&mut self, conn: &mut Conn) {
        conn.phase = Phase::Open;
        conn.accept = String::new();
        self.connecting -= 1;
        self.stats.opened += 1;
        self.stats
            .connect
            .record(self.now.saturating_sub(conn.started));
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles bytes read from `conn`.
    fn ingest(&mut self, conn: &mut Conn, idx: usize, data: &[u8]) {
        if conn.phase == Phase::Handshaking && self.wire.raw {
            if data[0] != RAW_GREETING {
                return self.finish(conn, Some("no greeting from the raw server".into()));
            }
            self.opened(conn);
            if data.len() > 1 {
                self.ingest(conn, idx, &data[1..]);
            }
            return;
        }
        if conn.phase == Phase::Handshaking {
            conn.inbuf.extend_from_slice(data);
            let buf = std::mem::take(&mut conn.inbuf);
            match self.handshake_reply(conn, &buf) {
                Ok(None) => conn.inbuf = buf,
                Ok(Some(used)) => {
                    self.opened(conn);
                    if used < buf.len() {
                        self.ingest(conn, idx, &buf[used..]);
                    }
                }
                Err(why) => self.finish(conn, Some(why)),
            }
            return;
        }
        if conn.inbuf.is_empty() {
            let used = self.units(conn, idx, data);
            if conn.phase != Phase::Done {
                conn.inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            conn.inbuf.extend_from_slice(data);
            let buf = std::mem::take(&mut conn.inbuf);
            let used = self.units(conn, idx, &buf);
            if conn.phase != Phase::Done {
                conn.inbuf = buf;
                conn.inbuf.drain(..used);
            }
        }
    }

    /// Checks the server's `101` response; returns the head's length once
    /// complete.
    fn handshake_reply(&mut self, conn: &mut Conn, buf: &[u8]) -> Result<Option<usize>, String> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let used = match response.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => return Ok(None),
            Ok(httparse::Status::Partial) => return Err("response head over 16 KiB".into()),
            Err(e) => return Err(format!("bad response head: {e}")),
        };
        if response.code != Some(101) {
            return Err(format!("status {:?} instead of 101", response.code));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
            return Err("101 without Upgrade: websocket".into());
        }
        if header("Sec-WebSocket-Accept") != Some(conn.accept.as_bytes()) {
            return Err("wrong Sec-WebSocket-Accept".into());
        }
        let extensions: Vec<&[u8]> = response
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
            .map(|h| h.value)
            .collect();
        if !self.cfg.deflate {
            if !extensions.is_empty() {
                return Err("101 with Sec-WebSocket-Extensions, none offered".into());
            }
            return Ok(Some(used));
        }
        #[cfg(feature = "deflate")]
        {
            let params = deflate::parse_response(&extensions)?;
            conn.deflate = Some(deflate::Session::new(params));
            if self.stats.deflate_response.is_none() {
                let joined: Vec<String> = extensions
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                self.stats.deflate_response = Some(joined.join(", "));
            }
        }
        Ok(Some(used))
    }

    /// Handles every complete frame (or raw message) at the front of
    /// `data`; returns the bytes used.
    fn units(&mut self, conn: &mut Conn, idx: usize, data: &[u8]) -> usize {
        if self.wire.raw && conn.role == Role::Idle {
            // The raw echo's heartbeat (`raw_echo --heartbeat`): a probe
            // byte, answered with a reply byte, as a ping with a pong.
            for &byte in data {
                if byte == RAW_PROBE {
                    self.stats.pings += 1;
                    conn.out.push(RAW_PROBE_REPLY);
                    self.mark_dirty(conn, idx);
                }
            }
            return data.len();
        }
        if self.wire.raw {
            let size = self.cfg.size;
            let whole = data.len() / size * size;
            for message in data[..whole].chunks_exact(size) {
                self.message(conn, idx, self.wire.opcode, message);
            }
            return whole;
        }
        let mut at = 0;
        while conn.phase != Phase::Done {
            let rest = &data[at..];
            if rest.len() < 2 {
                break;
            }
            let (b0, b1) = (rest[0], rest[1]);
            // RSV1: a compressed message, on data frames of a connection
            // that negotiated permessage-deflate only.
            let rsv1 = b0 & 0x40 != 0;
            if b1 & 0x80 != 0
                || b0 & 0x30 != 0
                || rsv1 && !(deflated(conn) && matches!(b0 & 0x0F, 0x1 | 0x2))
            {
                self.finish(
                    conn,
                    Some("masked or reserved-bit frame from the server".into()),
                );
                break;
            }
            let (head, len) = match b1 & 0x7F {
                126 if rest.len() >= 4 => (4, usize::from(u16::from_be_bytes([rest[2], rest[3]]))),
                127 if rest.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&rest[2..10]);
                    (
                        10,
                        usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                    )
                }
                126 | 127 => break,
                n => (2, usize::from(n)),
            };
            if len > MAX_PAYLOAD {
                self.finish(conn, Some(format!("frame of {len} bytes from the server")));
                break;
            }
            if rest.len() < head + len {
                break;
            }
            let payload = &rest[head..head + len];
            at += head + len;
            match (b0 & 0x80 != 0, b0 & 0x0F) {
                (true, op @ (0x1 | 0x2)) if rsv1 => self.compressed(conn, idx, op, payload),
                (true, op @ (0x1 | 0x2)) => self.message(conn, idx, op, payload),
                (true, 0x9) => {
                    self.stats.pings += 1;
                    self.wire.push_control(&mut conn.out, 0xA, payload);
                    self.mark_dirty(conn, idx);
                }
                (true, 0xA) => {}
                (true, 0x8) => {
                    if conn.phase == Phase::Open {
                        let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                        self.stats.error(|| {
                            format!("{:?} closed by the server with {code:?}", conn.role)
                        });
                        self.wire.push_control(&mut conn.out, 0x8, &[0x03, 0xE8]);
                        self.mark_dirty(conn, idx);
                        conn.phase = Phase::Closing;
                    }
                }
                (fin, op) => {
                    self.finish(
                        conn,
                        Some(format!("unexpected frame (fin {fin}, opcode {op})")),
                    );
                }
            }
        }
        at
    }

    /// `--deflate`: inflates one compressed data message (with this
    /// thread's inflater, or the connection's own when the server keeps
    /// its context) and handles it.
    fn compressed(&mut self, conn: &mut Conn, idx: usize, opcode: u8, payload: &[u8]) {
        #[cfg(feature = "deflate")]
        {
            // The codec is lent out while the message it inflated (in its
            // buffers) is checked.
            let (Some(mut codec), Some(session)) =
                (self.wire.deflate.take(), conn.deflate.as_mut())
            else {
                return self.finish(conn, Some("compressed frame without deflate".into()));
            };
            match codec.inflate(session, payload, MAX_PAYLOAD) {
                Ok(inflated) => {
                    if self.measuring {
                        self.stats.compressed_in += 1;
                    }
                    self.message(conn, idx, opcode, inflated);
                }
                Err(why) => self.finish(conn, Some(why)),
            }
            self.wire.deflate = Some(codec);
        }
        #[cfg(not(feature = "deflate"))]
        {
            let _ = (idx, opcode, payload);
            self.finish(conn, Some("compressed frame without deflate".into()));
        }
    }

    /// Appends one data message of `len` payload bytes carrying `stamps`
    /// to `conn`'s output: compressed if the connection negotiated
    /// permessage-deflate.
    fn push_message(&mut self, conn: &mut Conn, len: usize, stamps: &[u64]) {
        if self.measuring {
            self.stats.sent += 1;
        }
        #[cfg(feature = "deflate")]
        if let Some(session) = conn.deflate.as_mut() {
            if let Err(why) = self.wire.push_deflated(&mut conn.out, session, len, stamps) {
                self.stats.error(|| format!("compressing a message: {why}"));
            }
            return;
        }
        self.wire.push(&mut conn.out, len, stamps);
    }

    /// Handles one data message.
    fn message(&mut self, conn: &mut Conn, idx: usize, opcode: u8, payload: &[u8]) {
        if conn.phase != Phase::Open && conn.phase != Phase::Closing {
            return;
        }
        let len = match conn.role {
            Role::Echo => conn.sent_at.front().map_or(self.wire.size, |s| s.1),
            _ => self.wire.size,
        };
        let plain = &self.wire.plain[..len];
        if opcode != self.wire.opcode || payload.len() != len {
            self.stats.error(|| {
                format!(
                    "{:?} got opcode {opcode} with {} bytes, wanted {len} bytes",
                    conn.role,
                    payload.len(),
                )
            });
            return;
        }
        match conn.role {
            Role::Echo => {
                let at = self.wire.stamp_at.min(len);
                let n = STAMP.min(len - at);
                let mut want = [0u8; STAMP];
                put_stamp(&mut want[..n], conn.expect_seq);
                if payload[at..at + n] != want[..n]
                    || payload[..at] != plain[..at]
                    || payload[at + n..] != plain[at + n..]
                {
                    let seq = get_stamp(&payload[at..at + n]);
                    let expected = conn.expect_seq;
                    self.stats
                        .error(|| format!("echo reply {seq:?} differs from message {expected}"));
                }
                conn.expect_seq += 1;
                if self.measuring {
                    self.stats.done_bytes += len as u64;
                }
                match conn.sent_at.pop_front() {
                    Some((sent, _)) => self.stats.latency.record(self.now.saturating_sub(sent)),
                    None => self
                        .stats
                        .error(|| "echo reply with nothing outstanding".into()),
                }
                self.complete();
                if !conn.refill {
                    conn.refill = true;
                    self.refill.push(idx);
                }
            }
            Role::Subscriber => {
                let at = self.wire.stamp_at;
                let seq = get_stamp(&payload[at..at + STAMP]);
                let sent = get_stamp(&payload[at + STAMP..at + 2 * STAMP]);
                let (Some(seq), Some(sent)) = (seq, sent) else {
                    self.stats
                        .error(|| "broadcast payload without stamps".into());
                    return;
                };
                if payload[..at] != plain[..at]
                    || payload[at + 2 * STAMP..] != plain[at + 2 * STAMP..]
                {
                    self.stats
                        .error(|| format!("broadcast message {seq} corrupted"));
                }
                self.stats.latency.record(self.now.saturating_sub(sent));
                if seq == conn.expect_seq {
                    conn.expect_seq += 1;
                } else if seq > conn.expect_seq + 1_000_000 {
                    self.stats
                        .error(|| format!("broadcast sequence jumped to {seq}"));
                } else if seq > conn.expect_seq {
                    conn.missing.extend(conn.expect_seq..seq);
                    conn.expect_seq = seq + 1;
                } else if conn.missing.remove(&seq) {
                    self.stats.reordered += 1;
                } else {
                    self.stats.duplicated += 1;
                }
                if conn.received == self.min {
                    self.at_min = self.at_min.saturating_sub(1);
                }
                conn.received += 1;
                self.complete();
            }
            Role::Publisher | Role::Idle => {
                self.stats
                    .error(|| format!("{:?} connection received a message", conn.role));
            }
        }
    }

    /// Counts one completed round trip or delivery.
    fn complete(&mut self) {
        self.stats.done_total += 1;
        if self.measuring {
            self.stats.done += 1;
        }
        self.unreported += 1;
    }
}

/// One worker thread: its poller, its connections and its statistics.
struct Worker {
    /// The thread's poller.
    poll: Poll,
    /// Readiness events.
    events: Events,
    /// Connections by token.
    conns: Vec<Conn>,
    /// The read buffer.
    rbuf: Vec<u8>,
    /// `--tls`: the plaintext of one read's ciphertext.
    #[cfg(feature = "tls")]
    pbuf: Vec<u8>,
    /// The source address index (see [`connect_from`]) of the next connect.
    next_source: usize,
    /// Everything else.
    ctx: Ctx,
}

impl Worker {
    /// A worker for thread `thread`.
    fn new(thread: usize, cfg: Arc<Config>, shared: Arc<Shared>) -> io::Result<Worker> {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15
            ^ (thread as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ shared.now());
        rng.next();
        let key = (rng.next() as u32).to_ne_bytes();
        let wire = Wire::new(&cfg, key);
        Ok(Worker {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            rbuf: vec![0; READ_CHUNK],
            #[cfg(feature = "tls")]
            pbuf: Vec::with_capacity(if cfg.tls { READ_CHUNK + PLAIN_SLACK } else { 0 }),
            next_source: thread % cfg.sources,
            ctx: Ctx {
                thread,
                cfg,
                shared,
                wire,
                stats: Stats::new(),
                now: 0,
                measuring: false,
                dirty: Vec::new(),
                refill: Vec::new(),
                pauses: BinaryHeap::new(),
                connecting: 0,
                min: 0,
                at_min: 0,
                unreported: 0,
                rng,
            },
        })
    }

    /// Starts connecting one connection with `role`.
    fn start_connect(&mut self, role: Role) {
        let idx = self.conns.len();
        let now = self.ctx.shared.now();
        let mut conn = Conn {
            stream: None,
            #[cfg(feature = "tls")]
            tls: None,
            phase: Phase::Done,
            role,
            out: Vec::new(),
            out_pos: 0,
            dirty: false,
            inbuf: Vec::new(),
            accept: String::new(),
            started: now,
            next_seq: 0,
            expect_seq: 0,
            sent_at: VecDeque::new(),
            refill: false,
            paused: 0,
            received: 0,
            missing: HashSet::new(),
            #[cfg(feature = "deflate")]
            deflate: None,
        };
        let source = self.next_source;
        self.next_source = (self.next_source + 1) % self.ctx.cfg.sources;
        match connect_from(self.ctx.cfg.addr, source) {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match self
                    .poll
                    .registry()
                    .register(&mut stream, Token(idx), interest)
                {
                    Ok(()) => {
                        conn.stream = Some(stream);
                        conn.phase = Phase::Connecting;
                        self.ctx.connecting += 1;
                    }
                    Err(e) => {
                        self.ctx.stats.connect_failed += 1;
                        self.ctx.stats.error(|| format!("register failed: {e}"));
                    }
                }
            }
            Err(e) => {
                self.ctx.stats.connect_failed += 1;
                self.ctx.stats.error(|| format!("connect failed: {e}"));
            }
        }
        self.conns.push(conn);
    }

    /// A connecting socket became writable: see whether it is connected.
    fn check_connected(&mut self, idx: usize) {
        let ctx = &mut self.ctx;
        let conn = &mut self.conns[idx];
        let Some(stream) = conn.stream.as_ref() else {
            return;
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return ctx.finish(conn, Some(e.to_string())),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(e) => return ctx.finish(conn, Some(e.to_string())),
        }
        let _ = stream.set_nodelay(true);
        ctx.now = ctx.shared.now();
        #[cfg(feature = "tls")]
        if let Some(client) = &ctx.cfg.tls_client {
            // The ClientHello goes out with the first flush; the upgrade
            // request queued below waits in rustls for the handshake.
            match client.connect() {
                Ok(tls) => conn.tls = Some(Box::new(tls)),
                Err(why) => return ctx.finish(conn, Some(why)),
            }
        }
        if ctx.wire.raw {
            // Wait for the raw server's one-byte greeting.
            conn.phase = Phase::Handshaking;
            return;
        }
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&ctx.rng.next().to_ne_bytes());
        nonce[8..].copy_from_slice(&ctx.rng.next().to_ne_bytes());
        let key = BASE64.encode(nonce);
        let mut sha = Sha1::new();
        sha.update(key.as_bytes());
        sha.update(ACCEPT_GUID);
        conn.accept = BASE64.encode(sha.finalize());
        let _ = write!(
            AsString(&mut conn.out),
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsbench\r\n",
            ctx.cfg.path,
            ctx.cfg.addr
        );
        if ctx.cfg.deflate {
            let _ = write!(
                AsString(&mut conn.out),
                "Sec-WebSocket-Extensions: {OFFER_DEFLATE}\r\n"
            );
        }
        conn.out.extend_from_slice(b"\r\n");
        conn.phase = Phase::Handshaking;
        ctx.mark_dirty(conn, idx);
    }

    /// Reads everything `idx` has, handling it as it comes.
    fn on_readable(&mut self, idx: usize, hang_up: bool) {
        if self.conns[idx].phase == Phase::Connecting {
            self.check_connected(idx);
        }
        let Worker {
            conns,
            rbuf,
            ctx,
            #[cfg(feature = "tls")]
            pbuf,
            ..
        } = self;
        let conn = &mut conns[idx];
        loop {
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            if conn.phase == Phase::Connecting {
                return;
            }
            match stream.read(rbuf) {
                Ok(0) => {
                    if conn.phase == Phase::Closing {
                        conn.phase = Phase::Done;
                        conn.stream = None;
                    } else {
                        ctx.finish(conn, None);
                    }
                    return;
                }
                Ok(n) => {
                    ctx.now = ctx.shared.now();
                    if ctx.measuring {
                        ctx.stats.wire_in += n as u64;
                    }
                    #[cfg(feature = "tls")]
                    if conn.tls.is_some() {
                        if !ctx.decrypt(conn, idx, &rbuf[..n], pbuf) {
                            return;
                        }
                        if n < rbuf.len() && !hang_up {
                            return;
                        }
                        continue;
                    }
                    ctx.ingest(conn, idx, &rbuf[..n]);
                    if n < rbuf.len() && !hang_up {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ctx.finish(conn, Some(e.to_string())),
            }
        }
    }

    /// Writes what `idx` has queued, as far as the socket takes.
    fn flush(&mut self, idx: usize) {
        let Worker { conns, ctx, .. } = self;
        let conn = &mut conns[idx];
        conn.dirty = false;
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        if conn.phase == Phase::Connecting {
            return;
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = conn.tls.as_mut() {
            match tls::send(tls, &conn.out[conn.out_pos..], stream) {
                Ok(written) if ctx.measuring => ctx.stats.wire_out += written as u64,
                Ok(_) => {}
                Err(e) => return ctx.finish(conn, Some(e.to_string())),
            }
            conn.out.clear();
            conn.out_pos = 0;
            return;
        }
        while conn.out_pos < conn.out.len() {
            match stream.write(&conn.out[conn.out_pos..]) {
                Ok(n) => {
                    conn.out_pos += n;
                    if ctx.measuring {
                        ctx.stats.wire_out += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ctx.finish(conn, Some(e.to_string())),
            }
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        } else if conn.out_pos > conn.out.len() / 2 {
            conn.out.drain(..conn.out_pos);
            conn.out_pos = 0;
        }
    }

    /// Waits for events (at most `timeout`) and handles them, then writes
    /// every dirty connection once.
    fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            let idx = event.token().0;
            let hang_up = event.is_read_closed() || event.is_error();
            let (readable, writable) = (event.is_readable() || hang_up, event.is_writable());
            if idx >= self.conns.len() {
                continue;
            }
            if writable {
                if self.conns[idx].phase == Phase::Connecting {
                    self.check_connected(idx);
                } else {
                    let Worker { conns, ctx, .. } = self;
                    ctx.mark_dirty(&mut conns[idx], idx);
                }
            }
            if readable {
                self.on_readable(idx, hang_up);
            }
        }
        self.events = events;
        self.after_input();
        Ok(())
    }

    /// End-of-batch work: refills, publishing, the subscriber minimum,
    /// progress, and one write per dirty connection.
    fn after_input(&mut self) {
        if self.ctx.cfg.mode == Mode::Broadcast && self.ctx.at_min == 0 {
            self.recompute_min();
        }
        self.end_pauses();
        for idx in std::mem::take(&mut self.ctx.refill) {
            self.conns[idx].refill = false;
            self.fill_echo(idx);
        }
        if self.ctx.unreported > 0 {
            self.ctx
                .shared
                .done
                .fetch_add(self.ctx.unreported, Ordering::Relaxed);
            self.ctx.unreported = 0;
        }
        for idx in std::mem::take(&mut self.ctx.dirty) {
            self.flush(idx);
        }
    }

    /// Recomputes this thread's slowest-subscriber count and publishes it.
    fn recompute_min(&mut self) {
        let mut min = u64::MAX;
        let mut at_min = 0;
        for conn in self.conns.iter().filter(|c| c.live_subscriber()) {
            match conn.received.cmp(&min) {
                std::cmp::Ordering::Less => {
                    min = conn.received;
                    at_min = 1;
                }
                std::cmp::Ordering::Equal => at_min += 1,
                std::cmp::Ordering::Greater => {}
            }
        }
        self.ctx.min = min;
        self.ctx.at_min = at_min.max(1);
        self.ctx.shared.min_received[self.ctx.thread].store(min, Ordering::Release);
    }

    /// Tops echo connection `idx` up to `--inflight` messages in flight
    /// (with `--pause`: in flight or waiting for their pause to end).
    fn fill_echo(&mut self, idx: usize) {
        let Worker { conns, ctx, .. } = self;
        let conn = &mut conns[idx];
        if conn.phase != Phase::Open || conn.role != Role::Echo || !ctx.measuring {
            return;
        }
        let now = ctx.shared.now();
        if !ctx.cfg.pause.is_zero() {
            let span = 2 * ctx.cfg.pause.as_nanos() as u64 + 1;
            while conn.sent_at.len() + conn.paused < ctx.cfg.inflight {
                let due = now + ctx.rng.next() % span;
                ctx.pauses.push(Reverse((due, idx)));
                conn.paused += 1;
            }
            return;
        }
        let mut added = false;
        while conn.sent_at.len() < ctx.cfg.inflight {
            send_echo(ctx, conn, now);
            added = true;
        }
        if added {
            ctx.mark_dirty(conn, idx);
        }
    }

    /// With `--pause`: sends the messages whose pause has ended.
    fn end_pauses(&mut self) {
        let Worker { conns, ctx, .. } = self;
        let now = ctx.shared.now();
        while let Some(&Reverse((due, idx))) = ctx.pauses.peek() {
            if due > now {
                break;
            }
            ctx.pauses.pop();
            let conn = &mut conns[idx];
            conn.paused -= 1;
            if conn.phase == Phase::Open && ctx.measuring {
                send_echo(ctx, conn, now);
                ctx.mark_dirty(conn, idx);
            }
        }
    }

    /// How long until the earliest pause ends (`None` without pauses).
    fn next_pause_end(&self) -> Option<Duration> {
        let Reverse((due, _)) = self.ctx.pauses.peek()?;
        Some(Duration::from_nanos(
            due.saturating_sub(self.ctx.shared.now()),
        ))
    }

    /// Publishes as many messages as the window allows on `idx`.
    fn fill_publisher(&mut self, idx: usize) {
        let Worker { conns, ctx, .. } = self;
        let conn = &mut conns[idx];
        if conn.phase != Phase::Open {
            return;
        }
        let min = ctx.shared.global_min();
        if min == u64::MAX {
            return;
        }
        let outstanding = ctx.stats.published.saturating_sub(min);
        if outstanding >= ctx.cfg.window {
            return;
        }
        let now = ctx.shared.now();
        for _ in outstanding..ctx.cfg.window {
            let size = ctx.wire.size;
            ctx.push_message(conn, size, &[ctx.stats.published, now]);
            ctx.stats.published += 1;
        }
        ctx.mark_dirty(conn, idx);
    }

    /// Opens every connection planned for this thread (at most
    /// `--connect-window` in flight), until `deadline`.
    fn connect_all(&mut self, count: usize, role: Role, deadline: Instant) -> io::Result<()> {
        let mut left = count;
        let began = Instant::now();
        let mut started = 0usize;
        // This thread's share of `--connect-rate`, per second.
        let rate = self
            .ctx
            .cfg
            .connect_rate
            .map(|r| r / self.ctx.cfg.threads as f64);
        loop {
            let mut allowed = rate.map_or(usize::MAX, |r| {
                ((began.elapsed().as_secs_f64() * r) as usize + 1).saturating_sub(started)
            });
            while left > 0 && allowed > 0 && self.ctx.connecting < self.ctx.cfg.connect_window {
                self.start_connect(role);
                left -= 1;
                started += 1;
                allowed -= 1;
            }
            if left == 0 && self.ctx.connecting == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let tick = if rate.is_some() && left > 0 {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            self.turn((deadline - now).min(tick))?;
        }
        let ctx = &mut self.ctx;
        for conn in &mut self.conns {
            if matches!(conn.phase, Phase::Connecting | Phase::Handshaking) {
                ctx.finish(conn, Some("timed out".into()));
            }
        }
        ctx.stats.connect_failed += left as u64;
        if left > 0 {
            ctx.stats
                .error(|| format!("{left} connections not attempted before the deadline"));
        }
        Ok(())
    }

    /// Sends close frames (or drops raw sockets) and waits for the server
    /// to finish the closing handshake.
    fn close_all(&mut self) -> io::Result<()> {
        self.ctx.measuring = false;
        for idx in 0..self.conns.len() {
            let Worker { conns, ctx, .. } = self;
            let conn = &mut conns[idx];
            match conn.phase {
                Phase::Open if !ctx.wire.raw => {
                    ctx.wire.push_control(&mut conn.out, 0x8, &[0x03, 0xE8]);
                    conn.phase = Phase::Closing;
                    ctx.mark_dirty(conn, idx);
                }
                Phase::Done | Phase::Closing => {}
                _ => {
                    conn.phase = Phase::Done;
                    conn.stream = None;
                }
            }
        }
        self.after_input();
        let deadline = Instant::now() + CLOSE_WAIT;
        while self.conns.iter().any(|c| c.phase == Phase::Closing) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.turn((deadline - now).min(Duration::from_millis(100)))?;
        }
        self.conns.clear();
        Ok(())
    }
}

/// Queues echo connection `conn`'s next message (of a random size with
/// `--size-max`), sent at `now`.
fn send_echo(ctx: &mut Ctx, conn: &mut Conn, now: u64) {
    let (min, max) = (ctx.cfg.size, ctx.cfg.size_max);
    let len = if max > min {
        min + (ctx.rng.next() % (max - min + 1) as u64) as usize
    } else {
        min
    };
    ctx.push_message(conn, len, &[conn.next_seq]);
    conn.next_seq += 1;
    conn.sent_at.push_back((now, len));
}

/// Whether `conn` negotiated permessage-deflate.
fn deflated(conn: &Conn) -> bool {
    #[cfg(feature = "deflate")]
    return conn.deflate.is_some();
    #[cfg(not(feature = "deflate"))]
    {
        let _ = conn;
        false
    }
}

/// Lets `write!` append to a byte vector.
struct AsString<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for AsString<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// How many connections thread `t` of `threads` opens out of `n`.
fn share(n: usize, t: usize, threads: usize) -> usize {
    n / threads + usize::from(t < n % threads)
}

/// Runs one worker thread from the first connect to the last close.
fn run_worker(thread: usize, cfg: Arc<Config>, shared: Arc<Shared>) -> io::Result<Stats> {
    let mut w = Worker::new(thread, Arc::clone(&cfg), Arc::clone(&shared))?;
    let leader = thread == 0;
    let mine = share(cfg.conns, thread, cfg.threads);
    let role = match cfg.mode {
        Mode::Echo => Role::Echo,
        Mode::Broadcast => Role::Subscriber,
        Mode::Connect => Role::Idle,
    };
    let connect_budget = match cfg.mode {
        Mode::Connect => cfg.duration.max(Duration::from_secs(1)),
        _ => Duration::from_secs(10).max(Duration::from_millis(cfg.conns as u64)),
    };
    let connect_started = Instant::now();
    w.connect_all(mine, role, connect_started + connect_budget)?;
    let connect_s = connect_started.elapsed().as_secs_f64();
    shared.barrier.wait();
    if cfg.mode == Mode::Broadcast {
        w.recompute_min();
        shared.barrier.wait();
        if leader {
            shared.set_stage("publisher connecting");
            w.connect_all(1, Role::Publisher, Instant::now() + Duration::from_secs(10))?;
        }
        shared.barrier.wait();
    }
    let publisher = w.conns.iter().position(|c| c.role == Role::Publisher);
    if leader {
        shared.set_stage(match cfg.mode {
            Mode::Connect => "holding",
            _ => "measuring",
        });
    }

    // The measured window (echo, broadcast) or the hold (connect).
    let start = Instant::now();
    let window = match cfg.mode {
        Mode::Connect => SETTLE + cfg.hold,
        _ => cfg.duration,
    };
    let end = start + window;
    let mut probe_start = None;
    // Pings answered before the hold's measured part, so that the pings of
    // the hold alone can be reported beside the server's CPU over it.
    let mut pings_before_hold = None;
    let mut probe = Probe {
        connect_s,
        ..Probe::default()
    };
    let take_probe = |cfg: &Config| {
        let server = cfg
            .server_pid
            .and_then(|pid| cpu_ns(&format!("/proc/{pid}")));
        (server, cpu_ns("/proc/self"))
    };
    if leader && cfg.mode != Mode::Connect {
        probe_start = Some((Instant::now(), take_probe(&cfg)));
    }
    w.ctx.measuring = true;
    let echo_conns: Vec<usize> = (0..w.conns.len()).collect();
    for idx in echo_conns {
        w.fill_echo(idx);
    }
    loop {
        if let Some(p) = publisher {
            w.fill_publisher(p);
        }
        w.after_input();
        let now = Instant::now();
        if cfg.mode == Mode::Connect && pings_before_hold.is_none() && now >= start + SETTLE {
            pings_before_hold = Some(w.ctx.stats.pings);
        }
        if leader && cfg.mode == Mode::Connect && probe_start.is_none() && now >= start + SETTLE {
            probe.rss_after_kb = cfg.server_pid.and_then(vm_rss_kb);
            probe_start = Some((now, take_probe(&cfg)));
        }
        if now >= end {
            break;
        }
        let mut timeout = (end - now).min(Duration::from_millis(100));
        if publisher.is_some() && cfg.threads > 1 {
            timeout = timeout.min(Duration::from_millis(1));
        }
        if cfg.mode == Mode::Connect && probe_start.is_none() && leader {
            timeout = timeout.min((start + SETTLE).saturating_duration_since(now));
        }
        if let Some(pause) = w.next_pause_end() {
            timeout = timeout.min(pause);
        }
        w.turn(timeout)?;
    }
    w.ctx.measuring = false;
    w.ctx.stats.pings_in_hold = w.ctx.stats.pings - pings_before_hold.unwrap_or(w.ctx.stats.pings);
    if let Some((at, (server0, client0))) = probe_start {
        let (server1, client1) = take_probe(&cfg);
        probe.window_s = at.elapsed().as_secs_f64();
        probe.server_cpu = server0.zip(server1);
        probe.client_cpu = client0.zip(client1);
    }

    // Drain: wait for the replies and deliveries still in flight.
    if leader {
        shared.set_stage("draining");
    }
    if let Some(p) = publisher {
        w.flush(p);
        shared
            .published
            .store(w.ctx.stats.published, Ordering::Release);
        shared.publishing_done.store(true, Ordering::Release);
    }
    let drain_end = Instant::now() + DRAIN;
    loop {
        let pending = match cfg.mode {
            Mode::Echo => w
                .conns
                .iter()
                .any(|c| c.phase == Phase::Open && !c.sent_at.is_empty()),
            Mode::Broadcast => {
                !shared.publishing_done.load(Ordering::Acquire)
                    || w.ctx.min < shared.published.load(Ordering::Acquire)
            }
            Mode::Connect => false,
        };
        let now = Instant::now();
        if !pending || now >= drain_end {
            break;
        }
        w.turn((drain_end - now).min(Duration::from_millis(10)))?;
        if cfg.mode == Mode::Broadcast {
            w.recompute_min();
        }
    }
    let published = shared.published.load(Ordering::Acquire);
    for conn in &w.conns {
        match conn.role {
            Role::Echo => w.ctx.stats.lost += conn.sent_at.len() as u64,
            Role::Subscriber if conn.phase != Phase::Done => {
                let unique = conn.expect_seq - conn.missing.len() as u64;
                w.ctx.stats.lost += published.saturating_sub(unique);
            }
            Role::Subscriber => w.ctx.stats.lost += published.saturating_sub(conn.received),
            _ => {}
        }
    }
    if leader {
        shared.set_stage("closing");
    }
    w.close_all()?;
    w.ctx.stats.probe = probe;
    #[cfg(feature = "deflate")]
    {
        w.ctx.stats.deflate_prepared_extra = w.ctx.wire.prepared_extra;
    }
    Ok(w.ctx.stats)
}

/// The CPU time a process (`/proc/PID` or `/proc/self`) has used, in ns:
/// the sum over its threads of `task/*/schedstat` (nanosecond resolution),
/// or else utime + stime from `stat` (10 ms ticks).
fn cpu_ns(proc_dir: &str) -> Option<u64> {
    let from_schedstat = std::fs::read_dir(format!("{proc_dir}/task"))
        .ok()
        .map(|tasks| {
            tasks
                .filter_map(|task| {
                    let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                    text.split_whitespace().next()?.parse::<u64>().ok()
                })
                .sum::<u64>()
        })
        .filter(|&ns| ns > 0);
    from_schedstat.or_else(|| {
        let stat = std::fs::read_to_string(format!("{proc_dir}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(ticks * (1_000_000_000 / CLOCK_TICKS))
    })
}

/// A process's resident set size in KiB.
fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The soft limit on open descriptors, from `/proc/self/limits`.
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Settles `--sources`: the number asked for, or as many loopback source
/// addresses as `--conns` needs given the ephemeral port range (keeping
/// 1,000 ports per address for everything else on the machine).
fn with_sources(mut cfg: Config) -> Result<Config, String> {
    let ports = port_range().unwrap_or(28_000).saturating_sub(1000).max(1);
    let needed = (cfg.conns + 1).div_ceil(ports);
    if cfg.sources == 0 {
        cfg.sources = needed;
    }
    if cfg.sources < needed {
        return Err(format!(
            "{} connections need {needed} source addresses ({ports} ports each), \
             not --sources {}",
            cfg.conns, cfg.sources
        ));
    }
    if cfg.sources > 254 || cfg.sources > 1 && !cfg.addr.is_ipv4() {
        return Err(format!(
            "{} connections need {} loopback source addresses: use an IPv4 server address \
             and fewer connections",
            cfg.conns, cfg.sources
        ));
    }
    Ok(cfg)
}

/// Starts a non-blocking connect to `addr` from the loopback source
/// address `127.0.0.{index + 1}` (any port). With one source the kernel
/// picks the address as usual; binding first is what lets each further
/// address bring its own ephemeral port range.
fn connect_from(addr: SocketAddr, index: usize) -> io::Result<TcpStream> {
    if index == 0 {
        return TcpStream::connect(addr);
    }
    let host = u8::try_from(index + 1).map_err(|_| io::ErrorKind::InvalidInput)?;
    let source = SocketAddr::from(([127, 0, 0, host], 0));
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.bind(&source.into())?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// `EINPROGRESS` on Linux: a non-blocking connect has started.
const EINPROGRESS: i32 = 115;

/// The number of ephemeral ports, from `/proc/sys/net/ipv4/ip_local_port_range`.
fn port_range() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<usize>().ok());
    let (low, high) = (parts.next()??, parts.next()??);
    Some(high.saturating_sub(low) + 1)
}

/// Clock ticks per second (USER_HZ), 100 on Linux.
const CLOCK_TICKS: u64 = 100;

/// CPU use in percent of one core over a probe window.
fn cpu_pct(ns: Option<(u64, u64)>, seconds: f64) -> Option<f64> {
    let (a, b) = ns?;
    (seconds > 0.0).then(|| b.saturating_sub(a) as f64 / 1e9 / seconds * 100.0)
}

/// CPU time per completed message in ns over a probe window.
fn cpu_per_message(ns: Option<(u64, u64)>, messages: u64) -> Option<f64> {
    let (a, b) = ns?;
    (messages > 0).then(|| b.saturating_sub(a) as f64 / messages as f64)
}

/// Builds the one-line JSON result.
struct Json(String);

impl Json {
    /// Adds a string field.
    fn str(&mut self, key: &str, value: &str) -> &mut Json {
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => vec![' '],
                c => vec![c],
            })
            .collect();
        self.field(key, &format!("\"{escaped}\""))
    }

    /// Adds a numeric field (`null` when absent or not finite).
    fn num(&mut self, key: &str, value: Option<f64>) -> &mut Json {
        let text = match value {
            Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
            Some(v) if v.is_finite() => format!("{v:.3}"),
            _ => "null".into(),
        };
        self.field(key, &text)
    }

    /// Adds a field with an already encoded value.
    fn field(&mut self, key: &str, value: &str) -> &mut Json {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        let _ = write!(self.0, "\"{key}\":{value}");
        self
    }
}

/// Parses the command line, runs the workers, prints the results.
fn main() {
    let cfg = match Config::parse(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("wsbench: {e}");
            std::process::exit(2);
        }
    };
    let needed = cfg.conns + 1 + SPARE_FDS;
    if let Some(limit) = fd_limit()
        && needed > limit
    {
        eprintln!("wsbench: {needed} descriptors needed but `ulimit -n` is {limit}");
        std::process::exit(2);
    }
    let cfg = match with_sources(cfg) {
        Ok(cfg) => Arc::new(cfg),
        Err(e) => {
            eprintln!("wsbench: {e}");
            std::process::exit(2);
        }
    };
    let rss_before = cfg.server_pid.and_then(vm_rss_kb);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        barrier: Barrier::new(cfg.threads),
        opened: AtomicU64::new(0),
        done: AtomicU64::new(0),
        min_received: (0..cfg.threads).map(|_| AtomicU64::new(u64::MAX)).collect(),
        published: AtomicU64::new(0),
        publishing_done: AtomicBool::new(false),
        stage: Mutex::new("connecting"),
        finished: AtomicUsize::new(0),
    });
    let workers: Vec<_> = (0..cfg.threads)
        .map(|t| {
            let (cfg, shared) = (Arc::clone(&cfg), Arc::clone(&shared));
            std::thread::Builder::new()
                .name(format!("wsbench-{t}"))
                .spawn(move || {
                    let result = run_worker(t, cfg, Arc::clone(&shared));
                    shared.finished.fetch_add(1, Ordering::Release);
                    result
                })
                .expect("spawn a worker thread")
        })
        .collect();
    let planned = match cfg.mode {
        Mode::Connect => cfg.duration.min(Duration::from_secs(5)) + cfg.hold,
        _ => cfg.duration,
    };
    let show = cfg.progress.unwrap_or(planned >= Duration::from_secs(3));
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    while shared.finished.load(Ordering::Acquire) < cfg.threads {
        std::thread::sleep(Duration::from_millis(50));
        if !show || last.0.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let done = shared.done.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
        let stage = shared.stage.lock().map(|s| *s).unwrap_or("?");
        let what = match cfg.mode {
            Mode::Echo => format!("  round trips {rate:>10.0}/s"),
            Mode::Broadcast => format!("  deliveries {rate:>10.0}/s"),
            Mode::Connect => String::new(),
        };
        eprintln!(
            "[{:5.1}s] {stage:<20} open {:>6}{what}",
            started.elapsed().as_secs_f64(),
            shared.opened.load(Ordering::Relaxed),
        );
        last = (Instant::now(), done);
    }
    let mut total = Stats::new();
    let mut probe = Probe::default();
    for (t, handle) in workers.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(stats)) => {
                if t == 0 {
                    probe = stats.probe.clone();
                }
                total.merge(stats);
            }
            Ok(Err(e)) => total.error(|| format!("worker {t} failed: {e}")),
            Err(_) => total.error(|| format!("worker {t} panicked")),
        }
    }
    report(&cfg, &total, &probe, rss_before);
}

/// Prints the human summary and the `RESULT` line; exits 1 on errors.
fn report(cfg: &Config, s: &Stats, probe: &Probe, rss_before: Option<u64>) {
    let secs = probe.window_s.max(1e-9);
    let server_cpu = cpu_pct(probe.server_cpu, probe.window_s);
    let client_cpu = cpu_pct(probe.client_cpu, probe.window_s);
    let server_ns = cpu_per_message(probe.server_cpu, s.done);
    let client_ns = cpu_per_message(probe.client_cpu, s.done);
    let target = if cfg.raw { "raw TCP" } else { "WebSocket" };
    let kind = if cfg.binary { "binary" } else { "text" };
    let mut json = Json("{".into());
    json.str("mode", cfg.mode.name())
        .field("raw", if cfg.raw { "true" } else { "false" })
        .str("label", &cfg.label)
        .num("conns", Some(cfg.conns as f64))
        .num("threads", Some(cfg.threads as f64))
        .num("sources", Some(cfg.sources as f64))
        .num("size", Some(cfg.size as f64))
        .str("kind", kind)
        .str("payload", cfg.payload.name())
        .field("deflate", if cfg.deflate { "true" } else { "false" })
        .num("window_s", Some(probe.window_s));
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}%"));
    println!(
        "wsbench {} ({target}) against {}",
        cfg.mode.name(),
        cfg.addr
    );
    match cfg.mode {
        Mode::Echo => {
            let rate = s.done as f64 / secs;
            let mbps = s.done_bytes as f64 / secs / 1e6;
            let sizes = if cfg.size_max > cfg.size {
                format!("{}..={}", cfg.size, cfg.size_max)
            } else {
                cfg.size.to_string()
            };
            let pause = if cfg.pause.is_zero() {
                String::new()
            } else {
                format!(
                    ", random pauses of {:.2} s on average",
                    cfg.pause.as_secs_f64()
                )
            };
            println!(
                "  {} conns x {} in flight, {sizes} B {kind}{pause}, {:.1} s measured",
                cfg.conns, cfg.inflight, probe.window_s
            );
            println!(
                "  round trips: {} ({rate:.0}/s), {mbps:.1} MB/s of payload each way",
                s.done
            );
            println!(
                "  latency: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
                s.latency.us(0.5),
                s.latency.us(0.99),
                s.latency.us(0.999),
                s.latency.max as f64 / 1e3
            );
            if s.pings > 0 {
                println!("  {} pings answered", s.pings);
            }
            json.num("inflight", Some(cfg.inflight as f64))
                .num("size_max", Some(cfg.size_max as f64))
                .num("pause_s", Some(cfg.pause.as_secs_f64()))
                .num("pings", Some(s.pings as f64))
                .num("round_trips", Some(s.done as f64))
                .num("rt_per_s", Some(rate))
                .num("mb_per_s", Some(mbps));
        }
        Mode::Broadcast => {
            let published = s.published as f64 / secs;
            let deliveries = s.done as f64 / secs;
            println!(
                "  1 publisher -> {} subscribers, {} B {kind}, window {}, {:.1} s measured",
                cfg.conns, cfg.size, cfg.window, probe.window_s
            );
            println!(
                "  published: {} ({published:.0}/s), deliveries: {} ({deliveries:.0}/s)",
                s.published, s.done_total
            );
            println!(
                "  fan-out latency: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
                s.latency.us(0.5),
                s.latency.us(0.99),
                s.latency.us(0.999),
                s.latency.max as f64 / 1e3
            );
            println!(
                "  lost {}, duplicated {}, reordered {}",
                s.lost, s.duplicated, s.reordered
            );
            json.num("window", Some(cfg.window as f64))
                .num("published", Some(s.published as f64))
                .num("published_per_s", Some(published))
                .num("deliveries", Some(s.done_total as f64))
                .num("deliveries_per_s", Some(deliveries))
                .num("duplicated", Some(s.duplicated as f64))
                .num("reordered", Some(s.reordered as f64));
        }
        Mode::Connect => {
            let rate = s.opened as f64 / probe.connect_s.max(1e-9);
            println!(
                "  {} of {} connections open from {} source address(es) in {:.2} s ({rate:.0}/s), \
                 connect p50 {:.0} us, p99 {:.0} us",
                s.opened,
                cfg.conns,
                cfg.sources,
                probe.connect_s,
                s.connect.us(0.5),
                s.connect.us(0.99)
            );
            json.num("opened", Some(s.opened as f64))
                .num("connect_s", Some(probe.connect_s))
                .num("connects_per_s", Some(rate))
                .num("connect_p50_us", Some(s.connect.us(0.5)))
                .num("connect_p99_us", Some(s.connect.us(0.99)))
                .num("hold_s", Some(cfg.hold.as_secs_f64()))
                .num("pings", Some(s.pings as f64))
                .num("pings_in_hold", Some(s.pings_in_hold as f64));
            let rss_after = probe.rss_after_kb;
            let per_conn = rss_before
                .zip(rss_after)
                .filter(|_| s.opened > 0)
                .map(|(a, b)| (b as f64 - a as f64) * 1024.0 / s.opened as f64);
            if let (Some(a), Some(b), Some(p)) = (rss_before, rss_after, per_conn) {
                println!("  server VmRSS {a} KiB -> {b} KiB: {p:.0} bytes per connection");
            }
            if cfg.hold > Duration::ZERO {
                println!(
                    "  held {:.1} s: server CPU {}, {} pings answered",
                    probe.window_s,
                    pct(server_cpu),
                    s.pings
                );
            }
            json.num("rss_before_kb", rss_before.map(|v| v as f64))
                .num("rss_after_kb", rss_after.map(|v| v as f64))
                .num("rss_per_conn_bytes", per_conn);
        }
    }
    // Bytes on the sockets per message sent and per message received.
    let per_out =
        (cfg.mode != Mode::Connect && s.sent > 0).then(|| s.wire_out as f64 / s.sent as f64);
    let per_in =
        (cfg.mode != Mode::Connect && s.done > 0).then(|| s.wire_in as f64 / s.done as f64);
    let compressed_pct =
        (cfg.deflate && s.done > 0).then(|| s.compressed_in as f64 * 100.0 / s.done as f64);
    if cfg.deflate {
        let prepared = match s.deflate_prepared_extra {
            Some(extra) => format!(
                "; its messages are prepared frames, {extra:+} B against compressing \
                 each whole"
            ),
            None => String::new(),
        };
        println!(
            "  permessage-deflate: {} (wsbench compresses at level {}{prepared})",
            s.deflate_response.as_deref().unwrap_or("not negotiated"),
            cfg.deflate_level
        );
    }
    if let (Some(out), Some(inb)) = (per_out, per_in) {
        let (sent, received, plural) = match cfg.mode {
            Mode::Broadcast => ("publish", "delivery", "deliveries"),
            _ => ("request", "reply", "replies"),
        };
        let payload = if cfg.mode == Mode::Echo && s.done > 0 {
            s.done_bytes as f64 / s.done as f64
        } else {
            cfg.size as f64
        };
        let compressed = compressed_pct.map_or(String::new(), |p| {
            format!(", {p:.0}% of {plural} compressed")
        });
        println!(
            "  wire: {out:.1} B out per {sent}, {inb:.1} B in per {received} \
             (payload {payload:.0} B{compressed})"
        );
    }
    json.num("wire_bytes_out", Some(s.wire_out as f64))
        .num("wire_bytes_in", Some(s.wire_in as f64))
        .num("wire_bytes_out_per_msg", per_out)
        .num("wire_bytes_in_per_msg", per_in);
    if cfg.deflate {
        json.num("deflate_level", Some(f64::from(cfg.deflate_level)))
            .field(
                "deflate_full",
                if cfg.deflate_full { "true" } else { "false" },
            )
            .num(
                "deflate_prepared_extra_bytes",
                s.deflate_prepared_extra.map(|v| v as f64),
            )
            .str(
                "deflate_response",
                s.deflate_response.as_deref().unwrap_or(""),
            )
            .num("compressed_in_pct", compressed_pct);
    }
    if cfg.mode != Mode::Connect {
        json.num("lat_p50_us", Some(s.latency.us(0.5)))
            .num("lat_p99_us", Some(s.latency.us(0.99)))
            .num("lat_p999_us", Some(s.latency.us(0.999)))
            .num("lat_max_us", Some(s.latency.max as f64 / 1e3));
    }
    let per = |v: Option<f64>| v.map_or(String::new(), |v| format!(" ({v:.0} ns per message)"));
    println!(
        "  server CPU {}{}, wsbench CPU {}{}",
        pct(server_cpu),
        per(server_ns),
        pct(client_cpu),
        per(client_ns)
    );
    let failed = s.errors + s.lost + s.duplicated + s.reordered + s.connect_failed;
    if failed > 0 {
        println!(
            "  PROBLEMS: {} errors, {} lost, {} failed connects",
            s.errors, s.lost, s.connect_failed
        );
        for e in &s.error_samples {
            println!("    {e}");
        }
    }
    json.num("lost", Some(s.lost as f64))
        .num("errors", Some(s.errors as f64))
        .num("connect_failed", Some(s.connect_failed as f64))
        .num("server_cpu_pct", server_cpu)
        .num("client_cpu_pct", client_cpu)
        .num("server_ns_per_msg", server_ns)
        .num("client_ns_per_msg", client_ns);
    json.0.push('}');
    println!("RESULT {}", json.0);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The TLS client of `--tls`: rustls' buffered `ClientConnection` with the
/// server's crypto provider, driven from memory by the worker's reads.
#[cfg(feature = "tls")]
mod tls {
    use std::io::{self, Read, Write};
    use std::sync::Arc;

    use rustls::client::Resumption;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };

    use super::Config;

    /// What every connection's session is made from.
    #[derive(Debug, Clone)]
    pub struct Client {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    }

    impl Client {
        /// The client `--ca`/`--insecure` and `--server-name` ask for.
        pub fn new(cfg: &Config) -> Result<Client, String> {
            let provider = Arc::new(browser_order(&wsloop::tls::provider()));
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("--tls: {e}"))?;
            let mut config = match &cfg.ca {
                Some(path) => {
                    let mut roots = RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("--ca {path}: {e}"))?;
                    for cert in certs {
                        let cert = cert.map_err(|e| format!("--ca {path}: {e}"))?;
                        roots.add(cert).map_err(|e| format!("--ca {path}: {e}"))?;
                    }
                    if roots.is_empty() {
                        return Err(format!("--ca {path}: no CERTIFICATE block found"));
                    }
                    builder.with_root_certificates(roots).with_no_client_auth()
                }
                None => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                    .with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            // Every connection pays a full handshake, as distinct clients do.
            config.resumption = Resumption::disabled();
            let name = ServerName::try_from(cfg.server_name.clone())
                .map_err(|e| format!("--server-name {}: {e}", cfg.server_name))?;
            Ok(Client {
                config: Arc::new(config),
                name,
            })
        }

        /// A new session, its ClientHello ready to send.
        pub fn connect(&self) -> Result<ClientConnection, String> {
            let mut session = ClientConnection::new(self.config.clone(), self.name.clone())
                .map_err(|e| format!("TLS: {e}"))?;
            // The load generator's own queue is the bound on what it sends.
            session.set_buffer_limit(None);
            Ok(session)
        }
    }

    /// `provider` with its key exchange groups and cipher suites in the
    /// order browsers offer them: the server takes the client's first
    /// choice it supports, and rustls' ring provider lists P-384 first,
    /// which would make every benchmarked handshake a P-384 one (several
    /// times the CPU of X25519) unlike any browser's.
    fn browser_order(provider: &CryptoProvider) -> CryptoProvider {
        use rustls::{CipherSuite, NamedGroup};
        let group_rank = |name: NamedGroup| match name {
            NamedGroup::X25519MLKEM768 => 0,
            NamedGroup::X25519 => 1,
            NamedGroup::secp256r1 => 2,
            _ => 3,
        };
        let suite_rank = |suite: CipherSuite| match suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
            _ => 4,
        };
        let mut ordered = provider.clone();
        ordered
            .kx_groups
            .sort_by_key(|group| group_rank(group.name()));
        ordered
            .cipher_suites
            .sort_by_key(|suite| suite_rank(suite.suite()));
        ordered
    }

    /// Feeds `cipher` (one socket read) to `session` and appends all the
    /// plaintext it yields to `plain` (cleared first); true once the server
    /// sent close_notify.
    pub fn receive(
        session: &mut ClientConnection,
        mut cipher: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<bool, String> {
        plain.clear();
        while !cipher.is_empty() {
            // rustls takes a few KiB per call; draining the plaintext after
            // each keeps its buffers from filling.
            session
                .read_tls(&mut cipher)
                .map_err(|e| format!("TLS: {e}"))?;
            let state = session
                .process_new_packets()
                .map_err(|e| format!("TLS: {e}"))?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let at = plain.len();
                plain.resize(at + available, 0);
                session
                    .reader()
                    .read_exact(&mut plain[at..])
                    .map_err(|e| format!("TLS: {e}"))?;
            }
            if state.peer_has_closed() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Puts `plain` (all of it: the session's buffer is unbounded) into
    /// `session` and writes its ciphertext to `socket` as far as it takes;
    /// returns the bytes written to `socket`.
    pub fn send(
        session: &mut ClientConnection,
        plain: &[u8],
        socket: &mut impl Write,
    ) -> io::Result<usize> {
        if !plain.is_empty() {
            session.writer().write_all(plain)?;
        }
        let mut written = 0;
        while session.wants_write() {
            match session.write_tls(socket) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// `--insecure`: any certificate is accepted, but the handshake
    /// signature is still verified, so a handshake costs the client what a
    /// verifying client's does (less the chain check).
    #[derive(Debug)]
    struct AcceptAny(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Config, String> {
        Config::parse(args.split_whitespace().map(String::from))
    }

    #[test]
    fn stamps_round_trip_in_json_safe_digits() {
        for v in [0, 1, 63, 64, 4095, 1 << 47, (1 << 48) - 1, 0xDEAD_BEEF] {
            let mut b = [0u8; STAMP];
            put_stamp(&mut b, v);
            assert!(
                b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_".contains(c))
            );
            assert_eq!(get_stamp(&b), Some(v));
        }
        assert_eq!(get_stamp(b"0000000\\"), None);
    }

    #[test]
    fn payload_documents() {
        for (kind, size) in [
            (Payload::Chat, 60..=80),
            (Payload::Ticker, 190..=210),
            (Payload::Json16k, 16384..=16384),
        ] {
            let (doc, at) = kind.document().unwrap();
            assert!(
                size.contains(&doc.len()),
                "{} is {} B",
                kind.name(),
                doc.len()
            );
            assert!(doc.is_ascii() && !doc.contains(&b'\\'));
            assert_eq!((doc[0], doc[doc.len() - 1]), (b'{', b'}'));
            assert_eq!(&doc[at - 6..at], br#""id":""#);
            assert_eq!(&doc[at..at + 2 * STAMP + 1], b"0000000000000000\"");
            assert_eq!(kind.document().unwrap().0, doc, "deterministic");
        }
    }

    #[test]
    fn payload_flags() {
        let c = parse("--payload ticker").unwrap();
        assert_eq!((c.size, c.size_max), (200, 200));
        let c = parse("--payload json16k --size 16384 --mode broadcast").unwrap();
        assert_eq!(c.size, 16384);
        assert!(parse("--payload chat --size 64").is_err());
        assert!(parse("--payload chat --size-max 100").is_err());
        assert!(parse("--payload yaml").is_err());
        assert_eq!(parse("--size 100").unwrap().size, 100);
        assert!(parse("--deflate-level 3").is_err());
        assert!(parse("--deflate --raw").is_err());
        assert_eq!(parse("--deflate").is_ok(), cfg!(feature = "deflate"));
        assert!(parse("--deflate --deflate-level 10").is_err());
    }

    /// The frame [`Wire::push`] built, unmasked: (first byte, payload).
    fn unframe(frame: &[u8]) -> (u8, Vec<u8>) {
        let (len, at) = match frame[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            127 => panic!("no 64-bit lengths here"),
            n => (usize::from(n), 2),
        };
        let key = &frame[at..at + 4];
        let payload = &frame[at + 4..];
        assert_eq!(payload.len(), len);
        let plain = payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i & 3])
            .collect();
        (frame[0], plain)
    }

    #[test]
    fn stamps_land_in_the_id_field() {
        let cfg = parse("--payload chat").unwrap();
        let wire = Wire::new(&cfg, [1, 2, 3, 4]);
        let mut out = Vec::new();
        wire.push(&mut out, cfg.size, &[77, 1 << 40]);
        let (b0, payload) = unframe(&out);
        assert_eq!(b0, 0x81);
        let at = wire.stamp_at;
        assert_eq!(get_stamp(&payload[at..at + STAMP]), Some(77));
        assert_eq!(
            get_stamp(&payload[at + STAMP..at + 2 * STAMP]),
            Some(1 << 40)
        );
        assert_eq!(payload[..at], wire.plain[..at]);
        assert_eq!(payload[at + 2 * STAMP..], wire.plain[at + 2 * STAMP..]);
        // Filler: stamps at the start, truncated to short payloads.
        let cfg = parse("--size 5 --size-max 40").unwrap();
        let wire = Wire::new(&cfg, [9, 8, 7, 6]);
        for len in [5, 40] {
            out.clear();
            wire.push(&mut out, len, &[4095]);
            let (_, payload) = unframe(&out);
            let n = STAMP.min(len);
            let mut want = [0u8; STAMP];
            put_stamp(&mut want[..n], 4095);
            assert_eq!(payload[..n], want[..n]);
            assert_eq!(payload[n..], wire.plain[n..len]);
        }
    }

    /// Frames [`Wire::push_deflated`] built, for every payload kind and
    /// both stamp counts, prepared and from scratch, inflate to the
    /// stamped payload; prepared ones cost at most 24 bytes more (the
    /// stamps stored, a stored block's header, a second block).
    #[cfg(feature = "deflate")]
    #[test]
    fn deflated_frames() {
        for args in [
            "--payload chat",
            "--payload ticker",
            "--payload json16k --kind binary",
            "--size 16",
            "--size 3",
            "--size 5000",
            "--size 100 --size-max 300",
        ] {
            for response in [
                &b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"[..],
                b"permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
                b"permessage-deflate",
            ] {
                let params = deflate::parse_response(&[response]).unwrap();
                let mut sizes = Vec::new();
                for full in ["", " --deflate-full"] {
                    let cfg = parse(&format!("{args} --deflate{full}")).unwrap();
                    let mut wire = Wire::new(&cfg, [5, 6, 7, 8]);
                    let mut tx = deflate::Session::new(params);
                    let mut rx = deflate::Session::new(deflate::Params {
                        server_takeover: params.client_takeover,
                        ..params
                    });
                    let mut codec = deflate::Codec::new(1, false);
                    for (k, stamps) in [[3, 9], [u64::MAX >> 16, 1 << 40], [0, 0], [77, 5]]
                        .iter()
                        .enumerate()
                    {
                        let len = if k == 3 { cfg.size_max } else { cfg.size };
                        let stamps = &stamps[..1 + k % 2];
                        let mut out = Vec::new();
                        wire.push_deflated(&mut out, &mut tx, len, stamps).unwrap();
                        let (b0, packed) = unframe(&out);
                        assert_eq!(b0, 0xC0 | cfg.opcode(), "FIN, RSV1");
                        let inflated = codec.inflate(&mut rx, &packed, MAX_PAYLOAD).unwrap();
                        let mut want = wire.plain[..len].to_vec();
                        let (bytes, n) = wire.stamps(len, stamps);
                        let at = wire.stamp_at.min(len);
                        want[at..at + n].copy_from_slice(&bytes[..n]);
                        assert!(inflated == want, "{args}{full}, {k}");
                        if k == 0 {
                            sizes.push(packed.len());
                        }
                    }
                }
                assert!(sizes[0] <= sizes[1] + 24, "{args}: {sizes:?}");
            }
        }
        // Compression pays: 16 KiB of JSON in well under a third.
        let cfg = parse("--payload json16k --deflate").unwrap();
        let mut wire = Wire::new(&cfg, [1, 2, 3, 4]);
        let params = deflate::parse_response(&[b"permessage-deflate; \
            server_no_context_takeover; client_no_context_takeover"])
        .unwrap();
        let mut out = Vec::new();
        wire.push_deflated(&mut out, &mut deflate::Session::new(params), cfg.size, &[1])
            .unwrap();
        assert!(out.len() < cfg.size / 3, "{} B", out.len());
        assert!(matches!(wire.prepared[6][0], Prepared::Frame { .. }));
        assert!(wire.prepared_extra.is_some_and(|extra| extra < 16));
    }
}

/// The permessage-deflate client of `--deflate` (RFC 7692), on flate2
/// directly: what the `101` settled per connection, and per thread the
/// compressors (one per window size in use), the inflater and the buffers,
/// all reused from message to message.
#[cfg(feature = "deflate")]
mod deflate {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

    /// The end of a sync flush, stripped from every compressed message and
    /// put back to inflate it (RFC 7692 §7.2.1, §7.2.2).
    const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

    /// What the server's response settled for one connection.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Params {
        /// The largest window the client may compress with
        /// (`client_max_window_bits=N`, else 15).
        pub client_window_bits: u8,
        /// The client keeps its context across messages (the response
        /// lacks `client_no_context_takeover`).
        pub client_takeover: bool,
        /// The server keeps its context across messages (the response
        /// lacks `server_no_context_takeover`), so the connection needs an
        /// inflater of its own.
        pub server_takeover: bool,
    }

    /// The response's `Sec-WebSocket-Extensions` values (every header, in
    /// order) as the parameters they settle. Anything but exactly one
    /// valid permessage-deflate is an error: no extension at all means
    /// the server declined, and the run must not measure uncompressed
    /// traffic unawares.
    pub fn parse_response(values: &[&[u8]]) -> Result<Params, String> {
        let mut elements = Vec::new();
        for value in values {
            let text = std::str::from_utf8(value)
                .map_err(|_| "Sec-WebSocket-Extensions is not UTF-8".to_string())?;
            elements.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        let element = match elements[..] {
            [] => return Err("101 without permessage-deflate: the server declined it".into()),
            [one] => one,
            _ => {
                return Err(format!(
                    "101 with several extensions: {}",
                    elements.join(", ")
                ));
            }
        };
        let mut parts = element.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            return Err(format!("101 with an extension never offered: {element}"));
        }
        let mut params = Params {
            client_window_bits: 15,
            client_takeover: true,
            server_takeover: true,
        };
        let mut seen = Vec::new();
        for part in parts {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part, None),
            };
            if seen.contains(&name) {
                return Err(format!("permessage-deflate response repeats {name}"));
            }
            seen.push(name);
            let bits = |range: std::ops::RangeInclusive<u8>| {
                value
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| range.contains(b))
                    .ok_or_else(|| format!("permessage-deflate response: bad {part}"))
            };
            match (name, value) {
                ("server_no_context_takeover", None) => params.server_takeover = false,
                ("client_no_context_takeover", None) => params.client_takeover = false,
                // Any window inflates with the default 15-bit inflater.
                ("server_max_window_bits", Some(_)) => {
                    bits(8..=15)?;
                }
                ("client_max_window_bits", Some(_)) => {
                    params.client_window_bits = bits(8..=15)?;
                    if params.client_window_bits == 8 {
                        // zlib cannot write a raw deflate stream with an
                        // 8-bit window (it would use 9).
                        return Err("client_max_window_bits=8: zlib cannot compress so".into());
                    }
                }
                _ => return Err(format!("permessage-deflate response: bad parameter {part}")),
            }
        }
        Ok(params)
    }

    /// One connection's deflate state: its parameters and, where a side
    /// keeps its context, the connection's own compressor or inflater,
    /// made on first use (idle connections never need one).
    pub struct Session {
        params: Params,
        compress: Option<Box<Compress>>,
        decompress: Option<Box<Decompress>>,
    }

    impl Session {
        /// A connection with `params` and no contexts yet.
        pub fn new(params: Params) -> Session {
            Session {
                params,
                compress: None,
                decompress: None,
            }
        }

        /// What the `101` settled.
        pub fn params(&self) -> Params {
            self.params
        }
    }

    /// One thread's codec.
    pub struct Codec {
        /// The client's compression level.
        level: Compression,
        /// Shared compressors reset per message, by window bits (9..=15).
        compressors: [Option<Compress>; 7],
        /// The shared inflater, reset per message.
        decompress: Decompress,
        /// The plain payload of the message being compressed.
        pub plain: Vec<u8>,
        /// Its compressed form, without the tail.
        pub packed: Vec<u8>,
        /// The last message inflated and not cached.
        inflated: Vec<u8>,
        /// Subscribers: messages inflated lately, compressed and plain,
        /// in sets of two entries by a hash of the compressed bytes
        /// (empty: no cache) ...
        cache: Vec<Option<(Vec<u8>, Vec<u8>)>>,
        /// ... and per set, which of its entries was filled first.
        cache_older: Vec<u8>,
    }

    /// Sets of the inflated-message cache (of two entries each): several
    /// times the messages a broadcast keeps in flight.
    const CACHE_SETS: usize = 1024;
    /// The largest message the cache keeps.
    const CACHED_MAX: usize = 16 * 1024;

    /// The cache set of a compressed message: a hash of its length and of
    /// its first 64 and last 8 bytes (the stamps are near the start;
    /// entries are compared whole).
    fn cache_set(compressed: &[u8], sets: usize) -> usize {
        let mut h = 0x9E37_79B9_7F4A_7C15u64 ^ compressed.len() as u64;
        let head = &compressed[..compressed.len().min(64)];
        let tail = &compressed[compressed.len().saturating_sub(8)..];
        for part in [head, tail] {
            for chunk in part.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
                h ^= h >> 32;
            }
        }
        h as usize % sets
    }

    impl Codec {
        /// A codec compressing at `level` (0..=9); with `cache`, it keeps
        /// the messages it inflated lately (for subscribers, which get
        /// the same messages).
        pub fn new(level: u32, cache: bool) -> Codec {
            Codec {
                level: Compression::new(level),
                compressors: Default::default(),
                decompress: Decompress::new(false),
                plain: Vec::new(),
                packed: Vec::new(),
                inflated: Vec::new(),
                cache: if cache {
                    (0..2 * CACHE_SETS).map(|_| None).collect()
                } else {
                    Vec::new()
                },
                cache_older: vec![0; if cache { CACHE_SETS } else { 0 }],
            }
        }

        /// Compresses `plain` into `packed` for `session` (from a fresh
        /// context unless the client keeps its context), tail stripped.
        pub fn compress(&mut self, session: &mut Session) -> Result<(), String> {
            let bits = session.params.client_window_bits;
            let level = self.level;
            let new = || match bits {
                15 => Compress::new(level, false),
                bits => Compress::new_with_window_bits(level, false, bits),
            };
            let compressor = if session.params.client_takeover {
                &mut **session.compress.get_or_insert_with(|| Box::new(new()))
            } else {
                let slot = &mut self.compressors[usize::from(bits - 9)];
                match slot {
                    Some(c) => {
                        c.reset();
                        c
                    }
                    None => slot.insert(new()),
                }
            };
            self.packed.clear();
            // An empty message right after a flush (context kept) is a lone
            // `00`: zlib has nothing to flush (RFC 7692 §7.2.3.6).
            sync_stripped(compressor, &self.plain, &mut self.packed)
        }

        /// A message `plain` compressed from a fresh context with a
        /// `bits`-bit window such that its `region` bytes at `at` (the
        /// stamp field) can change without compressing it again, and where
        /// those bytes are in the result; `None` if `plain` does not allow
        /// it. The stream is: the bytes before the field, compressed and
        /// sync-flushed (ending in the 3 bits of an empty stored block's
        /// header, its `00 00 ff ff` stripped); that stored block's length
        /// made `region` instead, then the field's bytes, stored; then the
        /// bytes after it, compressed with the bytes before it and the
        /// field as preset dictionary, sync-flushed, tail stripped. The
        /// field in the dictionary is zeros, which the rest never matches
        /// (text has no NUL), so no back-reference reads a stamp. Inflated
        /// once here to check. Also returns, for comparison, the length of
        /// `plain` compressed whole with `sample` (stamps as a run's
        /// messages carry them) in the field.
        pub fn prepare(
            &mut self,
            bits: u8,
            plain: &[u8],
            at: usize,
            sample: &[u8],
        ) -> Option<(Vec<u8>, usize, usize)> {
            let region = sample.len();
            let (before, rest) = plain.split_at(at);
            let (field, after) = rest.split_at(region);
            if after.contains(&0) || region > usize::from(u16::MAX) {
                return None;
            }
            let level = self.level;
            let compressor =
                self.compressors[usize::from(bits - 9)].get_or_insert_with(|| match bits {
                    15 => Compress::new(level, false),
                    bits => Compress::new_with_window_bits(level, false, bits),
                });
            let mut packed = Vec::new();
            compressor.reset();
            sync_stripped(compressor, before, &mut packed).ok()?;
            let len = region as u16;
            packed.extend_from_slice(&len.to_le_bytes());
            packed.extend_from_slice(&(!len).to_le_bytes());
            let field_at = packed.len();
            packed.extend_from_slice(field);
            let mut dictionary = before.to_vec();
            dictionary.resize(before.len() + region, 0);
            compressor.reset();
            compressor.set_dictionary(&dictionary).ok()?;
            sync_stripped(compressor, after, &mut packed).ok()?;
            compressor.reset();
            let mut message = plain.to_vec();
            message[at..at + region].copy_from_slice(sample);
            let mut whole = Vec::new();
            sync_stripped(compressor, &message, &mut whole).ok()?;
            compressor.reset();
            // The check: two different stamp fields inflate to themselves.
            let mut session = Session::new(Params {
                client_window_bits: bits,
                client_takeover: false,
                server_takeover: false,
            });
            let mut out = Vec::new();
            let mut message = plain.to_vec();
            let mut trial = packed.clone();
            for fill in [None, Some(b'_')] {
                if let Some(f) = fill {
                    trial[field_at..field_at + region].fill(f);
                    message[at..at + region].fill(f);
                }
                self.inflate_uncached(&mut session, &trial, &mut out, plain.len())
                    .ok()?;
                if out != message {
                    return None;
                }
            }
            Some((packed, field_at, whole.len()))
        }

        /// Inflates one compressed message (`compressed`, its tail
        /// stripped) for `session` (see [`Codec::inflate_uncached`]) and
        /// returns it. With the cache, a message from a fresh context in
        /// the same bytes as one inflated lately (a broadcast, which
        /// reaches every subscriber in the same bytes) comes from there,
        /// not inflated again; a message inflated is kept there, moved
        /// (the entry it replaces lends its buffer to the next message).
        pub fn inflate(
            &mut self,
            session: &mut Session,
            compressed: &[u8],
            limit: usize,
        ) -> Result<&[u8], String> {
            let mut buf = std::mem::take(&mut self.inflated);
            if self.cache.is_empty() || session.params.server_takeover {
                let result = self.inflate_uncached(session, compressed, &mut buf, limit);
                self.inflated = buf;
                return result.map(|()| &self.inflated[..]);
            }
            // Two ways per set: the entry to replace is the one filled
            // before the other.
            let set = cache_set(compressed, self.cache.len() / 2);
            let hit = (2 * set..2 * set + 2).find(|&slot| {
                self.cache[slot].as_ref().is_some_and(|(packed, plain)| {
                    packed[..] == *compressed && plain.len() <= limit
                })
            });
            if let Some(slot) = hit {
                self.inflated = buf;
                return Ok(self.cache[slot]
                    .as_ref()
                    .map_or(&[], |(_, plain)| &plain[..]));
            }
            let result = self.inflate_uncached(session, compressed, &mut buf, limit);
            if result.is_err() || buf.len() > CACHED_MAX {
                self.inflated = buf;
                return result.map(|()| &self.inflated[..]);
            }
            let slot = 2 * set + usize::from(self.cache_older[set]);
            self.cache_older[set] ^= 1;
            let (packed, plain) = self.cache[slot].get_or_insert_with(Default::default);
            packed.clear();
            packed.extend_from_slice(compressed);
            std::mem::swap(plain, &mut buf);
            buf.clear();
            self.inflated = buf;
            Ok(&plain[..])
        }

        /// Inflates one compressed message (`compressed`, its tail
        /// stripped) for `session` into `out` (cleared first): with the
        /// shared inflater reset, or the connection's own when the server
        /// keeps its context. More than `limit` bytes is an error.
        pub fn inflate_uncached(
            &mut self,
            session: &mut Session,
            compressed: &[u8],
            out: &mut Vec<u8>,
            limit: usize,
        ) -> Result<(), String> {
            let inflater = if session.params.server_takeover {
                &mut **session
                    .decompress
                    .get_or_insert_with(|| Box::new(Decompress::new(false)))
            } else {
                self.decompress.reset(false);
                &mut self.decompress
            };
            out.clear();
            let ended = inflate_sync(inflater, compressed, out, limit)?
                || inflate_sync(inflater, &TAIL, out, limit)?;
            if ended {
                // A final block ends the stream: the next message starts
                // a new one (an empty context).
                inflater.reset(false);
            }
            Ok(())
        }
    }

    /// Compresses `input` with a sync flush onto `out` and strips the
    /// `00 00 ff ff` (an empty input right after a flush yields a lone
    /// `00`, the start of an empty stored block).
    fn sync_stripped(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let at = out.len();
        deflate_sync(c, input, out)?;
        if out.len() == at {
            out.push(0x00);
        } else if out[at..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else {
            return Err("sync flush without its 00 00 ff ff tail".into());
        }
        Ok(())
    }

    /// Compresses all of `input` with a sync flush, appending to `out`
    /// (grown as needed).
    fn deflate_sync(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let start = c.total_in();
        out.reserve(input.len() + input.len() / 16 + 64);
        loop {
            let used = (c.total_in() - start) as usize;
            c.compress_vec(&input[used..], out, FlushCompress::Sync)
                .map_err(|e| format!("deflate: {e}"))?;
            // Done once all input is in and the flush left room to spare.
            if (c.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
                return Ok(());
            }
            out.reserve(out.capacity().max(64));
        }
    }

    /// Feeds `input` to `d`, appending what it inflates to `out` (grown as
    /// needed, to at most `limit` bytes); true if the stream ended (a
    /// final block).
    fn inflate_sync(
        d: &mut Decompress,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, String> {
        let start = d.total_in();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve((out.capacity()).clamp(4096, 1 << 20));
            }
            let (used, had) = ((d.total_in() - start) as usize, out.len());
            let status = d
                .decompress_vec(&input[used..], out, FlushDecompress::Sync)
                .map_err(|e| format!("inflate: {e}"))?;
            if out.len() > limit {
                return Err(format!("a message inflating to over {limit} bytes"));
            }
            let now_used = (d.total_in() - start) as usize;
            match status {
                Status::StreamEnd => return Ok(true),
                _ if now_used == input.len() && out.len() < out.capacity() => return Ok(false),
                Status::BufError if now_used == used && out.len() == had => {
                    return Err("inflate: no progress (a truncated stream?)".into());
                }
                _ => {}
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn fresh() -> Params {
            parse_response(&[b"permessage-deflate; server_no_context_takeover; \
                client_no_context_takeover"])
            .expect("valid")
        }

        #[test]
        fn responses() {
            assert_eq!(
                fresh(),
                Params {
                    client_window_bits: 15,
                    client_takeover: false,
                    server_takeover: false
                }
            );
            let p = parse_response(&[b"permessage-deflate;client_max_window_bits=10"]).unwrap();
            assert_eq!(
                (p.client_window_bits, p.client_takeover, p.server_takeover),
                (10, true, true)
            );
            let p =
                parse_response(&[b"permessage-deflate; server_max_window_bits=\"12\""]).unwrap();
            assert_eq!(p.client_window_bits, 15);
            for bad in [
                &b""[..],
                b"x-webkit-deflate-frame",
                b"permessage-deflate; client_max_window_bits",
                b"permessage-deflate; client_max_window_bits=8",
                b"permessage-deflate; server_max_window_bits=16",
                b"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                b"permessage-deflate; client_no_context_takeover=1",
                b"permessage-deflate; mystery",
                b"permessage-deflate, permessage-deflate",
            ] {
                assert!(
                    parse_response(&[bad]).is_err(),
                    "{:?}",
                    String::from_utf8_lossy(bad)
                );
            }
            assert!(parse_response(&[]).is_err());
        }

        /// Messages compressed as the client does inflate back, with fresh
        /// contexts and with contexts kept, small windows and big messages;
        /// the stream has no tail and its bytes match a plain flate2 round
        /// trip.
        #[test]
        fn round_trips() {
            let doc = crate::json_snapshot(16 * 1024).into_bytes();
            let messages: Vec<Vec<u8>> = vec![
                b"{\"type\":\"chat\"}".to_vec(),
                Vec::new(),
                doc.clone(),
                doc.repeat(8),
                (0..100_000u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
                doc,
            ];
            for response in [
                &b"permessage-deflate; server_no_context_takeover; client_no_context_takeover"[..],
                b"permessage-deflate",
                b"permessage-deflate; client_max_window_bits=9",
                b"permessage-deflate; client_no_context_takeover; client_max_window_bits=11",
            ] {
                let params = parse_response(&[response]).unwrap();
                for level in [0, 1, 6, 9] {
                    let mut sender = Codec::new(level, false);
                    let mut receiver = Codec::new(level, true);
                    let mut tx = Session::new(params);
                    // The receiving side mirrors the sender's context rule.
                    let mut rx = Session::new(Params {
                        server_takeover: params.client_takeover,
                        ..params
                    });
                    for _ in 0..2 {
                        for m in &messages {
                            sender.plain.clear();
                            sender.plain.extend_from_slice(m);
                            sender.compress(&mut tx).unwrap();
                            assert!(!sender.packed.ends_with(&TAIL) || m.is_empty());
                            let out = receiver.inflate(&mut rx, &sender.packed, 64 << 20).unwrap();
                            assert!(out == *m, "{} bytes at level {level}", m.len());
                        }
                    }
                    assert!(
                        receiver.inflate(&mut rx, &[0xFF; 64], 1 << 20).is_err()
                            || !params.client_takeover
                    );
                }
            }
        }

        /// The same compressed message twice is inflated once, and a
        /// different one in between is not mistaken for it.
        #[test]
        fn repeated_messages() {
            let mut codec = Codec::new(1, true);
            let mut session = Session::new(fresh());
            let mut packed = Vec::new();
            let messages = [&b"first message, first message"[..], b"second message"];
            for m in messages {
                codec.plain = m.to_vec();
                codec.compress(&mut session).unwrap();
                packed.push(codec.packed.clone());
            }
            for i in [0, 0, 1, 1, 0, 1] {
                let out = codec.inflate(&mut session, &packed[i], 1000).unwrap();
                assert_eq!(out, messages[i]);
            }
            assert_eq!(codec.cache.iter().filter(|e| e.is_some()).count(), 2);
            assert!(codec.inflate(&mut session, &[0xFF; 4], 1000).is_err());
            assert!(codec.inflate(&mut session, &[0xFF; 4], 1000).is_err());
            // Over the limit, even cached.
            assert!(codec.inflate(&mut session, &packed[0], 10).is_err());
            let out = codec.inflate(&mut session, &packed[1], 1000).unwrap();
            assert_eq!(out, messages[1]);
            // Many messages: every one inflates right, cached or not.
            let many: Vec<(Vec<u8>, Vec<u8>)> = (0..3 * CACHE_SETS)
                .map(|i| {
                    codec.plain = format!("message {i} of many, many messages").into_bytes();
                    codec.compress(&mut session).unwrap();
                    (codec.plain.clone(), codec.packed.clone())
                })
                .collect();
            for round in 0..3 {
                for (plain, packed) in many.iter().skip(round * 100) {
                    assert_eq!(
                        codec.inflate(&mut session, packed, 1000).unwrap(),
                        &plain[..]
                    );
                }
            }
        }

        #[test]
        fn limit_and_corruption() {
            let mut codec = Codec::new(6, false);
            let mut session = Session::new(fresh());
            codec.plain = vec![b'x'; 1 << 20];
            codec.compress(&mut session).unwrap();
            let packed = codec.packed.clone();
            assert!(codec.inflate(&mut session, &packed, 1000).is_err());
            assert!(codec.inflated.capacity() < 1 << 20);
            assert_eq!(
                codec.inflate(&mut session, &packed, 1 << 20).unwrap().len(),
                1 << 20
            );
            assert!(codec.inflate(&mut session, &[0xFF; 16], 1 << 20).is_err());
            // The shared inflater recovers for the next message.
            assert_eq!(
                codec.inflate(&mut session, &packed, 1 << 20).unwrap().len(),
                1 << 20
            );
        }
    }
}
