//! Micro-benchmarks of the sans-IO protocol core and of broadcast fan-out.
//!
//! Run with `cargo bench --bench codec` (or `make bench-codec`). Groups:
//!
//! - `frame_header`: [`FrameHeader::decode`] and [`FrameHeader::encode`] for
//!   the three length forms (7-bit, 16-bit, 64-bit), and [`encode_frame`];
//! - `mask`: [`apply_mask`] over 16 B, 1 KiB and 64 KiB (bytes/s);
//! - `utf8`: [`Utf8Validator::feed`] on ASCII and multi-byte text, with
//!   `std::str::from_utf8` beside it as the floor;
//! - `decoder`: a [`Decoder`] turning one masked text frame into an event,
//!   whole (the zero-copy fast path) and split in two reads (the copying,
//!   incrementally validated slow path);
//! - `handshake`: [`parse_request`], [`Request::validate_upgrade`],
//!   [`accept_key`] and the whole upgrade including the `101` response;
//! - `fanout`: one encoded frame shared (`Rc`) into 10,000 per-connection
//!   queues, the public stand-in for the server's crate-private outbox.
//!
//! [`Request::validate_upgrade`]: wsloop::protocol::handshake::Request::validate_upgrade

use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsloop::protocol::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, apply_mask, encode_frame};
use wsloop::protocol::handshake::{HeadLimits, accept_key, parse_request, switching_protocols};
use wsloop::protocol::message::{Decoder, Event};
use wsloop::protocol::utf8::Utf8Validator;

/// The masking key used by every masked frame in these benchmarks.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The payload sizes measured for masking, UTF-8 and decoding.
const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

/// The number of queues a broadcast frame is fanned out to.
const FANOUT: usize = 10_000;

/// A typical browser upgrade request (Chrome-like header set).
const REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:9001\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// ASCII text of `len` bytes.
fn ascii_text(len: usize) -> Vec<u8> {
    b"The quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Valid UTF-8 of exactly `len` bytes mixing 1-, 2-, 3- and 4-byte characters.
fn multibyte_text(len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 4);
    for c in "aκόσμε€😀".chars().cycle() {
        if out.len() + c.len_utf8() > len {
            break;
        }
        out.push(c);
    }
    while out.len() < len {
        out.push('.');
    }
    out.into_bytes()
}

/// A complete masked (client-to-server) frame carrying `payload`.
fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut frame = head[..n].to_vec();
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], KEY, 0);
    frame
}

/// `frame_header`: decoding and encoding the three length forms.
fn frame_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    for (len, name) in [(64u64, "len7"), (1024, "len16"), (1 << 20, "len64")] {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(KEY),
            payload_len: len,
        };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut bytes);
        let encoded = bytes[..n].to_vec();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| FrameHeader::decode(black_box(&encoded)))
        });
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut out = [0u8; MAX_HEADER_LEN];
            b.iter(|| black_box(&header).encode(black_box(&mut out)))
        });
    }
    let payload = ascii_text(64);
    group.bench_function("encode_frame/64B", |b| {
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            out.clear();
            encode_frame(&mut out, OpCode::Text, black_box(&payload));
            black_box(out.len())
        })
    });
    group.finish();
}

/// `mask`: unmasking throughput at three sizes.
fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, name) in SIZES {
        let mut data = ascii_text(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("apply_mask", name), |b| {
            b.iter(|| apply_mask(black_box(&mut data), black_box(KEY), 0))
        });
    }
    group.finish();
}

/// `utf8`: the incremental validator against `std::str::from_utf8`.
fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (size, name) in SIZES {
        for (kind, text) in [
            ("ascii", ascii_text(size)),
            ("multibyte", multibyte_text(size)),
        ] {
            assert!(std::str::from_utf8(&text).is_ok());
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(BenchmarkId::new(format!("validator/{kind}"), name), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::default();
                    v.feed(black_box(&text)) && v.is_complete()
                })
            });
            group.bench_function(BenchmarkId::new(format!("std/{kind}"), name), |b| {
                b.iter(|| std::str::from_utf8(black_box(&text)).is_ok())
            });
        }
    }
    group.finish();
}

