//! Outbound backpressure: a subscriber that never reads stays bounded and
//! the policy applies to it (drop or close), while readers get everything;
//! a client that floods without reading its echoes is paused, not dropped;
//! `on_drain` fires once a backed-up queue empties.

mod common;

use std::any::Any;
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use wsloop::{
    Accept, Backpressure, CloseCode, Config, ConnCtx, ConnId, Ctx, Handler, Message, Request,
    Response,
};

const CAP: usize = 256 * 1024;
const BIG: usize = 64 * 1024;
const TOPIC: &str = "feed";

#[derive(Debug)]
enum Event {
    Opened(ConnId, String),
    Drained(ConnId),
    Closed(ConnId, u16),
}

/// `/sub` joins the topic; every other path echoes.
struct App {
    events: Sender<Event>,
}

impl Handler for App {
    type State = String;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<String>, Response> {
        Ok(Accept::new(req.path().to_string()))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, String>) {
        if conn.state() == "/sub" {
            conn.subscribe(TOPIC);
        }
        let _ = self
            .events
            .send(Event::Opened(conn.id(), conn.state().clone()));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, String>, msg: Message<'_>) {
        conn.send(msg);
    }

    fn on_drain(&mut self, conn: &mut ConnCtx<'_, String>) {
        let _ = self.events.send(Event::Drained(conn.id()));
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, String>, code: CloseCode, _reason: &str) {
        let _ = self.events.send(Event::Closed(conn.id(), code.as_u16()));
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, String>, value: Box<dyn Any + Send>) {
        run_probe(ctx, value);
    }
}

struct Fixture {
    server: Running,
    events: Receiver<Event>,
}

impl Fixture {
    fn start(backpressure: Backpressure) -> Fixture {
        let (tx, events) = mpsc::channel();
        let mut config = Config::default();
        config.max_outbound_buffer = CAP;
        config.backpressure = backpressure;
        config.ping_interval = None;
        config.close_timeout = Duration::from_secs(1);
        let server = spawn(config, move || App { events: tx });
        Fixture { server, events }
    }

    fn opened(&self, path: &str) -> ConnId {
        recv_matching(&self.events, EVENT_TIMEOUT, |e| match e {
            Event::Opened(id, p) if p == path => Some(*id),
            _ => None,
        })
        .expect("no on_open")
    }

    fn drained_within(&self, id: ConnId, within: Duration) -> bool {
        recv_matching(&self.events, within, |e| match e {
            Event::Drained(d) if *d == id => Some(()),
            _ => None,
        })
        .is_some()
    }

    fn closed(&self, id: ConnId) -> Option<u16> {
        recv_matching(&self.events, EVENT_TIMEOUT, |e| match e {
            Event::Closed(c, code) if *c == id => Some(*code),
            _ => None,
        })
    }

    /// (bytes queued for `id` if it exists, whether it is open, drops).
    fn sample(&self, id: ConnId) -> (Option<usize>, bool, u64) {
        probe(&self.server.handle, move |ctx: &mut Ctx<'_, String>| {
            (
                ctx.buffered_amount(id),
                ctx.connections().contains(&id),
                ctx.metrics().dropped_backpressure,
            )
        })
    }
}

/// A `len`-byte payload whose first 8 bytes are `seq`.
fn numbered(seq: u64, len: usize) -> Vec<u8> {
    let mut payload = vec![0xA5; len];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().unwrap())
}

/// A tungstenite subscriber that reads every binary message in a thread,
/// checks they arrive in order, and stops at the text `end`, handing the
/// (still open) client back with the count.
type Reader = JoinHandle<Result<(u64, Client), String>>;

