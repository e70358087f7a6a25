//! Heartbeats and timeouts: pings to silent connections, dropping those
//! that stay silent, unsolicited pongs, stalled handshakes, idle timeouts.

mod common;

use std::io::{ErrorKind, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::*;
use wsloop::{Accept, CloseCode, Config, ConnCtx, ConnId, Handler, Message, Request, Response};

#[derive(Debug)]
enum Event {
    Opened(ConnId),
    Closed(ConnId, u16),
}

/// Echoes; reports opens and closes.
struct Echo {
    events: Sender<Event>,
}

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
        Ok(Accept::new(()))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, ()>) {
        let _ = self.events.send(Event::Opened(conn.id()));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
        conn.send(msg);
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, ()>, code: CloseCode, _reason: &str) {
        let _ = self.events.send(Event::Closed(conn.id(), code.as_u16()));
    }
}

const PING_INTERVAL: Duration = Duration::from_millis(200);
const PONG_TIMEOUT: Duration = Duration::from_millis(200);

fn heartbeat_config() -> Config {
    let mut config = Config::default();
    config.ping_interval = Some(PING_INTERVAL);
    config.pong_timeout = PONG_TIMEOUT;
    config.close_timeout = Duration::from_secs(1);
    config
}

fn start(config: Config) -> (Running, Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    (spawn(config, move || Echo { events: tx }), rx)
}

fn opened(events: &Receiver<Event>) -> ConnId {
    recv_matching(events, EVENT_TIMEOUT, |e| match e {
        Event::Opened(id) => Some(*id),
        _ => None,
    })
    .expect("no on_open")
}

fn closed_within(events: &Receiver<Event>, id: ConnId, within: Duration) -> Option<u16> {
    recv_matching(events, within, |e| match e {
        Event::Closed(closed, code) if *closed == id => Some(*code),
        _ => None,
    })
}

#[test]
fn a_client_that_answers_pings_stays_open() {
    let (server, events) = start(heartbeat_config());
    let mut ws = ws_connect(server.addr, "/");
    let id = opened(&events);
    // Keep reading (tungstenite answers each ping on the next read) for
    // well over ping_interval + pong_timeout.
    set_timeout(&mut ws, Duration::from_millis(20));
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("connection failed after {:?}: {e}", start.elapsed()),
        }
    }
    assert!(pings >= 3, "only {pings} pings in 1.5 s");
    set_timeout(&mut ws, READ_TIMEOUT);
    ws_send(&mut ws, "still here");
    assert_eq!(ws_read_text(&mut ws), "still here");
    assert_eq!(
        closed_within(&events, id, Duration::ZERO),
        None,
        "closed early"
    );
}

#[test]
fn pings_keep_their_interval_when_the_pong_timeout_is_longer() {
    // The pong-timeout deadline (5 s) must not hold back the next ping
    // (due 200 ms after the pong).
    let mut config = heartbeat_config();
    config.pong_timeout = Duration::from_secs(5);
    let (server, events) = start(config);
    let mut raw = RawWs::connect(server.addr, "/");
    opened(&events);
    let pings = answer_pings(&mut raw, Duration::from_millis(1500), Duration::ZERO)
        .unwrap_or_else(|lasted| panic!("dropped after {lasted:?}"));
    // About one ping per 200 ms + 32 ms grid: 6 in 1.5 s.
    assert!(pings >= 4, "only {pings} pings in 1.5 s");
}

