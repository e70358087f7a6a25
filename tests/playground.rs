//! The `wsloop` binary, run as a child process: the playground routes
//! (chat rooms, broadcast, ticker, echo), `--mode echo`, the HTTP routes,
//! SIGTERM, and command-line errors.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_wsloop");

/// The running binary; killed (by PID) and reaped when dropped.
struct Bin {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bin {
    /// Starts the binary on a port the kernel picks (`--listen
    /// 127.0.0.1:0`) with `args`, and returns once its log says where it
    /// listens. (Picking a free port first and passing it on raced: the
    /// port could be lost meanwhile, and a probe connecting to a port no
    /// one listens on can connect to itself.)
    fn start(args: &[&str]) -> Bin {
        let mut child = Command::new(BIN)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsloop");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the log to the end, so the child never blocks on a full
        // pipe; the first "listening on" line says the address.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = tx.take_if(|_| line.contains(" listening on ")) {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("wsloop did not say where it listens");
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Bin { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs the binary to completion (bounded); returns status, stdout, stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsloop");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsloop {args:?} did not exit within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

// ------------------------------------------------------------------- JSON

/// Just enough JSON to check the playground's frames.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let chars: Vec<char> = text.chars().collect();
        let mut at = 0;
        let value = parse_value(&chars, &mut at).unwrap_or_else(|e| panic!("{e} in {text:?}"));
        skip_ws(&chars, &mut at);
        assert_eq!(at, chars.len(), "trailing characters in {text:?}");
        value
    }

    fn get(&self, key: &str) -> &Json {
        self.field(key)
            .unwrap_or_else(|| panic!("no field {key:?} in {self:?}"))
    }

    /// The field `key`, if the object has it.
    fn field(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number: {self:?}"),
        }
    }

