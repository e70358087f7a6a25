//! Fuzzes the frame and message decoder with arbitrary byte streams split
//! at arbitrary points.
//!
//! Input layout: bytes 0-2 pick `max_frame_size`, `max_message_size` and
//! `max_fragments`; byte 3 holds, in its low 4 bits, how many of the next
//! bytes are chunk sizes (cycled; 0 means an empty `decode` call), and in
//! bit 4 whether the stream gets a generated valid frame prepended; the
//! rest is the client byte stream.
//!
//! Checked on every input:
//! - `consumed` never exceeds the input, and every call on non-empty input
//!   consumes a byte or returns an event;
//! - messages respect the limits, control payloads are at most 125 bytes,
//!   errors carry 1002, 1007 or 1009;
//! - `buffered()` never exceeds `max_message_size + 14 + 125`;
//! - no single allocation made inside `decode` is larger than twice the
//!   bytes fed so far: an announced length is never allocated up front;
//! - feeding the stream in pieces gives exactly the events and the error
//!   of feeding it whole;
//! - every header `FrameHeader::decode` accepts survives an
//!   `encode`/`decode` round trip, `apply_mask` matches a naive XOR, and
//!   `unmask_reporting_ascii` unmasks alike and reports ASCII exactly when
//!   `is_ascii` does;
//! - every text event is valid UTF-8 by `std::str::from_utf8` (the decoder
//!   skips that check for payloads it saw to be ASCII while unmasking).
#![no_main]

mod largest_alloc;

use std::sync::atomic::Ordering;

use largest_alloc::{LARGEST, TRACKING};
use libfuzzer_sys::fuzz_target;
use wsloop::ProtocolError;
use wsloop::protocol::frame::{
    FrameHeader, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, apply_mask, unmask_reporting_ascii,
};
use wsloop::protocol::message::{Decoder, DecoderLimits, Event};

fn limit(selector: u8) -> usize {
    match selector % 8 {
        0 => 0,
        1 => 1,
        2 => 125,
        3 => 126,
        4 => 65_536,
        5 => 16 << 20,
        6 => usize::MAX,
        _ => usize::from(selector) * 3,
    }
}

/// An event, owned, to compare two runs.
#[derive(Debug, PartialEq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
}

fn own(event: &Event<'_>, limits: &DecoderLimits) -> Owned {
    match event {
        Event::Text(text) => {
            assert!(
                std::str::from_utf8(text.as_bytes()).is_ok(),
                "a text event is not valid UTF-8"
            );
            assert!(
                text.len() <= limits.max_message_size,
                "text message over the limit"
            );
            Owned::Text(text.to_string())
        }
        Event::Binary(bytes) => {
            assert!(
                bytes.len() <= limits.max_message_size,
                "binary message over the limit"
            );
            Owned::Binary(bytes.to_vec())
        }
        Event::Ping(bytes) => {
            assert!(bytes.len() <= MAX_CONTROL_PAYLOAD);
            Owned::Ping(bytes.to_vec())
        }
        Event::Pong(bytes) => {
            assert!(bytes.len() <= MAX_CONTROL_PAYLOAD);
            Owned::Pong(bytes.to_vec())
        }
        Event::Close(frame) => {
            assert!(frame.reason.len() <= MAX_CONTROL_PAYLOAD - 2);
            assert!(frame.code.as_u16() == 1005 || frame.code.is_valid_on_wire());
            Owned::Close(frame.code.as_u16(), frame.reason.to_string())
        }
        // `Event` is non_exhaustive: a new kind of event needs its own
        // checks here before this target can fuzz it.
        other => panic!("an event the decoder target does not know: {other:?}"),
    }
}

struct Run {
    events: Vec<Owned>,
    error: Option<ProtocolError>,
    idle: bool,
}

