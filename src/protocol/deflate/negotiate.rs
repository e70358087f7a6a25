//! Negotiating permessage-deflate from the client's
//! `Sec-WebSocket-Extensions` offers (RFC 7692 §5, §7.1).
//!
//! # What is read
//!
//! Every `Sec-WebSocket-Extensions` header of the request, in order: the
//! headers together are one comma-separated list (RFC 6455 §11.3.2), and
//! the order of its elements is the client's preference, the first element
//! the most preferred (RFC 6455 §9.1, RFC 7692 §5). Each element is
//! `extension-token *( ";" extension-param )`, a parameter
//! `token [ "=" ( token / quoted-string ) ]` (RFC 6455 §9.1), with optional
//! spaces and tabs around `,`, `;` and `=` and empty list elements
//! (`a, , b`) allowed, as for every HTTP list. A quoted value is unescaped
//! and must then be a token (the rule attached to that ABNF), so
//! `client_max_window_bits="10"` means `client_max_window_bits=10`.
//!
//! Names are compared exactly, case included: RFC 6455 says "ASCII
//! case-insensitive" where it means it (the `Upgrade` and `Connection`
//! values) and not for extension tokens, and answering `permessage-deflate`
//! to a `PerMessage-Deflate` offer would name an extension the client did
//! not ask for, which RFC 6455 §4.1 makes it fail the connection over.
//! Such an offer is an unknown extension, skipped like any other.
//!
//! # Which offer is taken
//!
//! The first `permessage-deflate` element the server can accept. RFC 7692
//! §7 has the server decline an offer with a parameter not defined for
//! offers, a parameter with an invalid value, the same parameter twice, or
//! a configuration it does not support; a declined offer is skipped and
//! the next one considered. The values (§7.1.2.1, §7.1.2.2) are decimal
//! 8 to 15 without leading zeros, and `client_max_window_bits` may have
//! none; the two `*_no_context_takeover` parameters have none. The one
//! configuration this server does not support is `server_max_window_bits=8`:
//! zlib cannot write a raw deflate stream with a 256-byte window.
//!
//! No acceptable offer means no extension ([`negotiate`] returns `None`);
//! the connection opens uncompressed, which is not an error.
//!
//! # What is answered
//!
//! - `server_no_context_takeover`, always. The server compresses every
//!   message from a fresh context whatever was agreed, and §7.1.1.1 lets
//!   it say so even when the offer did not ask; saying it lets the client
//!   inflate every message with a fresh context too. (When the offer does
//!   ask, including it is how the offer is accepted, §7.1.1.1.)
//! - `client_no_context_takeover` when the policy asks for it or the offer
//!   carries it. §7.1.1.2 lets a server include it in any response. The
//!   client's own `client_no_context_takeover` in an offer is only a hint:
//!   unless the response carries it, the server must still keep the
//!   client's window between messages (§7.2.2), so the parameter in force
//!   ([`DeflateParams::client_no_context_takeover`]) is exactly "the
//!   response carries it", and an offered hint is always taken up.
//! - `server_max_window_bits=N` when the offer carries one (accepting such
//!   an offer means answering it with the same or a smaller value,
//!   §7.1.2.1) — N is the smaller of the offer's and the policy's — or when
//!   the policy's window is below 15 (§7.1.2.1 lets a server include it in
//!   a response to an offer without it, and it lets the client allocate a
//!   smaller inflate window).
//! - Never `client_max_window_bits`. A response must not carry it unless
//!   the offer did (§7.1.2.2), and when the offer did, leaving it out is
//!   allowed and means the server accepts windows of up to 32 KiB, which
//!   its 15-bit inflater does.
//!
//! # Malformed headers, and bounded work
//!
//! This is network input: nothing here panics or allocates per element,
//! and the work is linear in the input. At most [`MAX_EXTENSIONS`] list
//! elements (of any extension, across all headers) are looked at; whatever
//! follows is ignored.
//!
//! RFC 6455 §9.1 says a server that receives a header that does not match
//! the grammar must fail the connection. [`negotiate`] is lenient: a
//! malformed header contributes no offer (none of its elements, even those
//! before the fault, since the header as a whole is not a valid list) and
//! the other headers are still read. [`negotiate_strict`] follows the RFC:
//! it reports the malformed header ([`MalformedExtensions`]) so the
//! handshake can be refused (a `400`).

use std::fmt;

use super::{DeflateParams, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The extension's name in `Sec-WebSocket-Extensions` (RFC 7692 §7),
/// matched exactly, case included.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// How many list elements (extension offers, whatever their name, empty
/// elements not counted) are read across all the request's
/// `Sec-WebSocket-Extensions` headers; later ones are ignored. Real
/// clients send one to three offers; the limit caps what a hostile request
/// can make the server scan.
pub const MAX_EXTENSIONS: usize = 64;

/// How the server negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// The largest window the server compresses with (9..=15; a value
    /// outside is taken as the nearest bound); answered as
    /// `server_max_window_bits` when below 15 or when the client asked.
    pub server_max_window_bits: u8,
    /// Ask the client for `client_no_context_takeover` (so one shared
    /// inflater serves every connection). When false, only clients that
    /// offer it are answered with it, and connections of the others have
    /// [`DeflateParams::client_no_context_takeover`] false.
    pub client_no_context_takeover: bool,
}

/// An accepted offer: the parameters in force and the response value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The parameters in force for the connection.
    pub params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value of the `101`, such as
    /// `permessage-deflate; server_no_context_takeover;
    /// client_no_context_takeover` (without the header name).
    pub response: String,
}

/// A `Sec-WebSocket-Extensions` value that does not match the RFC 6455
/// §9.1 grammar, found by [`negotiate_strict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedExtensions {
    /// Which header it is: its position among the values passed in, from 0.
    pub header: usize,
    /// The byte offset in that value where it stops matching.
    pub offset: usize,
}