/// `decoder`: a masked text frame through the message decoder, whole and
/// split; whole also with an all-ASCII payload (which skips the UTF-8 pass).
fn decoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("decoder");
    for (size, name) in SIZES {
        let frame = masked_frame(OpCode::Text, &multibyte_text(size));
        let ascii_frame = masked_frame(OpCode::Text, &ascii_text(size));
        let batch = if size > 4096 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        group.throughput(Throughput::Bytes(size as u64));
        for (id, frame) in [("text_whole", &frame), ("ascii_text_whole", &ascii_frame)] {
            group.bench_function(BenchmarkId::new(id, name), |b| {
                let mut decoder = Decoder::default();
                b.iter_batched_ref(
                    || frame.clone(),
                    |input| {
                        let decoded = decoder.decode(input).expect("valid frame");
                        assert!(matches!(decoded.event, Some(Event::Text(_))));
                        decoded.consumed
                    },
                    batch,
                )
            });
        }
        group.bench_function(BenchmarkId::new("text_split_in_two", name), |b| {
            let mut decoder = Decoder::default();
            let cut = frame.len() / 2;
            b.iter_batched_ref(
                || frame.clone(),
                |input| {
                    let (first, second) = input.split_at_mut(cut);
                    let mut used = 0;
                    while used < first.len() {
                        used += decoder
                            .decode(&mut first[used..])
                            .expect("valid frame")
                            .consumed;
                    }
                    let decoded = decoder.decode(second).expect("valid frame");
                    assert!(matches!(decoded.event, Some(Event::Text(_))));
                    decoded.consumed
                },
                batch,
            )
        });
    }
    group.finish();
}

/// `handshake`: parsing, validating and answering an upgrade request.
fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.bench_function("parse_request", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let parsed = parse_request(black_box(REQUEST), &mut headers, HeadLimits::default());
            parsed.expect("valid").expect("complete").1
        })
    });
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let (request, _) = parse_request(REQUEST, &mut headers, HeadLimits::default())
        .expect("valid")
        .expect("complete");
    group.bench_function("validate_upgrade", |b| {
        b.iter(|| black_box(&request).validate_upgrade().expect("valid").len())
    });
    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    group.bench_function("full_upgrade", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let (request, _) =
                parse_request(black_box(REQUEST), &mut headers, HeadLimits::default())
                    .expect("valid")
                    .expect("complete");
            let key = request.validate_upgrade().expect("valid");
            switching_protocols(key, None, &[])
        })
    });
    group.finish();
}

/// Mirrors the server's crate-private outbox chunk: owned bytes or a frame
/// shared with the other recipients of a broadcast.
enum Chunk {
    /// Bytes only this connection sends.
    Owned(Vec<u8>),
    /// A broadcast frame shared by every recipient.
    Shared(Rc<Vec<u8>>),
}

/// `fanout`: one shared 64-byte frame into 10,000 queues, then drained.
fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(FANOUT as u64));
    let mut frame = Vec::new();
    encode_frame(&mut frame, OpCode::Text, &ascii_text(64));
    let frame = Rc::new(frame);
    let mut queues: Vec<VecDeque<Chunk>> =
        (0..FANOUT).map(|_| VecDeque::with_capacity(4)).collect();
    group.bench_function("rc_push_10k", |b| {
        b.iter_batched_ref(
            || {
                (0..FANOUT)
                    .map(|_| VecDeque::with_capacity(4))
                    .collect::<Vec<VecDeque<Chunk>>>()
            },
            |queues| {
                for queue in queues.iter_mut() {
                    queue.push_back(Chunk::Shared(Rc::clone(&frame)));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("rc_push_pop_10k", |b| {
        b.iter(|| {
            for queue in queues.iter_mut() {
                queue.push_back(Chunk::Shared(Rc::clone(&frame)));
            }
            let mut bytes = 0;
            for queue in queues.iter_mut() {
                if let Some(Chunk::Shared(f)) = queue.pop_front() {
                    bytes += f.len();
                }
            }
            bytes
        })
    });
    group.bench_function("copy_push_pop_10k", |b| {
        b.iter(|| {
            for queue in queues.iter_mut() {
                queue.push_back(Chunk::Owned(frame.as_ref().clone()));
            }
            let mut bytes = 0;
            for queue in queues.iter_mut() {
                if let Some(Chunk::Owned(f)) = queue.pop_front() {
                    bytes += f.len();
                }
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    frame_header,
    mask,
    utf8,
    decoder,
    handshake,
    fanout
);
criterion_main!(benches);