    fn strings(&self) -> Vec<String> {
        match self {
            Json::Arr(items) => items.iter().map(|i| i.str().to_string()).collect(),
            _ => panic!("not an array: {self:?}"),
        }
    }
}

fn skip_ws(c: &[char], at: &mut usize) {
    while *at < c.len() && c[*at].is_whitespace() {
        *at += 1;
    }
}

fn parse_value(c: &[char], at: &mut usize) -> Result<Json, String> {
    skip_ws(c, at);
    let Some(&first) = c.get(*at) else {
        return Err("unexpected end".into());
    };
    let literal = |at: &mut usize, word: &str, value: Json| {
        let end = *at + word.len();
        if end <= c.len() && c[*at..end].iter().collect::<String>() == word {
            *at = end;
            Ok(value)
        } else {
            Err(format!("bad literal at {at}"))
        }
    };
    match first {
        '{' => {
            *at += 1;
            let mut fields = Vec::new();
            skip_ws(c, at);
            if c.get(*at) == Some(&'}') {
                *at += 1;
                return Ok(Json::Obj(fields));
            }
            loop {
                skip_ws(c, at);
                let Json::Str(key) = parse_value(c, at)? else {
                    return Err("object key is not a string".into());
                };
                skip_ws(c, at);
                if c.get(*at) != Some(&':') {
                    return Err("expected ':'".into());
                }
                *at += 1;
                fields.push((key, parse_value(c, at)?));
                skip_ws(c, at);
                match c.get(*at) {
                    Some(',') => *at += 1,
                    Some('}') => {
                        *at += 1;
                        return Ok(Json::Obj(fields));
                    }
                    _ => return Err("expected ',' or '}'".into()),
                }
            }
        }
        '[' => {
            *at += 1;
            let mut items = Vec::new();
            skip_ws(c, at);
            if c.get(*at) == Some(&']') {
                *at += 1;
                return Ok(Json::Arr(items));
            }
            loop {
                items.push(parse_value(c, at)?);
                skip_ws(c, at);
                match c.get(*at) {
                    Some(',') => *at += 1,
                    Some(']') => {
                        *at += 1;
                        return Ok(Json::Arr(items));
                    }
                    _ => return Err("expected ',' or ']'".into()),
                }
            }
        }
        '"' => {
            *at += 1;
            let mut s = String::new();
            loop {
                let ch = *c.get(*at).ok_or("unterminated string")?;
                *at += 1;
                match ch {
                    '"' => return Ok(Json::Str(s)),
                    '\\' => {
                        let esc = *c.get(*at).ok_or("bad escape")?;
                        *at += 1;
                        match esc {
                            '"' => s.push('"'),
                            '\\' => s.push('\\'),
                            '/' => s.push('/'),
                            'n' => s.push('\n'),
                            'r' => s.push('\r'),
                            't' => s.push('\t'),
                            'b' => s.push('\u{8}'),
                            'f' => s.push('\u{c}'),
                            'u' => {
                                let hex: String =
                                    c.get(*at..*at + 4).ok_or("bad \\u")?.iter().collect();
                                *at += 4;
                                let code =
                                    u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                                s.push(char::from_u32(code).ok_or("bad code point")?);
                            }
                            other => return Err(format!("bad escape \\{other}")),
                        }
                    }
                    ch if (ch as u32) < 0x20 => return Err("raw control character".into()),
                    ch => s.push(ch),
                }
            }
        }
        't' => literal(at, "true", Json::Bool(true)),
        'f' => literal(at, "false", Json::Bool(false)),
        'n' => literal(at, "null", Json::Null),
        _ => {
            let start = *at;
            while *at < c.len() && matches!(c[*at], '0'..='9' | '-' | '+' | '.' | 'e' | 'E') {
                *at += 1;
            }
            let text: String = c[start..*at].iter().collect();
            text.parse()
                .map(Json::Num)
                .map_err(|_| format!("bad number {text:?}"))
        }
    }
}

// ---------------------------------------------------------------- helpers

/// The next frame as JSON `{type, payload}`; returns (type, payload).
fn read_json(ws: &mut Client) -> (String, Json) {
    let text = ws_read_text(ws);
    let value = Json::parse(&text);
    let kind = value.get("type").str().to_string();
    (kind, value.get("payload").clone())
}

fn expect_json(ws: &mut Client, kind: &str) -> Json {
    let (got, payload) = read_json(ws);
    assert_eq!(got, kind, "payload {payload:?}");
    payload
}

/// The next frame must be an `error` with `code`; returns its payload.
fn expect_error(ws: &mut Client, code: &str) -> Json {
    let error = expect_json(ws, "error");
    assert_eq!(error.get("code").str(), code, "{error:?}");
    assert!(!error.get("message").str().is_empty());
    error
}

/// alice and then bob in `room`, past their welcome and join frames.
fn alice_and_bob(bin: &Bin, room: &str) -> (Client, Client) {
    let mut alice = ws_connect(bin.addr, &format!("/chat/{room}?name=alice"));
    expect_json(&mut alice, "welcome");
    let mut bob = ws_connect(bin.addr, &format!("/chat/{room}?name=bob"));
    expect_json(&mut bob, "welcome");
    assert_eq!(expect_json(&mut alice, "join").get("name").str(), "bob");
    (alice, bob)
}

/// Asserts that `to` received nothing from `from` since the last check:
/// one short bounded read, then a sentinel line, which must be `to`'s
/// very next frame. The loop handles one connection's frames in order, so
/// anything the earlier frames had sent `to` would have come first.
fn assert_nothing_relayed(from: &mut Client, to: &mut Client) {
    if let Err(e) = ws_silent_for(to, Duration::from_millis(50)) {
        panic!("relayed: {e}");
    }
    ws_send(from, "sentinel");
    let chat = expect_json(to, "chat");
    assert_eq!(chat.get("text").str(), "sentinel", "something was relayed");
}

// ------------------------------------------------------------------ tests

#[test]
fn chat_rooms_announce_members_and_relay_to_others_only() {
    let bin = Bin::start(&[]);
    let mut alice = ws_connect(bin.addr, "/chat/lobby?name=alice");
    let welcome = expect_json(&mut alice, "welcome");
    assert_eq!(welcome.get("name").str(), "alice");
    assert_eq!(welcome.get("room").str(), "lobby");
    assert_eq!(welcome.get("members").strings(), ["alice"]);

    // The query-string form of the same room.
    let mut bob = ws_connect(bin.addr, "/chat?room=lobby&name=bob");
    let welcome = expect_json(&mut bob, "welcome");
    assert_eq!(welcome.get("name").str(), "bob");
    let mut members = welcome.get("members").strings();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    let join = expect_json(&mut alice, "join");
    assert_eq!(join.get("name").str(), "bob");
    assert_eq!(join.get("room").str(), "lobby");
    assert_eq!(join.get("members").num(), 2.0);

    // Another room.
    let mut carol = ws_connect(bin.addr, "/chat/other?name=carol");
    let welcome = expect_json(&mut carol, "welcome");
    assert_eq!(welcome.get("room").str(), "other");
    assert_eq!(welcome.get("members").strings(), ["carol"]);

    ws_send(&mut alice, "hello bob");
    let chat = expect_json(&mut bob, "chat");
    assert_eq!(chat.get("from").str(), "alice");
    assert_eq!(chat.get("text").str(), "hello bob");

    // Text that needs JSON escaping survives the round trip.
    let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
    ws_send(&mut bob, tricky);
    // Alice's next frame is bob's message: she never got her own.
    let chat = expect_json(&mut alice, "chat");
    assert_eq!(chat.get("from").str(), "bob");
    assert_eq!(chat.get("text").str(), tricky);

    // Bob leaves: alice is told.
    ws_close(bob);
    let leave = expect_json(&mut alice, "leave");
    assert_eq!(leave.get("name").str(), "bob");
    assert_eq!(leave.get("room").str(), "lobby");
    assert_eq!(leave.get("members").num(), 1.0);

    // Carol saw nothing of the lobby: her next frame is dave's join.
    let mut dave = ws_connect(bin.addr, "/chat/other?name=dave");
    expect_json(&mut dave, "welcome");
    let join = expect_json(&mut carol, "join");
    assert_eq!(join.get("name").str(), "dave");
    assert!(ws_silent_for(&mut carol, Duration::from_millis(100)).is_ok());
    // And the lobby sees nothing of room `other`.
    ws_send(&mut dave, "for other only");
    assert_eq!(
        expect_json(&mut carol, "chat").get("text").str(),
        "for other only"
    );
    assert!(ws_silent_for(&mut alice, Duration::from_millis(100)).is_ok());
}

#[test]
fn chat_relays_json_chat_frames_to_the_others_not_the_sender() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "json");

    ws_send(&mut alice, r#"{"type":"chat","payload":"hello in JSON"}"#);
    let chat = expect_json(&mut bob, "chat");
    assert_eq!(chat.get("from").str(), "alice");
    assert_eq!(chat.get("text").str(), "hello in JSON");

    // Escapes (a surrogate pair among them) are decoded, members in any
    // order, extra members ignored, whitespace around it allowed; the
    // payload is trimmed like a plain line.
    ws_send(
        &mut bob,
        " {\"id\": 7, \"payload\": \" \\ud83d\\ude00 \\\"q\\\" \\u00e9\\nnext \", \"type\": \"chat\"}\n",
    );
    // Alice's next frame is bob's line: her own JSON chat never came back.
    let chat = expect_json(&mut alice, "chat");
    assert_eq!(chat.get("from").str(), "bob");
    assert_eq!(chat.get("text").str(), "😀 \"q\" é\nnext");
    assert!(ws_silent_for(&mut bob, Duration::from_millis(50)).is_ok());
}