impl fmt::Display for MalformedExtensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed Sec-WebSocket-Extensions header #{} at byte {}",
            self.header, self.offset
        )
    }
}

impl std::error::Error for MalformedExtensions {}

/// The first acceptable permessage-deflate offer among `header_values`
/// (every `Sec-WebSocket-Extensions` header of the request, in order), or
/// `None` to open without the extension.
///
/// A header that does not match the grammar contributes no offer (see
/// [`negotiate_strict`] to refuse the handshake instead). Never panics;
/// reads at most [`MAX_EXTENSIONS`] elements.
///
/// ```
/// use wsloop::protocol::deflate::{DeflateParams, DeflatePolicy, negotiate};
///
/// let policy = DeflatePolicy { server_max_window_bits: 15, client_no_context_takeover: true };
/// // Chrome's offer, after another extension in an earlier header.
/// let headers = [&b"x-webkit-deflate-frame"[..], b"permessage-deflate; client_max_window_bits"];
/// let agreed = negotiate(headers, &policy).unwrap();
/// assert_eq!(
///     agreed.params,
///     DeflateParams { server_max_window_bits: 15, client_no_context_takeover: true }
/// );
/// assert_eq!(
///     agreed.response,
///     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
/// );
///
/// // An 8-bit server window cannot be honoured: that offer is declined and
/// // the next one taken.
/// let headers = [&b"permessage-deflate; server_max_window_bits=8, permessage-deflate"[..]];
/// assert_eq!(negotiate(headers, &policy).unwrap().params.server_max_window_bits, 15);
/// assert_eq!(negotiate([&b"permessage-deflate; foo"[..]], &policy), None);
/// ```
pub fn negotiate<'h>(
    header_values: impl IntoIterator<Item = &'h [u8]>,
    policy: &DeflatePolicy,
) -> Option<Negotiated> {
    let mut budget = MAX_EXTENSIONS;
    for value in header_values {
        if budget == 0 {
            break;
        }
        // A malformed header (Err) is skipped whole.
        if let Ok(Some(agreement)) = scan(value, policy, &mut budget) {
            return Some(agreement.negotiated());
        }
    }
    None
}

/// Like [`negotiate`], but a header that does not match the RFC 6455 §9.1
/// grammar is an error, as that section requires (the server then fails
/// the connection: refuses the handshake with a `400`).
///
/// Every header is checked, up to [`MAX_EXTENSIONS`] elements in all, even
/// after an offer has been accepted; when a value has no element at all
/// (empty, or only commas and spaces) it is malformed too, the grammar
/// asking for at least one.
///
/// ```
/// use wsloop::protocol::deflate::DeflatePolicy;
/// use wsloop::protocol::deflate::negotiate::{MalformedExtensions, negotiate_strict};
///
/// let policy = DeflatePolicy { server_max_window_bits: 12, client_no_context_takeover: true };
/// let ok = negotiate_strict([&b"permessage-deflate"[..]], &policy).unwrap().unwrap();
/// assert_eq!(ok.params.server_max_window_bits, 12);
/// assert_eq!(negotiate_strict([&b"foo"[..]], &policy), Ok(None));
/// let bad = [&b"permessage-deflate"[..], b"foo; bar=\"a b\""];
/// assert_eq!(
///     negotiate_strict(bad, &policy),
///     Err(MalformedExtensions { header: 1, offset: 11 })
/// );
/// ```
pub fn negotiate_strict<'h>(
    header_values: impl IntoIterator<Item = &'h [u8]>,
    policy: &DeflatePolicy,
) -> Result<Option<Negotiated>, MalformedExtensions> {
    let mut budget = MAX_EXTENSIONS;
    let mut chosen = None;
    for (header, value) in header_values.into_iter().enumerate() {
        if budget == 0 {
            break;
        }
        let found = scan(value, policy, &mut budget)
            .map_err(|offset| MalformedExtensions { header, offset })?;
        if chosen.is_none() {
            chosen = found;
        }
    }
    Ok(chosen.map(Agreement::negotiated))
}

/// Parses one header value, spending one unit of `budget` per element, and
/// returns the first acceptable permessage-deflate offer in it, or the
/// offset where the value stops matching the grammar. Stops early, with
/// what it found, when the budget runs out.
fn scan(
    value: &[u8],
    policy: &DeflatePolicy,
    budget: &mut usize,
) -> Result<Option<Agreement>, usize> {
    let mut p = Parser { s: value, i: 0 };
    let mut elements = 0usize;
    let mut chosen = None;
    loop {
        p.skip_ows();
        match p.peek() {
            None => break,
            // An empty list element: allowed, and not an element.
            Some(b',') => {
                p.i += 1;
                continue;
            }
            Some(_) => {}
        }
        if *budget == 0 {
            return Ok(chosen);
        }
        *budget -= 1;
        elements += 1;

        let name = p.token()?;
        // Parameters are judged only for the first acceptable offer: after
        // it the rest is read for its syntax alone.
        let judge = chosen.is_none() && name == EXTENSION_NAME.as_bytes();
        let mut offer = Offer::default();
        loop {
            p.skip_ows();
            if p.peek() != Some(b';') {
                break;
            }
            p.i += 1;
            p.skip_ows();
            let param = p.token()?;
            p.skip_ows();
            let value = if p.peek() == Some(b'=') {
                p.i += 1;
                p.skip_ows();
                Some(p.value()?)
            } else {
                None
            };
            if judge {
                offer.param(param, value);
            }
        }
        match p.peek() {
            None => {}
            Some(b',') => p.i += 1,
            Some(_) => return Err(p.i),
        }
        if judge {
            chosen = offer.accept(policy);
        }
    }
    // `1#extension`: at least one element.
    if elements == 0 {
        return Err(p.i);
    }
    Ok(chosen)
}

