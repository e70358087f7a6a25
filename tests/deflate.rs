//! permessage-deflate (RFC 7692) against a raw client that compresses and
//! inflates with flate2 on its own (independent of the server's codec),
//! beside tungstenite as a client that does not offer the extension.
//! `cargo test --features deflate --test deflate`.
#![cfg(feature = "deflate")]

mod common;

use std::any::Any;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use wsloop::{
    Accept, Config, ConnCtx, Ctx, DeflateConfig, Handler, Message, Metrics, Request, Response,
};

use common::{
    Frame, RawWs, client_frame, close_payload, connect, probe, read_http_response, run_probe,
    spawn, test_config, upgrade_request, wait_until, ws_connect, ws_read, ws_send,
};

// ------------------------------------------------------------------ server

/// Echoes, except on `/sub/TOPIC` (subscribes, sends nothing back),
/// `/pub/TOPIC` (publishes each message to the topic, sender included) and
/// `/plain...` (refuses the extension for this connection).
struct App;

impl Handler for App {
    type State = String;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<String>, Response> {
        let accept = Accept::new(req.path().to_string());
        Ok(if req.path().starts_with("/plain") {
            accept.without_deflate()
        } else {
            accept
        })
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, String>) {
        if let Some(topic) = conn.state().strip_prefix("/sub/").map(str::to_string) {
            conn.subscribe(&topic);
        }
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, String>, msg: Message<'_>) {
        match conn.state().strip_prefix("/pub/").map(str::to_string) {
            Some(topic) => {
                conn.publish(&topic, msg);
            }
            None if conn.state().starts_with("/sub/") => {}
            // What the application sees of the negotiation.
            None if msg == Message::Text("negotiated?") => {
                let answer = if conn.permessage_deflate() {
                    "yes"
                } else {
                    "no"
                };
                conn.send(Message::Text(answer));
            }
            None => {
                conn.send(msg);
            }
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, String>, value: Box<dyn Any + Send>) {
        run_probe(ctx, value);
    }
}

fn deflate_server(tweak: impl FnOnce(&mut Config)) -> common::Running {
    let mut config = test_config();
    config.deflate = Some(DeflateConfig::default());
    tweak(&mut config);
    spawn(config, || App)
}

fn metrics(server: &common::Running) -> Metrics {
    probe::<String, _>(&server.handle, |ctx| ctx.metrics().clone())
}

// ------------------------------------------------------------------ client

/// What browsers offer.
const BROWSER_OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";

/// A client message compressed the way RFC 7692 §7.2.1 says: raw deflate
/// from a fresh context, sync flush, the trailing `00 00 ff ff` removed.
fn compress(payload: &[u8]) -> Vec<u8> {
    let mut deflate = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    loop {
        let consumed = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
            .unwrap();
        if deflate.total_in() as usize == payload.len() && out.len() < out.capacity() {
            assert_eq!(status, Status::Ok);
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush tail");
    out.truncate(out.len() - 4);
    out
}

/// Inflates one server message (fresh context: the server answers
/// `server_no_context_takeover` or resets anyway).
fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflate = Decompress::new(false);
    let mut out = Vec::with_capacity(4 * input.len() + 64);
    loop {
        let consumed = inflate.total_in() as usize;
        inflate
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .expect("the server's data inflates");
        if inflate.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// A raw client that offered `offer` (a whole header line, or nothing);
/// returns it and the `Sec-WebSocket-Extensions` answer.
fn connect_offering(addr: SocketAddr, path: &str, offer: Option<&str>) -> (RawWs, Option<String>) {
    let mut stream = connect(addr);
    let extra: Vec<&str> = offer.into_iter().collect();
    stream
        .write_all(upgrade_request(path, &extra).as_bytes())
        .unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101, "{response:?}");
    let answer = response
        .header("Sec-WebSocket-Extensions")
        .map(str::to_string);
    (RawWs::from_parts(stream, response.rest), answer)
}

fn deflate_client(addr: SocketAddr, path: &str) -> RawWs {
    let (ws, answer) = connect_offering(addr, path, Some(BROWSER_OFFER));
    let answer = answer.expect("permessage-deflate accepted");
    assert!(answer.starts_with("permessage-deflate"), "{answer}");
    ws
}

/// Sends `text` as one compressed text frame.
fn send_compressed(ws: &mut RawWs, text: &str) {
    ws.send_raw(&client_frame(true, 0b100, 0x1, &compress(text.as_bytes())));
}

/// The next data frame's message, inflated if it is compressed, with
/// whether it was.
fn read_message(ws: &mut RawWs) -> (Vec<u8>, bool) {
    let frame: Frame = loop {
        let frame = ws.try_read_frame().expect("a frame from the server");
        if frame.opcode != 0x9 {
            break frame;
        }
    };
    assert!(frame.fin && !frame.masked, "{frame:?}");
    assert_eq!(frame.rsv & 0b011, 0, "only RSV1 may be set: {frame:?}");
    match frame.rsv {
        0b100 => (inflate(&frame.payload), true),
        _ => (frame.payload, false),
    }
}

/// A realistic chat/ticker JSON line of about `len` bytes.
fn json_line(len: usize) -> String {
    let mut line = String::from(r#"{"type":"tick","payload":["#);
    let mut i = 0;
    while line.len() + 40 < len {
        line.push_str(&format!(
            r#"{{"sym":"S{:03}","px":{}.25}},"#,
            i % 50,
            100 + i % 7
        ));
        i += 1;
    }
    line.push_str(r#"{"sym":"END","px":0}]}"#);
    line
}

// ------------------------------------------------------------------- tests

#[test]
fn the_browser_offer_is_answered_and_messages_echo_compressed() {
    let server = deflate_server(|_| {});
    let (mut ws, answer) = connect_offering(server.addr, "/echo", Some(BROWSER_OFFER));
    let answer = answer.expect("the extension is accepted");
    // One shared inflater serves every connection: clients are asked not
    // to keep context between messages.
    assert!(answer.starts_with("permessage-deflate"), "{answer}");
    assert!(answer.contains("client_no_context_takeover"), "{answer}");
    for text in [json_line(200), json_line(16 * 1024), "é€ 𝄞 ".repeat(100)] {
        send_compressed(&mut ws, &text);
        let (echo, compressed) = read_message(&mut ws);
        assert!(
            compressed,
            "a {}-byte message comes back compressed",
            text.len()
        );
        assert_eq!(String::from_utf8(echo).unwrap(), text);
    }
    // Below the threshold (128 B by default) a reply goes out plain; a
    // client may still send it compressed, or not.
    send_compressed(&mut ws, "hi");
    assert_eq!(read_message(&mut ws), (b"hi".to_vec(), false));
    ws.send_text("negotiated?");
    assert_eq!(read_message(&mut ws), (b"yes".to_vec(), false));
    ws.send_text("plain too");
    assert_eq!(read_message(&mut ws), (b"plain too".to_vec(), false));
    // Binary, fragmented: RSV1 on the first frame only.
    let data = json_line(3000).into_bytes();
    let packed = compress(&data);
    let (a, b) = packed.split_at(packed.len() / 2);
    ws.send_raw(&client_frame(false, 0b100, 0x2, a));
    ws.send_raw(&client_frame(true, 0, 0x0, b));
    assert_eq!(read_message(&mut ws), (data, true));
    ws.send_raw(&client_frame(true, 0, 0x8, &close_payload(1000, "")));
    assert_eq!(ws.read_close().0, 1000);
}

#[test]
fn no_offer_no_extension_and_rsv1_is_a_protocol_error() {
    let server = deflate_server(|_| {});
    let (mut ws, answer) = connect_offering(server.addr, "/echo", None);
    assert_eq!(answer, None);
    ws.send_raw(&client_frame(true, 0b100, 0x1, &compress(b"hello")));
    assert_eq!(ws.read_close().0, 1002);
    // An offer the server cannot take (unknown parameter) opens without
    // the extension, not with an error.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; x_unknown=1";
    let (mut ws, answer) = connect_offering(server.addr, "/echo", Some(offer));
    assert_eq!(answer, None);
    ws.send_text("still works");
    assert_eq!(read_message(&mut ws), (b"still works".to_vec(), false));
}

#[test]
fn the_application_can_refuse_the_extension_per_connection() {
    let server = deflate_server(|_| {});
    let (mut ws, answer) = connect_offering(server.addr, "/plain", Some(BROWSER_OFFER));
    assert_eq!(answer, None, "Accept::without_deflate");
    let long = json_line(1000);
    ws.send_text(&long);
    assert_eq!(read_message(&mut ws), (long.into_bytes(), false));
    ws.send_text("negotiated?");
    assert_eq!(read_message(&mut ws), (b"no".to_vec(), false));
}

#[test]
fn a_server_without_deflate_configured_declines_the_offer() {
    let server = spawn(test_config(), || App);
    let (_ws, answer) = connect_offering(server.addr, "/echo", Some(BROWSER_OFFER));
    assert_eq!(answer, None);
}

#[test]
fn a_broadcast_reaches_deflate_and_plain_clients_alike() {
    let server = deflate_server(|_| {});
    let mut deflating: Vec<RawWs> = (0..3)
        .map(|_| deflate_client(server.addr, "/sub/room"))
        .collect();
    let mut plain = ws_connect(server.addr, "/sub/room");
    // A client limiting the server's window gets its own variant.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10";
    let (small_window, answer) = connect_offering(server.addr, "/sub/room", Some(offer));
    assert!(answer.unwrap().contains("server_max_window_bits=10"));
    deflating.push(small_window);
    assert!(wait_until(Duration::from_secs(5), || {
        probe::<String, _>(&server.handle, |ctx| ctx.subscriber_count("room")) == 5
    }));
    let mut publisher = ws_connect(server.addr, "/pub/room");
    let messages = [json_line(200), json_line(20_000), "short".to_string()];
    for text in &messages {
        ws_send(&mut publisher, text);
    }
    for ws in &mut deflating {
        for (i, text) in messages.iter().enumerate() {
            let (got, compressed) = read_message(ws);
            assert_eq!(String::from_utf8(got).unwrap(), *text);
            assert_eq!(
                compressed,
                i < 2,
                "only messages over the threshold compress"
            );
        }
    }
    for text in &messages {
        assert_eq!(ws_read(&mut plain).into_text().unwrap().as_str(), text);
    }
    // From another thread, through the Handle, too.
    let long = json_line(500);
    server.handle.publish("room", Message::Text(&long));
    assert_eq!(
        read_message(&mut deflating[0]),
        (long.clone().into_bytes(), true)
    );
    assert_eq!(ws_read(&mut plain).into_text().unwrap().as_str(), long);
}

#[test]
fn an_inflation_bomb_is_closed_with_1009_and_hurts_no_one_else() {
    let server = deflate_server(|c| c.max_message_size = 64 * 1024);
    let mut bystander = deflate_client(server.addr, "/echo");
    let mut bomber = deflate_client(server.addr, "/echo");
    // 10 MiB of zeros compress to about 10 KiB.
    let bomb = compress(&vec![0u8; 10 << 20]);
    assert!(
        bomb.len() < 64 * 1024,
        "the bomb itself is within the limit"
    );
    bomber.send_raw(&client_frame(true, 0b100, 0x2, &bomb));
    assert_eq!(bomber.read_close().0, 1009);
    let text = json_line(300);
    send_compressed(&mut bystander, &text);
    assert_eq!(read_message(&mut bystander), (text.into_bytes(), true));
}

#[test]
fn corrupt_data_and_invalid_utf8_after_inflating_close_with_1007() {
    let server = deflate_server(|_| {});
    let mut ws = deflate_client(server.addr, "/echo");
    // A reserved block type (BTYPE 11) is invalid deflate.
    ws.send_raw(&client_frame(true, 0b100, 0x2, &[0xff, 0xff, 0xff]));
    assert_eq!(ws.read_close().0, 1007);
    let mut ws = deflate_client(server.addr, "/echo");
    ws.send_raw(&client_frame(
        true,
        0b100,
        0x1,
        &compress(&[b'a', 0xff, b'b']),
    ));
    assert_eq!(ws.read_close().0, 1007);
    // Binary messages are not UTF-8 checked.
    let mut ws = deflate_client(server.addr, "/echo");
    ws.send_raw(&client_frame(true, 0b100, 0x2, &compress(&[0xff; 200])));
    assert_eq!(read_message(&mut ws), (vec![0xff; 200], true));
}

#[test]
fn rsv1_on_a_continuation_or_control_frame_is_1002() {
    let server = deflate_server(|_| {});
    let mut ws = deflate_client(server.addr, "/echo");
    ws.send_raw(&client_frame(false, 0b100, 0x1, &compress(b"a")));
    ws.send_raw(&client_frame(true, 0b100, 0x0, b"b"));
    assert_eq!(ws.read_close().0, 1002);
    let mut ws = deflate_client(server.addr, "/echo");
    ws.send_raw(&client_frame(true, 0b100, 0x9, b"ping"));
    assert_eq!(ws.read_close().0, 1002);
}

#[test]
fn counters_count_messages_not_compressed_bytes() {
    let server = deflate_server(|_| {});
    let mut ws = deflate_client(server.addr, "/echo");
    let text = json_line(400);
    send_compressed(&mut ws, &text);
    assert_eq!(read_message(&mut ws).0, text.as_bytes());
    let m = metrics(&server);
    assert_eq!((m.messages_in, m.messages_out), (1, 1));
}

#[test]
fn a_malformed_extensions_header_fails_the_handshake_with_400() {
    let server = deflate_server(|_| {});
    // A quoted value with a space is no token: RFC 6455 §9.1 says fail.
    for header in [
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"1 0\"",
        "Sec-WebSocket-Extensions: permessage-deflate;;",
    ] {
        let mut stream = connect(server.addr);
        stream
            .write_all(upgrade_request("/echo", &[header]).as_bytes())
            .unwrap();
        assert_eq!(read_http_response(&mut stream).status, 400, "{header}");
    }
    // The loop carries on.
    let mut ws = deflate_client(server.addr, "/echo");
    ws.send_text("after");
    assert_eq!(read_message(&mut ws), (b"after".to_vec(), false));
}

/// With `client_context_takeover`, a client that did not offer
/// `client_no_context_takeover` keeps its context: its later messages
/// refer back to earlier ones, and its own inflater follows them.
#[test]
fn an_embedder_can_let_clients_keep_their_compression_context() {
    let server = deflate_server(|c| {
        c.deflate = Some({
            let mut d = DeflateConfig::default();
            d.client_context_takeover = true;
            d
        })
    });
    let (mut ws, answer) = connect_offering(server.addr, "/echo", Some(BROWSER_OFFER));
    let answer = answer.unwrap();
    assert!(!answer.contains("client_no_context_takeover"), "{answer}");
    // One compressor for the whole connection, never reset.
    let mut deflate = Compress::new(Compression::default(), false);
    let line = json_line(600);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let mut out = Vec::with_capacity(2 * line.len() + 64);
        deflate
            .compress_vec(line.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        sizes.push(out.len());
        ws.send_raw(&client_frame(true, 0b100, 0x1, &out));
        let (echo, compressed) = read_message(&mut ws);
        assert!(compressed);
        assert_eq!(String::from_utf8(echo).unwrap(), line);
    }
    assert!(
        sizes[1] * 4 < sizes[0],
        "later messages refer back: {sizes:?}"
    );
    // A client that promised to reset still gets the shared inflater.
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover";
    let (mut ws, answer) = connect_offering(server.addr, "/echo", Some(offer));
    assert!(answer.unwrap().contains("client_no_context_takeover"));
    send_compressed(&mut ws, &line);
    assert_eq!(read_message(&mut ws), (line.into_bytes(), true));
}
