//! The opening handshake (RFC 6455 §4) against a real server over raw TCP.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use wsloop::{Accept, Response};

/// Sends `request` on a fresh connection while a good tungstenite client is
/// open, checks the status, that the server then closes the connection, and
/// that the good client still echoes. Returns the response.
fn refused(server: &TestServer, request: &[u8], status: u16) -> HttpResponse {
    let mut good = ws_connect(server.addr, "/good?token=secret");
    assert_echo(&mut good, "before");
    let (response, mut stream) = http_exchange(server.addr, request);
    assert_eq!(response.status, status, "body: {}", response.body_text());
    assert_eq!(response.header("Connection"), Some("close"));
    assert!(
        response.rest.is_empty(),
        "bytes after the error response: {:?}",
        response.rest
    );
    assert_eof(&mut stream);
    assert_echo(&mut good, "after");
    ws_close(good);
    response
}

#[test]
fn valid_upgrade_returns_101_with_the_accept_key() {
    let server = TestServer::start();
    let (response, _stream) = http_exchange(server.addr, upgrade_request("/chat", &[]).as_bytes());
    assert_eq!(response.status, 101);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    assert!(
        response
            .header("Upgrade")
            .unwrap()
            .eq_ignore_ascii_case("websocket")
    );
    assert!(
        response
            .header("Connection")
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
    assert_eq!(
        response.header("Sec-WebSocket-Protocol"),
        None,
        "no subprotocol was offered"
    );
    let (_, path) = server.expect_opened();
    assert_eq!(path, "/chat");
}

#[test]
fn accept_key_is_computed_from_the_clients_key() {
    let server = TestServer::start();
    // A key other than the RFC sample: "AQIDBAUGBwgJCgsMDQ4PEA==" (bytes 1..=16).
    let request = upgrade_request("/", &[]).replace(SAMPLE_KEY, "AQIDBAUGBwgJCgsMDQ4PEA==");
    let (response, _stream) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some("C/0nmHhBztSRGR1CwL6Tf4ZjwpY=")
    );
}

#[test]
fn request_split_into_single_bytes_still_upgrades() {
    let server = TestServer::start();
    let mut stream = connect(server.addr);
    for byte in upgrade_request("/slow", &[]).as_bytes() {
        stream.write_all(&[*byte]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    let mut ws = RawWs::from_parts(stream, response.rest);
    ws.send_text("after a slow handshake");
    assert_eq!(ws.read_text(), "after a slow handshake");
}

#[test]
fn frames_in_the_same_write_as_the_request_are_processed() {
    let server = TestServer::start();
    let mut stream = connect(server.addr);
    let mut bytes = upgrade_request("/eager", &[]).into_bytes();
    bytes.extend(client_frame(true, 0, 0x1, b"early bird"));
    bytes.extend(client_frame(true, 0, 0x2, &[1, 2, 3]));
    stream.write_all(&bytes).unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101);
    let mut ws = RawWs::from_parts(stream, response.rest);
    assert_eq!(ws.read_text(), "early bird");
    let frame = ws.read_frame();
    assert_eq!((frame.opcode, frame.payload), (0x2, vec![1, 2, 3]));
}

#[test]
fn connection_token_list_is_accepted() {
    let server = TestServer::start();
    let request =
        upgrade_request("/", &[]).replace("Connection: Upgrade", "Connection: keep-alive, Upgrade");
    let (response, _stream) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(response.status, 101);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
}

#[test]
fn upgrade_value_is_case_insensitive() {
    let server = TestServer::start();
    let request = upgrade_request("/", &[])
        .replace("Upgrade: websocket", "Upgrade: WebSocket")
        .replace("Connection: Upgrade", "connection: UPGRADE");
    let (response, _stream) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(response.status, 101);
}

#[test]
fn wrong_version_is_426_with_the_supported_version() {
    let server = TestServer::start();
    let request =
        upgrade_request("/", &[]).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let response = refused(&server, request.as_bytes(), 426);
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn missing_key_is_400() {
    let server = TestServer::start();
    let request =
        upgrade_request("/", &[]).replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), "");
    refused(&server, request.as_bytes(), 400);
}