/// Answers every ping on `raw` with a pong after `delay`, for `during`.
/// Returns the pings answered, or how long the connection lasted if the
/// server dropped it.
fn answer_pings(raw: &mut RawWs, during: Duration, delay: Duration) -> Result<usize, Duration> {
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < during {
        match raw.try_read_frame() {
            Ok(frame) if frame.opcode == 0x9 => {
                pings += 1;
                std::thread::sleep(delay);
                raw.send(true, 0xA, &frame.payload);
            }
            Ok(frame) => panic!("unexpected frame {frame:?}"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Err(start.elapsed()),
        }
    }
    raw.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    Ok(pings)
}

/// A raw client that answers every ping with a pong after `delay`,
/// for 1.2 s; returns how long the connection lasted if it was dropped.
fn answer_pings_for(delay: Duration) -> Option<Duration> {
    let (server, events) = start(heartbeat_config());
    let mut raw = RawWs::connect(server.addr, "/");
    opened(&events);
    let pings = match answer_pings(&mut raw, Duration::from_millis(1200), delay) {
        Ok(pings) => pings,
        Err(lasted) => return Some(lasted),
    };
    assert!(pings >= 3, "only {pings} pings");
    raw.send_text("alive");
    assert_eq!(raw.read_text_skipping_pings(), "alive");
    None
}

#[test]
fn a_pong_sent_right_after_the_ping_counts() {
    // Loopback pongs often arrive within the millisecond of the ping.
    let dropped = answer_pings_for(Duration::ZERO);
    assert_eq!(
        dropped, None,
        "dropped although every ping was answered at once"
    );
}

#[test]
fn a_pong_sent_a_little_later_counts() {
    let dropped = answer_pings_for(Duration::from_millis(5));
    assert_eq!(dropped, None, "dropped although every ping was answered");
}

#[test]
fn a_silent_client_is_pinged_then_dropped_as_abnormal() {
    let (server, events) = start(heartbeat_config());
    let mut raw = RawWs::connect(server.addr, "/");
    let t0 = Instant::now();
    let id = opened(&events);
    let ping = raw.read_frame();
    let ping_at = t0.elapsed();
    assert_eq!(ping.opcode, 0x9, "expected a ping, got {ping:?}");
    assert!(ping.fin);
    assert!(
        ping_at >= PING_INTERVAL - Duration::from_millis(30),
        "ping after only {ping_at:?}"
    );
    // Say nothing: the server must hang up.
    let limit = PING_INTERVAL + PONG_TIMEOUT + Duration::from_millis(500);
    assert!(
        raw.eof_within(limit),
        "still connected {limit:?} after the handshake"
    );
    let gone_at = t0.elapsed();
    assert!(
        gone_at >= PING_INTERVAL + PONG_TIMEOUT - Duration::from_millis(30),
        "dropped after only {gone_at:?}"
    );
    assert!(gone_at <= limit, "dropped after {gone_at:?}");
    assert_eq!(
        closed_within(&events, id, EVENT_TIMEOUT),
        Some(1006),
        "on_close should see 1006"
    );
}

#[test]
fn unsolicited_pongs_are_accepted_and_count_as_liveness() {
    let (server, events) = start(heartbeat_config());
    let mut raw = RawWs::connect(server.addr, "/");
    let id = opened(&events);
    raw.send(true, 0xA, b"unsolicited");
    raw.send_text("after a pong");
    assert_eq!(raw.read_text_skipping_pings(), "after a pong");
    // Pongs alone, more often than the ping interval, for longer than
    // ping_interval + pong_timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(900) {
        raw.send(true, 0xA, b"");
        std::thread::sleep(Duration::from_millis(50));
    }
    raw.send_text("still open");
    assert_eq!(raw.read_text_skipping_pings(), "still open");
    assert_eq!(closed_within(&events, id, Duration::ZERO), None);
}

#[test]
fn a_stalled_handshake_is_dropped_after_the_handshake_timeout() {
    let mut config = heartbeat_config();
    config.handshake_timeout = Duration::from_millis(300);
    let (server, events) = start(config);
    let mut half = connect(server.addr);
    half.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut mute = connect(server.addr);
    let t0 = Instant::now();
    let (_, ended) = read_to_end_within(&mut half, Duration::from_millis(1500));
    let elapsed = t0.elapsed();
    assert!(ended, "half-open handshake still connected after 1.5 s");
    assert!(
        elapsed >= Duration::from_millis(250),
        "dropped after only {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_millis(1000),
        "dropped after {elapsed:?}"
    );
    // A connection that sends nothing at all goes the same way.
    let (_, ended) = read_to_end_within(&mut mute, Duration::from_millis(1000));
    assert!(ended, "silent TCP connection still connected");
    assert!(
        events.try_recv().is_err(),
        "no WebSocket should have opened"
    );
    // The server still works.
    let mut ws = ws_connect(server.addr, "/");
    ws_send(&mut ws, "ok");
    assert_eq!(ws_read_text(&mut ws), "ok");
}

#[test]
fn idle_timeout_closes_with_1001_even_when_pings_are_answered() {
    let idle = Duration::from_millis(300);
    let mut config = heartbeat_config();
    config.ping_interval = Some(Duration::from_millis(100));
    config.pong_timeout = Duration::from_millis(200);
    config.idle_timeout = Some(idle);
    let (server, events) = start(config);
    let mut ws = ws_connect(server.addr, "/");
    let t0 = Instant::now();
    let id = opened(&events);
    let mut pings = 0;
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(tungstenite::Message::Close(Some(frame))) => {
                let _ = ws.flush();
                break u16::from(frame.code);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("read failed after {:?}: {e}", t0.elapsed()),
        }
    };
    let closed_at = t0.elapsed();
    assert_eq!(code, 1001);
    assert!(
        pings >= 1,
        "the client answered no ping before the idle close"
    );
    assert!(
        closed_at >= idle - Duration::from_millis(30),
        "idle close after only {closed_at:?}"
    );
    assert!(
        closed_at <= idle + Duration::from_millis(700),
        "idle close after {closed_at:?}"
    );
    assert_eq!(closed_within(&events, id, EVENT_TIMEOUT), Some(1001));
}

#[test]
fn a_client_sending_messages_is_not_idle() {
    let mut config = heartbeat_config();
    config.ping_interval = Some(Duration::from_millis(100));
    config.pong_timeout = Duration::from_millis(200);
    config.idle_timeout = Some(Duration::from_millis(300));
    let (server, events) = start(config);
    let mut ws = ws_connect(server.addr, "/");
    let id = opened(&events);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1000) {
        let text = format!("msg {n}");
        ws_send(&mut ws, &text);
        assert_eq!(ws_read_text(&mut ws), text);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(closed_within(&events, id, Duration::ZERO), None);
}
