//! Embedding the loop: the application's own mio sources, its timers, and
//! driving the loop with `poll_once` from the caller's own loop.

mod common;

use std::any::Any;
use std::io::ErrorKind;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::*;
use mio::Interest;
use mio::net::UdpSocket;
use wsloop::{
    Accept, CloseCode, Config, ConnCtx, ConnId, Ctx, Handler, Message, Request, Response, Server,
};

#[derive(Debug)]
enum Event {
    Opened(ConnId),
    Closed(u16),
    Source(usize),
    Timer(u64, Instant),
}

/// Posted: register this socket as source number `.1`.
struct RegisterUdp(UdpSocket, usize);
/// Posted: call `set_timer(.0, .1)`.
struct Arm(Duration, u64);

/// Echoes; broadcasts datagrams from its UDP sources and timer firings.
struct Embed {
    events: Sender<Event>,
    /// Source number -> socket.
    udp: Vec<(usize, UdpSocket)>,
    messages: usize,
}

impl Embed {
    fn new(events: Sender<Event>) -> Embed {
        Embed {
            events,
            udp: Vec::new(),
            messages: 0,
        }
    }
}

impl Handler for Embed {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
        Ok(Accept::new(()))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, ()>) {
        let _ = self.events.send(Event::Opened(conn.id()));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
        self.messages += 1;
        conn.send(msg);
    }

    fn on_close(&mut self, _conn: &mut ConnCtx<'_, ()>, code: CloseCode, _reason: &str) {
        let _ = self.events.send(Event::Closed(code.as_u16()));
    }

    fn on_source_event(&mut self, ctx: &mut Ctx<'_, ()>, source: usize, event: &mio::event::Event) {
        let _ = self.events.send(Event::Source(source));
        assert!(event.is_readable());
        let Some((_, socket)) = self.udp.iter().find(|(n, _)| *n == source) else {
            return;
        };
        let mut buf = [0u8; 2048];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _from)) => {
                    let mut out = format!("udp{source}:").into_bytes();
                    out.extend_from_slice(&buf[..n]);
                    ctx.broadcast(Message::Binary(&out));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ()>, timer: u64) {
        let _ = self.events.send(Event::Timer(timer, Instant::now()));
        ctx.broadcast(Message::Text(&format!("timer {timer}")));
        // Timers can be set from a timer callback.
        if timer == 10 {
            ctx.set_timer(Duration::from_millis(50), 11);
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, ()>, value: Box<dyn Any + Send>) {
        let Some(value) = run_probe(ctx, value) else {
            return;
        };
        let value = match value.downcast::<RegisterUdp>() {
            Ok(register) => {
                let RegisterUdp(mut socket, n) = *register;
                ctx.registry()
                    .register(&mut socket, Ctx::<()>::user_token(n), Interest::READABLE)
                    .expect("register the UDP socket");
                self.udp.push((n, socket));
                return;
            }
            Err(value) => value,
        };
        if let Ok(arm) = value.downcast::<Arm>() {
            ctx.set_timer(arm.0, arm.1);
        }
    }
}

fn config() -> Config {
    let mut config = Config::default();
    config.ping_interval = None;
    config.close_timeout = Duration::from_secs(1);
    config
}

fn opened(events: &Receiver<Event>) -> ConnId {
    recv_matching(events, EVENT_TIMEOUT, |e| match e {
        Event::Opened(id) => Some(*id),
        _ => None,
    })
    .expect("no on_open")
}

