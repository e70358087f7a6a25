//! Fan-out through the library API: broadcast, broadcast to others, topics
//! (publish, subscribe, unsubscribe, membership), per-connection state,
//! encode-once frames and corked writes.

mod common;

use std::any::Any;
use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use common::*;
use wsloop::{
    Accept, CloseCode, Config, ConnCtx, ConnId, Ctx, Handler, Message, Request, Response,
    SendStatus,
};

/// Per-connection state, attached with `Accept::new`.
#[derive(Debug)]
struct Peer {
    name: String,
    hits: u32,
}

#[derive(Debug)]
enum Event {
    Opened(ConnId, String),
    Closed(ConnId, u16),
}

/// Text commands drive the server-side API:
/// `bcast:X`, `others:X`, `sub:T`, `unsub:T`, `pub:T:X`, `pubothers:T:X`,
/// `count:T`, `subs:T`, `topics`, `hit`, `burst:N`, `blob:N`.
struct Rt {
    events: Sender<Event>,
}

impl Handler for Rt {
    type State = Peer;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<Peer>, Response> {
        let name = req.query_param("name").unwrap_or_else(|| "anon".into());
        Ok(Accept::new(Peer { name, hits: 0 }))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, Peer>) {
        let _ = self
            .events
            .send(Event::Opened(conn.id(), conn.state().name.clone()));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, Peer>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            conn.send(msg);
            return;
        };
        let (cmd, arg) = text.split_once(':').unwrap_or((text, ""));
        match cmd {
            "bcast" => {
                conn.broadcast(Message::Text(arg));
            }
            "others" => {
                conn.broadcast_others(Message::Text(arg));
            }
            "sub" => {
                let fresh = conn.subscribe(arg);
                let reply = format!("sub:{arg}:{fresh}:{}", conn.subscriber_count(arg));
                conn.send(Message::Text(&reply));
            }
            "unsub" => {
                let was = conn.unsubscribe(arg);
                let reply = format!("unsub:{arg}:{was}:{}", conn.subscriber_count(arg));
                conn.send(Message::Text(&reply));
            }
            "pub" | "pubothers" => {
                let (topic, body) = arg.split_once(':').expect("pub:TOPIC:TEXT");
                let n = if cmd == "pub" {
                    conn.publish(topic, Message::Text(body))
                } else {
                    conn.publish_others(topic, Message::Text(body))
                };
                conn.send(Message::Text(&format!("published:{n}")));
            }
            "count" => {
                let reply = format!("count:{arg}:{}", conn.subscriber_count(arg));
                conn.send(Message::Text(&reply));
            }
            "subs" => {
                let mut names: Vec<String> = conn
                    .subscribers(arg)
                    .into_iter()
                    .filter_map(|id| conn.state_of(id).map(|p| p.name.clone()))
                    .collect();
                names.sort();
                let reply = format!("subs:{arg}:{}", names.join(","));
                conn.send(Message::Text(&reply));
            }
            "topics" => {
                let mut topics = conn.topics();
                topics.sort();
                let reply = format!("topics:{}", topics.join(","));
                conn.send(Message::Text(&reply));
            }
            "hit" => {
                conn.state_mut().hits += 1;
                let reply = format!("{}:{}", conn.state().name, conn.state().hits);
                conn.send(Message::Text(&reply));
            }
            "burst" => {
                let n: usize = arg.parse().unwrap();
                for i in 0..n {
                    let status = conn.send(Message::Text(&format!("m{i}")));
                    assert_eq!(status, SendStatus::Queued);
                }
            }
            "mixed" => {
                // Fan-outs around a direct send, then to other recipients:
                // order must hold whatever the server batches.
                conn.publish(arg, Message::Text("a"));
                conn.send(Message::Text("b"));
                conn.publish(arg, Message::Text("c"));
                conn.publish(arg, Message::Text("d"));
                conn.broadcast(Message::Text("e"));
                conn.publish(arg, Message::Text("f"));
            }
            "blob" => {
                let n: usize = arg.parse().unwrap();
                conn.broadcast(Message::Binary(&blob(n)));
            }
            _ => {
                conn.send(Message::Text(&format!("unknown:{text}")));
            }
        }
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, Peer>, code: CloseCode, _reason: &str) {
        let _ = self.events.send(Event::Closed(conn.id(), code.as_u16()));
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, Peer>, value: Box<dyn Any + Send>) {
        run_probe(ctx, value);
    }
}

fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) + 7) as u8).collect()
}

struct Fixture {
    server: Running,
    events: Receiver<Event>,
}

impl Fixture {
    fn start() -> Fixture {
        let (tx, events) = mpsc::channel();
        let mut config = Config::default();
        config.ping_interval = None;
        config.close_timeout = Duration::from_secs(1);
        let server = spawn(config, move || Rt { events: tx });
        Fixture { server, events }
    }

    /// Connects a tungstenite client named `name` and returns it with the
    /// connection's id.
    fn join(&self, name: &str) -> (Client, ConnId) {
        let ws = ws_connect(self.server.addr, &format!("/?name={name}"));
        let id = recv_matching(&self.events, EVENT_TIMEOUT, |e| match e {
            Event::Opened(id, n) if n == name => Some(*id),
            _ => None,
        })
        .expect("no on_open");
        (ws, id)
    }

    fn expect_closed(&self, id: ConnId) -> u16 {
        recv_matching(&self.events, EVENT_TIMEOUT, |e| match e {
            Event::Closed(closed, code) if *closed == id => Some(*code),
            _ => None,
        })
        .expect("no on_close")
    }
}

/// Sends a command and returns the reply.
fn ask(ws: &mut Client, command: &str) -> String {
    ws_send(ws, command);
    ws_read_text(ws)
}

/// Reads text messages up to and including `end`.
fn read_until(ws: &mut Client, end: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let text = ws_read_text(ws);
        let done = text == end;
        seen.push(text);
        if done {
            return seen;
        }
    }
}

#[test]
fn broadcast_reaches_every_connection_including_the_sender() {
    let fx = Fixture::start();
    let mut clients: Vec<Client> = ["a", "b", "c"].iter().map(|n| fx.join(n).0).collect();
    ws_send(&mut clients[0], "bcast:hello all");
    for ws in &mut clients {
        assert_eq!(ws_read_text(ws), "hello all");
    }
}

#[test]
fn broadcast_others_excludes_the_sender() {
    let fx = Fixture::start();
    let (mut a, _) = fx.join("a");
    let (mut b, _) = fx.join("b");
    let (mut c, _) = fx.join("c");
    ws_send(&mut a, "others:from a");
    assert_eq!(ws_read_text(&mut b), "from a");
    assert_eq!(ws_read_text(&mut c), "from a");
    // A sentinel broadcast to everyone: `a` sees it first, so it never got
    // its own message.
    ws_send(&mut b, "bcast:sentinel");
    assert_eq!(read_until(&mut a, "sentinel"), ["sentinel"]);
    assert_eq!(ws_read_text(&mut b), "sentinel");
    assert_eq!(ws_read_text(&mut c), "sentinel");
}

#[test]
fn publish_reaches_only_the_topic_subscribers() {
    let fx = Fixture::start();
    let (mut a1, _) = fx.join("a1");
    let (mut a2, _) = fx.join("a2");
    let (mut b1, _) = fx.join("b1");
    let (mut b2, _) = fx.join("b2");
    let (mut lurker, _) = fx.join("lurker");
    assert_eq!(ask(&mut a1, "sub:room-a"), "sub:room-a:true:1");
    assert_eq!(ask(&mut a2, "sub:room-a"), "sub:room-a:true:2");
    assert_eq!(ask(&mut b1, "sub:room-b"), "sub:room-b:true:1");
    assert_eq!(ask(&mut b2, "sub:room-b"), "sub:room-b:true:2");

    ws_send(&mut a1, "pub:room-a:only for A");
    assert_eq!(ws_read_text(&mut a1), "only for A");
    assert_eq!(ws_read_text(&mut a1), "published:2");
    assert_eq!(ws_read_text(&mut a2), "only for A");

    ws_send(&mut b2, "pubothers:room-b:only for B");
    assert_eq!(ws_read_text(&mut b1), "only for B");
    assert_eq!(ws_read_text(&mut b2), "published:1");

    // A topic nobody joined reaches nobody.
    assert_eq!(ask(&mut lurker, "pub:room-c:void"), "published:0");

    // Everything published above is queued ahead of this broadcast.
    ws_send(&mut lurker, "bcast:end");
    assert_eq!(read_until(&mut a1, "end"), ["end"]);
    assert_eq!(read_until(&mut a2, "end"), ["end"]);
    assert_eq!(
        read_until(&mut b1, "end"),
        ["end"],
        "room B saw room A's message"
    );
    assert_eq!(read_until(&mut b2, "end"), ["end"]);
    assert_eq!(read_until(&mut lurker, "end"), ["end"]);
}

