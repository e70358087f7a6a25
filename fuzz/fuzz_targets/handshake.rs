//! Fuzzes the opening-handshake parser: `parse_request`, everything a
//! `Request` exposes, `validate_upgrade`, `accept_key`, and the responses.
//!
//! Input layout: byte 0 picks `max_bytes`, byte 1 `max_headers`, byte 2
//! the size of the header array the caller passes and byte 3 a cut point
//! for the prefix check; the rest is the request bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::protocol::handshake::{
    HeadLimits, accept_key, http_response, parse_request, reason_phrase, switching_protocols,
};

fn max_bytes(selector: u8) -> usize {
    match selector {
        0 => 0,
        1 => 1,
        2 => usize::MAX,
        3 => 8 * 1024,
        n => usize::from(n) * 16,
    }
}

/// What a parse produced, without the borrows.
#[derive(Debug, PartialEq)]
enum Outcome {
    Partial,
    Complete(usize),
    Refused(u16),
}

fn outcome(buf: &[u8], headers_len: usize, limits: HeadLimits) -> Outcome {
    let mut headers = vec![httparse::EMPTY_HEADER; headers_len];
    match parse_request(buf, &mut headers, limits) {
        Ok(None) => Outcome::Partial,
        Ok(Some((_, len))) => Outcome::Complete(len),
        Err(e) => Outcome::Refused(e.status),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let limits = HeadLimits {
        max_bytes: max_bytes(data[0]),
        max_headers: usize::from(data[1] % 80),
    };
    let headers_len = usize::from(data[2] % 80);
    let cut_selector = usize::from(data[3]);
    let buf = &data[4..];

    let mut headers = vec![httparse::EMPTY_HEADER; headers_len];
    let parsed = parse_request(buf, &mut headers, limits);
    let head_len = match parsed {
        Ok(None) => {
            // Incomplete and within limits: never at or over max_bytes.
            assert!(
                buf.len() < limits.max_bytes,
                "partial head of {} bytes accepted",
                buf.len()
            );
            None
        }
        Err(e) => {
            assert!(
                matches!(e.status, 400 | 405 | 426 | 431),
                "unexpected status {}",
                e.status
            );
            let response = e.response();
            assert!(response.starts_with(format!("HTTP/1.1 {} ", e.status).as_bytes()));
            assert!(response.windows(4).any(|w| w == b"\r\n\r\n"));
            let _ = e.to_string();
            None
        }
        Ok(Some((request, head_len))) => {
            assert!(head_len > 0, "a complete head is never empty");
            assert!(
                head_len <= buf.len(),
                "head_len {head_len} > input length {}",
                buf.len()
            );
            assert!(
                head_len <= limits.max_bytes,
                "head_len {head_len} over max_bytes"
            );
            assert!(request.headers().count() <= limits.max_headers.min(headers_len));
            // Everything an application may look at.
            let path = request.path();
            assert!(!path.contains('?'));
            let _ = (
                request.method(),
                request.query(),
                request.origin(),
                request.peer_addr(),
            );
            let _ = request.query_param("room");
            let _ = request.query_param("");
            let _ = request.header("Host");
            for (name, value) in request.headers() {
                let _ = (name.len(), value.len());
            }
            let protocols: Vec<&str> = request.subprotocols().collect();
            for p in &protocols {
                assert!(!p.is_empty() && !p.contains(','));
                assert_eq!(p.trim(), *p);
            }
            let wants = request.wants_upgrade();
            match request.validate_upgrade() {
                Ok(key) => {
                    assert!(wants, "a valid upgrade must want an upgrade");
                    assert_eq!(request.method(), "GET");
                    let accept = accept_key(key.as_bytes());
                    assert_eq!(accept.len(), 28, "base64 of a SHA-1 is 28 characters");
                    let extra = vec![
                        ("X-Fuzz".to_string(), key.to_string()),
                        (path.to_string(), "v".to_string()),
                    ];
                    let response = switching_protocols(key, protocols.first().copied(), &extra);
                    assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
                    assert!(response.ends_with(b"\r\n\r\n"));
                    // Exactly one blank line: no header smuggled a CRLF in.
                    let blank = response.windows(4).filter(|w| w == b"\r\n\r\n").count();
                    assert_eq!(blank, 1, "header injection in the 101 response");
                    let needle = format!("Sec-WebSocket-Accept: {accept}\r\n");
                    assert!(
                        response
                            .windows(needle.len())
                            .any(|w| w == needle.as_bytes())
                    );
                }
                Err(e) => {
                    assert!(
                        matches!(e.status, 400 | 405 | 426),
                        "unexpected status {}",
                        e.status
                    );
                    let _ = e.response();
                }
            }
            Some(head_len)
        }
    };

    // The parse must not depend on what follows the head, and every strict
    // prefix of a complete head is incomplete (or already too large).
    if let Some(head_len) = head_len {
        assert_eq!(
            outcome(&buf[..head_len], headers_len, limits),
            Outcome::Complete(head_len)
        );
        let cut = cut_selector % head_len;
        match outcome(&buf[..cut], headers_len, limits) {
            Outcome::Partial => {}
            Outcome::Refused(431) if cut >= limits.max_bytes => {}
            other => panic!("prefix of {cut} bytes of a complete head gave {other:?}"),
        }
    }

    // accept_key on arbitrary bytes, and a response built from fuzz text.
    let key = accept_key(buf);
    assert_eq!(key.len(), 28);
    let text = String::from_utf8_lossy(buf);
    let status = u16::from(data[0]) * 4;
    let response = http_response(status, &[("X-Fuzz", &text)], &text, &[]);
    assert!(
        response.starts_with(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes())
    );
    let blank = response.windows(4).filter(|w| w == b"\r\n\r\n").count();
    assert_eq!(blank, 1, "header injection in an HTTP response");
});
