//! A small, strict JSON (RFC 8259) parser and writer for the playground's
//! client frames; the runtime dependencies are fixed, so no serde.
//!
//! Strict means: the whole input must be UTF-8 and one value, with nothing
//! but JSON whitespace (space, tab, LF, CR) around it; no comments, no
//! trailing commas, no single quotes, no leading `+`, leading zeros, `NaN`
//! or bare `.5`; no raw control characters in strings; every `\u` escape
//! has four hex digits and surrogates come in valid pairs; and an object
//! may not repeat a key (two parsers that pick different duplicates are a
//! classic way to smuggle a field past a check).
//!
//! Bounded means: arrays and objects nest at most [`MAX_DEPTH`] deep, so the
//! recursive descent cannot overflow the stack whatever the input; the work
//! is linear in the input (duplicate keys are found by sorting, not by
//! comparing every pair); and the tree takes memory proportional to the
//! input, so the caller caps the input's length (the playground parses
//! frames of at most 64 KiB). Parsing never panics: every byte is read with
//! a bounds check and every failure is an [`Error`] with the byte offset.
//!
//! Numbers keep their source text ([`Value::Number`]): nothing here does
//! arithmetic, and writing the text back loses no precision.

use std::fmt;
use std::fmt::Write;

/// The deepest nesting of arrays and objects accepted: `[[1]]` is depth 2.
pub const MAX_DEPTH: usize = 32;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, as its (validated) source text, e.g. `-1.5e3`.
    Number(String),
    /// A string, escapes decoded.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object's members in source order (keys are unique).
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object; `None` for a missing key or a value
    /// that is not an object. (Tests only: the playground moves members
    /// out of the object instead of cloning them.)
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one. (Tests only, like [`Value::get`].)
    #[cfg(test)]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value's JSON kind, for messages: `"null"`, `"boolean"`,
    /// `"number"`, `"string"`, `"array"` or `"object"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Appends the value as compact JSON (no whitespace) to `out`.
    pub fn write_to(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(text) => out.push_str(text),
            Value::String(s) => write_str(out, s),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_to(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write_to(out);
                }
                out.push('}');
            }
        }
    }
}

/// Encodes `s` as a JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_str(&mut out, s);
    out
}

/// Appends `s` to `out` as a JSON string literal: the one escaping routine
/// for every frame the playground writes.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // U+2028 and U+2029 are valid in JSON but end a line in older
            // JavaScript, so frames pasted into a script stay intact.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why an input is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input ended inside a value (or was empty).
    UnexpectedEnd,
    /// A byte that cannot start or continue what was being read.
    Unexpected {
        /// The offending byte.
        found: u8,
        /// What the grammar allowed there.
        expected: &'static str,
    },
    /// The input is not UTF-8.
    InvalidUtf8,
    /// A control character (below U+0020) inside a string.
    ControlCharacter,
    /// A backslash not followed by one of `"\/bfnrtu`.
    InvalidEscape,
    /// `\u` not followed by four hex digits.
    InvalidUnicodeEscape,
    /// A `\u` surrogate without its other half.
    LoneSurrogate,
    /// A number that breaks the grammar (`01`, `1.`, `-`, `1e`).
    InvalidNumber,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A key that appears twice in one object.
    DuplicateKey,
    /// Something other than whitespace after the value.
    TrailingCharacters,
}