/// A cursor over one header value.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Optional whitespace: spaces and tabs. (A folded line, CRLF then
    /// whitespace, never reaches here: the request parser refuses it.)
    fn skip_ows(&mut self) {
        while let Some(b' ' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// `token = 1*tchar`, or the offset of the byte that is not one.
    fn token(&mut self) -> Result<&'a [u8], usize> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(start);
        }
        Ok(&self.s[start..self.i])
    }

    /// A parameter value: a token, or a quoted-string that unescapes to
    /// one.
    fn value(&mut self) -> Result<Value<'a>, usize> {
        if self.peek() != Some(b'"') {
            return self.token().map(|raw| Value { raw });
        }
        let start = self.i + 1;
        let mut j = start;
        // Inside the quotes, a byte is a tchar or a backslash escaping a
        // tchar: anything else (a space, a control, a non-ASCII byte, an
        // escaped quote or backslash) may be a valid quoted-string but
        // cannot unescape to a token. The end of the value before the
        // closing quote is malformed too.
        loop {
            match self.s.get(j).copied() {
                Some(b'"') => break,
                Some(b'\\') if self.s.get(j + 1).copied().is_some_and(is_tchar) => j += 2,
                Some(c) if is_tchar(c) => j += 1,
                _ => return Err(j),
            }
        }
        if j == start {
            // `""` unescapes to the empty string, which is not a token.
            return Err(j);
        }
        self.i = j + 1;
        Ok(Value {
            raw: &self.s[start..j],
        })
    }
}

/// `tchar` (RFC 7230 §3.2.6; the same set as RFC 2616's token characters).
fn is_tchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    ) || b.is_ascii_alphanumeric()
}

/// A parameter value as written: a token, or the inside of a
/// quoted-string, where every backslash escapes the tchar after it.
#[derive(Debug, Clone, Copy)]
struct Value<'a> {
    raw: &'a [u8],
}

impl Value<'_> {
    /// The value unescaped. A token has no backslash (it is not a tchar),
    /// and in a quoted value the parser let a backslash through only before
    /// a tchar, so dropping the backslashes is the unescaping.
    fn unescaped(self) -> impl Iterator<Item = u8> {
        self.raw.iter().copied().filter(|&b| b != b'\\')
    }

    /// A window size: decimal 8..=15 without leading zeros (RFC 7692
    /// §7.1.2.1, §7.1.2.2), or `None`.
    fn window_bits(self) -> Option<u8> {
        let mut n: u8 = 0;
        for (digits, b) in self.unescaped().enumerate() {
            // A third digit, a non-digit, or a digit after a leading zero.
            if digits == 2 || !b.is_ascii_digit() || (digits == 1 && n == 0) {
                return None;
            }
            n = n * 10 + (b - b'0');
        }
        (8..=15).contains(&n).then_some(n)
    }
}

/// The parameters of one permessage-deflate offer, as far as they matter.
#[derive(Debug, Default)]
struct Offer {
    /// Which parameters were seen (the `SEEN_*` bits), to find repeats.
    seen: u8,
    /// A parameter was unknown, repeated, or had an invalid value.
    declined: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
}

const SEEN_SERVER_NO_CONTEXT_TAKEOVER: u8 = 1;
const SEEN_CLIENT_NO_CONTEXT_TAKEOVER: u8 = 2;
const SEEN_SERVER_MAX_WINDOW_BITS: u8 = 4;
const SEEN_CLIENT_MAX_WINDOW_BITS: u8 = 8;

impl Offer {
    /// Takes one parameter in (RFC 7692 §7: an unknown one, a repeated one
    /// or an invalid value declines the offer).
    fn param(&mut self, name: &[u8], value: Option<Value<'_>>) {
        if self.declined {
            return;
        }
        let bit = match name {
            b"server_no_context_takeover" => SEEN_SERVER_NO_CONTEXT_TAKEOVER,
            b"client_no_context_takeover" => SEEN_CLIENT_NO_CONTEXT_TAKEOVER,
            b"server_max_window_bits" => SEEN_SERVER_MAX_WINDOW_BITS,
            b"client_max_window_bits" => SEEN_CLIENT_MAX_WINDOW_BITS,
            _ => {
                self.declined = true;
                return;
            }
        };
        if self.seen & bit != 0 {
            self.declined = true;
            return;
        }
        self.seen |= bit;
        let valid = match bit {
            // Answered with `server_no_context_takeover` in any case.
            SEEN_SERVER_NO_CONTEXT_TAKEOVER => value.is_none(),
            SEEN_CLIENT_NO_CONTEXT_TAKEOVER => {
                self.client_no_context_takeover = true;
                value.is_none()
            }
            SEEN_SERVER_MAX_WINDOW_BITS => {
                self.server_max_window_bits = value.and_then(Value::window_bits);
                self.server_max_window_bits.is_some()
            }
            // The client's own window: the 15-bit inflater takes any, so
            // only its validity matters.
            _ => value.is_none_or(|v| v.window_bits().is_some()),
        };
        if !valid {
            self.declined = true;
        }
    }

    /// What the server answers to this offer, or `None` to decline it.
    fn accept(&self, policy: &DeflatePolicy) -> Option<Agreement> {
        if self.declined {
            return None;
        }
        let ceiling = policy
            .server_max_window_bits
            .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        let server_max_window_bits = match self.server_max_window_bits {
            // Below what zlib can compress with: not supported, declined
            // (RFC 7692 §7.1.2.1).
            Some(offered) if offered < MIN_WINDOW_BITS => return None,
            Some(offered) => offered.min(ceiling),
            None => ceiling,
        };
        Some(Agreement {
            params: DeflateParams {
                server_max_window_bits,
                client_no_context_takeover: policy.client_no_context_takeover
                    || self.client_no_context_takeover,
            },
            announce_window: self.server_max_window_bits.is_some()
                || server_max_window_bits < MAX_WINDOW_BITS,
        })
    }
}

