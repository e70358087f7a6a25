//! The client's address behind reverse proxies: trusted proxies as
//! addresses and CIDR networks ([`IpNet`]), and the forwarding header
//! (`X-Forwarded-For`, or RFC 7239 `Forwarded`; see [`ForwardedHeader`])
//! read by the rightmost-untrusted rule ([`client_addr`]).
//!
//! # The trust model
//!
//! Each proxy appends the address it received the request from to the
//! forwarding header and passes on what was there before. Entries appended
//! by proxies you run are therefore true; everything to the left of the
//! first entry about a host outside them was written by the client (or by
//! proxies you do not control) and may say anything. So the header is read
//! only when the TCP peer is a trusted proxy, and from the right: addresses
//! of trusted proxies are skipped, and the first address that is not a
//! trusted proxy is the client. A client that sends made-up entries only
//! adds entries to the left of that one, which are never read.
//!
//! - An entry that is not an address (`unknown`, an obfuscated `_name`,
//!   an element without `for=`, garbage) ends the walk: the hop it stands
//!   for is not known, and nothing to its left can be believed. The TCP
//!   peer is kept, as it is when the header is absent or empty.
//! - When every entry is a trusted proxy, the leftmost one is the client
//!   (for example a client on the proxy's own machine).
//! - Only one header is read: the one your proxies write. A proxy passes a
//!   header it does not manage on from the client untouched, so reading it
//!   would let the client pick its address.
//! - The port is the one the entry gives (`for="[2001:db8::1]:4711"`,
//!   `192.0.2.1:5000`), or 0 when it gives none or an obfuscated one: the
//!   proxy's own port says nothing about the client.
//! - IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`, what a dual-stack
//!   listener reports for IPv4 peers) match trusted IPv4 entries.
//!
//! ```
//! use std::net::SocketAddr;
//! use wsloop::protocol::forwarded::{ForwardedHeader, IpNet, client_addr};
//!
//! let trusted: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
//! let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
//! // The client sent `X-Forwarded-For: 6.6.6.6`; the edge proxy appended
//! // 198.51.100.9 and an inner one 10.1.2.3.
//! let header = [&b"6.6.6.6, 198.51.100.9, 10.1.2.3"[..]];
//! let client = client_addr(proxy, &trusted, ForwardedHeader::XForwardedFor, header);
//! assert_eq!(client, "198.51.100.9:0".parse().unwrap());
//! ```

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`), or one
/// address (`127.0.0.1`, `::1`: a /32 or /128).
///
/// Host bits below the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
/// An IPv4 address matches IPv4 networks whether it comes as IPv4 or
/// IPv4-mapped IPv6 (`::ffff:10.1.2.3`).
///
/// ```
/// use wsloop::protocol::forwarded::IpNet;
/// let net: IpNet = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.200.0.1".parse().unwrap()));
/// assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// let host: IpNet = "::1".parse().unwrap();
/// assert_eq!(host.to_string(), "::1/128");
/// assert!("10.0.0.0/33".parse::<IpNet>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNet {
    /// The network of `addr` with a prefix of `prefix_len` bits, or `None`
    /// if the prefix is longer than the address (32 bits for IPv4, 128 for
    /// IPv6). An IPv4-mapped IPv6 network of at least 96 bits becomes the
    /// IPv4 network it denotes.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<IpNet> {
        match addr {
            IpAddr::V4(v4) if prefix_len <= 32 => Some(IpNet {
                addr: IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask32(prefix_len))),
                prefix_len,
            }),
            IpAddr::V6(v6) if prefix_len <= 128 => match v6.to_ipv4_mapped() {
                Some(v4) if prefix_len >= 96 => IpNet::new(IpAddr::V4(v4), prefix_len - 96),
                _ => Some(IpNet {
                    addr: IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask128(prefix_len))),
                    prefix_len,
                }),
            },
            _ => None,
        }
    }

    /// The network's first address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & mask32(self.prefix_len) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                ip.to_bits() & mask128(self.prefix_len) == net.to_bits()
            }
            // A short IPv6 prefix (`::/0`) may cover the mapped range.
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                ip.to_ipv6_mapped().to_bits() & mask128(self.prefix_len) == net.to_bits()
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