/// Feeds `stream` to a fresh decoder in chunks of the sizes in `plan`
/// (cycled), checking the per-call invariants.
fn run(limits: DecoderLimits, stream: &mut [u8], plan: &[usize]) -> Run {
    assert!(plan.iter().any(|&n| n > 0));
    let mut decoder = Decoder::new(limits);
    let bound = limits
        .max_message_size
        .saturating_add(MAX_HEADER_LEN)
        .saturating_add(MAX_CONTROL_PAYLOAD);
    let mut events = Vec::new();
    let mut pos = 0;
    let mut step = 0;
    while pos < stream.len() {
        let want = plan[step % plan.len()];
        step += 1;
        let end = stream.len().min(pos + want);
        if want == 0 {
            // An empty call is allowed and must change nothing visible.
            let before = decoder.buffered();
            let decoded = decoder.decode(&mut []).expect("an empty call cannot fail");
            assert_eq!(decoded.consumed, 0);
            assert!(decoded.event.is_none(), "an empty call produced an event");
            assert_eq!(decoder.buffered(), before);
            continue;
        }
        let mut at = pos;
        while at < end {
            let input = &mut stream[at..end];
            let offered = input.len();
            TRACKING.store(true, Ordering::Relaxed);
            let result = decoder.decode(input);
            TRACKING.store(false, Ordering::Relaxed);
            let largest = LARGEST.load(Ordering::Relaxed);
            assert!(
                largest <= 2 * end + 64,
                "an allocation of {largest} bytes after only {end} bytes of input"
            );
            match result {
                Err(error) => {
                    assert!(
                        matches!(error.code.as_u16(), 1002 | 1007 | 1009),
                        "unexpected close code {}",
                        error.code
                    );
                    return Run {
                        events,
                        error: Some(error),
                        idle: false,
                    };
                }
                Ok(decoded) => {
                    assert!(
                        decoded.consumed <= offered,
                        "consumed {} of {offered}",
                        decoded.consumed
                    );
                    assert!(
                        decoded.consumed > 0 || decoded.event.is_some(),
                        "no progress on {offered} bytes"
                    );
                    at += decoded.consumed;
                    if let Some(event) = &decoded.event {
                        events.push(own(event, &limits));
                    }
                }
            }
            assert!(
                decoder.buffered() <= bound,
                "buffered {} > {bound}",
                decoder.buffered()
            );
        }
        pos = end;
    }
    let idle = decoder.is_idle();
    decoder.release();
    Run {
        events,
        error: None,
        idle,
    }
}

/// Walks the frame headers of `stream` (skipping payloads) and checks that
/// each one survives an encode/decode round trip.
fn check_headers(stream: &[u8]) {
    let mut pos = 0;
    while pos < stream.len() {
        let Ok(Some((header, len))) = FrameHeader::decode(&stream[pos..]) else {
            return;
        };
        assert!((2..=MAX_HEADER_LEN).contains(&len));
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut out);
        assert!(
            n <= len,
            "the encoding is never longer than what was decoded"
        );
        assert_eq!(FrameHeader::decode(&out[..n]), Ok(Some((header, n))));
        if n == len {
            assert_eq!(
                &out[..n],
                &stream[pos..pos + len],
                "same length form, different bytes"
            );
        }
        for cut in 0..n {
            assert_eq!(
                FrameHeader::decode(&out[..cut]),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
        let Some(next) = usize::try_from(header.payload_len)
            .ok()
            .and_then(|p| (pos + len).checked_add(p))
        else {
            return;
        };
        pos = next;
    }
}

fn check_mask(data: &[u8], key: [u8; 4], offset: usize) {
    let mut fast = data.to_vec();
    apply_mask(&mut fast, key, offset);
    for (i, (&f, &d)) in fast.iter().zip(data).enumerate() {
        assert_eq!(f, d ^ key[(i + offset) % 4], "apply_mask differs at {i}");
    }
    apply_mask(&mut fast, key, offset);
    assert_eq!(fast, data);
    let mut masked = data.to_vec();
    apply_mask(&mut masked, key, 0);
    let ascii = unmask_reporting_ascii(&mut masked, key);
    assert_eq!(masked, data, "unmask_reporting_ascii unmasks differently");
    assert_eq!(
        ascii,
        data.is_ascii(),
        "unmask_reporting_ascii misreports ASCII"
    );
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let limits = DecoderLimits {
        max_frame_size: limit(data[0]),
        max_message_size: limit(data[1]),
        max_fragments: limit(data[2]),
    };
    let splits = usize::from(data[3] & 0x0F);
    let prepend = data[3] & 0x10 != 0;
    let rest = &data[4..];
    let splits = splits.min(rest.len());
    let mut plan: Vec<usize> = rest[..splits].iter().map(|&b| usize::from(b)).collect();
    let mut stream = Vec::with_capacity(rest.len() + 16);
    if prepend {
        // A masked frame header up front, so split points land inside real
        // frames more often: opcode, length and key from the first bytes;
        // its payload is the start of the stream.
        let opcode = [0x1, 0x2, 0x9, 0xA, 0x8][usize::from(data[0]) % 5];
        let len = usize::from(data[1] % 126);
        stream.push(0x80 | opcode);
        stream.push(0x80 | len as u8);
        stream.extend_from_slice(&[data[0], data[1], data[2], data[3]]);
    }
    stream.extend_from_slice(&rest[splits..]);
    if plan.iter().all(|&n| n == 0) {
        plan.push(1);
    }

    check_headers(&stream);
    check_mask(
        &stream,
        [data[0], data[1], data[2], data[3]],
        usize::from(data[3]),
    );

    LARGEST.store(0, Ordering::Relaxed);
    let whole = run(limits, &mut stream.clone(), &[stream.len().max(1)]);
    LARGEST.store(0, Ordering::Relaxed);
    let pieces = run(limits, &mut stream.clone(), &plan);
    assert_eq!(
        whole.events, pieces.events,
        "events depend on how the stream was split"
    );
    assert_eq!(
        whole.error, pieces.error,
        "the error depends on how the stream was split"
    );
    if whole.error.is_none() {
        assert_eq!(whole.idle, pieces.idle);
    }
});