/// A parse failure: what went wrong, and at which byte of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// The offset of the byte where the input stopped being acceptable.
    pub offset: usize,
    /// What was wrong there.
    pub kind: ErrorKind,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: ", self.offset)?;
        match self.kind {
            ErrorKind::UnexpectedEnd => f.write_str("unexpected end of input"),
            ErrorKind::Unexpected { found, expected } => {
                if found.is_ascii_graphic() {
                    write!(f, "expected {expected}, found '{}'", found as char)
                } else {
                    write!(f, "expected {expected}, found byte 0x{found:02x}")
                }
            }
            ErrorKind::InvalidUtf8 => f.write_str("not UTF-8"),
            ErrorKind::ControlCharacter => f.write_str("control character in a string (escape it)"),
            ErrorKind::InvalidEscape => f.write_str("invalid escape"),
            ErrorKind::InvalidUnicodeEscape => f.write_str("\\u needs four hex digits"),
            ErrorKind::LoneSurrogate => f.write_str("unpaired surrogate in a \\u escape"),
            ErrorKind::InvalidNumber => f.write_str("invalid number"),
            ErrorKind::TooDeep => write!(f, "nested deeper than {MAX_DEPTH}"),
            ErrorKind::DuplicateKey => f.write_str("duplicate key"),
            ErrorKind::TrailingCharacters => f.write_str("unexpected data after the value"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses `input` as exactly one JSON value.
pub fn parse(input: &[u8]) -> Result<Value, Error> {
    // JSON text is UTF-8 (RFC 8259 section 8.1). Checking it once up front
    // lets string parsing copy raw runs as `&str` without re-validating.
    let text = std::str::from_utf8(input).map_err(|e| Error {
        offset: e.valid_up_to(),
        kind: ErrorKind::InvalidUtf8,
    })?;
    let mut parser = Parser { text, at: 0 };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.at < parser.text.len() {
        return Err(parser.error(ErrorKind::TrailingCharacters));
    }
    Ok(value)
}

/// A cursor over the input. `at` is always on a char boundary: it only
/// moves past ASCII bytes or whole runs ending before an ASCII byte.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error {
            offset: self.at,
            kind,
        }
    }

    /// The error for the current byte when `expected` was wanted.
    fn unexpected(&self, expected: &'static str) -> Error {
        match self.peek() {
            Some(found) => self.error(ErrorKind::Unexpected { found, expected }),
            None => self.error(ErrorKind::UnexpectedEnd),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Consumes `byte` or fails with `expected`.
    fn eat(&mut self, byte: u8, expected: &'static str) -> Result<(), Error> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// One value; `depth` is how many containers enclose it.
    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected("a value")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Value) -> Result<Value, Error> {
        for &want in word.as_bytes() {
            self.eat(want, word)?;
        }
        Ok(value)
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error(ErrorKind::TooDeep));
        }
        self.at += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error(ErrorKind::TooDeep));
        }
        self.at += 1; // '{'
        let mut members = Vec::new();
        // Where each key started, for the duplicate-key error.
        let mut key_offsets = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a string key"));
            }
            key_offsets.push(self.at);
            let key = self.string()?;
            self.skip_ws();
            self.eat(b':', "':'")?;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
        if let Some(offset) = first_duplicate(&members, &key_offsets) {
            return Err(Error {
                offset,
                kind: ErrorKind::DuplicateKey,
            });
        }
        Ok(Value::Object(members))
    }

    /// A string literal starting at the opening quote; escapes decoded.
    fn string(&mut self) -> Result<String, Error> {
        self.at += 1; // '"'
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control
            // character in one go.
            let rest = &self.text.as_bytes()[self.at..];
            let run = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(rest.len());
            // The run ends at an ASCII byte or the end, so both ends are
            // char boundaries; `get` keeps that a checked assumption.
            if let Some(chunk) = self.text.get(self.at..self.at + run) {
                out.push_str(chunk);
            }
            self.at += run;
            match self.peek() {
                None => return Err(self.error(ErrorKind::UnexpectedEnd)),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => return Err(self.error(ErrorKind::ControlCharacter)),
            }
        }
    }

    /// One escape sequence starting at the backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), Error> {
        let start = self.at;
        self.at += 1; // '\\'
        let decoded = match self.peek() {
            None => return Err(self.error(ErrorKind::UnexpectedEnd)),
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.at += 1;
                let unit = self.hex4()?;
                let c = match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate: the low half must follow as
                        // another \u escape.
                        let low_at = self.at;
                        let low = if self.text.as_bytes().get(self.at..self.at + 2)
                            == Some(b"\\u".as_slice())
                        {
                            self.at += 2;
                            Some(self.hex4()?)
                        } else {
                            None
                        };
                        let low = match low {
                            Some(low @ 0xDC00..=0xDFFF) => low,
                            // Another escape, but not a low half.
                            Some(_) => {
                                return Err(Error {
                                    offset: low_at,
                                    kind: ErrorKind::LoneSurrogate,
                                });
                            }
                            None => {
                                return Err(Error {
                                    offset: start,
                                    kind: ErrorKind::LoneSurrogate,
                                });
                            }
                        };
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code)
                    }
                    0xDC00..=0xDFFF => None,
                    _ => char::from_u32(unit),
                };
                // from_u32 fails only on a surrogate, i.e. a lone low half.
                let c = c.ok_or(Error {
                    offset: start,
                    kind: ErrorKind::LoneSurrogate,
                })?;
                out.push(c);
                return Ok(());
            }
            Some(_) => return Err(self.error(ErrorKind::InvalidEscape)),
        };
        self.at += 1;
        out.push(decoded);
        Ok(())
    }

    /// Four hex digits (either case) as a UTF-16 code unit.
    fn hex4(&mut self) -> Result<u32, Error> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                None => return Err(self.error(ErrorKind::UnexpectedEnd)),
                Some(b) => (b as char)
                    .to_digit(16)
                    .ok_or_else(|| self.error(ErrorKind::InvalidUnicodeEscape))?,
            };
            unit = unit * 16 + digit;
            self.at += 1;
        }
        Ok(unit)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Value, Error> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error(ErrorKind::InvalidNumber)); // a leading zero
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            None => return Err(self.error(ErrorKind::UnexpectedEnd)),
            Some(_) => return Err(self.error(ErrorKind::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.required_digits()?;
        }
        Ok(Value::Number(self.text[start..self.at].to_string()))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Error> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            None => Err(self.error(ErrorKind::UnexpectedEnd)),
            Some(_) => Err(self.error(ErrorKind::InvalidNumber)),
        }
    }
}

