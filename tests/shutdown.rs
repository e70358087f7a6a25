//! Graceful shutdown through `Handle::shutdown`, and the other `Handle`
//! methods used from other threads.

mod common;

use std::any::Any;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::*;
use wsloop::{
    Accept, CloseCode, Config, ConnCtx, ConnId, Ctx, Handler, Message, Request, Response,
};

const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const BURST: usize = 1000;

#[derive(Debug)]
enum Event {
    Opened(ConnId, String),
    Closed(ConnId, u16),
    InTimer,
}

/// Posted to make the loop busy: a timer due at once whose callback
/// blocks for [`BUSY`].
struct Busy;
const BUSY: Duration = Duration::from_millis(150);

/// `/burst` sends [`BURST`] messages on open; `/ticks` joins the `ticks`
/// topic; every path echoes.
struct App {
    events: Sender<Event>,
}

fn burst_message(i: usize) -> String {
    format!("b{i}:{}", "x".repeat(1000))
}

impl Handler for App {
    type State = String;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<String>, Response> {
        Ok(Accept::new(req.path().to_string()))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, String>) {
        match conn.state().as_str() {
            "/burst" => {
                for i in 0..BURST {
                    conn.send(Message::Text(&burst_message(i)));
                }
            }
            "/ticks" => {
                conn.subscribe("ticks");
            }
            _ => {}
        }
        let _ = self
            .events
            .send(Event::Opened(conn.id(), conn.state().clone()));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, String>, msg: Message<'_>) {
        conn.send(msg);
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, String>, code: CloseCode, _reason: &str) {
        let _ = self.events.send(Event::Closed(conn.id(), code.as_u16()));
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, String>, value: Box<dyn Any + Send>) {
        if let Some(value) = run_probe(ctx, value)
            && value.is::<Busy>()
        {
            ctx.set_timer(Duration::ZERO, 1);
        }
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_, String>, _timer: u64) {
        let _ = self.events.send(Event::InTimer);
        std::thread::sleep(BUSY);
    }
}

fn start() -> (Running, Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let mut config = Config::default();
    config.ping_interval = None;
    config.close_timeout = CLOSE_TIMEOUT;
    (spawn(config, move || App { events: tx }), rx)
}

fn opened(events: &Receiver<Event>, path: &str) -> ConnId {
    recv_matching(events, EVENT_TIMEOUT, |e| match e {
        Event::Opened(id, p) if p == path => Some(*id),
        _ => None,
    })
    .expect("no on_open")
}

fn closed(events: &Receiver<Event>, id: ConnId) -> Option<u16> {
    recv_matching(events, EVENT_TIMEOUT, |e| match e {
        Event::Closed(c, code) if *c == id => Some(*code),
        _ => None,
    })
}