impl From<IpAddr> for IpNet {
    /// The network of exactly this address.
    fn from(addr: IpAddr) -> IpNet {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        IpNet::new(addr, bits).expect("a full-length prefix is valid")
    }
}

impl FromStr for IpNet {
    type Err = ParseIpNetError;

    /// Parses `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6, no brackets).
    fn from_str(s: &str) -> Result<IpNet, ParseIpNetError> {
        let error = || ParseIpNetError {
            input: s.to_string(),
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| error())?;
        match prefix {
            None => Ok(IpNet::from(addr)),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                IpNet::new(addr, p.parse().map_err(|_| error())?).ok_or_else(error)
            }
            Some(_) => Err(error()),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Why a string is not an [`IpNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIpNetError {
    input: String,
}

impl fmt::Display for ParseIpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not an IP address or CIDR network (like 10.0.0.0/8 or fd00::/8)",
            self.input
        )
    }
}

impl std::error::Error for ParseIpNetError {}

/// Which forwarding header the trusted proxies write, and so the one that
/// is read. Only one is: a proxy passes the other on from the client
/// unchanged, so it would say whatever the client likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`: what nginx's
    /// `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor` and
    /// most load balancers write. Entries are addresses, optionally with a
    /// port (`192.0.2.1:5000`, `[2001:db8::1]:4711`). The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"`:
    /// the `for=` parameter of each element.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name: `X-Forwarded-For` or `Forwarded`.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "X-Forwarded-For",
            ForwardedHeader::Forwarded => "Forwarded",
        }
    }
}

