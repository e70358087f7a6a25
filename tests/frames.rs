//! Data framing (RFC 6455 §5): echo through a real client, fragmentation,
//! control frames, and protocol violations sent as raw frames.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use tungstenite::Message as WsMessage;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

// ------------------------------------------------------------ echo (tungstenite)

#[test]
fn text_echo() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    assert_echo(&mut ws, "hello, server");
    assert_echo(&mut ws, "and again");
    ws_close(ws);
}

#[test]
fn binary_echo() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    let data: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    ws.send(WsMessage::binary(data.clone())).unwrap();
    match ws_read(&mut ws) {
        WsMessage::Binary(b) => assert_eq!(&b[..], &data[..]),
        other => panic!("expected binary, got {other:?}"),
    }
    ws_close(ws);
}

#[test]
fn empty_messages_echo() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    ws.send(WsMessage::text("")).unwrap();
    match ws_read(&mut ws) {
        WsMessage::Text(t) => assert_eq!(t.as_str(), ""),
        other => panic!("expected empty text, got {other:?}"),
    }
    ws.send(WsMessage::binary(Vec::new())).unwrap();
    match ws_read(&mut ws) {
        WsMessage::Binary(b) => assert!(b.is_empty()),
        other => panic!("expected empty binary, got {other:?}"),
    }
    ws_close(ws);
}

#[test]
fn one_mib_message_echoes_intact() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    let data: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    ws.send(WsMessage::binary(data.clone())).unwrap();
    match ws_read(&mut ws) {
        WsMessage::Binary(b) => {
            assert_eq!(b.len(), data.len());
            assert!(b[..] == data[..], "1 MiB payload corrupted");
        }
        other => panic!("expected binary, got {other:?}"),
    }
    assert_echo(&mut ws, "still in sync");
    ws_close(ws);
}

#[test]
fn unicode_text_echo() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    assert_echo(&mut ws, "Grüße, 世界! 🦀 ∑ ε-δ");
    ws_close(ws);
}

// ------------------------------------------------------------ fragmentation and control frames (raw)

#[test]
fn fragmented_text_split_inside_a_character_arrives_whole() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let text = "Grüße, 世界 — 🦀!";
    let bytes = text.as_bytes();
    // Cut inside 'ü' (2 bytes), inside '世' (3 bytes) and inside '🦀' (4 bytes).
    let cut1 = text.find('ü').unwrap() + 1;
    let cut2 = text.find('世').unwrap() + 2;
    let cut3 = text.find('🦀').unwrap() + 3;
    assert!(
        !text.is_char_boundary(cut1)
            && !text.is_char_boundary(cut2)
            && !text.is_char_boundary(cut3)
    );
    ws.send(false, TEXT, &bytes[..cut1]);
    ws.send(false, CONTINUATION, &bytes[cut1..cut2]);
    ws.send(false, CONTINUATION, &[]); // an empty fragment is legal too
    ws.send(false, CONTINUATION, &bytes[cut2..cut3]);
    ws.send(true, CONTINUATION, &bytes[cut3..]);
    assert_eq!(ws.read_text(), text);
    // The decoder is back at a message boundary.
    ws.send_text("next");
    assert_eq!(ws.read_text(), "next");
}

#[test]
fn fragmented_binary_arrives_whole() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let mut bytes = client_frame(false, 0, BINARY, &[1, 2, 3]);
    bytes.extend(client_frame(false, 0, CONTINUATION, &[4, 5]));
    bytes.extend(client_frame(true, 0, CONTINUATION, &[6]));
    ws.send_raw(&bytes);
    let frame = ws.read_frame();
    assert_eq!((frame.fin, frame.opcode), (true, BINARY));
    assert_eq!(frame.payload, [1, 2, 3, 4, 5, 6]);
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send(true, PING, b"are you there?");
    let frame = ws.read_frame();
    assert_eq!((frame.fin, frame.opcode), (true, PONG));
    assert_eq!(frame.payload, b"are you there?");
    // Largest legal control payload.
    let big = [0x5Au8; 125];
    ws.send(true, PING, &big);
    let frame = ws.read_frame();
    assert_eq!(frame.opcode, PONG);
    assert_eq!(frame.payload, big);
    // Empty ping.
    ws.send(true, PING, &[]);
    let frame = ws.read_frame();
    assert_eq!((frame.opcode, frame.payload.len()), (PONG, 0));
}