/// The offset of the later copy of the first repeated key, if any: sort
/// the indices by key (O(n log n), so a frame with thousands of keys costs
/// no more than its length deserves) and compare neighbours.
fn first_duplicate(members: &[(String, Value)], offsets: &[usize]) -> Option<usize> {
    if members.len() < 2 {
        return None;
    }
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[a].0.cmp(&members[b].0).then(a.cmp(&b)));
    order
        .windows(2)
        .filter(|pair| members[pair[0]].0 == members[pair[1]].0)
        .map(|pair| pair[1])
        .min()
        .and_then(|i| offsets.get(i).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &[u8]) -> Value {
        parse(input).unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(input)))
    }

    fn err(input: &[u8]) -> Error {
        match parse(input) {
            Ok(v) => panic!("{:?} parsed as {v:?}", String::from_utf8_lossy(input)),
            Err(e) => e,
        }
    }

    fn kind(input: &[u8]) -> ErrorKind {
        err(input).kind
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_string())
    }

    fn n(text: &str) -> Value {
        Value::Number(text.to_string())
    }

    #[test]
    fn scalars() {
        assert_eq!(ok(b"null"), Value::Null);
        assert_eq!(ok(b"true"), Value::Bool(true));
        assert_eq!(ok(b" \t\r\nfalse \n"), Value::Bool(false));
        assert_eq!(ok(b"\"hi\""), s("hi"));
        for number in [
            "0", "-0", "7", "-12", "3.25", "0.5", "1e9", "1E+2", "-2.5e-3", "10",
        ] {
            assert_eq!(ok(number.as_bytes()), n(number), "{number}");
        }
    }

    #[test]
    fn containers_keep_order_and_nest() {
        let v = ok(br#" { "type" : "chat", "payload" : [1, {"a": null}, [], {}], "z": true } "#);
        assert_eq!(
            v,
            Value::Object(vec![
                ("type".into(), s("chat")),
                (
                    "payload".into(),
                    Value::Array(vec![
                        n("1"),
                        Value::Object(vec![("a".into(), Value::Null)]),
                        Value::Array(vec![]),
                        Value::Object(vec![]),
                    ])
                ),
                ("z".into(), Value::Bool(true)),
            ])
        );
        assert_eq!(v.get("type").and_then(Value::as_str), Some("chat"));
        assert_eq!(v.get("missing"), None);
        assert_eq!(s("x").get("type"), None);
        assert_eq!(v.get("z").map(Value::kind), Some("boolean"));
    }

    #[test]
    fn every_escape_decodes() {
        assert_eq!(
            ok(br#""\" \\ \/ \b \f \n \r \t""#),
            s("\" \\ / \u{8} \u{c} \n \r \t")
        );
        assert_eq!(ok(br#""\u0041\u00e9\u00E9\u20ac\u0000""#), s("Aéé€\0"));
        // A surrogate pair is one code point outside the BMP.
        assert_eq!(ok(br#""\ud83d\ude00 \uD834\uDD1E""#), s("😀 𝄞"));
        // Raw UTF-8 passes through untouched, escapes and all around it.
        assert_eq!(
            ok("\"héllo 😀\\n\u{2028}\"".as_bytes()),
            s("héllo 😀\n\u{2028}")
        );
    }

    #[test]
    fn bad_escapes_and_surrogates_are_rejected() {
        assert_eq!(kind(br#""\x""#), ErrorKind::InvalidEscape);
        assert_eq!(kind(br#""\'""#), ErrorKind::InvalidEscape);
        assert_eq!(kind(br#""\u12""#), ErrorKind::InvalidUnicodeEscape);
        assert_eq!(kind(br#""\u12g4""#), ErrorKind::InvalidUnicodeEscape);
        assert_eq!(kind(br#""\u+123""#), ErrorKind::InvalidUnicodeEscape);
        // Lone halves, a high half followed by a non-surrogate escape or
        // by another high half, and halves in the wrong order.
        assert_eq!(kind(br#""\ud83d""#), ErrorKind::LoneSurrogate);
        assert_eq!(kind(br#""\ud83dx""#), ErrorKind::LoneSurrogate);
        assert_eq!(kind(br#""\ude00""#), ErrorKind::LoneSurrogate);
        assert_eq!(kind(br#""\ud83d\u0041""#), ErrorKind::LoneSurrogate);
        assert_eq!(kind(br#""\ud83d\ud83d""#), ErrorKind::LoneSurrogate);
        assert_eq!(kind(br#""\ude00\ud83d""#), ErrorKind::LoneSurrogate);
        assert_eq!(kind(br#""\ud83d\n""#), ErrorKind::LoneSurrogate);
        assert_eq!(err(br#"  "ab\ud83d""#).offset, 5);
    }

    #[test]
    fn strings_reject_raw_control_characters_and_bad_utf8() {
        assert_eq!(kind(b"\"a\nb\""), ErrorKind::ControlCharacter);
        assert_eq!(kind(b"\"a\tb\""), ErrorKind::ControlCharacter);
        assert_eq!(kind(b"\"\x00\""), ErrorKind::ControlCharacter);
        // DEL and C1 controls are allowed raw, as RFC 8259 says.
        assert_eq!(ok(b"\"\x7f\""), s("\u{7f}"));
        let e = err(b"\"ab\xff\"");
        assert_eq!((e.kind, e.offset), (ErrorKind::InvalidUtf8, 3));
        assert_eq!(kind(b"\"\xc3\""), ErrorKind::InvalidUtf8); // truncated sequence
        assert_eq!(kind(b"\"\xed\xa0\x80\""), ErrorKind::InvalidUtf8); // UTF-8 surrogate
        assert_eq!(
            kind(b"\xef\xbb\xbf{}"),
            ErrorKind::Unexpected {
                found: 0xef,
                expected: "a value"
            }
        );
    }

    #[test]
    fn numbers_follow_the_grammar() {
        for bad in [
            "01", "-01", "00", "1.", "1.e3", ".5", "-", "-a", "1e", "1e+", "1E-x", "+1",
        ] {
            let e = parse(bad.as_bytes());
            assert!(e.is_err(), "{bad} parsed as {e:?}");
        }
        assert_eq!(kind(b"01"), ErrorKind::InvalidNumber);
        assert_eq!(kind(b"1.x"), ErrorKind::InvalidNumber);
        assert_eq!(kind(b"-"), ErrorKind::UnexpectedEnd);
        assert_eq!(kind(b"1 2"), ErrorKind::TrailingCharacters);
        // Huge numbers are kept as text, not rounded.
        let big = "123456789012345678901234567890e999";
        assert_eq!(ok(big.as_bytes()), n(big));
        for word in [
            "NaN",
            "Infinity",
            "-Infinity",
            "nul",
            "tru",
            "True",
            "nulll",
        ] {
            assert!(parse(word.as_bytes()).is_err(), "{word}");
        }
    }

    #[test]
    fn structural_errors() {
        assert_eq!(kind(b""), ErrorKind::UnexpectedEnd);
        assert_eq!(kind(b"   "), ErrorKind::UnexpectedEnd);
        assert_eq!(
            kind(b"[1,]"),
            ErrorKind::Unexpected {
                found: b']',
                expected: "a value"
            }
        );
        assert_eq!(
            kind(b"{\"a\":1,}"),
            ErrorKind::Unexpected {
                found: b'}',
                expected: "a string key"
            }
        );
        assert_eq!(
            kind(b"{a:1}"),
            ErrorKind::Unexpected {
                found: b'a',
                expected: "a string key"
            }
        );
        assert_eq!(
            kind(b"{'a':1}"),
            ErrorKind::Unexpected {
                found: b'\'',
                expected: "a string key"
            }
        );
        assert_eq!(
            kind(b"{\"a\" 1}"),
            ErrorKind::Unexpected {
                found: b'1',
                expected: "':'"
            }
        );
        assert_eq!(
            kind(b"[1 2]"),
            ErrorKind::Unexpected {
                found: b'2',
                expected: "',' or ']'"
            }
        );
        assert_eq!(
            kind(b"{\"a\":1 \"b\":2}"),
            ErrorKind::Unexpected {
                found: b'"',
                expected: "',' or '}'"
            }
        );
        assert_eq!(kind(b"{} {}"), ErrorKind::TrailingCharacters);
        assert_eq!(kind(b"[] x"), ErrorKind::TrailingCharacters);
        assert_eq!(
            kind(b"/* no */ 1"),
            ErrorKind::Unexpected {
                found: b'/',
                expected: "a value"
            }
        );
        assert_eq!(
            kind(b"[\x0c]"),
            ErrorKind::Unexpected {
                found: 0x0c,
                expected: "a value"
            }
        ); // form feed is not whitespace
        let e = err(b"{\"type\":\"chat\",\"payload\":x}");
        assert_eq!(e.offset, 25);
        assert_eq!(
            e.to_string(),
            "invalid JSON at byte 25: expected a value, found 'x'"
        );
        assert_eq!(
            err(b"[\x01]").to_string(),
            "invalid JSON at byte 1: expected a value, found byte 0x01"
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_the_second_ones_offset() {
        let e = err(br#"{"type":"chat","payload":"a","type":"ping"}"#);
        assert_eq!((e.kind, e.offset), (ErrorKind::DuplicateKey, 29));
        // Keys equal after unescaping are the same key.
        assert_eq!(kind(br#"{"a":1,"\u0061":2}"#), ErrorKind::DuplicateKey);
        // Equal keys in different objects are fine.
        ok(br#"{"a":{"a":1},"b":{"a":2}}"#);
        // Many distinct keys: sorted, not compared pairwise.
        let many: Vec<String> = (0..5000).map(|i| format!("\"k{i}\":{i}")).collect();
        let doc = format!("{{{}}}", many.join(","));
        assert!(matches!(ok(doc.as_bytes()), Value::Object(m) if m.len() == 5000));
        let doc = format!("{{{},\"k4999\":0}}", many.join(","));
        assert_eq!(kind(doc.as_bytes()), ErrorKind::DuplicateKey);
    }

    #[test]
    fn nesting_is_capped_at_max_depth() {
        let arrays = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        ok(arrays(MAX_DEPTH).as_bytes());
        assert_eq!(kind(arrays(MAX_DEPTH + 1).as_bytes()), ErrorKind::TooDeep);
        let objects =
            |depth: usize| format!("{}null{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        ok(objects(MAX_DEPTH).as_bytes());
        assert_eq!(kind(objects(MAX_DEPTH + 1).as_bytes()), ErrorKind::TooDeep);
        // Arrays and objects count alike; the error is at the first
        // container too deep (the 33rd: the `{` of the 16th pair).
        let pairs = |n: usize| format!("{}1{}", "[{\"a\":".repeat(n), "}]".repeat(n));
        ok(pairs(16).as_bytes());
        let e = err(format!("[{}]", pairs(16)).as_bytes());
        assert_eq!((e.kind, e.offset), (ErrorKind::TooDeep, 1 + 15 * 6 + 1));
        // Hostile depth far beyond the stack's reach is just an error.
        assert_eq!(kind(&vec![b'['; 1_000_000]), ErrorKind::TooDeep);
        assert_eq!(kind(&b"{\"a\":".repeat(200_000)), ErrorKind::TooDeep);
    }

    #[test]
    fn every_truncation_of_valid_documents_is_an_error_not_a_panic() {
        let docs: [&[u8]; 4] = [
            br#"{"type":"chat","payload":"h\u00e9 \ud83d\ude00 \"q\""}"#,
            br#"{"type":"ping","payload":{"n":-1.5e+3,"ok":[true,false,null],"s":"x"}}"#,
            "[\"é😀\", 0, {}, []]".as_bytes(),
            b"  {\"a\" : [ 1 , 2 ] }  ",
        ];
        for doc in docs {
            ok(doc);
            for len in 0..doc.len() {
                let prefix = &doc[..len];
                // Some prefixes of a doc with trailing space are whole docs.
                if prefix.trim_ascii_end() == doc.trim_ascii_end() {
                    continue;
                }
                assert!(
                    parse(prefix).is_err(),
                    "prefix {:?} parsed",
                    String::from_utf8_lossy(prefix)
                );
            }
        }
    }

    /// xorshift64: deterministic, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// A random valid document, with random whitespace and escapes.
    fn random_doc(rng: &mut Rng, depth: usize, out: &mut String) {
        const WS: &[&str] = &["", "", " ", "\n", "\t ", "\r\n"];
        const SCALARS: &[&str] = &[
            "null",
            "true",
            "false",
            "0",
            "-0",
            "12",
            "-3.25",
            "1e9",
            "2E-3",
            "\"\"",
            "\"a\"",
            "\"\\u00e9\\ud83d\\ude00\"",
            "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
            "\"é😀\u{2028}\"",
        ];
        out.push_str(rng.pick(WS));
        match if depth >= 6 { 0 } else { rng.below(4) } {
            0 | 1 => out.push_str(rng.pick(SCALARS)),
            2 => {
                out.push('[');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    random_doc(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    // Distinct keys; the escaped one equals "k0".
                    out.push_str(if i == 0 {
                        "\"k\\u0030\""
                    } else {
                        ["", "\"k1\"", "\"k2\"", "\"k3\""][i]
                    });
                    out.push_str(rng.pick(WS));
                    out.push(':');
                    random_doc(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
        out.push_str(rng.pick(WS));
    }

    #[test]
    fn random_documents_round_trip_and_mutations_never_panic() {
        // A cheap deterministic fuzz: valid documents must parse and write
        // back to the same value; each is then cut, overwritten at a
        // random byte (with a hostile byte, a structural one or one from
        // the document) or grown by a token, and whatever that gives must
        // come back as a value or an error, never a panic.
        const BYTES: &[u8] = b"{}[]:,\"\\u0e+-. \x00\x01\x7f\xc3\xff";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut mutated_valid, mut mutated_invalid) = (0, 0);
        for _ in 0..5_000 {
            let mut doc = String::new();
            random_doc(&mut rng, 0, &mut doc);
            let value = ok(doc.as_bytes());
            let mut out = String::new();
            value.write_to(&mut out);
            assert_eq!(ok(out.as_bytes()), value, "{doc:?} wrote {out:?}");

            let mut bytes = doc.into_bytes();
            let at = rng.below(bytes.len() + 1);
            match rng.below(3) {
                0 => bytes.truncate(at),
                1 if at < bytes.len() => bytes[at] = BYTES[rng.below(BYTES.len())],
                _ => {
                    let token = rng.pick(&["{", "[", "\"", "\\u", "\\ud800", ",", "1", "]]"]);
                    bytes.splice(at..at, token.bytes());
                }
            }
            match parse(&bytes) {
                Ok(value) => {
                    mutated_valid += 1;
                    let mut out = String::new();
                    value.write_to(&mut out);
                    assert_eq!(ok(out.as_bytes()), value);
                }
                Err(e) => {
                    mutated_invalid += 1;
                    assert!(e.offset <= bytes.len(), "{e:?} past the end");
                }
            }
        }
        // Both outcomes are common, or the mutations test little.
        assert!(
            mutated_valid > 100 && mutated_invalid > 1000,
            "{mutated_valid} / {mutated_invalid}"
        );
    }

    #[test]
    fn writing_is_compact_and_escapes_once() {
        let v =
            ok(br#" { "s" : "a\"b\\c\n\u0001\u2028" , "n" : -1.50e3, "l" : [ null , true ] } "#);
        let mut out = String::new();
        v.write_to(&mut out);
        assert_eq!(
            out,
            r#"{"s":"a\"b\\c\n\u0001\u2028","n":-1.50e3,"l":[null,true]}"#
        );
    }

    #[test]
    fn quote_escapes_what_json_requires() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(quote("héllo"), "\"héllo\"");
        assert_eq!(quote("\r\t\u{1f}\u{2029}"), r#""\r\t\u001f\u2029""#);
        // Whatever we quote parses back to itself.
        for text in ["", "plain", "\0\u{7f}é😀\u{2028}\"\\/"] {
            assert_eq!(ok(quote(text).as_bytes()), s(text));
        }
    }
}