fn expect_binary(ws: &mut Client) -> Vec<u8> {
    match ws_read(ws) {
        tungstenite::Message::Binary(b) => b.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[test]
fn a_udp_source_registered_before_run_reaches_on_source_event() {
    let (tx, events) = mpsc::channel();
    let (udp_tx, udp_rx) = mpsc::channel();
    let server = spawn_with(
        config(),
        move || Embed::new(tx),
        move |server: &mut Server<Embed>| {
            let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            udp_tx.send(socket.local_addr().unwrap()).unwrap();
            server
                .registry()
                .register(&mut socket, Ctx::<()>::user_token(1), Interest::READABLE)
                .unwrap();
            server.handler_mut().udp.push((1, socket));
        },
    );
    let udp_addr = udp_rx.recv_timeout(EVENT_TIMEOUT).unwrap();
    let mut a = ws_connect(server.addr, "/");
    opened(&events);
    let mut b = ws_connect(server.addr, "/");
    opened(&events);

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"hello from udp", udp_addr).unwrap();
    assert_eq!(expect_binary(&mut a), b"udp1:hello from udp");
    assert_eq!(expect_binary(&mut b), b"udp1:hello from udp");
    let source = recv_matching(&events, EVENT_TIMEOUT, |e| match e {
        Event::Source(n) => Some(*n),
        _ => None,
    });
    assert_eq!(source, Some(1));

    // Several datagrams, in order; WebSocket traffic is unaffected.
    for i in 0..5 {
        sender
            .send_to(format!("d{i}").as_bytes(), udp_addr)
            .unwrap();
    }
    for i in 0..5 {
        assert_eq!(expect_binary(&mut a), format!("udp1:d{i}").as_bytes());
    }
    ws_send(&mut b, "ws still works");
    for i in 0..5 {
        assert_eq!(expect_binary(&mut b), format!("udp1:d{i}").as_bytes());
    }
    assert_eq!(ws_read_text(&mut b), "ws still works");
}

#[test]
fn a_udp_source_registered_from_on_post_reaches_on_source_event() {
    let (tx, events) = mpsc::channel();
    let server = spawn(config(), move || Embed::new(tx));
    let mut ws = ws_connect(server.addr, "/");
    opened(&events);
    let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let udp_addr = socket.local_addr().unwrap();
    assert!(server.handle.post(RegisterUdp(socket, 7)));
    // A probe after the post: the registration is done once it answers.
    probe(&server.handle, |_: &mut Ctx<'_, ()>| ());
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"posted", udp_addr).unwrap();
    assert_eq!(expect_binary(&mut ws), b"udp7:posted");
    let source = recv_matching(&events, EVENT_TIMEOUT, |e| match e {
        Event::Source(n) => Some(*n),
        _ => None,
    });
    assert_eq!(source, Some(7));
}

#[test]
fn set_timer_fires_on_timer_in_deadline_order() {
    let (tx, events) = mpsc::channel();
    let server = spawn(config(), move || Embed::new(tx));
    let mut ws = ws_connect(server.addr, "/");
    opened(&events);
    let t0 = Instant::now();
    assert!(server.handle.post(Arm(Duration::from_millis(300), 3)));
    assert!(server.handle.post(Arm(Duration::from_millis(100), 1)));
    assert!(server.handle.post(Arm(Duration::from_millis(200), 2)));
    let mut fired = Vec::new();
    while fired.len() < 3 {
        let (id, at) = recv_matching(&events, EVENT_TIMEOUT, |e| match e {
            Event::Timer(id, at) => Some((*id, *at)),
            _ => None,
        })
        .expect("a timer did not fire");
        fired.push((id, at.duration_since(t0)));
    }
    let ids: Vec<u64> = fired.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3]);
    for (id, at) in &fired {
        let due = Duration::from_millis(100 * id);
        assert!(
            *at >= due - Duration::from_millis(5),
            "timer {id} fired early, at {at:?}"
        );
        assert!(
            *at <= due + Duration::from_millis(500),
            "timer {id} fired late, at {at:?}"
        );
    }
    for id in 1..=3 {
        assert_eq!(ws_read_text(&mut ws), format!("timer {id}"));
    }
    // A timer set from on_timer.
    assert!(server.handle.post(Arm(Duration::from_millis(10), 10)));
    assert_eq!(ws_read_text(&mut ws), "timer 10");
    assert_eq!(ws_read_text(&mut ws), "timer 11");
}

#[test]
fn poll_once_drives_the_loop_from_the_callers_own_loop() {
    let (tx, events) = mpsc::channel();
    let mut server =
        Server::bind("127.0.0.1:0".parse().unwrap(), config(), Embed::new(tx)).expect("bind");
    let addr = server.local_addr();
    let handle = server.handle();

    // An idle turn returns after about its timeout.
    let t0 = Instant::now();
    server.poll_once(Some(Duration::from_millis(50))).unwrap();
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(40) && idle < Duration::from_millis(1000),
        "idle poll_once(50 ms) took {idle:?}"
    );

    // A client in another thread; this thread runs the loop.
    let client = std::thread::spawn(move || {
        let mut ws = ws_connect(addr, "/");
        for i in 0..3 {
            let text = format!("hello {i}");
            ws_send(&mut ws, &text);
            assert_eq!(ws_read_text(&mut ws), text);
        }
        ws.close(None).unwrap();
        loop {
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => return,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.is_finished() {
        assert!(Instant::now() < deadline, "the client did not finish");
        server.poll_once(Some(Duration::from_millis(10))).unwrap();
    }
    client.join().expect("client thread");
    assert_eq!(server.handler().messages, 3);
    assert_eq!(server.metrics().messages_in, 3);
    // The closing handshake completed within the turns above.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.metrics().open > 0 {
        assert!(Instant::now() < deadline, "the connection never closed");
        server.poll_once(Some(Duration::from_millis(10))).unwrap();
    }
    let closed = recv_matching(&events, Duration::ZERO, |e| match e {
        Event::Closed(code) => Some(*code),
        _ => None,
    });
    assert_eq!(closed, Some(1005));

    // A timer due sooner than the poll timeout ends the wait early.
    assert!(handle.post(Arm(Duration::from_millis(50), 42)));
    server.poll_once(Some(Duration::from_secs(2))).unwrap(); // runs the post
    let t0 = Instant::now();
    let mut fired = false;
    while !fired && t0.elapsed() < Duration::from_secs(2) {
        server.poll_once(Some(Duration::from_secs(2))).unwrap();
        fired = recv_matching(&events, Duration::ZERO, |e| {
            matches!(e, Event::Timer(42, _)).then_some(())
        })
        .is_some();
    }
    assert!(fired, "the timer never fired");
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "poll_once slept past the timer: {:?}",
        t0.elapsed()
    );

    // Shutdown, still driven by hand.
    handle.shutdown();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.is_stopped() {
        assert!(Instant::now() < deadline, "shutdown never completed");
        server.poll_once(Some(Duration::from_millis(10))).unwrap();
    }
}
