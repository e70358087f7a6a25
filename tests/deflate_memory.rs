//! What the permessage-deflate codec costs in heap, measured with a
//! counting global allocator (only this thread's allocations count): the
//! bytes each compressor and inflater keeps, and that a warmed-up codec
//! allocates nothing per message.
//!
//! `cargo test --features deflate --test deflate_memory -- --nocapture`
//! prints the table quoted in `src/protocol/deflate/codec.rs`.
#![cfg(feature = "deflate")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use wsloop::protocol::deflate::codec::ContextInflater;
use wsloop::protocol::deflate::{Deflater, Inflater, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNT_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn note(grow: isize, allocation: bool) {
    if COUNT_THIS_THREAD.with(Cell::get) {
        LIVE.fetch_add(grow, Ordering::Relaxed);
        if allocation {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only atomics and a const-initialised thread-local
// (neither allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize, true);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize, true);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize), false);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize, true);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` counting this thread's heap: (bytes still live after it,
/// allocations made).
fn measure<T>(f: impl FnOnce() -> T) -> (T, isize, usize) {
    let live = LIVE.load(Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    COUNT_THIS_THREAD.with(|c| c.set(true));
    let value = f();
    COUNT_THIS_THREAD.with(|c| c.set(false));
    (
        value,
        LIVE.load(Ordering::Relaxed) - live,
        ALLOCATIONS.load(Ordering::Relaxed) - allocations,
    )
}

fn json(len: usize) -> Vec<u8> {
    br#"{"type":"ticker","symbol":"BTC-USD","price":"64123.51","size":"0.0021","seq":9913}"#
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

// One test function: the counts are per thread, and the numbers are
// printed as one table.
#[test]
fn codec_memory_and_steady_state_allocations() {
    let message = json(200);
    let big = json(16 * 1024);
    println!("heap kept by permessage-deflate contexts (zlib-rs through flate2):");

    // One compressor per window size; the first message creates it.
    let mut all = 0;
    for level in [6, 1, 9] {
        let mut deflater = Deflater::new(level);
        let mut out = Vec::with_capacity(64 * 1024);
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            let ((), live, _) = measure(|| deflater.compress(&message, bits, &mut out));
            out.clear();
            if level == 6 {
                println!("  compressor, level {level}, {bits:2}-bit window: {live:8} B");
                all += live;
            }
            assert!(live > 0 && live < 512 * 1024, "{bits} bits: {live} B");
        }
        let ((), live, _) = measure(|| drop(deflater));
        println!("  all seven compressors, level {level}: {:8} B", -live);
        if level == 6 {
            assert_eq!(-live, all, "dropping gives back what creating took");
        }
    }

    // The shared inflater: its state, then what its first message adds
    // (the window, and the output buffer, reported apart).
    let (mut inflater, state, _) = measure(Inflater::new);
    let mut compressed = Vec::new();
    Deflater::new(6).compress(&message, 15, &mut compressed);
    let (_, live, _) = measure(|| inflater.inflate(&compressed, 1 << 20).map(<[u8]>::len));
    let buffer = inflater.buffer_capacity() as isize;
    println!(
        "  inflater, 15-bit window: {state} B at creation, {} B after a message \
         (+ {buffer} B output buffer)",
        state + live - buffer
    );
    assert!(state + live - buffer < 64 * 1024);

    // A context-keeping inflater per connection (no output buffer).
    for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
        let mut out = Vec::with_capacity(4096);
        let mut compressed = Vec::new();
        Deflater::new(6).compress(&message, bits, &mut compressed);
        let (mut context, state, _) = measure(|| ContextInflater::new(bits));
        let (_, live, _) = measure(|| context.inflate_into(&compressed, 1 << 20, &mut out));
        println!(
            "  context inflater, {bits:2}-bit window: {} B after a message ({state} B at creation)",
            state + live
        );
        assert!(state + live < 64 * 1024);
    }

    // Warmed up, a message costs no allocation: compressors are reset, not
    // rebuilt, the inflater's buffer is reused, and a caller's `out` with
    // room is not grown.
    let mut deflater = Deflater::new(6);
    let mut inflater = Inflater::new();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut into = Vec::with_capacity(64 * 1024);
    let mut context = ContextInflater::new(15);
    let mut context_out = Vec::with_capacity(64 * 1024);
    let mut round = |check: bool| {
        for payload in [&message[..], &big[..], b""] {
            for bits in [9, 12, 15] {
                out.clear();
                let ((), _, allocations) = measure(|| deflater.compress(payload, bits, &mut out));
                assert!(
                    !check || allocations == 0,
                    "compress: {allocations} allocations"
                );
                let (inflated, _, allocations) =
                    measure(|| inflater.inflate(&out, 1 << 20).map(<[u8]>::len));
                assert_eq!(inflated, Ok(payload.len()));
                assert!(
                    !check || allocations == 0,
                    "inflate: {allocations} allocations"
                );
                into.clear();
                let (_, _, allocations) =
                    measure(|| inflater.inflate_into(&out, 1 << 20, &mut into));
                assert_eq!(into, payload);
                assert!(
                    !check || allocations == 0,
                    "inflate_into: {allocations} allocations"
                );
            }
        }
        // A context-keeping inflater takes every other message's output
        // from one compressor reset per message: valid for it too.
        for payload in [&message[..], &big[..]] {
            out.clear();
            deflater.compress(payload, 15, &mut out);
            context_out.clear();
            let (result, _, allocations) =
                measure(|| context.inflate_into(&out, 1 << 20, &mut context_out));
            assert_eq!(result, Ok(()));
            assert_eq!(context_out, payload);
            assert!(
                !check || allocations == 0,
                "context inflate: {allocations} allocations"
            );
        }
    };
    round(false);
    round(true);
    round(true);
}
