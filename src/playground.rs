//! The binary's application: echo, broadcast, chat rooms and a ticker,
//! routed by path (or one behaviour for every path with `--mode`).
//!
//! Chat and ticker frames are JSON objects `{"type": ..., "payload": ...}`:
//! - `welcome` (to the joiner): `{name, room, members: [names]}`
//! - `join` / `leave` (to the others): `{name, room, members: count}`
//! - `chat` (to the others): `{from, text}`; clients send plain text
//! - `tick` (to `/ticker`): `{seq, symbol, price, time_ms}`

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wsloop::{Accept, CloseCode, ConnCtx, Ctx, Handle, Handler, Message, Request, Response};

use crate::cli::Mode;

/// The demo page served at `/`.
const INDEX_HTML: &str = include_str!("../web/index.html");

/// The longest chat line relayed, in bytes.
const MAX_CHAT_TEXT: usize = 4096;

/// The topic every `/ticker` connection joins.
pub const TICKER_TOPIC: &str = "ticker";
const BROADCAST_TOPIC: &str = "broadcast";

/// What a connection does, fixed at upgrade time from its path.
///
/// This is every connection's state, so it is kept to two words: the chat
/// member's strings are boxed (inline, the two `String`s made every
/// connection 32 bytes larger, echo and broadcast ones included).
#[derive(Debug)]
pub enum Route {
    Echo,
    Broadcast,
    Ticker,
    Chat(Box<ChatMember>),
}

/// A `/chat` connection's room and nickname.
#[derive(Debug)]
pub struct ChatMember {
    pub room: String,
    pub name: String,
}

/// The playground handler.
pub struct Playground {
    mode: Mode,
    guests: u64,
}

impl Playground {
    pub fn new(mode: Mode) -> Playground {
        Playground { mode, guests: 0 }
    }

    fn route(&mut self, req: &Request<'_>) -> Result<Route, Response> {
        match self.mode {
            Mode::Echo => return Ok(Route::Echo),
            Mode::Broadcast => return Ok(Route::Broadcast),
            Mode::Playground => {}
        }
        let path = req.path();
        if path == "/broadcast" {
            return Ok(Route::Broadcast);
        }
        if path == "/ticker" {
            return Ok(Route::Ticker);
        }
        let room = match path.strip_prefix("/chat") {
            Some("") | Some("/") => req.query_param("room").unwrap_or_else(|| "lobby".into()),
            Some(rest) if rest.starts_with('/') => rest[1..].to_string(),
            _ => return Ok(Route::Echo),
        };
        if room.is_empty()
            || room.len() > 64
            || !room
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Response::new(
                400,
                "room names are 1-64 letters, digits, '-' or '_'\n",
            ));
        }
        let name = match req.query_param("name").map(|n| n.trim().to_string()) {
            Some(n)
                if !n.is_empty() && n.chars().count() <= 32 && !n.chars().any(char::is_control) =>
            {
                n
            }
            Some(n) if !n.is_empty() => {
                return Err(Response::new(400, "names are 1-32 printable characters\n"));
            }
            _ => {
                self.guests += 1;
                format!("guest-{}", self.guests)
            }
        };
        Ok(Route::Chat(Box::new(ChatMember { room, name })))
    }
}

fn room_topic(room: &str) -> String {
    format!("chat:{room}")
}

impl Handler for Playground {
    type State = Route;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<Route>, Response> {
        self.route(req).map(Accept::new)
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, Route>) {
        match conn.state() {
            Route::Echo => {}
            Route::Broadcast => {
                conn.subscribe(BROADCAST_TOPIC);
            }
            Route::Ticker => {
                conn.subscribe(TICKER_TOPIC);
            }
            Route::Chat(member) => {
                let (room, name) = (member.room.clone(), member.name.clone());
                let topic = room_topic(&room);
                conn.subscribe(&topic);
                let members: Vec<String> = conn
                    .subscribers(&topic)
                    .into_iter()
                    .filter_map(|id| match conn.state_of(id) {
                        Some(Route::Chat(member)) => Some(json_string(&member.name)),
                        _ => None,
                    })
                    .collect();
                let welcome = format!(
                    r#"{{"type":"welcome","payload":{{"name":{},"room":{},"members":[{}]}}}}"#,
                    json_string(&name),
                    json_string(&room),
                    members.join(",")
                );
                conn.send(Message::Text(&welcome));
                let join = presence("join", &name, &room, members.len());
                conn.publish_others(&topic, Message::Text(&join));
            }
        }
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, Route>, msg: Message<'_>) {
        match conn.state() {
            Route::Echo => {
                conn.send(msg);
            }
            Route::Broadcast => {
                conn.publish_others(BROADCAST_TOPIC, msg);
            }
            Route::Ticker => {}
            Route::Chat(member) => {
                let ChatMember { room, name } = &**member;
                let Message::Text(text) = msg else {
                    return;
                };
                let text = text.trim();
                if text.is_empty() || text.len() > MAX_CHAT_TEXT {
                    return; // a public demo relays no blank lines and no walls of text
                }
                let topic = room_topic(room);
                let chat = format!(
                    r#"{{"type":"chat","payload":{{"from":{},"text":{}}}}}"#,
                    json_string(name),
                    json_string(text)
                );
                conn.publish_others(&topic, Message::Text(&chat));
            }
        }
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, Route>, _code: CloseCode, _reason: &str) {
        if let Route::Chat(member) = conn.state() {
            let ChatMember { room, name } = &**member;
            let topic = room_topic(room);
            let members_before = conn.subscriber_count(&topic);
            // This connection is still listed until the callback returns.
            let leave = presence("leave", name, room, members_before.saturating_sub(1));
            conn.publish_others(&topic, Message::Text(&leave));
        }
    }

    fn on_http(&mut self, _ctx: &mut Ctx<'_, Route>, req: &Request<'_>) -> Option<Response> {
        match (self.mode, req.path()) {
            (Mode::Playground, "/" | "/index.html") => {
                Some(Response::new(200, INDEX_HTML).content_type("text/html; charset=utf-8"))
            }
            _ => None,
        }
    }
}

fn presence(kind: &str, name: &str, room: &str, members: usize) -> String {
    format!(
        r#"{{"type":"{kind}","payload":{{"name":{},"room":{},"members":{members}}}}}"#,
        json_string(name),
        json_string(room)
    )
}

/// Encodes `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Pushes a price tick to every `/ticker` connection every `interval`,
/// from its own thread, until the server stops.
pub fn spawn_ticker(handle: Handle, interval: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq: u64 = 0;
        let mut price: f64 = 100.0;
        // Seeded from the clock so a restarted server does not replay the
        // same series.
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut rng: u64 = boot | 1;
        loop {
            // xorshift64: a cheap random walk, no dependency needed.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let step = (rng % 2001) as f64 / 1000.0 - 1.0;
            price = (price * (1.0 + step / 200.0)).max(1.0);
            seq += 1;
            let time_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let tick = format!(
                r#"{{"type":"tick","payload":{{"seq":{seq},"symbol":"WSL","price":{price:.2},"time_ms":{time_ms}}}}}"#
            );
            if !handle.publish(TICKER_TOPIC, Message::Text(&tick)) {
                return;
            }
            std::thread::sleep(interval);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_requires() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("héllo"), "\"héllo\"");
    }
}