#[test]
fn subscribe_unsubscribe_and_membership_queries() {
    let fx = Fixture::start();
    let (mut alice, alice_id) = fx.join("alice");
    let (mut bob, _) = fx.join("bob");
    assert_eq!(ask(&mut alice, "sub:t"), "sub:t:true:1");
    assert_eq!(
        ask(&mut alice, "sub:t"),
        "sub:t:false:1",
        "second subscribe"
    );
    assert_eq!(ask(&mut alice, "sub:u"), "sub:u:true:1");
    assert_eq!(ask(&mut bob, "sub:t"), "sub:t:true:2");
    assert_eq!(ask(&mut alice, "subs:t"), "subs:t:alice,bob");
    assert_eq!(ask(&mut alice, "topics"), "topics:t,u");
    assert_eq!(ask(&mut bob, "topics"), "topics:t");

    // The same queries from outside a connection callback.
    let (count, members, topics) = probe(&fx.server.handle, move |ctx: &mut Ctx<'_, Peer>| {
        (
            ctx.subscriber_count("t"),
            ctx.subscribers("t").len(),
            ctx.subscribers("u"),
        )
    });
    assert_eq!((count, members), (2, 2));
    assert_eq!(topics, [alice_id]);

    assert_eq!(ask(&mut alice, "unsub:t"), "unsub:t:true:1");
    assert_eq!(
        ask(&mut alice, "unsub:t"),
        "unsub:t:false:1",
        "second unsubscribe"
    );
    assert_eq!(ask(&mut alice, "topics"), "topics:u");
    assert_eq!(ask(&mut alice, "subs:t"), "subs:t:bob");

    // Alice left `t`: a publish there reaches bob only.
    assert_eq!(ask(&mut alice, "pub:t:news"), "published:1");
    assert_eq!(ws_read_text(&mut bob), "news");
    ws_send(&mut bob, "bcast:end");
    assert_eq!(read_until(&mut alice, "end"), ["end"]);

    // Ctx::subscribe / unsubscribe by id, from outside a callback.
    let (joined, rejoined, left) = probe(&fx.server.handle, move |ctx: &mut Ctx<'_, Peer>| {
        (
            ctx.subscribe(alice_id, "v"),
            ctx.subscribe(alice_id, "v"),
            ctx.unsubscribe(alice_id, "u"),
        )
    });
    assert_eq!((joined, rejoined, left), (true, false, true));
    assert_eq!(ask(&mut alice, "topics"), "topics:v");
}

#[test]
fn closing_connections_leave_all_their_topics() {
    let fx = Fixture::start();
    let (mut alice, _) = fx.join("alice");
    let (mut bob, bob_id) = fx.join("bob");
    let (mut carol, carol_id) = fx.join("carol");
    for ws in [&mut alice, &mut bob, &mut carol] {
        ask(ws, "sub:room");
        ask(ws, "sub:other");
    }
    assert_eq!(ask(&mut alice, "count:room"), "count:room:3");

    // Bob closes politely (an empty close frame: 1005 No Status), carol
    // just vanishes (TCP close, no close frame: 1006).
    ws_close(bob);
    assert_eq!(fx.expect_closed(bob_id), 1005);
    drop(carol);
    assert_eq!(fx.expect_closed(carol_id), 1006);

    assert_eq!(ask(&mut alice, "count:room"), "count:room:1");
    assert_eq!(ask(&mut alice, "count:other"), "count:other:1");
    assert_eq!(ask(&mut alice, "subs:room"), "subs:room:alice");
    assert_eq!(ask(&mut alice, "pub:room:x"), "x");
    assert_eq!(ws_read_text(&mut alice), "published:1");

    // A stale id reaches nobody, even if its slot is reused.
    let (_dave, _) = fx.join("dave");
    let status = probe(&fx.server.handle, move |ctx: &mut Ctx<'_, Peer>| {
        ctx.send_to(bob_id, Message::Text("ghost"))
    });
    assert_eq!(status, SendStatus::Closed);
}

