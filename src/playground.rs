//! The binary's application: echo, broadcast, chat rooms and a ticker,
//! routed by path (or one behaviour for every path with `--mode`).
//!
//! # The chat and ticker protocol
//!
//! Every frame the server sends on `/chat/ROOM` (or `/chat?room=R&name=N`)
//! and `/ticker` is a text frame holding one JSON object
//! `{"type": ..., "payload": ...}`:
//! - `welcome` (to the joiner): `{name, room, members: [names]}`
//! - `join` / `leave` (to the others): `{name, room, members: count}`
//! - `chat` (to the others, never back to the sender): `{from, text}`
//! - `pong` (to the sender of a `ping`): the ping's payload, the same value
//! - `error` (to the sender only): `{code, message, received?}`, below
//! - `tick` (to `/ticker`): `{seq, symbol, price, time_ms}`
//!
//! A chat client sends text frames in either of two forms:
//! - JSON: a frame whose first character other than JSON whitespace
//!   (space, tab, LF, CR) is `{` must be a JSON object (parsed strictly by
//!   [`crate::json`], at most 64 KiB) with a string `type`; other members
//!   are ignored.
//!   - `{"type":"chat","payload":"hi"}` relays `hi` exactly as the plain
//!     line `hi` would be; `payload` must be a string.
//!   - `{"type":"ping","payload":ANY}` is answered, to the sender only,
//!     with `{"type":"pong","payload":ANY}` (written compactly; a missing
//!     payload is `null`): a round-trip check for a client's own code.
//! - Plain text: any other frame (`hi`, `[1,2]`, `"quoted"`, `42`) is the
//!   literal text of a chat line, as before JSON was accepted.
//!
//! A chat line is trimmed; a blank one is dropped silently (there is
//! nothing to tell: it was never meant for anyone), and one over 4096
//! bytes is refused with a `too_long` error rather than dropped, so the
//! sender learns it was not delivered. Binary frames are ignored, as is
//! anything a `/ticker` client sends.
//!
//! A refused frame gets one error frame back to its sender, and nothing
//! reaches the room:
//!
//! ```text
//! {"type":"error","payload":{"code":"unknown_type","message":"unknown type \"foo\" (expected \"chat\" or \"ping\")","received":"foo"}}
//! ```
//!
//! | `code` | when | `received` |
//! |---|---|---|
//! | `invalid_json` | starts with `{` but is not valid JSON; `message` gives the byte offset and what was expected | absent |
//! | `bad_type` | `type` is missing or not a string | the JSON kind found: `missing`, `null`, `boolean`, `number`, `array` or `object` |
//! | `unknown_type` | `type` is not `chat` or `ping` (the server's own types included) | the type as sent, up to 64 characters |
//! | `bad_payload` | a `chat` whose `payload` is missing or not a string | the JSON kind found, as for `bad_type` |
//! | `too_long` | a chat line over 4096 bytes, or a JSON frame over 64 KiB | absent |
//!
//! `code` and the presence of `received` are stable; `message` is for
//! people and may change.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wsloop::{Accept, CloseCode, ConnCtx, Ctx, Handle, Handler, Message, Request, Response};

use crate::cli::Mode;
use crate::json::{self, Value};

/// The demo page served at `/`.
const INDEX_HTML: &str = include_str!("../web/index.html");

/// The longest chat line relayed, in bytes.
const MAX_CHAT_TEXT: usize = 4096;

/// The longest JSON frame parsed on a chat route, in bytes. The parser's
/// tree takes memory in proportion to its input, and a frame may be as
/// large as `--max-message-size` (16 MiB by default), so the cap comes
/// first. 64 KiB fits the longest chat line even with every character
/// written as a `\uXXXX` escape, and leaves a ping room for a payload.
const MAX_JSON_FRAME: usize = 64 * 1024;

