//! Paired round-trip latency: wsloop against the raw loop, one message at a
//! time, interleaved on one client.
//!
//! The "1 connection × 1 in flight" cell measures how long one round trip
//! takes, and on a shared virtual machine that figure drifts by tens of
//! percent from one second to the next (wake-up latency, other tenants).
//! Measuring the two servers minutes apart, as `wsbench` does, then
//! compares two different machines. This probe keeps one connection to
//! each server and alternates between them message by message (the order
//! swapped every round), so both see the same conditions and the ratio of
//! their percentiles isolates what the WebSocket layer costs.
//!
//! Each round trip writes one masked 64-byte text frame (`--size`) with a
//! sequence number in it and blocks until the whole reply is read and
//! checked: the unmasked frame from wsloop, the same bytes back from the
//! raw loop (`examples/raw_echo.rs`). Prints a summary and, for
//! `make bench`, one `RESULT` JSON line per server.
//!
//! ```text
//! latency_pair --ws 127.0.0.1:9002 --raw 127.0.0.1:9101 [--size 64]
//!              [--duration 3] [--warmup 0.5] [--ws-pid PID] [--raw-pid PID]
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// RFC 6455's sample key (§1.3) and the accept value it must produce.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pplmbitxaq9kygzzhzrbk+xoo=";
/// The raw loop's greeting byte on accept.
const RAW_GREETING: u8 = b'+';
const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0x0f];

const USAGE: &str = "usage: latency_pair --ws ADDR --raw ADDR [--size N] [--duration SECS] \
                     [--warmup SECS] [--ws-pid PID] [--raw-pid PID] [--label TEXT]";

struct Options {
    ws: SocketAddr,
    raw: SocketAddr,
    size: usize,
    duration: Duration,
    warmup: Duration,
    ws_pid: Option<u32>,
    raw_pid: Option<u32>,
    label: String,
}

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut ws, mut raw) = (None, None);
    let mut o = Options {
        ws: "127.0.0.1:0".parse().expect("a literal address"),
        raw: "127.0.0.1:0".parse().expect("a literal address"),
        size: 64,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(500),
        ws_pid: None,
        raw_pid: None,
        label: "paired latency".into(),
    };
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--ws" => ws = Some(value.parse().map_err(|e| bad(&e))?),
            "--raw" => raw = Some(value.parse().map_err(|e| bad(&e))?),
            "--size" => o.size = value.parse().map_err(|e| bad(&e))?,
            "--duration" => o.duration = seconds(&value).map_err(|e| bad(&e))?,
            "--warmup" => o.warmup = seconds(&value).map_err(|e| bad(&e))?,
            "--ws-pid" => o.ws_pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--raw-pid" => o.raw_pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--label" => o.label = value,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    o.ws = ws.ok_or("--ws is required")?;
    o.raw = raw.ok_or("--raw is required")?;
    if !(8..=125).contains(&o.size) {
        return Err("--size must be 8..=125 (one small frame)".into());
    }
    Ok(o)
}

fn seconds(value: &str) -> Result<Duration, String> {
    let s: f64 = value.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(s).map_err(|e| format!("{e}"))
}

/// One blocking connection and the reply it expects for each message.
struct Peer {
    stream: TcpStream,
    /// Whether replies are WebSocket frames (wsloop) or the bytes sent (raw).
    websocket: bool,
    reply: Vec<u8>,
    samples: Vec<u64>,
}

impl Peer {
    fn websocket(addr: SocketAddr) -> io::Result<Peer> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        // Read the response byte by byte so that nothing after it is lost.
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte)?;
            head.push(byte[0]);
            if head.len() > 8192 {
                return Err(io::Error::other("handshake response too long"));
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let accepted = head.starts_with("http/1.1 101")
            && head
                .lines()
                .any(|l| l.replace(' ', "") == format!("sec-websocket-accept:{SAMPLE_ACCEPT}"));
        if !accepted {
            return Err(io::Error::other(format!("upgrade refused: {head}")));
        }
        Ok(Peer::new(stream, true))
    }

    fn raw(addr: SocketAddr) -> io::Result<Peer> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut greeting = [0u8];
        stream.read_exact(&mut greeting)?;
        if greeting[0] != RAW_GREETING {
            return Err(io::Error::other("no greeting from the raw loop"));
        }
        Ok(Peer::new(stream, false))
    }

    fn new(stream: TcpStream, websocket: bool) -> Peer {
        Peer {
            stream,
            websocket,
            reply: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// One round trip of `payload`; returns its duration in nanoseconds.
    fn round_trip(&mut self, frame: &[u8], payload: &[u8]) -> io::Result<u64> {
        let expected = if self.websocket {
            2 + payload.len()
        } else {
            frame.len()
        };
        self.reply.resize(expected, 0);
        let start = Instant::now();
        self.stream.write_all(frame)?;
        self.stream.read_exact(&mut self.reply)?;
        let took = start.elapsed().as_nanos() as u64;
        let ok = if self.websocket {
            self.reply[..2] == [0x81, payload.len() as u8] && self.reply[2..] == *payload
        } else {
            self.reply == frame
        };
        if !ok {
            return Err(io::Error::other("the reply is not the echo of the message"));
        }
        Ok(took)
    }
}

/// A masked text frame carrying `payload`.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
}