#[test]
fn per_connection_state_comes_from_accept_and_is_mutable() {
    let fx = Fixture::start();
    let (mut alice, alice_id) = fx.join("alice");
    let (mut bob, bob_id) = fx.join("bob");
    assert_eq!(ask(&mut alice, "hit"), "alice:1");
    assert_eq!(ask(&mut alice, "hit"), "alice:2");
    assert_eq!(ask(&mut bob, "hit"), "bob:1");
    assert_eq!(ask(&mut alice, "hit"), "alice:3");
    let states = probe(&fx.server.handle, move |ctx: &mut Ctx<'_, Peer>| {
        let get = |id| ctx.state_of(id).map(|p| (p.name.clone(), p.hits));
        (get(alice_id), get(bob_id))
    });
    assert_eq!(states.0, Some(("alice".to_string(), 3)));
    assert_eq!(states.1, Some(("bob".to_string(), 1)));
    // state_of_mut writes are seen by the connection's callbacks.
    probe(&fx.server.handle, move |ctx: &mut Ctx<'_, Peer>| {
        ctx.state_of_mut(bob_id).unwrap().hits = 41;
    });
    assert_eq!(ask(&mut bob, "hit"), "bob:42");
}

#[test]
fn many_recipients_get_identical_bytes() {
    let fx = Fixture::start();
    let mut clients: Vec<Client> = (0..6).map(|i| fx.join(&format!("c{i}")).0).collect();
    let expected = blob(100_000);
    ws_send(&mut clients[3], "blob:100000");
    for ws in &mut clients {
        match ws_read(ws) {
            tungstenite::Message::Binary(bytes) => {
                assert!(bytes[..] == expected[..], "payload differs");
            }
            other => panic!("expected binary, got {other:?}"),
        }
    }
    // The raw frame on the wire, too: one unfragmented binary frame.
    let mut raw = RawWs::connect(fx.server.addr, "/?name=raw");
    ws_send(&mut clients[0], "blob:70000");
    let frame = raw.read_frame();
    assert_eq!((frame.fin, frame.opcode), (true, 0x2));
    assert!(frame.payload == blob(70_000));
}

#[test]
fn a_burst_sent_in_one_callback_arrives_as_separate_messages_in_order() {
    let fx = Fixture::start();
    let mut raw = RawWs::connect(fx.server.addr, "/?name=raw");
    raw.send_text("burst:100");
    for i in 0..100 {
        let frame = raw.read_frame();
        assert!(frame.fin, "message {i} is fragmented");
        assert_eq!(frame.opcode, 0x1);
        assert_eq!(String::from_utf8(frame.payload).unwrap(), format!("m{i}"));
    }
    // And through tungstenite.
    let (mut ws, _) = fx.join("tung");
    ws_send(&mut ws, "burst:100");
    for i in 0..100 {
        assert_eq!(ws_read_text(&mut ws), format!("m{i}"));
    }
    assert!(ws_silent_for(&mut ws, Duration::from_millis(100)).is_ok());
}

#[test]
fn fan_outs_and_direct_sends_keep_their_order() {
    let fx = Fixture::start();
    let mut raw = RawWs::connect(fx.server.addr, "/?name=mixer");
    raw.send_text("sub:room");
    assert_eq!(raw.read_text_skipping_pings(), "sub:room:true:1");
    raw.send_text("mixed:room");
    for expected in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(raw.read_text_skipping_pings(), expected);
    }
}

#[test]
fn a_burst_of_publishes_read_in_one_go_arrives_whole_and_in_order() {
    let fx = Fixture::start();
    let mut listener = RawWs::connect(fx.server.addr, "/?name=listener");
    listener.send_text("sub:feed");
    assert_eq!(listener.read_text_skipping_pings(), "sub:feed:true:1");
    let mut publisher = RawWs::connect(fx.server.addr, "/?name=publisher");
    // 200 publishes in one write: the server reads them together.
    let mut burst = Vec::new();
    for i in 0..200 {
        burst.extend(client_frame(
            true,
            0,
            0x1,
            format!("pubothers:feed:n{i}").as_bytes(),
        ));
    }
    publisher.stream.write_all(&burst).unwrap();
    for i in 0..200 {
        assert_eq!(listener.read_text_skipping_pings(), format!("n{i}"));
    }
    for _ in 0..200 {
        assert_eq!(publisher.read_text_skipping_pings(), "published:1");
    }
}
