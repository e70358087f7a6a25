//! The opening handshake (RFC 6455 §4.2): parsing the upgrade request,
//! validating it, computing `Sec-WebSocket-Accept`, and writing responses.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use super::forwarded::{ForwardedHeader, IpNet, client_addr};

/// The GUID every server appends to the client's key (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
///
/// ```
/// use wsloop::protocol::handshake::accept_key;
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Why a request was refused, as the HTTP status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeError {
    /// The HTTP status code: 400, 405, 426 or 431.
    pub status: u16,
    /// A short human-readable explanation, sent as the response body.
    pub reason: &'static str,
}

impl HandshakeError {
    fn new(status: u16, reason: &'static str) -> HandshakeError {
        HandshakeError { status, reason }
    }

    /// The complete HTTP response for this error, closing the connection.
    pub fn response(&self) -> Vec<u8> {
        let extra: &[(&str, &str)] = match self.status {
            405 => &[("Allow", "GET")],
            426 => &[("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")],
            _ => &[],
        };
        let body = format!("{}\n", self.reason);
        http_response(
            self.status,
            extra,
            "text/plain; charset=utf-8",
            body.as_bytes(),
        )
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HandshakeError {}

/// Limits on the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The largest request head, request line included (default 8 KiB).
    pub max_bytes: usize,
    /// The most header fields (default 64).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_bytes: 8 * 1024,
            max_headers: 64,
        }
    }
}

/// An HTTP request head, borrowed from the connection's buffer.
///
/// The application sees it before a connection is accepted, to route and
/// authenticate on the path, query string and headers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    headers: &'a [httparse::Header<'a>],
    /// The client: `remote`, or what a trusted proxy's header says.
    peer: Option<SocketAddr>,
    /// The TCP peer.
    remote: Option<SocketAddr>,
}

impl<'a> Request<'a> {
    /// The request method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The path, without the query string, e.g. `/chat/lobby`.
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The raw query string after `?`, if any, e.g. `room=a&name=b`.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first value of a query parameter, percent-decoded (`+` as space).
    ///
    /// ```
    /// # use wsloop::protocol::handshake::parse_request;
    /// let raw = b"GET /chat?room=a%20b&name=x+y HTTP/1.1\r\nHost: h\r\n\r\n";
    /// let mut headers = [httparse::EMPTY_HEADER; 8];
    /// let (req, _) = parse_request(raw, &mut headers, Default::default()).unwrap().unwrap();
    /// assert_eq!(req.query_param("room").as_deref(), Some("a b"));
    /// assert_eq!(req.query_param("name").as_deref(), Some("x y"));
    /// assert_eq!(req.query_param("nope"), None);
    /// ```
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// The first value of a header (name compared case-insensitively), if
    /// it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    }