#[test]
fn a_ping_sent_with_the_upgrade_request_is_answered_after_the_101() {
    // Pongs are written ahead of queued data; the 101 must still come
    // first, or the client reads a frame where it expects the status line.
    let server = TestServer::start();
    let mut stream = connect(server.addr);
    let mut bytes = upgrade_request("/", &[]).into_bytes();
    bytes.extend(client_frame(true, 0, PING, b"early"));
    bytes.extend(client_frame(true, 0, TEXT, b"and a message"));
    stream.write_all(&bytes).unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101, "{response:?}");
    let mut ws = RawWs::from_parts(stream, response.rest);
    let pong = ws.read_frame();
    assert_eq!((pong.opcode, &pong.payload[..]), (PONG, &b"early"[..]));
    assert_eq!(ws.read_text(), "and a message");
}

#[test]
fn ping_between_fragments_is_answered_at_once() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send(false, TEXT, b"frag");
    ws.send(true, PING, b"mid-message");
    // The pong comes while the message is still incomplete.
    let frame = ws.read_frame();
    assert_eq!(frame.opcode, PONG);
    assert_eq!(frame.payload, b"mid-message");
    ws.expect_silence(Duration::from_millis(100));
    ws.send(false, CONTINUATION, b"men");
    ws.send(true, PONG, b"unsolicited"); // ignored
    ws.send(true, CONTINUATION, b"ted");
    assert_eq!(ws.read_text(), "fragmented");
}

/// Writes `bytes` one byte per write, so the server sees every split of
/// every header and payload.
fn trickle(ws: &mut RawWs, bytes: &[u8]) {
    for byte in bytes {
        ws.send_raw(&[*byte]);
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn frames_split_into_single_bytes_are_reassembled() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    // 7-bit length, text with multi-byte characters.
    trickle(&mut ws, &client_frame(true, 0, TEXT, "héllo €".as_bytes()));
    assert_eq!(ws.read_text(), "héllo €");
    // 16-bit length.
    let medium: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
    trickle(&mut ws, &client_frame(true, 0, BINARY, &medium));
    let frame = ws.read_frame();
    assert_eq!((frame.opcode, frame.payload), (BINARY, medium));
    // A ping, then a fragmented message, byte by byte.
    let mut bytes = client_frame(true, 0, PING, b"slow ping");
    bytes.extend(client_frame(false, 0, TEXT, b"ab"));
    bytes.extend(client_frame(true, 0, CONTINUATION, b"cd"));
    trickle(&mut ws, &bytes);
    let frame = ws.read_frame();
    assert_eq!((frame.opcode, frame.payload), (PONG, b"slow ping".to_vec()));
    assert_eq!(ws.read_text(), "abcd");
}

#[test]
fn frame_with_a_64_bit_length_in_pieces() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let bytes = client_frame(true, 0, BINARY, &big);
    assert_eq!(bytes[1] & 0x7F, 127, "uses the 64-bit length form");
    // Header split inside the extended length, payload in uneven chunks.
    for chunk in bytes.chunks(4099) {
        let (a, b) = chunk.split_at(chunk.len().min(5));
        ws.send_raw(a);
        std::thread::sleep(Duration::from_millis(1));
        ws.send_raw(b);
    }
    let frame = ws.read_frame();
    assert_eq!(frame.opcode, BINARY);
    assert!(frame.payload == big, "70,000-byte payload corrupted");
}

#[test]
fn many_messages_in_one_write_are_all_answered_in_order() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let mut bytes = Vec::new();
    for i in 0..200 {
        bytes.extend(client_frame(
            true,
            0,
            TEXT,
            format!("message {i}").as_bytes(),
        ));
    }
    ws.send_raw(&bytes);
    for i in 0..200 {
        assert_eq!(ws.read_text(), format!("message {i}"));
    }
}

// ------------------------------------------------------------ protocol errors (raw)

