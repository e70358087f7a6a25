//! Chat rooms: `ws://HOST/ROOM?name=NICK`. A message reaches everyone in the
//! room but its sender; joins and leaves are announced. Authentication
//! travels in the upgrade request: a `token` query parameter is required.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:9003
//! # then connect to ws://127.0.0.1:9003/lobby?name=alice&token=letmein
//! ```

use wsloop::{Accept, CloseCode, Config, ConnCtx, Handler, Message, Request, Response, Server};

/// Per-connection state: no side map keyed by connection id is needed.
struct Member {
    name: String,
    room: String,
}

struct Chat;

impl Handler for Chat {
    type State = Member;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<Member>, Response> {
        if req.query_param("token").as_deref() != Some("letmein") {
            return Err(Response::new(401, "a valid ?token= is required\n"));
        }
        let room = req.path().trim_start_matches('/');
        let room = if room.is_empty() { "lobby" } else { room };
        let name = req
            .query_param("name")
            .unwrap_or_else(|| "anonymous".into());
        Ok(Accept::new(Member {
            name,
            room: room.to_string(),
        }))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, Member>) {
        let room = conn.state().room.clone();
        conn.subscribe(&room);
        let notice = format!(
            "* {} joined ({} here)",
            conn.state().name,
            conn.subscriber_count(&room)
        );
        conn.publish(&room, Message::Text(&notice));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, Member>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return conn.close(CloseCode::UNSUPPORTED, "text only");
        };
        let line = format!("{}: {text}", conn.state().name);
        let room = conn.state().room.clone();
        conn.publish_others(&room, Message::Text(&line));
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, Member>, _code: CloseCode, _reason: &str) {
        let notice = format!("* {} left", conn.state().name);
        let room = conn.state().room.clone();
        conn.publish_others(&room, Message::Text(&notice));
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9003".into());
    let server = Server::bind(addr.parse().expect("ADDR:PORT"), Config::default(), Chat)?;
    println!(
        "chat on ws://{}/ROOM?name=NICK&token=letmein",
        server.local_addr()
    );
    server.run()
}
