//! Micro-benchmarks of the permessage-deflate codec (feature `deflate`).
//!
//! Run with `cargo bench --features deflate --bench deflate`. Three
//! messages, at zlib levels 1 and 6, each compressed from a fresh context
//! the way the server sends them ([`Deflater::compress`], 15-bit window)
//! and inflated the way it receives them ([`Inflater::inflate`]):
//!
//! - `chat_60B`: one chat line of JSON;
//! - `ticker_200B`: one market-data update of JSON;
//! - `doc_16KiB`: a JSON document of 16 KiB (an array of records).
//!
//! Groups: `deflate_compress` and `deflate_inflate` (ns per message, one
//! message an iteration), `deflate_fixed` (an empty message, what every
//! message pays before its first byte: mostly the compressor's reset,
//! which clears its 128 KiB hash table), and `deflate_window`
//! (`ticker_200B` and `doc_16KiB` at 9 and 12 bits beside 15). The
//! compressed sizes are printed first.
//!
//! The numbers, and zlib-rs beside miniz_oxide, are in the codec's
//! documentation (`src/protocol/deflate/codec.rs`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsloop::protocol::deflate::{Deflater, Inflater};

/// The three messages: name and bytes.
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let chat = br#"{"type":"chat","room":"lobby","user":"ada","text":"hi all!"}"#.to_vec();
    let ticker = br#"{"type":"ticker","product_id":"BTC-USD","price":"64123.51","best_bid":"64123.50","best_ask":"64123.52","volume_24h":"18234.01945811","side":"buy","time":"2024-05-01T12:00:00.123456Z","trade_id":91344}"#.to_vec();
    vec![
        ("chat_60B", chat),
        ("ticker_200B", ticker),
        ("doc_16KiB", document(16 * 1024)),
    ]
}

/// A JSON array of records with varying numbers and names, `len` bytes
/// (cut, so not valid JSON at the end: the compressor does not care).
fn document(len: usize) -> Vec<u8> {
    let names = [
        "ada", "grace", "linus", "ken", "dennis", "barbara", "edsger", "donald",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = b"[".to_vec();
    let mut i = 0;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(
            format!(
                r#"{{"id":{i},"user":"{}","score":{},"ratio":{:.4},"active":{},"tags":["t{}","t{}"]}},"#,
                names[(x % 8) as usize],
                x % 100_000,
                (x % 10_000) as f64 / 10_000.0,
                x.is_multiple_of(3),
                x % 17,
                (x >> 8) % 17
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn sizes() {
    eprintln!("compressed sizes (15-bit window, fresh context, tail removed):");
    for (name, message) in messages() {
        for level in [1, 6] {
            let mut out = Vec::new();
            Deflater::new(level).compress(&message, 15, &mut out);
            eprintln!(
                "  {name:12} level {level}: {:6} B -> {:6} B ({:.1}%)",
                message.len(),
                out.len(),
                100.0 * out.len() as f64 / message.len() as f64
            );
        }
    }
}

fn compress(c: &mut Criterion) {
    sizes();
    let mut group = c.benchmark_group("deflate_compress");
    group.throughput(Throughput::Elements(1));
    for (name, message) in messages() {
        for level in [1, 6] {
            let mut deflater = Deflater::new(level);
            let mut out = Vec::with_capacity(32 * 1024);
            group.bench_function(BenchmarkId::new(format!("L{level}"), name), |b| {
                b.iter(|| {
                    out.clear();
                    deflater.compress(black_box(&message), 15, &mut out);
                    out.len()
                })
            });
        }
    }
    group.finish();
}

fn inflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_inflate");
    group.throughput(Throughput::Elements(1));
    for (name, message) in messages() {
        for level in [1, 6] {
            let mut compressed = Vec::new();
            Deflater::new(level).compress(&message, 15, &mut compressed);
            let mut inflater = Inflater::new();
            assert_eq!(
                inflater.inflate(&compressed, 1 << 20).unwrap(),
                &message[..]
            );
            group.bench_function(BenchmarkId::new(format!("L{level}"), name), |b| {
                b.iter(|| {
                    inflater
                        .inflate(black_box(&compressed), 1 << 20)
                        .map(<[u8]>::len)
                })
            });
        }
    }
    group.finish();
}

fn fixed(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_fixed");
    for level in [1, 6] {
        let mut deflater = Deflater::new(level);
        let mut out = Vec::with_capacity(64);
        group.bench_function(
            BenchmarkId::new("compress_empty", format!("L{level}")),
            |b| {
                b.iter(|| {
                    out.clear();
                    deflater.compress(black_box(b""), 15, &mut out);
                    out.len()
                })
            },
        );
    }
    let mut inflater = Inflater::new();
    group.bench_function("inflate_empty", |b| {
        b.iter(|| {
            inflater
                .inflate(black_box(&[0x00]), 1 << 20)
                .map(<[u8]>::len)
        })
    });
    group.finish();
}

fn window(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_window");
    group.throughput(Throughput::Elements(1));
    for (name, message) in messages().into_iter().skip(1) {
        for bits in [9, 12, 15] {
            let mut deflater = Deflater::new(6);
            let mut out = Vec::with_capacity(32 * 1024);
            deflater.compress(&message, bits, &mut out);
            eprintln!("  {name} level 6, {bits}-bit window: {} B", out.len());
            group.bench_function(BenchmarkId::new(format!("L6_{bits}bits"), name), |b| {
                b.iter(|| {
                    out.clear();
                    deflater.compress(black_box(&message), bits, &mut out);
                    out.len()
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = compress, inflate, fixed, window
}
criterion_main!(benches);