/// The most characters of a client's `type` quoted back in an error, so an
/// error frame stays small whatever was sent.
const MAX_ECHOED_CHARS: usize = 64;

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
                        Some(Route::Chat(member)) => Some(json::quote(&member.name)),
                        _ => None,
                    })
                    .collect();
                let welcome = format!(
                    r#"{{"type":"welcome","payload":{{"name":{},"room":{},"members":[{}]}}}}"#,
                    json::quote(&name),
                    json::quote(&room),
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
                let Message::Text(text) = msg else {
                    return; // a chat has no meaning for binary frames
                };
                match read_client_frame(text) {
                    Ok(Command::Chat(line)) => {
                        let ChatMember { room, name } = &**member;
                        let topic = room_topic(room);
                        let chat = format!(
                            r#"{{"type":"chat","payload":{{"from":{},"text":{}}}}}"#,
                            json::quote(name),
                            json::quote(&line)
                        );
                        conn.publish_others(&topic, Message::Text(&chat));
                    }
                    Ok(Command::Ping(payload)) => {
                        let mut pong = String::from(r#"{"type":"pong","payload":"#);
                        payload.write_to(&mut pong);
                        pong.push('}');
                        conn.send(Message::Text(&pong));
                    }
                    Ok(Command::Ignore) => {}
                    Err(rejection) => {
                        conn.send(Message::Text(&rejection.frame()));
                    }
                }
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
        json::quote(name),
        json::quote(room)
    )
}

/// What a chat client's text frame asks for.
#[derive(Debug, PartialEq)]
enum Command<'a> {
    /// Relay this line (trimmed, not blank, within [`MAX_CHAT_TEXT`]) to
    /// the rest of the room.
    Chat(Cow<'a, str>),
    /// Answer the sender with a `pong` carrying this payload.
    Ping(Value),
    /// Nothing to do: a blank chat line.
    Ignore,
}

/// A refused client frame: the `error` frame's payload.
#[derive(Debug, PartialEq)]
struct Rejection {
    /// Stable, machine-readable: `invalid_json`, `bad_type`,
    /// `unknown_type`, `bad_payload` or `too_long`.
    code: &'static str,
    /// For people.
    message: String,
    /// What was found instead, where that says more than `message`.
    received: Option<String>,
}

impl Rejection {
    fn new(code: &'static str, message: String, received: Option<String>) -> Rejection {
        Rejection {
            code,
            message,
            received,
        }
    }