/// Connects, sends `bytes`, and expects a close frame with `code`, then
/// the end of the connection; the handler sees `on_error` and `on_close`
/// with the same code.
fn expect_failure(server: &TestServer, bytes: &[u8], code: u16) -> String {
    let mut ws = RawWs::connect(server.addr, "/");
    let (id, _) = server.expect_opened();
    ws.send_raw(bytes);
    let reason = ws.expect_close_then_eof(code);
    assert_eq!(server.expect_error(), code);
    // Hang up, as a client does once the server has closed its side.
    drop(ws);
    let (closed_id, closed, _) = server
        .expect_closed_within(Duration::from_millis(500))
        .expect("on_close soon after the client hung up");
    assert_eq!((closed_id, closed), (id, code));
    reason
}

#[test]
fn unmasked_client_frame_is_1002() {
    let server = TestServer::start();
    let mut bytes = frame_header(true, 0, TEXT, 5, None);
    bytes.extend_from_slice(b"hello");
    expect_failure(&server, &bytes, 1002);
}

#[test]
fn rsv1_is_1002() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(true, 0b100, TEXT, b"x"), 1002);
}

#[test]
fn reserved_opcode_is_1002() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(true, 0, 0x3, b"x"), 1002);
}

#[test]
fn reserved_control_opcode_is_1002() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(true, 0, 0xB, b""), 1002);
}

#[test]
fn fragmented_ping_is_1002() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(false, 0, PING, b"x"), 1002);
}

#[test]
fn ping_with_126_byte_payload_is_1002() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(true, 0, PING, &[0u8; 126]), 1002);
}

#[test]
fn continuation_without_a_start_is_1002() {
    let server = TestServer::start();
    expect_failure(
        &server,
        &client_frame(true, 0, CONTINUATION, b"orphan"),
        1002,
    );
}

#[test]
fn new_message_inside_a_fragmented_one_is_1002() {
    let server = TestServer::start();
    let mut bytes = client_frame(false, 0, TEXT, b"first");
    bytes.extend(client_frame(true, 0, TEXT, b"second"));
    expect_failure(&server, &bytes, 1002);
}

#[test]
fn invalid_utf8_text_is_1007() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(true, 0, TEXT, b"ok \xff\xfe"), 1007);
}

#[test]
fn truncated_utf8_at_the_end_of_a_message_is_1007() {
    let server = TestServer::start();
    // "€" is E2 82 AC; the message ends after two of its bytes.
    let mut bytes = client_frame(false, 0, TEXT, b"price: \xe2");
    bytes.extend(client_frame(true, 0, CONTINUATION, b"\x82"));
    expect_failure(&server, &bytes, 1007);
}

#[test]
fn invalid_utf8_across_fragments_fails_at_the_fragment() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    // A valid prefix of "€" (E2 82) ending the first fragment...
    ws.send(false, TEXT, b"price: \xe2\x82");
    ws.expect_silence(Duration::from_millis(100));
    // ...continued with a byte that cannot follow it. The message is not
    // finished: the error must be found without waiting for its end.
    ws.send(false, CONTINUATION, b"A more");
    ws.expect_close_then_eof(1007);
    assert_eq!(server.expect_error(), 1007);
}

#[test]
fn impossible_utf8_fails_fast_inside_an_unfinished_message() {
    // Each first fragment ends with bytes that no continuation can make
    // valid; the message is never finished.
    let cases: [(&[u8], &[u8]); 4] = [
        (b"a\xed", b"\xa0\x80"),     // UTF-16 surrogate U+D800
        (b"b\xf4", b"\x90\x80\x80"), // above U+10FFFF
        (b"c\xe0", b"\x80\xaf"),     // overlong encoding
        (b"d\xc3", b"\xa9\xff"),     // a valid 'é', then 0xFF
    ];
    let server = TestServer::start();
    for (first, second) in cases {
        let mut ws = RawWs::connect(server.addr, "/");
        ws.send(false, TEXT, first);
        ws.send(false, CONTINUATION, second);
        ws.expect_close_then_eof(1007);
        assert_eq!(
            server.expect_error(),
            1007,
            "case {first:02x?} {second:02x?}"
        );
    }
}