    /// Every header as (name, raw value), in request order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in
    /// order of preference.
    pub fn subprotocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.header_tokens("Sec-WebSocket-Protocol")
    }

    /// The `Origin` header, sent by browsers.
    pub fn origin(&self) -> Option<&'a str> {
        self.header("Origin")
    }

    /// The client's address, when known: the TCP peer's, unless the TCP
    /// peer is a trusted proxy ([`Config::trusted_proxies`]); then the
    /// address its forwarding header names, by the rightmost-untrusted rule
    /// of [`forwarded`](super::forwarded), with the port the header gives
    /// or 0. Use it for logging, rate limits and access rules.
    ///
    /// [`Config::trusted_proxies`]: crate::Config::trusted_proxies
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The TCP peer's address, whatever the headers say: behind a reverse
    /// proxy, the proxy's. Equal to [`peer_addr`](Self::peer_addr) unless a
    /// trusted proxy forwarded the request.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Attaches the TCP peer's address (the reactor knows it; the parser
    /// does not), as both [`remote_addr`](Self::remote_addr) and
    /// [`peer_addr`](Self::peer_addr).
    pub fn with_peer(mut self, peer: Option<SocketAddr>) -> Request<'a> {
        self.peer = peer;
        self.remote = peer;
        self
    }

    /// When the TCP peer is in `trusted`, takes [`peer_addr`](Self::peer_addr)
    /// from the `header` lines by the rightmost-untrusted rule
    /// ([`forwarded::client_addr`](super::forwarded::client_addr)); otherwise,
    /// and when nothing is trusted, changes nothing. The reactor calls it
    /// after [`with_peer`](Self::with_peer) with [`Config::trusted_proxies`]
    /// and [`Config::forwarded_header`].
    ///
    /// ```
    /// # use wsloop::protocol::handshake::parse_request;
    /// use wsloop::protocol::forwarded::{ForwardedHeader, IpNet};
    /// let raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.7\r\n\r\n";
    /// let mut headers = [httparse::EMPTY_HEADER; 8];
    /// let (req, _) = parse_request(raw, &mut headers, Default::default()).unwrap().unwrap();
    /// let trusted: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap()];
    /// let req = req
    ///     .with_peer(Some("127.0.0.1:40000".parse().unwrap()))
    ///     .with_trusted_proxies(&trusted, ForwardedHeader::XForwardedFor);
    /// assert_eq!(req.peer_addr(), Some("203.0.113.7:0".parse().unwrap()));
    /// assert_eq!(req.remote_addr(), Some("127.0.0.1:40000".parse().unwrap()));
    /// ```
    ///
    /// [`Config::trusted_proxies`]: crate::Config::trusted_proxies
    /// [`Config::forwarded_header`]: crate::Config::forwarded_header
    pub fn with_trusted_proxies(
        mut self,
        trusted: &[IpNet],
        header: ForwardedHeader,
    ) -> Request<'a> {
        if let Some(remote) = self.remote
            && !trusted.is_empty()
        {
            let values = self
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(header.name()))
                .map(|h| h.value);
            self.peer = Some(client_addr(remote, trusted, header, values));
        }
        self
    }

    /// The comma-separated tokens of every header called `name`, trimmed.
    fn header_tokens(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    fn has_token(&self, name: &'a str, token: &str) -> bool {
        self.header_tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether this request asks for a WebSocket upgrade at all. A request
    /// that does not is plain HTTP and may be served as such.
    pub fn wants_upgrade(&self) -> bool {
        self.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("Upgrade")
                || h.name.eq_ignore_ascii_case("Sec-WebSocket-Key")
        })
    }

    /// Checks every requirement of RFC 6455 §4.2.1 and returns the client's
    /// key. Errors carry the status to answer with: 405 for a method other
    /// than GET, 426 for a version other than 13, 400 for anything else.
    pub fn validate_upgrade(&self) -> Result<&'a str, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::new(405, "method not allowed"));
        }
        if self.header("Host").is_none() {
            return Err(HandshakeError::new(400, "missing Host header"));
        }
        if !self.has_token("Upgrade", "websocket") {
            return Err(HandshakeError::new(400, "Upgrade header must be websocket"));
        }
        if !self.has_token("Connection", "upgrade") {
            return Err(HandshakeError::new(
                400,
                "Connection header must contain upgrade",
            ));
        }
        if self.header("Sec-WebSocket-Version").map(str::trim) != Some("13") {
            return Err(HandshakeError::new(426, "Sec-WebSocket-Version must be 13"));
        }
        let key = self
            .header("Sec-WebSocket-Key")
            .map(str::trim)
            .ok_or(HandshakeError::new(400, "missing Sec-WebSocket-Key"))?;
        match BASE64.decode(key) {
            Ok(bytes) if bytes.len() == 16 => Ok(key),
            _ => Err(HandshakeError::new(
                400,
                "Sec-WebSocket-Key must be 16 bytes in base64",
            )),
        }
    }
}