/// The `q` quantile of sorted nanosecond samples, in microseconds.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[at] as f64 / 1e3
}

/// A process's CPU time so far, summed over its threads.
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(|task| {
                let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                text.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum(),
    )
}

fn main() {
    let o = parse_options().unwrap_or_else(|e| {
        eprintln!("latency_pair: {e}\n{USAGE}");
        std::process::exit(2);
    });
    if let Err(e) = run(&o) {
        eprintln!("latency_pair: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Options) -> io::Result<()> {
    let mut ws = Peer::websocket(o.ws)?;
    let mut raw = Peer::raw(o.raw)?;
    let mut payload = vec![b'x'; o.size];
    let started = Instant::now();
    let mut measuring_since = None;
    let mut cpu_before = (None, None);
    let mut round: u64 = 0;
    loop {
        let now = started.elapsed();
        if measuring_since.is_none() && now >= o.warmup {
            measuring_since = Some(Instant::now());
            cpu_before = (o.ws_pid.and_then(cpu_ns), o.raw_pid.and_then(cpu_ns));
            ws.samples.clear();
            raw.samples.clear();
        }
        if now >= o.warmup + o.duration {
            break;
        }
        payload[..8].copy_from_slice(format!("{:08}", round % 100_000_000).as_bytes());
        let frame = masked_frame(&payload);
        // Alternate who goes first, so neither always follows the other.
        let order: [&mut Peer; 2] = if round.is_multiple_of(2) {
            [&mut ws, &mut raw]
        } else {
            [&mut raw, &mut ws]
        };
        for peer in order {
            let took = peer.round_trip(&frame, &payload)?;
            peer.samples.push(took);
        }
        round += 1;
    }
    let window = measuring_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let cpu_after = (o.ws_pid.and_then(cpu_ns), o.raw_pid.and_then(cpu_ns));
    let mut summaries = Vec::new();
    for (side, peer, before, after) in [
        ("wsloop", &mut ws, cpu_before.0, cpu_after.0),
        ("raw", &mut raw, cpu_before.1, cpu_after.1),
    ] {
        peer.samples.sort_unstable();
        let n = peer.samples.len();
        let cpu = before.zip(after).map(|(b, a)| a.saturating_sub(b));
        let p50 = quantile_us(&peer.samples, 0.5);
        let p99 = quantile_us(&peer.samples, 0.99);
        let p999 = quantile_us(&peer.samples, 0.999);
        let ns_per_msg = cpu.filter(|_| n > 0).map(|c| c as f64 / n as f64);
        println!(
            "{side:>6}: {n} round trips, p50/p99/p99.9 {p50:.1}/{p99:.1}/{p999:.1} µs{}",
            ns_per_msg.map_or(String::new(), |v| format!(", server CPU {v:.0} ns/msg"))
        );
        let cpu_json = ns_per_msg.map_or("null".into(), |v| format!("{v:.1}"));
        let cpu_pct = cpu.map_or("null".into(), |c| {
            format!("{:.2}", c as f64 / 1e9 / window.max(1e-9) * 100.0)
        });
        summaries.push((p50, p99));
        println!(
            "RESULT {side} {{\"label\":\"{}\",\"mode\":\"echo\",\"paired\":true,\"conns\":1,\
             \"inflight\":1,\"size\":{},\"round_trips\":{n},\"rt_per_s\":{:.1},\
             \"lat_p50_us\":{p50:.3},\"lat_p99_us\":{p99:.3},\"lat_p999_us\":{p999:.3},\
             \"server_cpu_pct\":{cpu_pct},\"server_ns_per_msg\":{cpu_json},\"errors\":0}}",
            o.label.replace('"', "'"),
            o.size,
            n as f64 / window.max(1e-9),
        );
    }
    let ((w50, w99), (r50, r99)) = (summaries[0], summaries[1]);
    println!(
        "wsloop / raw: p50 {:.3}, p99 {:.3}",
        w50 / r50.max(1e-9),
        w99 / r99.max(1e-9)
    );
    Ok(())
}