#[test]
fn close_reason_that_is_not_utf8_is_1007() {
    let server = TestServer::start();
    let mut payload = close_payload(1000, "bad ");
    payload.push(0xFF);
    expect_failure(&server, &client_frame(true, 0, CLOSE, &payload), 1007);
}

#[test]
fn close_with_a_126_byte_payload_is_1002() {
    let server = TestServer::start();
    let mut payload = close_payload(1000, "");
    payload.resize(126, b'x');
    expect_failure(&server, &client_frame(true, 0, CLOSE, &payload), 1002);
}

#[test]
fn close_code_1005_on_the_wire_is_1002() {
    let server = TestServer::start();
    expect_failure(
        &server,
        &client_frame(true, 0, CLOSE, &close_payload(1005, "")),
        1002,
    );
}

#[test]
fn close_with_a_one_byte_payload_is_1002() {
    let server = TestServer::start();
    expect_failure(&server, &client_frame(true, 0, CLOSE, &[0x03]), 1002);
}

#[test]
fn message_over_max_size_is_1009_from_the_header_alone() {
    let mut config = test_config();
    config.max_message_size = 1024;
    let server = TestServer::with(config, None);
    // At the limit is fine.
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send(true, BINARY, &[7u8; 1024]);
    let frame = ws.read_frame();
    assert_eq!((frame.opcode, frame.payload.len()), (BINARY, 1024));
    drop(ws);
    server.expect_closed();
    // Over it: only the header (with its masking key) is sent, no payload.
    let header = frame_header(true, 0, BINARY, 1025, Some(MASK));
    expect_failure(&server, &header, 1009);
}

#[test]
fn fragmented_message_over_max_size_is_1009() {
    let mut config = test_config();
    config.max_message_size = 1024;
    let server = TestServer::with(config, None);
    let mut bytes = client_frame(false, 0, BINARY, &[1u8; 1000]);
    // The continuation's header alone pushes the total over the limit.
    bytes.extend(frame_header(true, 0, CONTINUATION, 100, Some(MASK)));
    expect_failure(&server, &bytes, 1009);
}

#[test]
fn huge_64_bit_length_is_1009_without_payload() {
    let server = TestServer::start();
    let header = frame_header(true, 0, BINARY, 1 << 40, Some(MASK));
    expect_failure(&server, &header, 1009);
}

#[test]
fn length_with_the_top_bit_set_is_1002() {
    let server = TestServer::start();
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63).to_be_bytes());
    header.extend_from_slice(&MASK);
    expect_failure(&server, &header, 1002);
}

#[test]
fn protocol_error_does_not_disturb_other_connections() {
    let server = TestServer::start();
    let mut good = ws_connect(server.addr, "/good");
    let (good_id, _) = server.expect_opened();
    expect_failure(&server, &client_frame(true, 0b010, BINARY, b"rsv2"), 1002);
    assert_echo(&mut good, "unaffected");
    ws_close(good);
    let (closed_id, code, _) = server.expect_closed();
    assert_eq!((closed_id, code), (good_id, 1005)); // ws_close sends an empty close
}

/// A connection that closes in the middle of a fragmented message must not
/// leave that partial message to the next connection the loop decodes.
#[test]
fn a_partial_message_never_leaks_into_another_connection() {
    let server = TestServer::start();
    let mut a = RawWs::connect(server.addr, "/");
    let mut bytes = client_frame(false, 0, 0x2, b"SECRET-OF-A");
    bytes.extend(client_frame(true, 0, 0x8, &close_payload(1000, "")));
    a.send_raw(&bytes);
    assert_eq!(a.read_close().0, 1000);

    // A final continuation with nothing to continue is a protocol error,
    // never the end of A's message.
    let mut b = RawWs::connect(server.addr, "/");
    b.send(true, 0x0, b"B");
    let frame = b.read_frame();
    assert_eq!(frame.opcode, 0x8, "expected a close, got {frame:?}");
    assert_eq!(frame.close_code().unwrap().0, 1002);

    // And a fresh message from a third client is just that.
    let mut c = RawWs::connect(server.addr, "/");
    c.send_text("clean");
    assert_eq!(c.read_text(), "clean");
}