#[test]
fn short_key_is_400() {
    let server = TestServer::start();
    // Valid base64, but 5 bytes instead of 16.
    let request = upgrade_request("/", &[]).replace(SAMPLE_KEY, "c2hvcnQ=");
    refused(&server, request.as_bytes(), 400);
}

#[test]
fn missing_host_is_400() {
    let server = TestServer::start();
    let request = upgrade_request("/", &[]).replace("Host: localhost\r\n", "");
    refused(&server, request.as_bytes(), 400);
}

#[test]
fn missing_upgrade_header_with_a_key_is_400() {
    let server = TestServer::start();
    let request = upgrade_request("/", &[]).replace("Upgrade: websocket\r\n", "");
    refused(&server, request.as_bytes(), 400);
}

#[test]
fn post_is_405() {
    let server = TestServer::start();
    let request = upgrade_request("/", &[]).replace("GET", "POST");
    let response = refused(&server, request.as_bytes(), 405);
    assert_eq!(response.header("Allow"), Some("GET"));
}

#[test]
fn http_1_0_is_400() {
    let server = TestServer::start();
    let request = upgrade_request("/", &[]).replace("HTTP/1.1", "HTTP/1.0");
    refused(&server, request.as_bytes(), 400);
}

#[test]
fn header_block_over_8_kib_is_431() {
    let server = TestServer::start();
    let big = format!("X-Padding: {}", "a".repeat(9 * 1024));
    let request = upgrade_request("/", &[&big]);
    refused(&server, request.as_bytes(), 431);
}

#[test]
fn too_many_headers_is_431() {
    let mut config = test_config();
    config.max_headers = 16;
    let server = TestServer::with(config, None);
    let extra: Vec<String> = (0..12).map(|i| format!("X-Extra-{i}: v")).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    // Exactly at the limit is fine: 5 standard headers + 11 extra = 16.
    let (response, _stream) =
        http_exchange(server.addr, upgrade_request("/", &extra[..11]).as_bytes());
    assert_eq!(response.status, 101);
    // One over it is not.
    refused(&server, upgrade_request("/", &extra).as_bytes(), 431);
}

/// Rejects without `?token=secret`; picks subprotocol `b` when offered;
/// adds a header to the 101.
fn token_gate() -> UpgradeFn {
    Box::new(|req| {
        if req.query_param("token").as_deref() != Some("secret") {
            return Err(
                Response::new(401, "missing or bad token").header("WWW-Authenticate", "Bearer")
            );
        }
        let mut accept = Accept::new(req.path().to_string()).header("X-Served-By", "wsloop-test");
        if req.subprotocols().any(|p| p == "b") {
            accept = accept.protocol("b");
        }
        Ok(accept)
    })
}

