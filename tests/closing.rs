//! The closing handshake (RFC 6455 §5.5.1, §7) and connection identity.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wsloop::Message;

#[test]
fn client_close_is_echoed_then_the_connection_ends() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let (id, _) = server.expect_opened();
    ws.send_close(1000, "done here");
    let (code, _reason) = ws.read_close();
    assert_eq!(code, 1000);
    ws.expect_eof();
    // The server dropped the socket: it does not linger for the close timeout.
    let gone = wait_fully_closed(&mut ws.stream, Duration::from_millis(800));
    assert!(
        gone.is_some(),
        "server kept the socket after a completed closing handshake"
    );
    let (closed_id, code, reason) = server.expect_closed();
    assert_eq!((closed_id, code), (id, 1000));
    assert_eq!(reason, "done here");
}

#[test]
fn client_close_with_tungstenite() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    assert_echo(&mut ws, "hi");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye now".into(),
    }))
    .unwrap();
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut echoed = None;
    loop {
        assert!(Instant::now() < deadline, "close handshake did not finish");
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => echoed = frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error while closing: {e}"),
        }
    }
    assert_eq!(echoed, Some(1000));
    let (_, code, reason) = server.expect_closed();
    assert_eq!((code, reason.as_str()), (1000, "bye now"));
}

#[test]
fn empty_close_is_answered_with_1000() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send(true, 0x8, &[]);
    let (code, _) = ws.read_close();
    assert_eq!(code, 1000);
    ws.expect_eof();
    // The application is told no status code was received.
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 1005);
}

#[test]
fn messages_before_a_close_are_answered_first() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let mut bytes = client_frame(true, 0, 0x1, b"one");
    bytes.extend(client_frame(true, 0, 0x1, b"two"));
    bytes.extend(client_frame(true, 0, 0x8, &close_payload(3000, "")));
    bytes.extend(client_frame(true, 0, 0x1, b"after close: ignored"));
    ws.send_raw(&bytes);
    assert_eq!(ws.read_text(), "one");
    assert_eq!(ws.read_text(), "two");
    let (code, _) = ws.read_close();
    assert_eq!(code, 3000);
    ws.expect_eof();
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 3000);
}

#[test]
fn server_close_is_completed_by_the_clients_close() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send_text("before");
    assert_eq!(ws.read_text(), "before");
    ws.send_text("close-me");
    let (code, reason) = ws.read_close();
    assert_eq!((code, reason.as_str()), (4001, "bye"));
    // Nothing follows the close frame.
    ws.expect_eof();
    // The handshake is not complete yet: the server waits for our close.
    assert!(
        server
            .expect_closed_within(Duration::from_millis(150))
            .is_none(),
        "on_close before the client answered"
    );
    let answered = Instant::now();
    ws.send_close(4001, "");
    let (_, code, reason) = server.expect_closed();
    assert_eq!((code, reason.as_str()), (4001, "bye"));
    assert!(
        answered.elapsed() < Duration::from_millis(500),
        "the client's close did not end the connection promptly"
    );
    let gone = wait_fully_closed(&mut ws.stream, Duration::from_millis(800));
    assert!(
        gone.is_some(),
        "server kept the socket after the closing handshake"
    );
}

#[test]
fn server_close_with_tungstenite() {
    let server = TestServer::start();
    let mut ws = ws_connect(server.addr, "/");
    ws.send(tungstenite::Message::text("close-me")).unwrap();
    let mut got = None;
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "close handshake did not finish");
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                got = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            Ok(other) => panic!("unexpected message {other:?}"),
            // tungstenite answered the close; the server then hung up.
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(got, Some((4001, "bye".to_string())));
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 4001);
}