#[test]
fn chat_still_relays_plain_text_including_json_that_is_not_an_object() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "plain");
    for line in [
        "plain text, as before",
        r#"["an","array"]"#,
        r#""a JSON string""#,
        "42",
        r#"not {"type":"chat"} at the start"#,
    ] {
        ws_send(&mut alice, line);
        let chat = expect_json(&mut bob, "chat");
        assert_eq!(chat.get("text").str(), line);
    }
    assert!(ws_silent_for(&mut alice, Duration::from_millis(50)).is_ok());
}

#[test]
fn chat_unknown_type_gets_an_error_to_the_sender_only() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "unknown");
    ws_send(&mut alice, r#"{"type":"foo","payload":"hi"}"#);
    let error = expect_error(&mut alice, "unknown_type");
    assert_eq!(error.get("received").str(), "foo");
    assert!(
        error.get("message").str().contains(r#"unknown type "foo""#),
        "{error:?}"
    );
    // The server's own types are not commands.
    ws_send(&mut alice, r#"{"type":"welcome","payload":{}}"#);
    let error = expect_error(&mut alice, "unknown_type");
    assert_eq!(error.get("received").str(), "welcome");
    assert_nothing_relayed(&mut alice, &mut bob);
    // The error left the connection open and working both ways.
    ws_send(&mut bob, "still here");
    assert_eq!(
        expect_json(&mut alice, "chat").get("text").str(),
        "still here"
    );
}

#[test]
fn chat_malformed_json_gets_an_invalid_json_error() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "malformed");
    ws_send(&mut alice, r#"{"type":"#);
    let error = expect_error(&mut alice, "invalid_json");
    assert_eq!(
        error.get("message").str(),
        "invalid JSON at byte 8: unexpected end of input"
    );
    assert_eq!(error.field("received"), None);
    let too_deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    for frame in [
        r#"{"type":"chat","payload":"no closing brace""#,
        "{type: 'chat', payload: 'hi'}",
        r#"{"type":"chat","payload":"hi",}"#,
        r#"{"type":"chat","payload":"lone \ud83d"}"#,
        r#"{"type":"chat","payload":"a","type":"ping"}"#,
        r#"  {"type":"chat","payload":"hi"} trailing"#,
        &too_deep,
    ] {
        ws_send(&mut alice, frame);
        let error = expect_error(&mut alice, "invalid_json");
        assert!(
            error
                .get("message")
                .str()
                .starts_with("invalid JSON at byte "),
            "{frame:?}: {error:?}"
        );
    }
    assert_nothing_relayed(&mut alice, &mut bob);
}

#[test]
fn chat_type_and_payload_must_be_strings() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "kinds");
    for (frame, code, received) in [
        (r#"{"type":"chat","payload":42}"#, "bad_payload", "number"),
        (
            r#"{"type":"chat","payload":{"text":"hi"}}"#,
            "bad_payload",
            "object",
        ),
        (r#"{"type":"chat","payload":null}"#, "bad_payload", "null"),
        (r#"{"type":"chat"}"#, "bad_payload", "missing"),
        (r#"{"type":7,"payload":"hi"}"#, "bad_type", "number"),
        (r#"{"type":["chat"],"payload":"hi"}"#, "bad_type", "array"),
        (r#"{"payload":"hi"}"#, "bad_type", "missing"),
    ] {
        ws_send(&mut alice, frame);
        let error = expect_error(&mut alice, code);
        assert_eq!(error.get("received").str(), received, "{frame}");
    }
    assert_nothing_relayed(&mut alice, &mut bob);
}

#[test]
fn chat_ping_gets_a_pong_with_the_same_payload() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "ping");
    ws_send(
        &mut alice,
        r#"{"type":"ping","payload":{"n":1.5,"s":"\u00e9 \"q\"","a":[true,null,{}]}}"#,
    );
    let pong = expect_json(&mut alice, "pong");
    assert_eq!(
        pong,
        Json::parse(r#"{"n":1.5,"s":"é \"q\"","a":[true,null,{}]}"#)
    );
    ws_send(&mut alice, r#"{"type":"ping","payload":"t-1"}"#);
    assert_eq!(expect_json(&mut alice, "pong").str(), "t-1");
    ws_send(&mut alice, r#"{"type":"ping"}"#);
    assert_eq!(expect_json(&mut alice, "pong"), Json::Null);
    assert_nothing_relayed(&mut alice, &mut bob);
}

#[test]
fn chat_drops_blank_lines_and_refuses_long_ones() {
    let bin = Bin::start(&[]);
    let (mut alice, mut bob) = alice_and_bob(&bin, "limits");
    // Blank lines, either form, are dropped without a word.
    ws_send(&mut alice, "  \n ");
    ws_send(&mut alice, r#"{"type":"chat","payload":" \t "}"#);
    assert!(ws_silent_for(&mut alice, Duration::from_millis(50)).is_ok());
    // Over 4096 bytes: an error to the sender, in either form.
    let long = "é".repeat(2049); // 4098 bytes
    ws_send(&mut alice, &long);
    let error = expect_error(&mut alice, "too_long");
    assert!(error.get("message").str().contains("4096"), "{error:?}");
    ws_send(
        &mut alice,
        &format!(r#"{{"type":"chat","payload":"{long}"}}"#),
    );
    expect_error(&mut alice, "too_long");
    assert_nothing_relayed(&mut alice, &mut bob);
    // Exactly 4096 bytes is relayed.
    let longest = "é".repeat(2048);
    ws_send(
        &mut alice,
        &format!(r#"{{"type":"chat","payload":"{longest}"}}"#),
    );
    assert_eq!(expect_json(&mut bob, "chat").get("text").str(), longest);
}

#[test]
fn chat_rejects_bad_room_names() {
    let bin = Bin::start(&[]);
    let mut stream = connect(bin.addr);
    std::io::Write::write_all(
        &mut stream,
        upgrade_request("/chat/bad!room", &[]).as_bytes(),
    )
    .unwrap();
    let (bytes, _) = read_to_end_within(&mut stream, Duration::from_secs(2));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
}

#[test]
fn broadcast_route_reaches_the_others_but_not_the_sender() {
    let bin = Bin::start(&[]);
    let mut clients: Vec<Client> = (0..3).map(|_| ws_connect(bin.addr, "/broadcast")).collect();
    // An echo client is not part of /broadcast.
    let mut echo = ws_connect(bin.addr, "/echo");
    ws_send(&mut clients[0], "from 0");
    assert_eq!(ws_read_text(&mut clients[1]), "from 0");
    assert_eq!(ws_read_text(&mut clients[2]), "from 0");
    ws_send(&mut clients[1], "from 1");
    assert_eq!(
        ws_read_text(&mut clients[0]),
        "from 1",
        "the sender got its own message"
    );
    assert_eq!(ws_read_text(&mut clients[2]), "from 1");
    assert!(ws_silent_for(&mut clients[1], Duration::from_millis(100)).is_ok());
    ws_send(&mut echo, "me");
    assert_eq!(ws_read_text(&mut echo), "me");
}

#[test]
fn ticker_pushes_ticks_with_increasing_seq() {
    let bin = Bin::start(&["--ticker-interval", "0.05"]);
    let mut ws = ws_connect(bin.addr, "/ticker");
    let mut last: Option<f64> = None;
    for _ in 0..5 {
        let tick = expect_json(&mut ws, "tick");
        let seq = tick.get("seq").num();
        if let Some(prev) = last {
            assert_eq!(seq, prev + 1.0, "ticks skipped or reordered");
        }
        last = Some(seq);
        assert_eq!(tick.get("symbol").str(), "WSL");
        assert!(tick.get("price").num() > 0.0);
        assert!(tick.get("time_ms").num() > 1.6e12);
    }
}

#[test]
fn other_paths_echo() {
    let bin = Bin::start(&[]);
    for path in ["/", "/echo", "/anything/else?x=1"] {
        let mut ws = ws_connect(bin.addr, path);
        ws_send(&mut ws, &format!("echo on {path}"));
        assert_eq!(ws_read_text(&mut ws), format!("echo on {path}"));
        ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
            .unwrap();
        match ws_read(&mut ws) {
            tungstenite::Message::Binary(b) => assert_eq!(&b[..], [0u8, 1, 2, 255]),
            other => panic!("expected binary echo, got {other:?}"),
        }
    }
}

#[test]
fn mode_echo_echoes_on_chat_paths() {
    let bin = Bin::start(&["--mode", "echo"]);
    let mut ws = ws_connect(bin.addr, "/chat/x?name=n");
    ws_send(&mut ws, "plain echo");
    // No welcome frame: the first thing back is the echo.
    assert_eq!(ws_read_text(&mut ws), "plain echo");
}

#[test]
fn http_routes_serve_health_metrics_and_the_demo_page() {
    let bin = Bin::start(&[]);
    let health = http_get(bin.addr, "/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.body_text().trim(), "ok");

    let mut ws = ws_connect(bin.addr, "/echo");
    ws_send(&mut ws, "count me");
    assert_eq!(ws_read_text(&mut ws), "count me");
    let metrics = http_get(bin.addr, "/metrics");
    assert_eq!(metrics.status, 200);
    let metrics_text = metrics.body_text();
    for name in ["wsloop_connections_open", "wsloop_messages_received_total"] {
        assert!(
            metrics_text.contains(name),
            "{name} missing:\n{metrics_text}"
        );
    }
    let value = |name: &str| -> u64 {
        metrics_text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no sample for {name}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("wsloop_connections_open"), 1);
    assert!(value("wsloop_messages_received_total") >= 1);

    let page = http_get(bin.addr, "/");
    assert_eq!(page.status, 200);
    let content_type = page.header("Content-Type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.body_text().to_ascii_lowercase().contains("<html"));

    assert_eq!(http_get(bin.addr, "/no-such-page").status, 404);
}

#[test]
fn sigterm_sends_1001_and_exits_zero() {
    let mut bin = Bin::start(&[]);
    let mut ws = ws_connect(bin.addr, "/echo");
    ws_send(&mut ws, "before");
    assert_eq!(ws_read_text(&mut ws), "before");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(bin.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(ws_expect_close(&mut ws), 1001);
    // tungstenite answered the close; the server now exits.
    let exit = bin
        .wait_exit(Duration::from_secs(3))
        .expect("wsloop still running 3 s after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn listening_on_a_busy_address_fails_clearly() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, _out, err) = run_to_exit(&["--listen", &addr]);
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        err.contains("cannot listen") && err.contains(&addr),
        "stderr: {err:?}"
    );
}

#[test]
fn help_and_bad_flags() {
    let (status, out, _) = run_to_exit(&["--help"]);
    assert!(status.success());
    assert!(out.contains("--ping-interval"), "{out}");
    assert!(out.contains("--listen"));

    let (status, _, err) = run_to_exit(&["--no-such-flag"]);
    assert!(!status.success());
    assert!(err.contains("--no-such-flag"), "stderr: {err:?}");
}