/// An accepted offer, before its response is written.
#[derive(Debug, Clone, Copy)]
struct Agreement {
    params: DeflateParams,
    /// Answer `server_max_window_bits` (the offer had it, or the window is
    /// below 15).
    announce_window: bool,
}

impl Agreement {
    fn negotiated(self) -> Negotiated {
        let mut response = String::with_capacity(104);
        response.push_str(EXTENSION_NAME);
        response.push_str("; server_no_context_takeover");
        if self.params.client_no_context_takeover {
            response.push_str("; client_no_context_takeover");
        }
        if self.announce_window {
            use fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(
                response,
                "; server_max_window_bits={}",
                self.params.server_max_window_bits
            );
        }
        Negotiated {
            params: self.params,
            response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default: 15-bit window, `client_no_context_takeover` asked for.
    const ASK: DeflatePolicy = DeflatePolicy {
        server_max_window_bits: 15,
        client_no_context_takeover: true,
    };
    /// A 12-bit window.
    const W12: DeflatePolicy = DeflatePolicy {
        server_max_window_bits: 12,
        client_no_context_takeover: true,
    };
    /// `client_no_context_takeover` not asked for.
    const KEEP: DeflatePolicy = DeflatePolicy {
        server_max_window_bits: 15,
        client_no_context_takeover: false,
    };

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    const SERVER_ONLY: &str = "permessage-deflate; server_no_context_takeover";

    /// `(window, client_no_context_takeover, response)`, or `None`.
    type Expected = Option<(u8, bool, String)>;

    fn yes(bits: u8, cnct: bool, response: &str) -> Expected {
        Some((bits, cnct, response.to_string()))
    }

    fn with_bits(base: &str, bits: u8) -> String {
        format!("{base}; server_max_window_bits={bits}")
    }

    fn run(headers: &[&[u8]], policy: &DeflatePolicy) -> Expected {
        negotiate(headers.iter().copied(), policy).map(|n| {
            (
                n.params.server_max_window_bits,
                n.params.client_no_context_takeover,
                n.response,
            )
        })
    }

    /// Runs a table of single-header cases, naming the failing one.
    fn check(table: &[(&[u8], DeflatePolicy, Expected)]) {
        for (header, policy, expected) in table {
            let got = run(&[header], policy);
            assert_eq!(
                &got,
                expected,
                "header {:?}, policy {policy:?}",
                String::from_utf8_lossy(header)
            );
            // The lenient and strict readings agree on a well-formed header.
            if let Ok(strict) = negotiate_strict([*header], policy) {
                let strict = strict.map(|n| {
                    (
                        n.params.server_max_window_bits,
                        n.params.client_no_context_takeover,
                        n.response,
                    )
                });
                assert_eq!(&strict, expected, "strict, header {header:?}");
            }
        }
    }

    #[test]
    fn what_browsers_and_libraries_offer() {
        // Chrome, Python websockets (its default client offer), Node ws.
        let default = b"permessage-deflate; client_max_window_bits";
        check(&[
            (default, ASK, yes(15, true, BOTH)),
            (default, W12, yes(12, true, &with_bits(BOTH, 12))),
            (default, KEEP, yes(15, false, SERVER_ONLY)),
            // A bare offer.
            (b"permessage-deflate", ASK, yes(15, true, BOTH)),
            (
                b"permessage-deflate",
                W12,
                yes(12, true, &with_bits(BOTH, 12)),
            ),
            (b"permessage-deflate", KEEP, yes(15, false, SERVER_ONLY)),
        ]);
    }

    /// The offers kosoku (Autobahn TestSuite) sends: 12.* use 13.1's, and
    /// its offers always carry `client_no_context_takeover;
    /// client_max_window_bits` (the client accepts both), then what it
    /// requests of the server.
    #[test]
    fn autobahn_12_and_13_offers() {
        const BASE: &str = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
        let offer = |rest: &str| format!("{BASE}{rest}");
        let cases: [(String, DeflatePolicy, Expected); 12] = [
            // 12.* and 13.1: requestNoContextTakeover False, requestMaxWindowBits 0.
            (offer(""), ASK, yes(15, true, BOTH)),
            // The client offered client_no_context_takeover: it is taken up
            // even when the policy does not ask for it.
            (offer(""), KEEP, yes(15, true, BOTH)),
            // 13.2: (True, 0).
            (
                offer("; server_no_context_takeover"),
                ASK,
                yes(15, true, BOTH),
            ),
            // 13.3: (False, 9).
            (
                offer("; server_max_window_bits=9"),
                ASK,
                yes(9, true, &with_bits(BOTH, 9)),
            ),
            (
                offer("; server_max_window_bits=9"),
                W12,
                yes(9, true, &with_bits(BOTH, 9)),
            ),
            // 13.4: (False, 15): answered with the value, as accepting it requires.
            (
                offer("; server_max_window_bits=15"),
                ASK,
                yes(15, true, &with_bits(BOTH, 15)),
            ),
            (
                offer("; server_max_window_bits=15"),
                W12,
                yes(12, true, &with_bits(BOTH, 12)),
            ),
            // 13.5: (True, 9).
            (
                offer("; server_no_context_takeover; server_max_window_bits=9"),
                ASK,
                yes(9, true, &with_bits(BOTH, 9)),
            ),
            // 13.6: (True, 15).
            (
                offer("; server_no_context_takeover; server_max_window_bits=15"),
                ASK,
                yes(15, true, &with_bits(BOTH, 15)),
            ),
            (
                offer("; server_no_context_takeover; server_max_window_bits=15"),
                W12,
                yes(12, true, &with_bits(BOTH, 12)),
            ),
            // 13.7: [(True, 9), (True, 0), (False, 0)] in one header: the first.
            (
                format!(
                    "{BASE}; server_no_context_takeover; server_max_window_bits=9, \
                     {BASE}; server_no_context_takeover, {BASE}"
                ),
                ASK,
                yes(9, true, &with_bits(BOTH, 9)),
            ),
            (
                format!(
                    "{BASE}; server_no_context_takeover; server_max_window_bits=9, \
                     {BASE}; server_no_context_takeover, {BASE}"
                ),
                W12,
                yes(9, true, &with_bits(BOTH, 9)),
            ),
        ];
        let table: Vec<(&[u8], DeflatePolicy, Expected)> = cases
            .iter()
            .map(|(h, p, e)| (h.as_bytes(), *p, e.clone()))
            .collect();
        check(&table);
    }

    #[test]
    fn server_max_window_bits() {
        let both9 = with_bits(BOTH, 9);
        let both12 = with_bits(BOTH, 12);
        let both15 = with_bits(BOTH, 15);
        check(&[
            // 8 cannot be honoured (zlib): declined, and the next offer taken.
            (b"permessage-deflate; server_max_window_bits=8", ASK, None),
            (
                b"permessage-deflate; server_max_window_bits=8, permessage-deflate",
                ASK,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
                ASK,
                yes(9, true, &both9),
            ),
            (b"permessage-deflate; server_max_window_bits=9", ASK, yes(9, true, &both9)),
            (b"permessage-deflate; server_max_window_bits=12", ASK, yes(12, true, &both12)),
            (b"permessage-deflate; server_max_window_bits=15", ASK, yes(15, true, &both15)),
            // The smaller of the offer and the policy.
            (b"permessage-deflate; server_max_window_bits=13", W12, yes(12, true, &both12)),
            (b"permessage-deflate; server_max_window_bits=10", W12, yes(10, true, &with_bits(BOTH, 10))),
            // Invalid values decline the offer.
            (b"permessage-deflate; server_max_window_bits=16", ASK, None),
            (b"permessage-deflate; server_max_window_bits=7", ASK, None),
            (b"permessage-deflate; server_max_window_bits=0", ASK, None),
            (b"permessage-deflate; server_max_window_bits=09", ASK, None),
            (b"permessage-deflate; server_max_window_bits=015", ASK, None),
            (b"permessage-deflate; server_max_window_bits=100", ASK, None),
            (b"permessage-deflate; server_max_window_bits=255", ASK, None),
            (b"permessage-deflate; server_max_window_bits=-9", ASK, None),
            (b"permessage-deflate; server_max_window_bits=+9", ASK, None),
            (b"permessage-deflate; server_max_window_bits=1e1", ASK, None),
            (b"permessage-deflate; server_max_window_bits=99999999999999999999", ASK, None),
            // It needs a value.
            (b"permessage-deflate; server_max_window_bits", ASK, None),
            (
                b"permessage-deflate; server_max_window_bits, permessage-deflate",
                ASK,
                yes(15, true, BOTH),
            ),
        ]);
    }

    #[test]
    fn client_max_window_bits_is_validated_and_never_answered() {
        check(&[
            (
                b"permessage-deflate; client_max_window_bits",
                ASK,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; client_max_window_bits=8",
                ASK,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; client_max_window_bits=10",
                ASK,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; client_max_window_bits=15",
                W12,
                yes(12, true, &with_bits(BOTH, 12)),
            ),
            (b"permessage-deflate; client_max_window_bits=7", ASK, None),
            (b"permessage-deflate; client_max_window_bits=16", ASK, None),
            (b"permessage-deflate; client_max_window_bits=010", ASK, None),
            (b"permessage-deflate; client_max_window_bits=ten", ASK, None),
        ]);
    }

    #[test]
    fn no_context_takeover_parameters() {
        check(&[
            // Offered or not, the server says it resets its context.
            (
                b"permessage-deflate; server_no_context_takeover",
                ASK,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; server_no_context_takeover",
                KEEP,
                yes(15, false, SERVER_ONLY),
            ),
            // The client's hint is taken up.
            (
                b"permessage-deflate; client_no_context_takeover",
                KEEP,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; client_no_context_takeover",
                ASK,
                yes(15, true, BOTH),
            ),
            // They take no value.
            (
                b"permessage-deflate; server_no_context_takeover=1",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_no_context_takeover=true",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_no_context_takeover=\"x\"",
                ASK,
                None,
            ),
        ]);
    }

    #[test]
    fn unknown_and_duplicate_parameters_decline_the_offer() {
        check(&[
            (b"permessage-deflate; foo", ASK, None),
            (b"permessage-deflate; foo=1", ASK, None),
            (b"permessage-deflate; client_max_window_bits; x-extra", ASK, None),
            (b"permessage-deflate; foo, permessage-deflate", ASK, yes(15, true, BOTH)),
            // Names are case-sensitive: a differently cased one is unknown.
            (b"permessage-deflate; Client_Max_Window_Bits", ASK, None),
            (b"permessage-deflate; SERVER_NO_CONTEXT_TAKEOVER", ASK, None),
            // Repeats, with or without the same value.
            (b"permessage-deflate; client_max_window_bits; client_max_window_bits", ASK, None),
            (b"permessage-deflate; server_no_context_takeover; server_no_context_takeover", ASK, None),
            (b"permessage-deflate; client_no_context_takeover; client_no_context_takeover", KEEP, None),
            (b"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", ASK, None),
            (b"permessage-deflate; server_max_window_bits=10; server_max_window_bits=12", ASK, None),
            (b"permessage-deflate; client_max_window_bits=9; client_max_window_bits", ASK, None),
            (
                b"permessage-deflate; client_max_window_bits; client_max_window_bits, permessage-deflate; server_max_window_bits=11",
                ASK,
                yes(11, true, &with_bits(BOTH, 11)),
            ),
            // A declined offer's client_no_context_takeover does not leak
            // into the next one.
            (
                b"permessage-deflate; client_no_context_takeover; foo, permessage-deflate",
                KEEP,
                yes(15, false, SERVER_ONLY),
            ),
        ]);
    }

    #[test]
    fn quoted_values() {
        let both10 = with_bits(BOTH, 10);
        let both12 = with_bits(BOTH, 12);
        check(&[
            (
                b"permessage-deflate; client_max_window_bits=\"10\"",
                ASK,
                yes(15, true, BOTH),
            ),
            (
                b"permessage-deflate; server_max_window_bits=\"12\"",
                ASK,
                yes(12, true, &both12),
            ),
            // Backslash escapes are unescaped first.
            (
                b"permessage-deflate; server_max_window_bits=\"1\\2\"",
                ASK,
                yes(12, true, &both12),
            ),
            (
                b"permessage-deflate; server_max_window_bits=\"\\1\\0\"",
                ASK,
                yes(10, true, &both10),
            ),
            // Well-formed, but invalid values: declined, the next offer taken.
            (
                b"permessage-deflate; server_max_window_bits=\"09\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; server_max_window_bits=\"16\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"x\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; server_max_window_bits=\"8\", permessage-deflate",
                ASK,
                yes(15, true, BOTH),
            ),
            // Not a token once unescaped, or not a quoted-string: the whole
            // header is malformed, its valid offers included.
            (
                b"permessage-deflate; server_max_window_bits=\"1 2\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; server_max_window_bits=\" 12\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"10",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"10\\\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"1\\\\0\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"1\\",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=\"10\"x",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; client_max_window_bits=1\"0\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate, permessage-deflate; x=\"a,b\"",
                ASK,
                None,
            ),
            (
                b"permessage-deflate; x=\"a b\", permessage-deflate",
                ASK,
                None,
            ),
            // Quoted names are not a thing.
            (b"\"permessage-deflate\"", ASK, None),
            (b"permessage-deflate; \"client_max_window_bits\"", ASK, None),
        ]);
    }

    #[test]
    fn whitespace_and_empty_elements() {
        let both10 = with_bits(BOTH, 10);
        check(&[
            (
                b"permessage-deflate;server_max_window_bits=10",
                ASK,
                yes(10, true, &both10),
            ),
            (
                b"  permessage-deflate ; server_max_window_bits = 10  ",
                ASK,
                yes(10, true, &both10),
            ),
            (
                b"\tpermessage-deflate\t;\tserver_max_window_bits\t=\t10\t",
                ASK,
                yes(10, true, &both10),
            ),
            (
                b"permessage-deflate ;client_max_window_bits ; server_max_window_bits= \"10\"",
                ASK,
                yes(10, true, &both10),
            ),
            (b", ,permessage-deflate,", ASK, yes(15, true, BOTH)),
            (b"x,,  ,permessage-deflate , ,", ASK, yes(15, true, BOTH)),
            (b"foo,permessage-deflate", ASK, yes(15, true, BOTH)),
            // Whitespace inside a token splits it: malformed.
            (b"permessage- deflate", ASK, None),
            (b"permessage-deflate; server_max_window_bits=1 0", ASK, None),
            // Other whitespace is not OWS.
            (b"permessage-deflate;\r\n client_max_window_bits", ASK, None),
            (b"permessage-deflate\n", ASK, None),
            (b"permessage-deflate;\x0bclient_max_window_bits", ASK, None),
            (b"\xc2\xa0permessage-deflate", ASK, None),
        ]);
    }

    #[test]
    fn other_extensions_around_it() {
        let both10 = with_bits(BOTH, 10);
        check(&[
            (b"x-webkit-deflate-frame, permessage-deflate", ASK, yes(15, true, BOTH)),
            (b"permessage-deflate, x-webkit-deflate-frame", ASK, yes(15, true, BOTH)),
            (b"x-webkit-deflate-frame; max_window_bits=10", ASK, None),
            (b"deflate-frame, perframe-deflate", ASK, None),
            (
                b"foo; bar=\"baz\"; q=1; flag, permessage-deflate; server_max_window_bits=10, mux; max-channels=4",
                ASK,
                yes(10, true, &both10),
            ),
            // Names are compared exactly.
            (b"PerMessage-Deflate", ASK, None),
            (b"PERMESSAGE-DEFLATE; client_max_window_bits", ASK, None),
            (b"Permessage-deflate, permessage-deflate; server_max_window_bits=10", ASK, yes(10, true, &both10)),
            (b"permessage-deflatex", ASK, None),
            (b"x-permessage-deflate", ASK, None),
        ]);
    }

    #[test]
    fn offers_across_several_headers() {
        let both11 = with_bits(BOTH, 11);
        let cases: &[(&[&[u8]], Expected)] = &[
            (&[], None),
            (
                &[b"x-foo", b"permessage-deflate; server_max_window_bits=11"],
                yes(11, true, &both11),
            ),
            (
                &[
                    b"permessage-deflate; server_max_window_bits=8",
                    b"permessage-deflate",
                ],
                yes(15, true, BOTH),
            ),
            // The first acceptable offer, in header order.
            (
                &[
                    b"permessage-deflate; server_max_window_bits=11",
                    b"permessage-deflate",
                ],
                yes(11, true, &both11),
            ),
            (
                &[
                    b"foo",
                    b"bar",
                    b"permessage-deflate; foo",
                    b"permessage-deflate; server_max_window_bits=11",
                ],
                yes(11, true, &both11),
            ),
            // A malformed header is skipped whole; the others still count.
            (
                &[b"permessage-deflate; a=\"b c\"", b"permessage-deflate"],
                yes(15, true, BOTH),
            ),
            (
                &[
                    b"permessage-deflate; server_max_window_bits=11, ;",
                    b"permessage-deflate",
                ],
                yes(15, true, BOTH),
            ),
            (&[b"", b"permessage-deflate"], yes(15, true, BOTH)),
            (&[b"permessage-deflate, \xff"], None),
            // A malformed header after the accepted one does not matter here.
            (&[b"permessage-deflate", b"\"\"\""], yes(15, true, BOTH)),
        ];
        for (headers, expected) in cases {
            assert_eq!(&run(headers, &ASK), expected, "headers {headers:?}");
        }
    }

    #[test]
    fn malformed_headers_offer_nothing() {
        let headers: &[&[u8]] = &[
            b"",
            b" ",
            b",",
            b" , ,\t",
            b";",
            b"=",
            b"\"",
            b"permessage-deflate;",
            b"permessage-deflate; ",
            b"permessage-deflate;;client_max_window_bits",
            b"permessage-deflate; =10",
            b"permessage-deflate; server_max_window_bits=",
            b"permessage-deflate; server_max_window_bits= ",
            b"permessage-deflate; server_max_window_bits==10",
            b"permessage-deflate; client_max_window_bits=10=11",
            b"permessage-deflate client_max_window_bits",
            b"permessage-deflate; client_max_window_bits,;",
            b"permessage-deflate/1",
            b"permessage-deflate; a=(b)",
            b"permessage-deflate; a=b/c",
            b"permessage-deflate: client_max_window_bits",
            b"permessage-deflate\0",
            b"\0permessage-deflate",
            b"permessage-deflate; \xff",
            b"\xffpermessage-deflate",
            b"permessage-deflate\xe2\x80\x8b",
            b"permessage-d\xc3\xa9flate",
            b"\x80\x81\x82\x83",
            b"{}[]<>@:?/\\",
        ];
        for header in headers {
            assert_eq!(run(&[header], &ASK), None, "header {header:?}");
            assert_eq!(run(&[header], &KEEP), None, "header {header:?}");
            assert!(
                negotiate_strict([*header], &ASK).is_err(),
                "strict, header {header:?}"
            );
        }
    }

    #[test]
    fn strict_reports_which_header_and_where() {
        // The window agreed, or where the grammar broke: (header, offset).
        type Outcome = Result<Option<u8>, (usize, usize)>;
        let cases: &[(&[&[u8]], Outcome)] = &[
            (&[], Ok(None)),
            (&[b"foo"], Ok(None)),
            (
                &[b"permessage-deflate; server_max_window_bits=10"],
                Ok(Some(10)),
            ),
            (&[b"permessage-deflate; server_max_window_bits=8"], Ok(None)),
            (&[b"x, permessage-deflate; foo"], Ok(None)),
            (&[b""], Err((0, 0))),
            (&[b"  ,  "], Err((0, 5))),
            (&[b"foo", b"bar;"], Err((1, 4))),
            (&[b"permessage-deflate; a=\"b c\""], Err((0, 24))),
            (&[b"permessage-deflate; a=\"bc"], Err((0, 25))),
            (&[b"permessage-deflate x"], Err((0, 19))),
            (
                &[b"permessage-deflate; server_max_window_bits="],
                Err((0, 43)),
            ),
            (&[b"\xff"], Err((0, 0))),
            // Every header is checked, even after an accepted offer.
            (&[b"permessage-deflate", b"foo, ;"], Err((1, 5))),
            (&[b"permessage-deflate, foo=1"], Err((0, 23))),
            // Several well-formed headers: the first acceptable offer.
            (
                &[
                    b"permessage-deflate; server_max_window_bits=8",
                    b"x",
                    b"permessage-deflate; server_max_window_bits=9",
                ],
                Ok(Some(9)),
            ),
        ];
        for (headers, expected) in cases {
            let got = negotiate_strict(headers.iter().copied(), &ASK)
                .map(|n| n.map(|n| n.params.server_max_window_bits))
                .map_err(|e| (e.header, e.offset));
            assert_eq!(&got, expected, "headers {headers:?}");
        }
        let err = MalformedExtensions {
            header: 1,
            offset: 4,
        };
        assert_eq!(
            err.to_string(),
            "malformed Sec-WebSocket-Extensions header #1 at byte 4"
        );
    }

    #[test]
    fn policy_out_of_range_is_clamped() {
        let huge = DeflatePolicy {
            server_max_window_bits: 200,
            client_no_context_takeover: true,
        };
        let tiny = DeflatePolicy {
            server_max_window_bits: 0,
            client_no_context_takeover: true,
        };
        let both9 = with_bits(BOTH, 9);
        check(&[
            (b"permessage-deflate", huge, yes(15, true, BOTH)),
            (
                b"permessage-deflate; server_max_window_bits=10",
                huge,
                yes(10, true, &with_bits(BOTH, 10)),
            ),
            (b"permessage-deflate", tiny, yes(9, true, &both9)),
            (
                b"permessage-deflate; server_max_window_bits=12",
                tiny,
                yes(9, true, &both9),
            ),
        ]);
    }

    #[test]
    fn at_most_max_extensions_elements_are_read() {
        let offer = "permessage-deflate; server_max_window_bits=10";
        // Elements before the offer: the offer is the last one read.
        let within = format!("{}{offer}", "x, ".repeat(MAX_EXTENSIONS - 1));
        assert!(run(&[within.as_bytes()], &ASK).is_some());
        let beyond = format!("{}{offer}", "x, ".repeat(MAX_EXTENSIONS));
        assert_eq!(run(&[beyond.as_bytes()], &ASK), None);
        // Empty elements are not counted.
        let empties = format!("{}{offer}", ", ".repeat(10 * MAX_EXTENSIONS));
        assert!(run(&[empties.as_bytes()], &ASK).is_some());
        // Across headers: one budget.
        let mut headers: Vec<&[u8]> = vec![b"a, b"; MAX_EXTENSIONS / 2];
        headers.push(offer.as_bytes());
        assert_eq!(run(&headers, &ASK), None);
        headers.remove(0);
        assert!(run(&headers, &ASK).is_some());
        // Strict: whatever is past the limit is not read, so not judged.
        let garbage_after = format!("{}\"\"\"", "x, ".repeat(MAX_EXTENSIONS));
        assert_eq!(negotiate_strict([garbage_after.as_bytes()], &ASK), Ok(None));
    }

    /// Inputs far beyond any real request finish at once: the work is
    /// linear (a quadratic scan would not finish here).
    #[test]
    fn huge_inputs_are_cheap() {
        const MIB: usize = 1 << 20;
        // One enormous token, then the offer.
        let long_name = format!("{}, permessage-deflate", "x".repeat(MIB));
        assert!(run(&[long_name.as_bytes()], &ASK).is_some());
        // One offer with a million parameters (declined at the first
        // repeat, but read through for the syntax).
        let many_params = format!(
            "permessage-deflate{}",
            "; client_max_window_bits".repeat(MIB / 24)
        );
        assert_eq!(run(&[many_params.as_bytes()], &ASK), None);
        let params_then_offer = format!("{many_params}, permessage-deflate");
        assert!(run(&[params_then_offer.as_bytes()], &ASK).is_some());
        // A huge quoted value, and a huge unterminated one.
        let quoted = format!("x; a=\"{}\", permessage-deflate", "\\b".repeat(MIB / 2));
        assert!(run(&[quoted.as_bytes()], &ASK).is_some());
        let open = format!("permessage-deflate; a=\"{}", "b".repeat(MIB));
        assert_eq!(run(&[open.as_bytes()], &ASK), None);
        // A million commas, and spaces.
        let commas = format!("{}permessage-deflate", ", \t".repeat(MIB / 3));
        assert!(run(&[commas.as_bytes()], &ASK).is_some());
        // Many offers, many headers.
        let offers = "permessage-deflate; foo, ".repeat(MIB / 25);
        assert_eq!(run(&[offers.as_bytes()], &ASK), None);
        let headers: Vec<&[u8]> = vec![b"permessage-deflate; foo"; 100_000];
        assert_eq!(run(&headers, &ASK), None);
        let empty_headers: Vec<&[u8]> = vec![b""; 100_000];
        assert_eq!(run(&empty_headers, &ASK), None);
    }

    /// A small deterministic fuzzer: header values built from grammar
    /// fragments and stray bytes never panic, and what comes out is always
    /// consistent.
    #[test]
    fn random_inputs_hold_the_invariants() {
        const NAMES: &[&[u8]] = &[
            b"permessage-deflate",
            b"permessage-deflate",
            b"permessage-deflate",
            b"x-webkit-deflate-frame",
            b"PerMessage-Deflate",
        ];
        const PARAMS: &[&[u8]] = &[
            b"server_no_context_takeover",
            b"client_no_context_takeover",
            b"server_max_window_bits",
            b"client_max_window_bits",
            b"foo",
        ];
        const VALUES: &[&[u8]] = &[
            b"8",
            b"9",
            b"10",
            b"12",
            b"15",
            b"16",
            b"09",
            b"0",
            b"\"10\"",
            b"\"1\\2\"",
            b"\"\"",
            b"\"a b\"",
            b"x",
        ];
        const OWS: &[&[u8]] = &[b"", b"", b" ", b"\t", b"  "];
        const STRAY: &[&[u8]] = &[
            b"=",
            b";",
            b",",
            b"\"",
            b"\\",
            b"\xff",
            b"\r\n",
            b"\0",
            b" ",
            b"permessage-deflate",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let policies = [ASK, W12, KEEP];
        for _ in 0..30_000 {
            // A list of offers, mostly well-formed...
            let mut header = Vec::new();
            for e in 0..=next(4) {
                if e > 0 {
                    header.extend_from_slice(OWS[next(OWS.len())]);
                    header.push(b',');
                }
                header.extend_from_slice(OWS[next(OWS.len())]);
                header.extend_from_slice(NAMES[next(NAMES.len())]);
                for _ in 0..next(4) {
                    header.extend_from_slice(OWS[next(OWS.len())]);
                    header.push(b';');
                    header.extend_from_slice(OWS[next(OWS.len())]);
                    header.extend_from_slice(PARAMS[next(PARAMS.len())]);
                    if next(2) == 0 {
                        header.extend_from_slice(OWS[next(OWS.len())]);
                        header.push(b'=');
                        header.extend_from_slice(OWS[next(OWS.len())]);
                        header.extend_from_slice(VALUES[next(VALUES.len())]);
                    }
                }
            }
            // ...then, often, damaged: a stray piece spliced in.
            if next(3) == 0 {
                let at = next(header.len() + 1);
                let stray = STRAY[next(STRAY.len())];
                header.splice(at..at, stray.iter().copied());
            }
            let policy = policies[next(3)];
            let lenient = negotiate([&header[..]], &policy);
            if let Ok(strict) = negotiate_strict([&header[..]], &policy) {
                assert_eq!(strict, lenient, "header {header:?}");
            }
            let Some(n) = lenient else { continue };
            let bits = n.params.server_max_window_bits;
            assert!((MIN_WINDOW_BITS..=policy.server_max_window_bits).contains(&bits));
            assert!(n.response.starts_with(SERVER_ONLY), "{}", n.response);
            assert_eq!(
                n.response.contains("client_no_context_takeover"),
                n.params.client_no_context_takeover
            );
            assert!(policy.client_no_context_takeover <= n.params.client_no_context_takeover);
            assert!(!n.response.contains("client_max_window_bits"));
            if let Some((_, announced)) = n.response.split_once("server_max_window_bits=") {
                assert_eq!(announced, bits.to_string());
            }
            // The response is itself a well-formed, acceptable offer with
            // the same outcome.
            let again = negotiate_strict([n.response.as_bytes()], &policy);
            assert_eq!(again.map(|a| a.map(|a| a.params)), Ok(Some(n.params)));
        }
    }
}
