//! Fuzzes the permessage-deflate codec (`wsloop::protocol::deflate`):
//! arbitrary bytes into the inflaters, and arbitrary messages through a
//! compress/inflate round trip.
//!
//! Input layout: byte 0 picks the case: bits 0-1 the limit (0, 125,
//! 4096 or 64 KiB), bit 2 the mode (0: the rest is a compressed message,
//! 1: the rest is a message to compress), bits 3-5 the window bits
//! (9 + value % 7), bits 6-7 the compression level (0, 1, 6 or 9). The
//! rest is the payload.
//!
//! Checked on every input:
//! - nothing panics (every inflater result is `Ok`, `TooBig` or
//!   `Corrupt`);
//! - an inflated message is at most the limit, and while inflating no
//!   single allocation is larger than `limit + 1` bytes (the output
//!   buffer grows in steps and stops one byte past the limit: an
//!   inflation bomb cannot make it allocate more);
//! - the loop-wide inflater, reused across inputs, gives exactly what a
//!   fresh one gives (each message from a fresh context), and
//!   `inflate_into` exactly what `inflate` gives;
//! - a context-keeping inflater fed a single message agrees with the
//!   shared one wherever the shared one succeeds;
//! - round trip: compressing a message at the chosen level and window and
//!   inflating it gives the message back when it fits the limit, `TooBig`
//!   when it does not, and the compressed form never ends with the
//!   `00 00 ff ff` tail; whatever an inflater accepts also survives the
//!   round trip.
#![no_main]

mod largest_alloc;

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use largest_alloc::{LARGEST, TRACKING};
use libfuzzer_sys::fuzz_target;
use wsloop::protocol::deflate::codec::{ContextInflater, TAIL};
use wsloop::protocol::deflate::{Deflater, InflateError, Inflater};

const LIMITS: [usize; 4] = [0, 125, 4096, 64 * 1024];
const LEVELS: [u32; 4] = [0, 1, 6, 9];

thread_local! {
    /// Shared across inputs, as the loop shares them across connections.
    static SHARED: RefCell<(Inflater, [Deflater; 4])> = RefCell::new((
        Inflater::new(),
        LEVELS.map(Deflater::new),
    ));
}

/// Runs `f` recording the largest single allocation it makes.
fn tracked<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    TRACKING.store(true, Ordering::Relaxed);
    let value = f();
    TRACKING.store(false, Ordering::Relaxed);
    (value, LARGEST.load(Ordering::Relaxed))
}

fn check_inflated(
    result: &Result<Vec<u8>, InflateError>,
    limit: usize,
    largest: usize,
    what: &str,
) {
    if let Ok(message) = result {
        assert!(
            message.len() <= limit,
            "{what}: {} bytes past the limit {limit}",
            message.len()
        );
    }
    assert!(
        largest <= limit + 1,
        "{what}: an allocation of {largest} bytes with a limit of {limit}"
    );
}

fn round_trip(
    deflater: &mut Deflater,
    inflater: &mut Inflater,
    message: &[u8],
    bits: u8,
    limit: usize,
) {
    let mut compressed = Vec::new();
    deflater.compress(message, bits, &mut compressed);
    assert!(
        message.is_empty() || !compressed.ends_with(&TAIL),
        "the tail was not removed"
    );
    let (result, largest) = tracked(|| inflater.inflate(&compressed, limit).map(<[u8]>::to_vec));
    // The copy into `to_vec` is the message itself, within the limit.
    check_inflated(&result, limit, largest, "round trip");
    if message.len() <= limit {
        assert_eq!(result.as_deref(), Ok(message), "round trip at {bits} bits");
    } else {
        assert_eq!(
            result,
            Err(InflateError::TooBig),
            "a message over the limit"
        );
    }
    // Every message a reset compressor makes is also a valid next message
    // for a context-keeping inflater.
    let mut context = ContextInflater::new(bits);
    let mut out = Vec::new();
    let (result, largest) = tracked(|| context.inflate_into(&compressed, limit, &mut out));
    assert!(largest <= limit + 1, "context inflater: {largest} bytes");
    match result {
        Ok(()) => assert_eq!(out, message),
        Err(error) => {
            assert_eq!(error, InflateError::TooBig);
            assert!(message.len() > limit);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let limit = LIMITS[usize::from(selector & 3)];
    let compress_mode = selector & 4 != 0;
    let bits = 9 + (selector >> 3 & 7) % 7;
    let level = usize::from(selector >> 6);

    SHARED.with(|shared| {
        let (inflater, deflaters) = &mut *shared.borrow_mut();
        let deflater = &mut deflaters[level];
        if compress_mode {
            round_trip(deflater, inflater, payload, bits, limit);
            return;
        }

        let (shared_result, largest) =
            tracked(|| inflater.inflate(payload, limit).map(<[u8]>::to_vec));
        check_inflated(&shared_result, limit, largest, "shared inflater");

        let mut fresh = Inflater::new();
        let fresh_result = fresh.inflate(payload, limit).map(<[u8]>::to_vec);
        assert_eq!(
            shared_result, fresh_result,
            "the shared inflater remembers an earlier message"
        );

        let mut into = b"kept".to_vec();
        let into_result = fresh.inflate_into(payload, limit, &mut into);
        assert_eq!(&into[..4], b"kept");
        assert_eq!(
            into_result.map(|()| into[4..].to_vec()),
            fresh_result,
            "inflate_into differs"
        );

        let mut context = ContextInflater::new(15);
        let mut out = Vec::new();
        let (context_result, largest) = tracked(|| context.inflate_into(payload, limit, &mut out));
        let context_result = context_result.map(|()| out);
        check_inflated(&context_result, limit, largest, "context inflater");
        if let Ok(message) = &shared_result {
            // The shared inflater is the stricter one (it also refuses a
            // message cut inside a block), so whatever it takes the
            // context-keeping one takes alike.
            assert_eq!(
                context_result.as_ref(),
                Ok(message),
                "the inflaters disagree"
            );
            round_trip(deflater, inflater, message, bits, limit);
        }
    });
});