    /// `{"type":"error","payload":{"code":...,"message":...[,"received":...]}}`
    fn frame(&self) -> String {
        let mut out = String::from(r#"{"type":"error","payload":{"code":"#);
        json::write_str(&mut out, self.code);
        out.push_str(r#","message":"#);
        json::write_str(&mut out, &self.message);
        if let Some(received) = &self.received {
            out.push_str(r#","received":"#);
            json::write_str(&mut out, received);
        }
        out.push_str("}}");
        out
    }
}

/// Reads a chat client's text frame: a JSON command if it starts with `{`
/// (after JSON whitespace), else a plain chat line. See the module docs.
fn read_client_frame(text: &str) -> Result<Command<'_>, Rejection> {
    // JSON's whitespace, not Unicode's: a line starting with a no-break
    // space and then `{` is chat text, as it would be for a JSON parser.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return chat_line(Cow::Borrowed(text));
    }
    if text.len() > MAX_JSON_FRAME {
        return Err(Rejection::new(
            "too_long",
            format!(
                "a JSON frame is at most {MAX_JSON_FRAME} bytes; this one is {}",
                text.len()
            ),
            None,
        ));
    }
    let value = json::parse(text.as_bytes())
        .map_err(|e| Rejection::new("invalid_json", e.to_string(), None))?;
    // Only an object starts with `{`, so this always matches; the `else`
    // keeps a parser change from turning into a panic.
    let Value::Object(mut members) = value else {
        return Err(Rejection::new(
            "invalid_json",
            "expected a JSON object".into(),
            None,
        ));
    };
    let kind = match take(&mut members, "type") {
        Some(Value::String(kind)) => kind,
        None => {
            return Err(Rejection::new(
                "bad_type",
                r#"missing "type": send {"type":"chat","payload":"your text"}"#.into(),
                Some("missing".into()),
            ));
        }
        Some(other) => {
            return Err(Rejection::new(
                "bad_type",
                format!(r#""type" must be a string, not {}"#, other.kind()),
                Some(other.kind().into()),
            ));
        }
    };
    match kind.as_str() {
        "chat" => match take(&mut members, "payload") {
            Some(Value::String(line)) => chat_line(Cow::Owned(line)),
            None => Err(Rejection::new(
                "bad_payload",
                r#"a "chat" needs a string "payload": the text to send"#.into(),
                Some("missing".into()),
            )),
            Some(other) => Err(Rejection::new(
                "bad_payload",
                format!(r#"a "chat" payload must be a string, not {}"#, other.kind()),
                Some(other.kind().into()),
            )),
        },
        "ping" => Ok(Command::Ping(
            take(&mut members, "payload").unwrap_or(Value::Null),
        )),
        _ => {
            let shown: String = kind.chars().take(MAX_ECHOED_CHARS).collect();
            Err(Rejection::new(
                "unknown_type",
                format!(
                    r#"unknown type {} (expected "chat" or "ping")"#,
                    json::quote(&shown)
                ),
                Some(shown),
            ))
        }
    }
}

/// Removes and returns the member `key` (keys are unique: the parser
/// rejects duplicates).
fn take(members: &mut Vec<(String, Value)>, key: &str) -> Option<Value> {
    let at = members.iter().position(|(k, _)| k == key)?;
    Some(members.swap_remove(at).1)
}

/// The same rules for a plain line and a JSON `chat` payload: trimmed,
/// blank dropped, too long refused.
fn chat_line(line: Cow<'_, str>) -> Result<Command<'_>, Rejection> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Ok(Command::Ignore); // a public demo relays no blank lines
    }
    if trimmed.len() > MAX_CHAT_TEXT {
        return Err(Rejection::new(
            "too_long",
            format!(
                "a chat line is at most {MAX_CHAT_TEXT} bytes; this one is {}",
                trimmed.len()
            ),
            None,
        ));
    }
    Ok(Command::Chat(match line {
        Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
        Cow::Owned(text) if text.len() == trimmed.len() => Cow::Owned(text),
        Cow::Owned(text) => Cow::Owned(text.trim().to_string()),
    }))
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

    fn error(text: &str) -> Rejection {
        match read_client_frame(text) {
            Err(rejection) => rejection,
            Ok(command) => panic!("{text:?} was accepted as {command:?}"),
        }
    }

    fn chat(text: &str) -> Command<'static> {
        Command::Chat(Cow::Owned(text.to_string()))
    }

    #[test]
    fn plain_text_and_json_chat_are_the_same_line() {
        for frame in [
            "hi",
            "  hi \n",
            r#"{"type":"chat","payload":"hi"}"#,
            " \r\n\t{ \"payload\" : \" hi \" , \"type\" : \"chat\" , \"id\": 7 }\n",
            r#"{"type":"chat","payload":"\u0068i"}"#,
        ] {
            assert_eq!(read_client_frame(frame), Ok(chat("hi")), "{frame:?}");
        }
        // Not a JSON object: the literal text, whatever else it is.
        for frame in [
            "[1,2]",
            "\"quoted\"",
            "42",
            "null",
            "hi {\"type\":1}",
            "\u{a0}{x",
        ] {
            assert_eq!(
                read_client_frame(frame),
                Ok(chat(frame.trim())),
                "{frame:?}"
            );
        }
        assert_eq!(
            read_client_frame(r#"{"type":"chat","payload":"\ud83d\ude00 \"q\""}"#),
            Ok(chat("😀 \"q\""))
        );
    }

    #[test]
    fn blank_lines_are_ignored_and_long_ones_refused() {
        for frame in ["", "   ", "\n\t", r#"{"type":"chat","payload":"  "}"#] {
            assert_eq!(read_client_frame(frame), Ok(Command::Ignore), "{frame:?}");
        }
        let longest = "x".repeat(MAX_CHAT_TEXT);
        assert_eq!(read_client_frame(&longest), Ok(chat(&longest)));
        let json = format!(r#"{{"type":"chat","payload":{}}}"#, json::quote(&longest));
        assert_eq!(read_client_frame(&json), Ok(chat(&longest)));
        let too_long = "x".repeat(MAX_CHAT_TEXT + 1);
        assert_eq!(error(&too_long).code, "too_long");
        let json = format!(r#"{{"type":"chat","payload":{}}}"#, json::quote(&too_long));
        assert_eq!(error(&json).code, "too_long");
        // The longest line fits in a JSON frame even fully \u-escaped.
        let escaped = format!(
            r#"{{"type":"chat","payload":"{}"}}"#,
            "\\u0078".repeat(MAX_CHAT_TEXT)
        );
        assert_eq!(read_client_frame(&escaped), Ok(chat(&longest)));
        // A huge JSON frame is refused before it is parsed.
        let huge = format!("{{{}", " ".repeat(MAX_JSON_FRAME));
        let rejection = error(&huge);
        assert_eq!((rejection.code, rejection.received), ("too_long", None));
    }

    #[test]
    fn ping_gets_its_payload_back() {
        assert_eq!(
            read_client_frame(r#"{"type":"ping","payload":{"n":1.50,"a":[true,null]}}"#),
            Ok(Command::Ping(
                json::parse(br#"{"n":1.50,"a":[true,null]}"#).unwrap()
            ))
        );
        assert_eq!(
            read_client_frame(r#"{"type":"ping"}"#),
            Ok(Command::Ping(Value::Null))
        );
    }

    #[test]
    fn refusals_name_their_cause() {
        let cases: [(&str, &str, Option<&str>); 12] = [
            (r#"{"type":"#, "invalid_json", None),
            (r#"{"type":"chat","payload":"hi""#, "invalid_json", None),
            (r#"{"type":"chat","payload":'hi'}"#, "invalid_json", None),
            (r#"{"type":"chat","type":"ping"}"#, "invalid_json", None),
            (r#"{}"#, "bad_type", Some("missing")),
            (r#"{"payload":"hi"}"#, "bad_type", Some("missing")),
            (r#"{"type":7,"payload":"hi"}"#, "bad_type", Some("number")),
            (r#"{"type":null}"#, "bad_type", Some("null")),
            (
                r#"{"type":"foo","payload":"hi"}"#,
                "unknown_type",
                Some("foo"),
            ),
            (r#"{"type":"welcome"}"#, "unknown_type", Some("welcome")),
            (
                r#"{"type":"chat","payload":42}"#,
                "bad_payload",
                Some("number"),
            ),
            (r#"{"type":"chat"}"#, "bad_payload", Some("missing")),
        ];
        for (frame, code, received) in cases {
            let rejection = error(frame);
            assert_eq!(
                (rejection.code, rejection.received.as_deref()),
                (code, received),
                "{frame:?}: {}",
                rejection.message
            );
        }
        assert_eq!(
            error(r#"{"type":"chat","payload":{"text":"hi"}}"#)
                .received
                .as_deref(),
            Some("object")
        );
        assert_eq!(
            error(r#"{"type":"#).message,
            "invalid JSON at byte 8: unexpected end of input"
        );
        // A long unknown type is quoted back only in part.
        let long_type = format!(r#"{{"type":"{}"}}"#, "é".repeat(1000));
        let received = error(&long_type).received.unwrap();
        assert_eq!(received, "é".repeat(MAX_ECHOED_CHARS));
    }

    #[test]
    fn error_frames_are_json_with_code_message_and_received() {
        assert_eq!(
            error(r#"{"type":"foo"}"#).frame(),
            r#"{"type":"error","payload":{"code":"unknown_type","message":"unknown type \"foo\" (expected \"chat\" or \"ping\")","received":"foo"}}"#
        );
        let frame = error("{").frame();
        assert_eq!(
            frame,
            r#"{"type":"error","payload":{"code":"invalid_json","message":"invalid JSON at byte 1: unexpected end of input"}}"#
        );
        // Every error frame parses back with the one parser.
        for text in ["{", r#"{"type":"\u0000\"\\"}"#, r#"{"type":[]}"#] {
            let frame = json::parse(error(text).frame().as_bytes()).unwrap();
            assert_eq!(frame.get("type").and_then(Value::as_str), Some("error"));
        }
    }
}