/// Reads with tungstenite until the connection ends; true if it ended
/// cleanly (the server finished the closing handshake).
fn read_to_close_end(ws: &mut Client) -> bool {
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => return true,
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn shutdown_delivers_what_the_handler_queued_then_1001() {
    let (mut server, events) = start();
    let mut ws = ws_connect(server.addr, "/burst");
    let id = opened(&events, "/burst");
    server.handle.shutdown();
    for i in 0..BURST {
        assert_eq!(ws_read_text(&mut ws), burst_message(i), "message {i}");
    }
    assert_eq!(ws_expect_close(&mut ws), 1001);
    let answered = Instant::now();
    assert!(
        read_to_close_end(&mut ws),
        "closing handshake not completed"
    );
    let joined = server.join_within(CLOSE_TIMEOUT + Duration::from_millis(500));
    assert!(
        joined.is_some(),
        "run() still running {:?} after the client answered the close",
        answered.elapsed()
    );
    assert_eq!(closed(&events, id), Some(1001));
}

#[test]
fn shutdown_delivers_messages_sent_through_the_handle_before_it() {
    // Several rounds: the loop drains commands while they are still being
    // sent, so a message and the shutdown flag can race.
    for round in 0..5 {
        let (mut server, events) = start();
        let mut raw = RawWs::connect(server.addr, "/plain");
        let id = opened(&events, "/plain");
        for i in 0..BURST {
            assert!(server.handle.send(id, Message::Text(&format!("h{i}"))));
        }
        server.handle.shutdown();
        let mut got = Vec::new();
        let close = loop {
            let frame = raw.read_frame();
            match frame.opcode {
                0x1 => got.push(String::from_utf8(frame.payload).unwrap()),
                0x8 => break frame,
                other => panic!("unexpected opcode {other}"),
            }
        };
        let expected: Vec<String> = (0..BURST).map(|i| format!("h{i}")).collect();
        assert_eq!(
            got.len(),
            BURST,
            "round {round}: {} of {BURST} messages before the close; first missing: {:?}",
            got.len(),
            expected.iter().find(|m| !got.contains(m))
        );
        assert_eq!(got, expected, "round {round}: out of order");
        assert_eq!(close.close_code().map(|(code, _)| code), Some(1001));
        raw.send_close(1001, "");
        assert!(raw.eof_within(Duration::from_secs(2)));
        assert!(
            server
                .join_within(CLOSE_TIMEOUT + Duration::from_millis(500))
                .is_some()
        );
    }
}

#[test]
fn handle_sends_made_while_the_loop_is_busy_survive_a_shutdown() {
    // The loop is inside a callback (after it drained the command
    // channel for this turn) when another thread sends, then shuts down.
    let (mut server, events) = start();
    let mut raw = RawWs::connect(server.addr, "/plain");
    let id = opened(&events, "/plain");
    assert!(server.handle.post(Busy));
    recv_matching(&events, EVENT_TIMEOUT, |e| {
        matches!(e, Event::InTimer).then_some(())
    })
    .expect("the timer did not fire");
    for i in 0..10 {
        assert!(server.handle.send(id, Message::Text(&format!("late {i}"))));
    }
    server.handle.shutdown();
    let mut got = Vec::new();
    let code = loop {
        let frame = raw.read_frame();
        match frame.opcode {
            0x1 => got.push(String::from_utf8(frame.payload).unwrap()),
            0x8 => break frame.close_code().map(|(code, _)| code),
            other => panic!("unexpected opcode {other}"),
        }
    };
    let expected: Vec<String> = (0..10).map(|i| format!("late {i}")).collect();
    assert_eq!(
        got, expected,
        "messages sent through the Handle before shutdown() were lost"
    );
    assert_eq!(code, Some(1001));
    raw.send_close(1001, "");
    assert!(
        server
            .join_within(CLOSE_TIMEOUT + Duration::from_millis(500))
            .is_some()
    );
}

#[test]
fn run_returns_after_the_close_timeout_when_a_client_never_answers() {
    let (mut server, events) = start();
    let mut raw = RawWs::connect(server.addr, "/plain");
    let id = opened(&events, "/plain");
    let t0 = Instant::now();
    server.handle.shutdown();
    let close = raw.read_frame();
    assert_eq!(close.opcode, 0x8);
    assert_eq!(close.close_code().map(|(code, _)| code), Some(1001));
    // Never answer. The server gives up after the close timeout.
    let joined = server.join_within(CLOSE_TIMEOUT + Duration::from_millis(800));
    let took = t0.elapsed();
    assert!(joined.is_some(), "run() did not return within {took:?}");
    assert!(
        took >= CLOSE_TIMEOUT - Duration::from_millis(100),
        "run() returned after only {took:?}, before the close timeout"
    );
    assert!(raw.eof_within(Duration::from_secs(1)));
    assert!(closed(&events, id).is_some(), "no on_close");
}

#[test]
fn new_connections_are_refused_once_shutdown_starts() {
    let (mut server, events) = start();
    let mut raw = RawWs::connect(server.addr, "/plain");
    opened(&events, "/plain");
    // A connection still handshaking when shutdown starts is dropped.
    let mut half = connect(server.addr);
    half.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    server.handle.shutdown();
    // The close frame proves shutdown has begun; the client does not
    // answer, so the server keeps running (for the close timeout).
    let close = raw.read_frame();
    assert_eq!(close.close_code().map(|(code, _)| code), Some(1001));
    assert!(!server.is_finished());
    match TcpStream::connect(server.addr) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut late) => {
            // Accepted by a backlog that is going away: no handshake.
            late.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ = late.write_all(upgrade_request("/", &[]).as_bytes());
            let mut buf = [0u8; 64];
            match late.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("a connection after shutdown was served: {other:?}"),
            }
        }
    }
    let (_, ended) = read_to_end_within(&mut half, Duration::from_millis(500));
    assert!(ended, "a handshaking connection survived the shutdown");
    assert!(
        server
            .join_within(CLOSE_TIMEOUT + Duration::from_millis(800))
            .is_some()
    );
}

#[test]
fn handle_methods_work_from_another_thread() {
    let (mut server, events) = start();
    let mut subs: Vec<Client> = (0..3)
        .map(|_| {
            let ws = ws_connect(server.addr, "/ticks");
            opened(&events, "/ticks");
            ws
        })
        .collect();
    let mut other = ws_connect(server.addr, "/plain");
    let other_id = opened(&events, "/plain");

    // A ticker thread: 10 updates a second for a second.
    let handle = server.handle.clone();
    let ticker = std::thread::spawn(move || {
        for seq in 0..10 {
            assert!(handle.publish("ticks", Message::Text(&format!("tick {seq}"))));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(handle.broadcast_text("done"));
    });
    for ws in &mut subs {
        for seq in 0..10 {
            assert_eq!(ws_read_text(ws), format!("tick {seq}"));
        }
        assert_eq!(ws_read_text(ws), "done");
    }
    ticker.join().unwrap();
    // The non-subscriber saw the broadcast only.
    assert_eq!(ws_read_text(&mut other), "done");

    let handle = server.handle.clone();
    let sender = std::thread::spawn(move || {
        assert!(handle.send(other_id, Message::Binary(b"direct")));
        assert!(handle.close(other_id, CloseCode(4000), "from a thread"));
    });
    sender.join().unwrap();
    match ws_read(&mut other) {
        tungstenite::Message::Binary(b) => assert_eq!(&b[..], b"direct"),
        m => panic!("expected the direct message, got {m:?}"),
    }
    match ws_read(&mut other) {
        tungstenite::Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "from a thread");
        }
        m => panic!("expected a close, got {m:?}"),
    }
    assert!(read_to_close_end(&mut other));
    assert_eq!(closed(&events, other_id), Some(4000));
    // The subscribers never saw the direct message.
    for ws in &mut subs {
        assert!(ws_silent_for(ws, Duration::from_millis(50)).is_ok());
    }

    // Once the server has stopped, every Handle method reports failure.
    let handle = server.handle.clone();
    handle.shutdown();
    for ws in &mut subs {
        assert_eq!(ws_expect_close(ws), 1001);
    }
    assert!(server.join_within(Duration::from_secs(3)).is_some());
    assert!(!handle.broadcast_text("late"));
    assert!(!handle.publish("ticks", Message::Text("late")));
    assert!(!handle.send(other_id, Message::Text("late")));
    assert!(!handle.post(1u8));
}