/// The client's address for a request that came from `peer` carrying
/// `values`, the values of every `header` line in request order.
///
/// When `peer` is not in `trusted`, that is `peer`, whatever the header
/// says. Otherwise the header's entries are walked from the right, skipping
/// trusted proxies, and the first other address is the client's (see the
/// [module documentation](self) for the rules and why).
pub fn client_addr<'v>(
    peer: SocketAddr,
    trusted: &[IpNet],
    header: ForwardedHeader,
    values: impl IntoIterator<Item = &'v [u8]>,
) -> SocketAddr {
    if !is_trusted(trusted, peer.ip()) {
        return peer;
    }
    let mut entries = Vec::new();
    for value in values {
        let Ok(line) = std::str::from_utf8(value) else {
            entries.push(None);
            continue;
        };
        match header {
            ForwardedHeader::XForwardedFor => {
                entries.extend(
                    line.split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(parse_node),
                );
            }
            ForwardedHeader::Forwarded => {
                entries.extend(
                    split_unquoted(line, b',')
                        .into_iter()
                        .filter(|e| !e.trim().is_empty())
                        .map(forwarded_for),
                );
            }
        }
    }
    let mut leftmost_trusted = None;
    for entry in entries.into_iter().rev() {
        match entry {
            None => return peer,
            Some(addr) if is_trusted(trusted, addr.ip()) => leftmost_trusted = Some(addr),
            Some(addr) => return addr,
        }
    }
    leftmost_trusted.unwrap_or(peer)
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// IPv4-mapped IPv6 addresses as the IPv4 addresses they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask32(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

fn mask128(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// One node: `IPv4`, `IPv4:port`, `IPv6`, `[IPv6]` or `[IPv6]:port`,
/// where the port may be obfuscated (`_x`, RFC 7239 §6.3: port 0). `None`
/// for anything else (`unknown`, an obfuscated name, garbage).
fn parse_node(node: &str) -> Option<SocketAddr> {
    let (host, port) = if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else if node.bytes().filter(|&b| b == b':').count() == 1 {
        // One colon: IPv4 and a port (an IPv6 address has at least two).
        let (host, port) = node.split_once(':')?;
        (host, Some(port))
    } else {
        (node, None)
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = match port {
        None => 0,
        Some(p) if p.len() > 1 && p.starts_with('_') => {
            let obfuscated = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
            if !p.bytes().skip(1).all(obfuscated) {
                return None;
            }
            0
        }
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The `for=` node of one `Forwarded` element (`for=a;proto=https;by=b`):
/// `None` if it has none, several, or a malformed pair.
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    let mut node = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        let value = unquote(value.trim())?;
        if name.trim().eq_ignore_ascii_case("for") {
            if node.is_some() {
                return None;
            }
            node = Some(value);
        }
    }
    parse_node(&node?)
}

/// Splits `s` at every `delim` outside a quoted string (backslash escapes
/// honoured inside quotes). An unterminated quote runs to the end.
fn split_unquoted(s: &str, delim: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == delim && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A token as it is, or a quoted string without its quotes and escapes;
/// `None` for an unterminated or partly quoted value.
fn unquote(value: &str) -> Option<Cow<'_, str>> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.contains('"')).then_some(Cow::Borrowed(value));
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(Cow::Owned(out)),
            c => out.push(c),
        }
    }
    None // no closing quote
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::{HeadLimits, parse_request};

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The addresses the application sees, `(peer_addr, remote_addr)`, for
    /// a raw request head with `extra` header lines, from TCP peer `peer`.
    fn resolve(
        peer: &str,
        trusted: &[&str],
        header: ForwardedHeader,
        extra: &[&str],
    ) -> (SocketAddr, SocketAddr) {
        let mut raw = String::from(
            "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        for line in extra {
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let (request, _) = parse_request(raw.as_bytes(), &mut headers, HeadLimits::default())
            .unwrap()
            .unwrap();
        let request = request
            .with_peer(Some(addr(peer)))
            .with_trusted_proxies(&nets(trusted), header);
        (request.peer_addr().unwrap(), request.remote_addr().unwrap())
    }

    /// Only the address `peer_addr` reports.
    fn client(peer: &str, trusted: &[&str], header: ForwardedHeader, extra: &[&str]) -> String {
        let (client, remote) = resolve(peer, trusted, header, extra);
        assert_eq!(remote, addr(peer), "remote_addr is always the TCP peer");
        client.to_string()
    }

    const PROXY: &str = "127.0.0.1:40000";
    const LOCAL: &[&str] = &["127.0.0.1"];

    #[test]
    fn xff_single_entry_from_a_trusted_proxy() {
        let got = client(PROXY, LOCAL, XFF, &["X-Forwarded-For: 203.0.113.7"]);
        assert_eq!(got, "203.0.113.7:0", "no port given: 0, not the proxy's");
    }

    #[test]
    fn xff_several_entries_and_header_lines_skip_trusted_hops() {
        let trusted = &["127.0.0.1", "10.0.0.0/8"];
        let one_line = ["X-Forwarded-For: 203.0.113.7, 10.0.0.2,10.9.9.9"];
        assert_eq!(client(PROXY, trusted, XFF, &one_line), "203.0.113.7:0");
        // Several lines are one list, in order.
        let lines = [
            "X-Forwarded-For: 198.51.100.1, 203.0.113.7",
            "x-forwarded-for: 10.0.0.2",
            "X-Forwarded-For: ,10.9.9.9,",
        ];
        assert_eq!(client(PROXY, trusted, XFF, &lines), "203.0.113.7:0");
        // Every hop trusted: the leftmost is the client.
        let all = ["X-Forwarded-For: 10.1.1.1, 10.0.0.2"];
        assert_eq!(client(PROXY, trusted, XFF, &all), "10.1.1.1:0");
    }

    #[test]
    fn xff_spoofed_leftmost_entries_are_never_read() {
        // The client sent `X-Forwarded-For: 1.1.1.1, 10.0.0.5`; the
        // trusted proxy appended the address it saw, 198.51.100.9.
        let trusted = &["127.0.0.1", "10.0.0.0/8"];
        let spoofed = ["X-Forwarded-For: 1.1.1.1, 10.0.0.5, 198.51.100.9"];
        assert_eq!(client(PROXY, trusted, XFF, &spoofed), "198.51.100.9:0");
        // A spoofed header line before the proxy's own line: the same.
        let lines = ["X-Forwarded-For: 1.1.1.1", "X-Forwarded-For: 198.51.100.9"];
        assert_eq!(client(PROXY, trusted, XFF, &lines), "198.51.100.9:0");
    }

    #[test]
    fn xff_ipv6_and_ports() {
        let trusted = &["::1", "fd00::/8"];
        let peer = "[::1]:40000";
        let cases = [
            ("X-Forwarded-For: 2001:db8::1", "[2001:db8::1]:0"),
            ("X-Forwarded-For: [2001:db8::1]", "[2001:db8::1]:0"),
            (
                "X-Forwarded-For: [2001:db8::1]:4711, fd00::2",
                "[2001:db8::1]:4711",
            ),
            ("X-Forwarded-For: 192.0.2.1:5000", "192.0.2.1:5000"),
        ];
        for (line, want) in cases {
            assert_eq!(client(peer, trusted, XFF, &[line]), want, "{line}");
        }
        // A dual-stack listener reports IPv4 peers as mapped addresses;
        // they match IPv4 entries.
        let mapped = "[::ffff:127.0.0.1]:40000";
        let line = ["X-Forwarded-For: 203.0.113.7, ::ffff:127.0.0.1"];
        assert_eq!(client(mapped, LOCAL, XFF, &line), "203.0.113.7:0");
    }

    #[test]
    fn forwarded_with_quotes_ports_and_parameters() {
        let trusted = &["127.0.0.1", "10.0.0.0/8"];
        let cases = [
            ("Forwarded: for=192.0.2.60", "192.0.2.60:0"),
            ("Forwarded: For=\"192.0.2.60:8080\"", "192.0.2.60:8080"),
            (
                "Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https",
                "[2001:db8:cafe::17]:4711",
            ),
            ("Forwarded: for=\"[2001:db8::1]\"", "[2001:db8::1]:0"),
            (
                "Forwarded: proto=http;for=192.0.2.43;by=203.0.113.60, for=10.0.0.3",
                "192.0.2.43:0",
            ),
            // A quoted comma or semicolon does not split anything.
            (
                "Forwarded: for=192.0.2.43;ext=\"a,b;c\", for=10.0.0.3",
                "192.0.2.43:0",
            ),
            // An obfuscated port: the address, port 0.
            ("Forwarded: for=\"192.0.2.43:_abc\"", "192.0.2.43:0"),
        ];
        for (line, want) in cases {
            assert_eq!(client(PROXY, trusted, FWD, &[line]), want, "{line}");
        }
        // Spoofed elements (and lines) to the left are never read.
        let spoofed = [
            "Forwarded: for=1.1.1.1",
            "Forwarded: for=6.6.6.6, for=\"198.51.100.9:1234\", for=10.0.0.2",
        ];
        assert_eq!(client(PROXY, trusted, FWD, &spoofed), "198.51.100.9:1234");
    }

    #[test]
    fn unknown_and_obfuscated_nodes_end_the_walk() {
        let trusted = &["127.0.0.1", "10.0.0.0/8"];
        for line in [
            "Forwarded: for=unknown",
            "Forwarded: for=_hidden",
            "Forwarded: for=192.0.2.1, for=_hidden, for=10.0.0.2",
            "Forwarded: proto=https",
            "X-Forwarded-For: 192.0.2.1, unknown",
        ] {
            let header = if line.starts_with('X') { XFF } else { FWD };
            assert_eq!(client(PROXY, trusted, header, &[line]), PROXY, "{line}");
        }
    }

    #[test]
    fn garbage_keeps_the_tcp_peer() {
        for (header, line) in [
            (XFF, "X-Forwarded-For: not an address"),
            (XFF, "X-Forwarded-For: 203.0.113.7:port"),
            (XFF, "X-Forwarded-For: 203.0.113.7:99999"),
            (XFF, "X-Forwarded-For: 2001:db8::1]:80"),
            (XFF, "X-Forwarded-For: [2001:db8::1]x"),
            (XFF, "X-Forwarded-For: 203.0.113.7/24"),
            (XFF, "X-Forwarded-For: fe80::1%eth0"),
            (FWD, "Forwarded: for=\"192.0.2.1"),
            (FWD, "Forwarded: for=192.0.2.1;for=192.0.2.2"),
            (FWD, "Forwarded: for"),
            (FWD, "Forwarded: for=192.0.2.1\"x\""),
            (FWD, "Forwarded: for=\"192.0.2.1\"junk"),
            (FWD, "Forwarded: ;;;"),
        ] {
            assert_eq!(client(PROXY, LOCAL, header, &[line]), PROXY, "{line}");
        }
        // An unterminated quote cannot swallow the next line's entries.
        let lines = [
            "Forwarded: for=\"6.6.6.6, for=1.1.1.1",
            "Forwarded: for=192.0.2.9",
        ];
        assert_eq!(client(PROXY, LOCAL, FWD, &lines), "192.0.2.9:0");
        // Bytes that are not UTF-8.
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: \xff\xfe\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let (request, _) = parse_request(raw, &mut headers, HeadLimits::default())
            .unwrap()
            .unwrap();
        let request = request
            .with_peer(Some(addr(PROXY)))
            .with_trusted_proxies(&nets(LOCAL), XFF);
        assert_eq!(request.peer_addr(), Some(addr(PROXY)));
    }

    #[test]
    fn no_header_keeps_the_tcp_peer() {
        assert_eq!(client(PROXY, LOCAL, XFF, &[]), PROXY);
        assert_eq!(client(PROXY, LOCAL, XFF, &["X-Forwarded-For:"]), PROXY);
        assert_eq!(client(PROXY, LOCAL, FWD, &[]), PROXY);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_the_headers_say() {
        let lines = ["X-Forwarded-For: 203.0.113.7", "Forwarded: for=203.0.113.7"];
        for header in [XFF, FWD] {
            // Nothing trusted (the default)...
            assert_eq!(client(PROXY, &[], header, &lines), PROXY);
            // ...or a peer outside the trusted networks.
            let peer = "192.0.2.200:5555";
            assert_eq!(client(peer, &["10.0.0.0/8"], header, &lines), peer);
        }
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // A proxy writing X-Forwarded-For passes the client's own
        // `Forwarded` on untouched: it must not be believed.
        let lines = ["Forwarded: for=6.6.6.6", "X-Forwarded-For: 203.0.113.7"];
        assert_eq!(client(PROXY, LOCAL, XFF, &lines), "203.0.113.7:0");
        assert_eq!(client(PROXY, LOCAL, FWD, &lines), "6.6.6.6:0");
        assert_eq!(
            client(PROXY, LOCAL, FWD, &["X-Forwarded-For: 203.0.113.7"]),
            PROXY
        );
    }

    #[test]
    fn without_a_peer_nothing_is_resolved() {
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let (request, _) = parse_request(raw, &mut headers, HeadLimits::default())
            .unwrap()
            .unwrap();
        let request = request.with_trusted_proxies(&nets(LOCAL), XFF);
        assert_eq!((request.peer_addr(), request.remote_addr()), (None, None));
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8", "host bits cleared");
        assert_eq!(net.prefix_len(), 8);
        assert!(net.contains("10.255.255.255".parse().unwrap()));
        assert!(!net.contains("11.0.0.0".parse().unwrap()));
        assert!(!net.contains("::a01:203".parse().unwrap()), "not mapped");
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fdab::1".parse().unwrap()));
        assert!(!v6.contains("fe00::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all4.contains("203.0.113.7".parse().unwrap()));
        assert!(all4.contains("::ffff:203.0.113.7".parse().unwrap()));
        assert!(!all4.contains("::1".parse().unwrap()));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains("::1".parse().unwrap()));
        assert!(all6.contains("203.0.113.7".parse().unwrap()));
        let mapped: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        let host: IpNet = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert!("::1/128".parse::<IpNet>().is_ok());
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/08x",
            "10.0.0/8",
            "localhost",
            "[::1]",
            "10.0.0.0/8/8",
            " 10.0.0.1",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?}");
        }
        let error = "nope".parse::<IpNet>().unwrap_err().to_string();
        assert!(error.contains("`nope`"), "{error}");
    }
}