#[test]
fn application_can_refuse_with_401_and_a_body() {
    let server = TestServer::with(test_config(), Some(token_gate()));
    let response = refused(
        &server,
        upgrade_request("/private?token=wrong", &[]).as_bytes(),
        401,
    );
    assert_eq!(response.body_text(), "missing or bad token");
    assert_eq!(response.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(response.header("Sec-WebSocket-Accept"), None);
    let response = refused(&server, upgrade_request("/private", &[]).as_bytes(), 401);
    assert_eq!(response.body_text(), "missing or bad token");
}

#[test]
fn application_picks_a_subprotocol_and_adds_headers() {
    let server = TestServer::with(test_config(), Some(token_gate()));
    let request = upgrade_request("/private?token=secret", &["Sec-WebSocket-Protocol: a, b"]);
    let (response, stream) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(response.status, 101);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    assert_eq!(response.headers_named("Sec-WebSocket-Protocol"), ["b"]);
    assert_eq!(response.header("X-Served-By"), Some("wsloop-test"));
    let mut ws = RawWs::from_parts(stream, response.rest);
    ws.send_text("in");
    assert_eq!(ws.read_text(), "in");

    // Without an offer of `b`, no protocol header is sent.
    let request = upgrade_request("/private?token=secret", &["Sec-WebSocket-Protocol: a"]);
    let (response, _stream) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(response.status, 101);
    assert_eq!(response.header("Sec-WebSocket-Protocol"), None);
}

#[test]
fn application_sees_path_query_headers_origin_and_peer() {
    let server = TestServer::start();
    let request = upgrade_request(
        "/rooms/42?token=secret&name=a%20b",
        &[
            "Origin: http://example.com",
            "X-Custom: hello",
            "Sec-WebSocket-Protocol: a, b",
        ],
    );
    let mut stream = connect(server.addr);
    let local = stream.local_addr().unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101);
    let info = server.expect_upgrade();
    assert_eq!(info.method, "GET");
    assert_eq!(info.path, "/rooms/42");
    assert_eq!(info.query.as_deref(), Some("token=secret&name=a%20b"));
    assert_eq!(info.origin.as_deref(), Some("http://example.com"));
    assert_eq!(info.header("x-custom"), Some("hello"));
    assert_eq!(info.header("Host"), Some("localhost"));
    assert_eq!(info.header("Sec-WebSocket-Key"), Some(SAMPLE_KEY));
    assert_eq!(info.subprotocols, ["a", "b"]);
    assert_eq!(info.peer, Some(local));
    let (_, path) = server.expect_opened();
    assert_eq!(path, "/rooms/42");
}

#[test]
fn plain_http_routes() {
    let server = TestServer::start();
    let mut open = ws_connect(server.addr, "/live");
    assert_echo(&mut open, "x");

    let (response, mut stream) = http_exchange(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text().trim(), "ok");
    assert_eof(&mut stream);

    let (response, mut stream) = http_exchange(
        server.addr,
        b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(response.status, 404);
    assert_eof(&mut stream);

    let (response, mut stream) = http_exchange(
        server.addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("Content-Type")
            .unwrap()
            .starts_with("text/plain")
    );
    let body = response.body_text();
    assert!(
        body.lines().any(|l| l == "wsloop_connections_open 1"),
        "metrics should count the one open connection:\n{body}"
    );
    assert!(body.contains("# TYPE wsloop_connections_open gauge"));
    assert_eof(&mut stream);

    // Plain HTTP did not disturb the open WebSocket.
    assert_echo(&mut open, "y");
    ws_close(open);
}

/// `printf 'GET /healthz ...' | nc -N host port` and many health checkers
/// shut down their write side right after the request: the response must
/// still be written.
#[test]
fn request_followed_by_a_half_close_still_gets_its_response() {
    let server = TestServer::start();
    for (request, status) in [
        (
            &b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
            200,
        ),
        (&b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"[..], 400),
    ] {
        let mut stream = connect(server.addr);
        stream.write_all(request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "expected {status} for {:?}, got {text:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn request_split_across_reads_with_a_frame_in_the_last_piece() {
    let server = TestServer::start();
    let mut stream = connect(server.addr);
    let request = upgrade_request("/split", &[]);
    let (first, second) = request.split_at(40);
    stream.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut rest = second.as_bytes().to_vec();
    rest.extend(client_frame(true, 0, 0x1, b"riding along"));
    stream.write_all(&rest).unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    let mut ws = RawWs::from_parts(stream, response.rest);
    assert_eq!(ws.read_text(), "riding along");
}

#[test]
fn incomplete_request_is_dropped_after_the_handshake_timeout() {
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::with(config, None);
    let mut stream = connect(server.addr);
    let start = std::time::Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: loc").unwrap();
    assert_eof(&mut stream);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_secs(2),
        "dropped after {elapsed:?}"
    );
}

#[test]
fn head_requests_get_headers_without_a_body() {
    let server = TestServer::start();
    let mut stream = connect(server.addr);
    stream
        .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 3\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "a HEAD response has no body: {text:?}"
    );
    let (response, _) = http_exchange(
        server.addr,
        b"PUT /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(response.status, 405);
    assert_eq!(response.header("Allow"), Some("GET, HEAD"));
}