fn spawn_reader(mut ws: Client) -> (Arc<AtomicU64>, Reader) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let thread = std::thread::spawn(move || {
        set_timeout(&mut ws, Duration::from_secs(4));
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Binary(bytes)) => {
                    let expected = counter.load(Ordering::SeqCst);
                    if bytes.len() != BIG || seq_of(&bytes) != expected {
                        return Err(format!(
                            "expected message {expected}, got seq {} len {}",
                            seq_of(&bytes),
                            bytes.len()
                        ));
                    }
                    counter.store(expected + 1, Ordering::SeqCst);
                }
                Ok(tungstenite::Message::Text(t)) if t.as_str() == "end" => {
                    return Ok((counter.load(Ordering::SeqCst), ws));
                }
                Ok(other) => return Err(format!("unexpected {other:?}")),
                Err(e) => return Err(format!("reader failed: {e}")),
            }
        }
    });
    (received, thread)
}

/// Reads frames until nothing arrives for `quiet` (or EOF).
fn drain_frames(raw: &mut RawWs, quiet: Duration) -> Vec<Frame> {
    raw.stream.set_read_timeout(Some(quiet)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut frames = Vec::new();
    while Instant::now() < deadline {
        match raw.try_read_frame() {
            Ok(frame) => {
                let is_close = frame.opcode == 0x8;
                frames.push(frame);
                if is_close {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("draining: {e}"),
        }
    }
    raw.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    frames
}

/// Publishes numbered 64 KiB messages from "another thread" (the test)
/// in lock-step with the reader, sampling the non-reader's queue after
/// each, until `stop` says so. Returns (messages sent, largest queue seen).
fn publish_until(
    fx: &Fixture,
    received: &AtomicU64,
    slow: ConnId,
    mut stop: impl FnMut(u64, Option<usize>, bool, u64) -> bool,
) -> (u64, usize) {
    let mut max_queued = 0;
    for seq in 0..400u64 {
        assert!(
            fx.server
                .handle
                .publish(TOPIC, Message::Binary(&numbered(seq, BIG))),
            "Handle::publish failed"
        );
        assert!(
            wait_until(EVENT_TIMEOUT, || received.load(Ordering::SeqCst) > seq),
            "the reader did not get message {seq}"
        );
        let (queued, open, dropped) = fx.sample(slow);
        max_queued = max_queued.max(queued.unwrap_or(0));
        if stop(seq, queued, open, dropped) {
            return (seq + 1, max_queued);
        }
    }
    panic!("400 messages (25 MiB) never backed up the non-reader");
}

#[test]
fn drop_policy_bounds_a_non_reader_and_keeps_it_open() {
    let fx = Fixture::start(Backpressure::Drop);
    let reader = ws_connect(fx.server.addr, "/sub");
    fx.opened("/sub");
    let mut slow = RawWs::connect(fx.server.addr, "/sub");
    let slow_id = fx.opened("/sub");
    let (received, reader_thread) = spawn_reader(reader);

    let mut first_drop = None;
    let (sent, max_queued) =
        publish_until(&fx, &received, slow_id, |seq, queued, open, dropped| {
            assert!(
                queued.is_some() && open,
                "Drop policy closed the non-reader"
            );
            if dropped > 0 && first_drop.is_none() {
                first_drop = Some(seq);
            }
            // Keep going a while past the first drop.
            first_drop.is_some_and(|first| seq >= first + 20)
        });
    assert!(
        max_queued <= CAP + BIG + 1024,
        "non-reader queue reached {max_queued} bytes (cap {CAP})"
    );
    let (_, open, dropped) = fx.sample(slow_id);
    assert!(
        open,
        "the non-reader must stay open under Backpressure::Drop"
    );
    assert!(dropped >= 20, "only {dropped} drops counted");

    // The reader got every message, in order.
    fx.server.handle.broadcast_text("end");
    let (got, _reader) = reader_thread.join().unwrap().expect("reader");
    assert_eq!(got, sent);

    // The non-reader now reads: a gapped but ordered subset, no close.
    let frames = drain_frames(&mut slow, Duration::from_millis(300));
    let seqs: Vec<u64> = frames
        .iter()
        .filter(|f| f.opcode == 0x2)
        .map(|f| seq_of(&f.payload))
        .collect();
    assert!(
        frames
            .iter()
            .all(|f| f.opcode == 0x2 || (f.opcode == 0x1 && f.payload == b"end")),
        "unexpected frame kinds: {:?}",
        frames.iter().map(|f| f.opcode).collect::<Vec<_>>()
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(
        (seqs.len() as u64) < sent,
        "nothing was dropped for the non-reader"
    );
    assert_eq!(seqs.first(), Some(&0));
    assert!(
        fx.drained_within(slow_id, EVENT_TIMEOUT),
        "on_drain did not fire"
    );
    // Still open: it gets new messages again.
    fx.server
        .handle
        .publish(TOPIC, Message::Binary(&numbered(9999, 100)));
    let frames = drain_frames(&mut slow, Duration::from_millis(300));
    let last = frames.last().expect("a message after draining");
    assert_eq!((last.opcode, seq_of(&last.payload)), (0x2, 9999));
}

#[test]
fn close_policy_closes_a_non_reader_with_1008() {
    let fx = Fixture::start(Backpressure::Close(CloseCode::POLICY));
    let reader = ws_connect(fx.server.addr, "/sub");
    let reader_id = fx.opened("/sub");
    let mut slow = RawWs::connect(fx.server.addr, "/sub");
    let slow_id = fx.opened("/sub");
    let (received, reader_thread) = spawn_reader(reader);

    let (sent, max_queued) = publish_until(&fx, &received, slow_id, |_, _, open, _| !open);
    assert!(
        max_queued <= CAP + BIG + 1024,
        "non-reader queue reached {max_queued} bytes (cap {CAP})"
    );

    // The reader is unaffected and got everything.
    fx.server.handle.broadcast_text("end");
    let (got, mut reader) = reader_thread.join().unwrap().expect("reader");
    assert_eq!(got, sent);

    // The non-reader drains: whole data frames in order, then 1008.
    let frames = drain_frames(&mut slow, Duration::from_millis(1000));
    let (close, data) = frames.split_last().expect("frames for the non-reader");
    assert_eq!(close.opcode, 0x8, "last frame should be a close");
    assert_eq!(close.close_code().map(|(code, _)| code), Some(1008));
    let seqs: Vec<u64> = data.iter().map(|f| seq_of(&f.payload)).collect();
    assert!(
        data.iter()
            .all(|f| f.opcode == 0x2 && f.payload.len() == BIG)
    );
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "gap before close"
    );
    slow.send_close(1008, "");
    assert!(slow.eof_within(Duration::from_secs(2)));
    assert_eq!(fx.closed(slow_id), Some(1008));
    let (_, reader_open, _) = fx.sample(reader_id);
    assert!(reader_open, "the reader was closed too");
    set_timeout(&mut reader, READ_TIMEOUT);
    fx.server
        .handle
        .publish(TOPIC, Message::Binary(&numbered(sent, BIG)));
    match ws_read(&mut reader) {
        tungstenite::Message::Binary(b) => assert_eq!(seq_of(&b), sent),
        m => panic!("expected a binary message, got {m:?}"),
    }
}

#[test]
fn a_flooder_that_does_not_read_is_paused_not_dropped() {
    // The default policy closes slow consumers, but a connection's
    // replies to itself are exempt: its reads pause instead.
    let fx = Fixture::start(Backpressure::Close(CloseCode::POLICY));
    let mut raw = RawWs::connect(fx.server.addr, "/echo");
    let id = fx.opened("/echo");

    const LEN: usize = 16 * 1024;
    let template = client_frame(true, 0, 0x2, &numbered(0, LEN));
    let header = template.len() - LEN;
    let frame_for = |seq: u64| {
        let mut frame = template.clone();
        for (i, b) in seq.to_be_bytes().iter().enumerate() {
            frame[header + i] = b ^ MASK[i % 4];
        }
        frame
    };

    // Phase 1: write without reading until TCP stops taking bytes.
    raw.stream.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut seq = 0u64;
    let mut current = frame_for(0);
    let mut offset = 0;
    let mut stalled_since: Option<Instant> = None;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "wrote {seq} frames without ever blocking"
        );
        match raw.stream.write(&current[offset..]) {
            Ok(n) => {
                stalled_since = None;
                offset += n;
                if offset == current.len() {
                    seq += 1;
                    current = frame_for(seq);
                    offset = 0;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("flooder write failed after {seq} frames: {e}"),
        }
    }
    let (queued, open, dropped) = fx.sample(id);
    let queued = queued.expect("flooder still exists");
    assert!(open, "the flooder was closed");
    assert_eq!(dropped, 0, "replies to the flooder were dropped");
    assert!(
        queued > CAP / 2,
        "only {queued} bytes queued: reads did not pause at the cap?"
    );
    assert!(
        queued <= CAP + 64 * 1024 + 2 * LEN,
        "{queued} bytes queued for the flooder (cap {CAP})"
    );

    // Phase 2: read every echo, in order, finishing the partial frame.
    let total = seq + u64::from(offset > 0);
    let mut next = 0u64;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while next < total {
        assert!(
            Instant::now() < deadline,
            "got {next} of {total} echoes in 5 s"
        );
        let mut progress = false;
        if offset > 0 {
            match raw.stream.write(&current[offset..]) {
                Ok(n) => {
                    offset += n;
                    progress = true;
                    if offset == current.len() {
                        offset = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
        match raw.stream.read(&mut chunk) {
            Ok(0) => panic!("EOF after {next} of {total} echoes"),
            Ok(n) => {
                progress = true;
                buf.extend_from_slice(&chunk[..n]);
                while let Some(frame) = parse_frame(&mut buf) {
                    assert_eq!(frame.opcode, 0x2, "unexpected frame {:?}", frame.opcode);
                    assert_eq!(frame.payload.len(), LEN);
                    assert_eq!(seq_of(&frame.payload), next, "echo out of order");
                    next += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read failed: {e}"),
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert!(buf.is_empty(), "extra bytes after the last echo");
    assert!(
        fx.drained_within(id, EVENT_TIMEOUT),
        "on_drain did not fire"
    );
    raw.stream.set_nonblocking(false).unwrap();
    raw.send_text("after the flood");
    assert_eq!(raw.read_text_skipping_pings(), "after the flood");
    let (_, _, dropped) = fx.sample(id);
    assert_eq!(dropped, 0);
}

#[test]
fn on_drain_fires_after_congestion_clears() {
    let fx = Fixture::start(Backpressure::Drop);
    let mut slow = RawWs::connect(fx.server.addr, "/sub");
    let id = fx.opened("/sub");
    // Fill the kernel buffers and then the queue, without reading.
    let mut backed_up = false;
    for seq in 0..300 {
        fx.server
            .handle
            .publish(TOPIC, Message::Binary(&numbered(seq, BIG)));
        // Let the loop finish the turn (and its flush) before probing: a
        // queue still not empty then is one the socket did not take.
        std::thread::sleep(Duration::from_millis(20));
        let (queued, _, _) = fx.sample(id);
        if queued.unwrap_or(0) > 0 {
            backed_up = true;
            break;
        }
    }
    assert!(backed_up, "the queue never backed up");
    assert!(
        !fx.drained_within(id, Duration::from_millis(100)),
        "on_drain before the client read anything"
    );
    let frames = drain_frames(&mut slow, Duration::from_millis(300));
    assert!(!frames.is_empty());
    assert!(
        fx.drained_within(id, EVENT_TIMEOUT),
        "on_drain did not fire"
    );
    let (queued, open, _) = fx.sample(id);
    assert_eq!(queued, Some(0));
    assert!(open);
}