#[test]
fn unanswered_server_close_times_out() {
    let mut config = test_config();
    config.close_timeout = Duration::from_millis(300);
    let server = TestServer::with(config, None);
    let mut ws = RawWs::connect(server.addr, "/");
    let start = Instant::now();
    ws.send_text("close-me");
    let (code, _) = ws.read_close();
    assert_eq!(code, 4001);
    // The client never sends its close frame: the server must give up on
    // it after close_timeout and drop the connection.
    let gone = wait_fully_closed(&mut ws.stream, Duration::from_secs(3)).map(|_| start.elapsed());
    let gone = gone.expect("connection still up 3 s after an unanswered close");
    assert!(
        gone >= Duration::from_millis(200),
        "dropped after {gone:?}: before close_timeout"
    );
    assert!(
        gone <= Duration::from_secs(2),
        "dropped after {gone:?}: long after close_timeout"
    );
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 4001);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_secs(2),
        "on_close after {elapsed:?}"
    );
}

#[test]
fn dropped_tcp_connection_is_1006() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let (id, _) = server.expect_opened();
    ws.send_text("x");
    assert_eq!(ws.read_text(), "x");
    drop(ws);
    let (closed_id, code, _) = server.expect_closed();
    assert_eq!((closed_id, code), (id, 1006));
}

#[test]
fn dropped_tcp_connection_mid_message_is_1006() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send(false, 0x1, b"never finished");
    ws.expect_silence(Duration::from_millis(50));
    drop(ws);
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 1006);
}

#[test]
fn stale_conn_id_does_not_reach_the_slots_next_owner() {
    let server = TestServer::start();
    let mut first = RawWs::connect(server.addr, "/first");
    let (old_id, path) = server.expect_opened();
    assert_eq!(path, "/first");
    assert!(server.handle.send(old_id, Message::Text("to first")));
    assert_eq!(first.read_text(), "to first");
    first.send_close(1000, "");
    first.read_close();
    first.expect_eof();
    let (closed, _, _) = server.expect_closed();
    assert_eq!(closed, old_id);
    drop(first);

    let mut second = RawWs::connect(server.addr, "/second");
    let (new_id, path) = server.expect_opened();
    assert_eq!(path, "/second");
    assert_ne!(new_id, old_id);
    // ConnId displays as "#slot.generation": the slot was reused.
    let slot = |id: wsloop::ConnId| id.to_string().split('.').next().unwrap().to_string();
    assert_eq!(
        slot(new_id),
        slot(old_id),
        "the new connection should reuse the slot"
    );

    server.handle.send(old_id, Message::Text("stale"));
    server
        .handle
        .close(old_id, wsloop::CloseCode(4000), "stale close");
    second.expect_silence(Duration::from_millis(300));
    assert!(server.handle.send(new_id, Message::Text("fresh")));
    assert_eq!(second.read_text(), "fresh");
    second.send_text("still open");
    assert_eq!(second.read_text(), "still open");
}

#[test]
fn shutdown_sends_going_away() {
    let mut server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send_text("x");
    assert_eq!(ws.read_text(), "x");
    server.handle.shutdown();
    let (code, _) = ws.read_close();
    assert_eq!(code, 1001);
    ws.send_close(1001, "");
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 1001);
    assert!(
        server.stop(),
        "server did not stop after its connections closed"
    );
}

#[test]
fn half_close_after_a_message_still_gets_the_reply() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    ws.send_text("last words");
    ws.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(ws.read_text(), "last words");
    ws.expect_eof();
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 1006);
}

/// A client may shut down its write side right after its close frame
/// (wsloop itself does so after its own). The server must still send what
/// it queued for it, ending with the close reply (RFC 6455 §5.5.1).
#[test]
fn close_followed_by_a_half_close_still_gets_the_close_reply() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let mut bytes = client_frame(true, 0, 0x1, b"last words");
    bytes.extend(client_frame(true, 0, 0x8, &close_payload(1000, "")));
    ws.send_raw(&bytes);
    ws.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut frames = Vec::new();
    while let Ok(frame) = ws.try_read_frame() {
        frames.push((frame.opcode, frame.payload));
    }
    let expected = vec![
        (0x1, b"last words".to_vec()),
        (0x8, close_payload(1000, "")),
    ];
    assert_eq!(frames, expected, "frames received before EOF");
    let (_, code, _) = server.expect_closed();
    assert_eq!(code, 1000);
}