/// Parses a request head from the front of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and within limits,
/// `Ok(Some((request, head_len)))` once complete (bytes after `head_len`
/// already belong to the WebSocket stream), and an error for a malformed
/// request (400), a non-1.1 version (400), or a head over the limits (431).
pub fn parse_request<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: HeadLimits,
) -> Result<Option<(Request<'h>, usize)>, HandshakeError>
where
    'b: 'h,
{
    let max_headers = limits.max_headers.min(headers.len());
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let status = match req.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::new(431, "too many header fields"));
        }
        Err(_) => return Err(HandshakeError::new(400, "malformed HTTP request")),
    };
    let head_len = match status {
        httparse::Status::Partial if buf.len() >= limits.max_bytes => {
            return Err(HandshakeError::new(431, "request head too large"));
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) if len > limits.max_bytes => {
            return Err(HandshakeError::new(431, "request head too large"));
        }
        httparse::Status::Complete(len) => len,
    };
    if req.version != Some(1) {
        return Err(HandshakeError::new(400, "HTTP/1.1 required"));
    }
    let request = Request {
        method: req.method.unwrap_or_default(),
        target: req.path.unwrap_or("/"),
        headers: req.headers,
        peer: None,
        remote: None,
    };
    Ok(Some((request, head_len)))
}

/// Writes the `101 Switching Protocols` response for a validated key.
/// Header pairs containing CR or LF are dropped rather than sent.
pub fn switching_protocols(
    key: &str,
    protocol: Option<&str>,
    extra: &[(String, String)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(key.as_bytes()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        push_header(&mut out, "Sec-WebSocket-Protocol", protocol);
    }
    for (name, value) in extra {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[doc(hidden)] // for benches and fuzzing, not part of the documented API
/// Writes a complete HTTP/1.1 response that closes the connection.
pub fn http_response(
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    push_header(&mut out, "Content-Type", content_type);
    push_header(&mut out, "Content-Length", &body.len().to_string());
    push_header(&mut out, "Connection", "close");
    for (name, value) in headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let unsafe_char = |c: char| c == '\r' || c == '\n';
    if name.is_empty()
        || name.contains(unsafe_char)
        || value.contains(unsafe_char)
        || name.contains(':')
    {
        log::warn!("dropping response header {name:?} with a forbidden character");
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[doc(hidden)] // for benches and fuzzing, not part of the documented API
/// The standard reason phrase for the statuses wsloop sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n";

    fn parse(raw: &[u8]) -> Result<Option<(String, usize)>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        match parse_request(raw, &mut headers, HeadLimits::default())? {
            None => Ok(None),
            Some((req, len)) => req.validate_upgrade().map(|k| Some((k.to_string(), len))),
        }
    }

    #[test]
    fn rfc_sample_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_a_valid_request_and_exposes_its_parts() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let (req, len) = parse_request(GOOD, &mut headers, HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(len, GOOD.len());
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(
            req.subprotocols().collect::<Vec<_>>(),
            ["chat", "superchat"]
        );
        assert_eq!(req.validate_upgrade().unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn every_prefix_is_partial() {
        for cut in 0..GOOD.len() {
            assert_eq!(parse(&GOOD[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let good = std::str::from_utf8(GOOD).unwrap();
        let cases = [
            (good.replace("GET", "POST"), 405),
            (good.replace("Version: 13", "Version: 8"), 426),
            (good.replace("Upgrade: websocket", "Upgrade: h2c"), 400),
            (good.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
            (good.replace("Host: server.example.com\r\n", ""), 400),
            (good.replace("HTTP/1.1", "HTTP/1.0"), 400),
            ("GARBAGE\0\r\n\r\n".to_string(), 400),
        ];
        for (raw, status) in cases {
            assert_eq!(parse(raw.as_bytes()).unwrap_err().status, status, "{raw}");
        }
    }

    #[test]
    fn oversized_heads_are_431() {
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(big.as_bytes()).unwrap_err().status, 431);
        // Still incomplete, but already over the limit.
        assert_eq!(parse(&big.as_bytes()[..8500]).unwrap_err().status, 431);
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes()).unwrap_err().status, 431);
    }

    #[test]
    fn response_contains_accept_and_protocol() {
        let resp = switching_protocols(
            "dGhlIHNhbXBsZSBub25jZQ==",
            Some("chat"),
            &[("X-A".into(), "1".into())],
        );
        let text = String::from_utf8(resp).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.contains("X-A: 1\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn header_injection_is_dropped() {
        let resp =
            switching_protocols("k", None, &[("X-Evil".into(), "a\r\nSet-Cookie: x".into())]);
        assert!(!String::from_utf8(resp).unwrap().contains("Set-Cookie"));
    }
}
