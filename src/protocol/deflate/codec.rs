//! Compressing and inflating whole messages (RFC 7692 §7.2).
//!
//! Three types, all on `flate2` with the pure-Rust zlib-rs backend:
//!
//! - [`Deflater`]: the loop-wide compressors, one per window size in use,
//!   reset before every message, so what they produce is valid for any
//!   peer whatever it negotiated about context takeover;
//! - [`Inflater`]: the one loop-wide 15-bit inflater, reset before every
//!   message, for the clients that promised `client_no_context_takeover`
//!   (what the server asks of every client);
//! - [`ContextInflater`]: a per-connection inflater that keeps its LZ77
//!   window from message to message, for embedders who accept clients
//!   that keep their context.
//!
//! Both inflaters enforce the message size limit while inflating: the
//! output grows in steps and stops one byte past the limit, so an
//! inflation bomb costs at most the limit in memory and in work.
//!
//! # Memory
//!
//! Measured with a counting allocator (`tests/deflate_memory.rs`, which
//! prints these numbers with `--nocapture`), zlib-rs 0.6.9 through
//! flate2 1.1.11, the same at every level:
//!
//! | context | heap |
//! | --- | --- |
//! | one compressor, 15-bit window | 380,032 B (371 KiB) |
//! | one compressor, 12-bit window | 265,344 B (259 KiB) |
//! | one compressor, 9-bit window | 251,008 B (245 KiB) |
//! | all seven compressors (9..=15) | 2,002,816 B (1.9 MiB) |
//! | the [`Inflater`] (15-bit window) | 47,552 B (46 KiB) + its output buffer |
//! | one [`ContextInflater`], any window | 47,552 B (46 KiB) |
//!
//! A compressor is one allocation: two windows of `2^bits` bytes (the
//! window and its hash chains), then 240 KiB that do not shrink with the
//! window: the 64 Ki-entry hash table (128 KiB) and the pending and symbol
//! buffers (112 KiB). zlib-rs sizes every inflater for a 15-bit window.
//! (miniz_oxide, flate2's other pure-Rust backend: 319,326 B per
//! compressor at every window, since it cannot shrink its window at all,
//! and 43,296 B per inflater.)
//!
//! # Speed
//!
//! `benches/deflate.rs` (criterion, one 2-core Xeon VM), per message, 15-bit
//! window, with the compressed size:
//!
//! | message | level | compress | size | inflate |
//! | --- | --- | --- | --- | --- |
//! | chat line, 60 B | 1 | 3.65 µs | 62 B | 0.26 µs |
//! | chat line, 60 B | 6 | 6.49 µs | 58 B | 0.93 µs |
//! | ticker update, 200 B | 1 | 4.37 µs | 167 B | 0.50 µs |
//! | ticker update, 200 B | 6 | 9.44 µs | 148 B | 1.47 µs |
//! | JSON document, 16 KiB | 1 | 17.8 µs | 4,321 B | 11.7 µs |
//! | JSON document, 16 KiB | 6 | 113 µs | 2,633 B | 12.2 µs |
//!
//! Every compressed message pays about 3.3 µs before its first byte,
//! mostly the reset that clears the compressor's 128 KiB hash table (a
//! fresh context per message is what makes one compressor valid for every
//! connection); below a few hundred bytes, compressing gains little for
//! it. Level 1 is zlib-rs's "quick" strategy (fixed Huffman codes only);
//! levels 2 and up build Huffman tables per block, which costs small
//! messages about 3 µs more and makes them slower to inflate. With
//! miniz_oxide the same messages compress 1.1-2.2x and inflate 1.4-19x
//! slower (its reset alone costs 5.3 µs to compress and 2.6 µs to
//! inflate), though its level 1 compresses larger messages better
//! (3,675 B for the document).

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The empty stored block a sync flush ends with. A sender removes it from
/// every compressed message (RFC 7692 §7.2.1) and a receiver appends it
/// back before inflating (§7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty final block with fixed Huffman codes (`BFINAL = 1`,
/// `BTYPE = 01`, then the end-of-block code), fed after [`TAIL`] by the
/// per-message inflaters: it ends the stream right after it only if the
/// message stopped where a block may start. A message cut inside a block
/// would take these bits as more of that block and never reach
/// `StreamEnd`, so it is reported as [`InflateError::Corrupt`] instead of
/// being delivered truncated. It inflates to nothing.
const END_PROBE: [u8; 2] = [0x03, 0x00];

/// The largest first allocation of an inflater's output buffer for a
/// message (it starts at four times the compressed size, at least 1 KiB),
/// which then doubles as needed, never beyond one byte past the limit:
/// the buffer never exceeds `limit + 1` bytes, well within
/// `limit + INFLATE_STEP`.
pub const INFLATE_STEP: usize = 16 * 1024;

/// The largest output buffer [`Inflater::release`] keeps.
pub const RETAINED_OUTPUT: usize = 64 * 1024;

/// The first output allocation for a message: what small messages need
/// (JSON inflates 3-10x) without zeroing a whole [`INFLATE_STEP`].
const FIRST_OUTPUT: usize = 1024;

/// Stored blocks hold at most this many bytes (RFC 1951 §3.2.4).
const MAX_STORED: usize = 0xffff;

/// Loop-wide compressors, one per window size in use, reset per message.
///
/// A compressor is created the first time its window size is asked for
/// (at most seven: 9..=15 bits) and reused for every later message, so
/// compressing allocates nothing but what `out` needs to grow. Each one is
/// reset before every message: the output never refers to an earlier
/// message, which makes it valid for every peer, whether it negotiated
/// `server_no_context_takeover` or not, and lets one compressor serve all
/// connections.
#[derive(Debug)]
pub struct Deflater {
    level: Compression,
    /// `compressors[b - MIN_WINDOW_BITS]` compresses with `b` window bits.
    compressors: [Option<Compress>; (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1) as usize],
}

impl Deflater {
    /// Compressors at zlib `level` (0..=9; above 9 is taken as 9), created
    /// on first use. Level 0 sends stored blocks (no compression, still
    /// framed as deflate); 1 is the fastest (zlib-rs's "quick" strategy,
    /// fixed Huffman codes only), 6 zlib's default, 9 the smallest.
    pub fn new(level: u32) -> Deflater {
        Deflater {
            level: Compression::new(level.min(9)),
            compressors: Default::default(),
        }
    }

    /// The compression level, 0..=9.
    pub fn level(&self) -> u32 {
        self.level.level()
    }

    /// How many compressors (window sizes) have been created so far.
    pub fn contexts(&self) -> usize {
        self.compressors.iter().flatten().count()
    }

    /// Appends the compressed form of one whole message `payload` to `out`,
    /// with an LZ77 window of at most `window_bits` (9..=15), from a fresh
    /// context, without the final `00 00 ff ff` (RFC 7692 §7.2.1).
    ///
    /// `window_bits` above 15 is taken as 15, the protocol's largest window.
    /// Below 9, which negotiation never yields (zlib cannot compress with an
    /// 8-bit window, see [`MIN_WINDOW_BITS`]), the message goes out in
    /// stored blocks: they refer to no window, so any peer can inflate
    /// them. An empty payload compresses to the single octet `00` (the
    /// header bits of the removed empty block, RFC 7692 §7.2.3.6).
    ///
    /// It never fails and never panics: should zlib-rs ever report an
    /// error, the message is sent in stored blocks instead. It reserves
    /// room in `out` for the worst case (about `payload.len()`), so that
    /// one pass suffices.
    ///
    /// Each call costs about 3.3 µs before the first byte (the reset; see
    /// the module's "Speed"): a caller may rather send small messages
    /// uncompressed (RSV1 clear), which RFC 7692 allows message by message.
    ///
    /// ```
    /// use wsloop::protocol::deflate::{Deflater, Inflater};
    ///
    /// let mut deflater = Deflater::new(6);
    /// let mut out = Vec::new();
    /// deflater.compress(b"Hello", 15, &mut out);
    /// // RFC 7692 §7.2.3.1: one fixed-Huffman block, tail removed.
    /// assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    ///
    /// let mut inflater = Inflater::new();
    /// assert_eq!(inflater.inflate(&out, 1 << 20), Ok(&b"Hello"[..]));
    /// ```
    pub fn compress(&mut self, payload: &[u8], window_bits: u8, out: &mut Vec<u8>) {
        if window_bits < MIN_WINDOW_BITS {
            write_stored(payload, out);
            return;
        }
        let bits = window_bits.min(MAX_WINDOW_BITS);
        let level = self.level;
        let compressor = self.compressors[usize::from(bits - MIN_WINDOW_BITS)]
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        // A fresh context for every message: the previous message's window
        // must not leak into this one (see the type's documentation).
        compressor.reset();
        let start = out.len();
        let done = sync_flush(compressor, payload, out);
        if done && out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else {
            // Not seen in practice: zlib-rs fails only on a misused stream.
            // Stored blocks are always a valid message.
            out.truncate(start);
            write_stored(payload, out);
        }
    }
}

/// Compresses all of `payload` into `out` and sync-flushes, from the
/// compressor's current state. False if zlib-rs reported an error.
fn sync_flush(compressor: &mut Compress, payload: &[u8], out: &mut Vec<u8>) -> bool {
    // Room for the worst case (incompressible input in stored blocks of at
    // least 4 KiB, 5 header bytes each, plus the flush), so one call
    // usually finishes; the loop copes if it does not.
    let n = payload.len();
    out.reserve(n + (n >> 11) + (n >> 14) + 16);
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            // Vec's doubling: rare, the reservation above covers nearly
            // every input.
            out.reserve(1024);
        }
        let before_in = compressor.total_in();
        let before_space = out.capacity() - out.len();
        if compressor
            .compress_vec(input, out, FlushCompress::Sync)
            .is_err()
        {
            return false;
        }
        let read = (compressor.total_in() - before_in) as usize;
        input = &input[read.min(input.len())..];
        let written = before_space - (out.capacity() - out.len());
        // The flush is complete once the input is gone and zlib-rs stopped
        // with output space to spare (zlib's rule for Z_SYNC_FLUSH).
        if input.is_empty() && written < before_space {
            return true;
        }
    }
}

/// Appends `payload` as non-final stored blocks, then the header octet of
/// the empty stored block whose `00 00 ff ff` a sender removes: the same
/// framing a sync flush at level 0 gives (RFC 7692 §7.2.3.3).
fn write_stored(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 5 * payload.len().div_ceil(MAX_STORED) + 1);
    for chunk in payload.chunks(MAX_STORED) {
        // `chunks(MAX_STORED)` keeps every length within u16.
        let len = chunk.len() as u16;
        // BFINAL = 0, BTYPE = 00, then padding to the byte boundary.
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0x00);
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (close 1009).
    TooBig,
    /// It is not a valid deflate stream (close 1007).
    Corrupt,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InflateError::TooBig => "the message inflates past the size limit",
            InflateError::Corrupt => "the message is not a valid deflate stream",
        })
    }
}

impl std::error::Error for InflateError {}

/// An inflater for whole messages, reset per message.
///
/// One serves every connection whose client compresses each message from a
/// fresh context (`client_no_context_takeover`): its 15-bit window inflates
/// any smaller window too. Its output buffer is reused from message to
/// message; [`Inflater::release`] gives back one grown by a large message.
#[derive(Debug)]
pub struct Inflater {
    inflater: Decompress,
    /// Scratch output. Its length is how much of it is initialised (zeroed
    /// once when it grows, then overwritten message after message), not
    /// how much the last message inflated to: that is `filled`.
    out: Vec<u8>,
    filled: usize,
}

impl Inflater {
    /// A 15-bit-window inflater (it inflates any smaller window too).
    pub fn new() -> Inflater {
        Inflater {
            inflater: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
            out: Vec::new(),
            filled: 0,
        }
    }

    /// Inflates one whole compressed message (its frames' payloads joined,
    /// without the tail, which this appends), from a fresh context.
    /// Output beyond `limit` bytes is `TooBig`, found while inflating,
    /// with no more than `limit` (plus one chunk) ever allocated.
    ///
    /// The message must end where a deflate block may start, as every
    /// sender's does after removing the tail (RFC 7692 §7.2.1), or right
    /// after a final block (`BFINAL = 1`, §7.2.3.4), optionally followed by
    /// the one header octet `00` that section shows. A message cut inside a
    /// block, or with data after its final block, is `Corrupt`. An empty
    /// payload inflates to an empty message, as with zlib-based peers.
    ///
    /// ```
    /// use wsloop::protocol::deflate::{InflateError, Inflater};
    ///
    /// let mut inflater = Inflater::new();
    /// // RFC 7692 §7.2.3.1: "Hello" in one fixed-Huffman block.
    /// let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    /// assert_eq!(inflater.inflate(&hello, 125), Ok(&b"Hello"[..]));
    /// assert_eq!(inflater.inflate(&hello, 4), Err(InflateError::TooBig));
    /// assert_eq!(inflater.inflate(&[0xff, 0xff], 125), Err(InflateError::Corrupt));
    /// ```
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<&[u8], InflateError> {
        self.filled = 0;
        // Output from the buffer's start, over what earlier messages left
        // initialised.
        let mut sink = Sink::new(&mut self.out, 0, limit, compressed.len());
        let result = inflate_message(&mut self.inflater, compressed, &mut sink);
        let filled = sink.filled;
        result?;
        self.filled = filled;
        Ok(&self.out[..filled])
    }

    /// [`Inflater::inflate`] into the caller's buffer: appends the inflated
    /// message to `out` (which is left as it was on an error). `out` grows
    /// as `inflate`'s own buffer does, by at most `limit + 1` bytes.
    ///
    /// ```
    /// use wsloop::protocol::deflate::{Deflater, Inflater};
    ///
    /// let mut compressed = Vec::new();
    /// Deflater::new(1).compress(b"{\"op\":\"ping\"}", 15, &mut compressed);
    /// let mut message = b"prefix:".to_vec();
    /// Inflater::new().inflate_into(&compressed, 1024, &mut message).unwrap();
    /// assert_eq!(message, b"prefix:{\"op\":\"ping\"}");
    /// ```
    pub fn inflate_into(
        &mut self,
        compressed: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let start = out.len();
        let mut sink = Sink::new(out, start, limit, compressed.len());
        let result = inflate_message(&mut self.inflater, compressed, &mut sink);
        let filled = sink.filled;
        out.truncate(start + if result.is_ok() { filled } else { 0 });
        result
    }

    /// Gives back the output buffer if a large message grew it past
    /// [`RETAINED_OUTPUT`], so that an idle loop does not keep a message
    /// limit's worth of memory. Meant for when the loop goes idle.
    pub fn release(&mut self) {
        if self.out.capacity() > RETAINED_OUTPUT {
            self.out = Vec::new();
        }
        self.filled = 0;
    }

    /// The capacity of the output buffer, in bytes.
    pub fn buffer_capacity(&self) -> usize {
        self.out.capacity()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

/// Inflates one message from a fresh context: `compressed`, then [`TAIL`],
/// then [`END_PROBE`], which must end the stream exactly.
fn inflate_message(
    inflater: &mut Decompress,
    compressed: &[u8],
    sink: &mut Sink<'_>,
) -> Result<(), InflateError> {
    inflater.reset(false);
    if compressed.is_empty() {
        // Not a complete stream once the tail is appended, but zlib-based
        // peers (which never check for the end) take it as an empty
        // message, and there is nothing to lose.
        return Ok(());
    }
    if let Fed::StreamEnd(read) = feed(inflater, compressed, sink)? {
        return after_final_block(&compressed[read..]);
    }
    let message_len = sink.filled;
    feed_tail(inflater, sink, message_len)?;
    // Neither may the probe add output: a message whose last block ends
    // only with the probe's bits was cut (found by the fuzzer: a final
    // block that the tail and the probe continued with a literal and an
    // end-of-block code).
    match feed(inflater, &END_PROBE, sink)? {
        Fed::StreamEnd(read) if read == END_PROBE.len() && sink.filled == message_len => Ok(()),
        _ => Err(InflateError::Corrupt),
    }
}

/// Feeds [`TAIL`] after a message that did not end its stream. At a block
/// boundary, where every message ends, it is an empty stored block: it
/// must neither end the stream (a final block that needed the tail's bits)
/// nor add output (a block cut short, continued with the tail as data).
fn feed_tail(
    inflater: &mut Decompress,
    sink: &mut Sink<'_>,
    message_len: usize,
) -> Result<(), InflateError> {
    match feed(inflater, &TAIL, sink)? {
        Fed::All if sink.filled == message_len => Ok(()),
        _ => Err(InflateError::Corrupt),
    }
}

/// What may follow a final block inside a message: nothing, or the one
/// octet `00` of RFC 7692 §7.2.3.4 (the header bits of the empty stored
/// block whose last 4 octets the sender removed). More would be a second
/// stream or garbage, which zlib would silently drop: better to refuse the
/// message than to deliver part of it.
fn after_final_block(rest: &[u8]) -> Result<(), InflateError> {
    match rest {
        [] | [0x00] => Ok(()),
        _ => Err(InflateError::Corrupt),
    }
}

/// How a piece of input went in.
enum Fed {
    /// All of it, the stream not ended.
    All,
    /// The stream ended after this many bytes of it.
    StreamEnd(usize),
}

/// Feeds `input` to `inflater` until it is consumed and the pending output
/// drained, or the stream ends.
fn feed(inflater: &mut Decompress, input: &[u8], sink: &mut Sink<'_>) -> Result<Fed, InflateError> {
    let mut read = 0;
    loop {
        let space = sink.space()?;
        let space_len = space.len();
        let before_in = inflater.total_in();
        let before_out = inflater.total_out();
        let status = inflater
            .decompress(&input[read..], space, FlushDecompress::None)
            .map_err(|_| InflateError::Corrupt)?;
        let consumed = (inflater.total_in() - before_in) as usize;
        let written = (inflater.total_out() - before_out) as usize;
        read = (read + consumed).min(input.len());
        sink.filled += written.min(space_len);
        if sink.filled > sink.limit {
            return Err(InflateError::TooBig);
        }
        match status {
            Status::StreamEnd => return Ok(Fed::StreamEnd(read)),
            Status::Ok | Status::BufError => {
                if written < space_len {
                    if read == input.len() {
                        return Ok(Fed::All);
                    }
                    if consumed == 0 && written == 0 {
                        // Input left, room left, and no progress: zlib-rs
                        // never does this on a valid stream.
                        return Err(InflateError::Corrupt);
                    }
                }
            }
        }
    }
}

/// The output of one message: `vec[start..]`, of which `filled` bytes are
/// written, grown on demand up to `limit + 1` bytes.
struct Sink<'a> {
    vec: &'a mut Vec<u8>,
    start: usize,
    filled: usize,
    limit: usize,
    /// The most the message may take: `limit + 1` (the one byte that
    /// proves it too big).
    bound: usize,
    /// A size hint for the first allocation: the compressed length.
    hint: usize,
}

impl<'a> Sink<'a> {
    /// Output into `vec[start..]`, where `vec[start..vec.len()]` is
    /// initialised room to use before growing.
    fn new(vec: &'a mut Vec<u8>, start: usize, limit: usize, compressed_len: usize) -> Sink<'a> {
        Sink {
            start,
            vec,
            filled: 0,
            limit,
            bound: limit.saturating_add(1),
            hint: compressed_len,
        }
    }

    /// The initialised room after the output so far, at most up to the
    /// bound, growing the buffer if the room is used up.
    fn space(&mut self) -> Result<&mut [u8], InflateError> {
        // Only used when filled < bound (feed stops once it passes the
        // limit), so `have` never reaches `bound` with no room left.
        let have = self.vec.len() - self.start;
        if self.filled == have {
            // Doubling from a first guess of four times the compressed
            // size (1 KiB to 16 KiB), so copying stays linear.
            let first = self
                .hint
                .saturating_mul(4)
                .clamp(FIRST_OUTPUT, INFLATE_STEP);
            let new_have = have.saturating_mul(2).max(first).min(self.bound);
            if new_have <= have {
                return Err(InflateError::TooBig);
            }
            // Exactly what is needed, not Vec's doubling: the bound on
            // allocation is the point.
            self.vec.reserve_exact(new_have - have);
            self.vec.resize(self.start + new_have, 0);
        }
        let end = self.vec.len().min(self.start.saturating_add(self.bound));
        Ok(&mut self.vec[self.start + self.filled..end])
    }
}

/// A per-connection inflater that keeps its LZ77 window from one message
/// to the next, for clients that did not agree to
/// `client_no_context_takeover` (RFC 7692 §7.2.2: each message inflates
/// with the window the previous one left).
///
/// It costs each connection one zlib-rs inflate state: 47,552 bytes of
/// heap (measured by `tests/deflate_memory.rs`) whatever the window bits,
/// since zlib-rs sizes the state and its window for 15 bits; 10,000 such
/// connections hold 453 MiB. It has no output buffer of its own:
/// [`ContextInflater::inflate_into`] writes into the caller's, which can
/// be shared by every connection on the loop.
///
/// It refuses a message cut inside a block when the appended tail would
/// be taken as more of that block (output, or the end of the stream);
/// unlike [`Inflater`] it cannot probe further (that would end the stream
/// and lose the window), so a cut that the tail's bits happen to complete
/// without output goes unseen, as with zlib-based peers.
/// After an error the context is lost: every later call is `Corrupt`, and
/// the connection is to be failed (1009 or 1007) anyway.
#[derive(Debug)]
pub struct ContextInflater {
    inflater: Decompress,
    window_bits: u8,
    failed: bool,
}

impl ContextInflater {
    /// An inflater for a client compressing with `window_bits`
    /// (`client_max_window_bits`; taken within 9..=15: a client asked for
    /// 8 bits compresses with 9 under zlib, and a larger window inflates
    /// any smaller one).
    pub fn new(window_bits: u8) -> ContextInflater {
        let window_bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        ContextInflater {
            inflater: Decompress::new_with_window_bits(false, window_bits),
            window_bits,
            failed: false,
        }
    }

    /// The window size it inflates with, 9..=15.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Appends the next message of the connection, inflated, to `out`
    /// (left as it was on an error). Output beyond `limit` bytes is
    /// `TooBig`, found while inflating; `out` grows by at most `limit + 1`
    /// bytes.
    ///
    /// A message that ends with a final block (`BFINAL = 1`) ends the
    /// stream: the next message starts a new one with an empty window, so
    /// a back-reference into the old window is `Corrupt`.
    ///
    /// ```
    /// use wsloop::protocol::deflate::codec::ContextInflater;
    ///
    /// let mut inflater = ContextInflater::new(15);
    /// let mut out = Vec::new();
    /// inflater.inflate_into(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 125, &mut out).unwrap();
    /// // RFC 7692 §7.2.3.2: the second "Hello" refers to the first.
    /// inflater.inflate_into(&[0xf2, 0x00, 0x11, 0x00, 0x00], 125, &mut out).unwrap();
    /// assert_eq!(out, b"HelloHello");
    /// ```
    pub fn inflate_into(
        &mut self,
        compressed: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        if self.failed {
            return Err(InflateError::Corrupt);
        }
        let start = out.len();
        let mut sink = Sink::new(out, start, limit, compressed.len());
        let result = self.inflate_message(compressed, &mut sink);
        let filled = sink.filled;
        out.truncate(start + if result.is_ok() { filled } else { 0 });
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn inflate_message(
        &mut self,
        compressed: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<(), InflateError> {
        if compressed.is_empty() {
            // See `inflate_message`: an empty message, and feeding the tail
            // alone would start a stored block that never ends.
            return Ok(());
        }
        match feed(&mut self.inflater, compressed, sink)? {
            Fed::StreamEnd(read) => {
                after_final_block(&compressed[read..])?;
                // The stream is over; the next message starts a new one.
                self.inflater.reset(false);
                Ok(())
            }
            Fed::All => {
                let message_len = sink.filled;
                feed_tail(&mut self.inflater, sink, message_len)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7692 §7.2.3.1: "Hello" in one fixed-Huffman block, tail removed.
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    /// Deterministic pseudo-random bytes (xorshift), incompressible.
    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// JSON-ish text, compressible.
    fn text(len: usize) -> Vec<u8> {
        let line =
            br#"{"type":"message","room":"lobby","user":"ada","text":"hello there","seq":12345}"#;
        line.iter().copied().cycle().take(len).collect()
    }

    /// A raw deflate stream built bit by bit (LSB first, RFC 1951 §3.1.1).
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }

    impl Bits {
        fn new() -> Bits {
            Bits {
                out: Vec::new(),
                acc: 0,
                n: 0,
            }
        }
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code, sent most significant bit first.
        fn code(&mut self, code: u64, len: u32) {
            let reversed = (0..len).fold(0, |r, i| r | ((code >> i) & 1) << (len - 1 - i));
            self.put(reversed, len);
        }
        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }

    /// A non-final fixed-Huffman block: one literal 0, then `matches`
    /// copies of 258 bytes at distance 1 (13 bits each), then an empty
    /// stored block's header (the tail's start): `1 + 258 * matches` zeros.
    fn zeros_bomb(matches: usize) -> Vec<u8> {
        let mut bits = Bits::new();
        bits.put(0b010, 3); // BFINAL = 0, BTYPE = 01
        bits.code(0x30, 8); // literal 0
        for _ in 0..matches {
            bits.code(0xc5, 8); // length code 285: 258
            bits.code(0, 5); // distance code 0: 1
        }
        bits.code(0, 7); // end of block
        bits.put(0, 3); // BFINAL = 0, BTYPE = 00: the stored block the tail ends
        bits.finish()
    }

    fn round_trip(deflater: &mut Deflater, inflater: &mut Inflater, data: &[u8], bits: u8) {
        let mut compressed = Vec::new();
        deflater.compress(data, bits, &mut compressed);
        assert!(!compressed.ends_with(&TAIL) || data.is_empty() && compressed == [0]);
        let inflated = inflater
            .inflate(&compressed, data.len())
            .unwrap_or_else(|e| {
                panic!(
                    "{} bytes at {bits} bits, level {}: {e}",
                    data.len(),
                    deflater.level()
                )
            });
        assert_eq!(inflated, data, "{} bytes at {bits} bits", data.len());
        if !data.is_empty() {
            assert_eq!(
                inflater.inflate(&compressed, data.len() - 1),
                Err(InflateError::TooBig)
            );
        }
    }

    #[test]
    fn round_trips_every_window_and_size() {
        let sizes = [
            0, 1, 2, 5, 124, 125, 126, 127, 1000, 4096, 16384, 65535, 65536, 65537, 200_000,
        ];
        let mut inflater = Inflater::new();
        for level in [0, 1, 6, 9] {
            let mut deflater = Deflater::new(level);
            for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
                for &size in &sizes {
                    round_trip(&mut deflater, &mut inflater, &text(size), bits);
                    round_trip(
                        &mut deflater,
                        &mut inflater,
                        &random(size, size as u64),
                        bits,
                    );
                }
            }
            assert_eq!(deflater.contexts(), 7);
        }
    }

    #[test]
    fn window_bits_outside_the_range() {
        let mut deflater = Deflater::new(6);
        let mut inflater = Inflater::new();
        for bits in [0, 8, 16, 255] {
            for data in [Vec::new(), text(70_000), random(70_000, 3)] {
                round_trip(&mut deflater, &mut inflater, &data, bits);
            }
        }
        // Below 9: stored blocks, LEN/NLEN per 65,535 bytes.
        let mut out = Vec::new();
        deflater.compress(b"Hello", 8, &mut out);
        assert_eq!(
            out,
            [
                0x00, 0x05, 0x00, 0xfa, 0xff, b'H', b'e', b'l', b'l', b'o', 0x00
            ]
        );
        // Above 15: the 15-bit compressor.
        assert_eq!(deflater.contexts(), 1);
    }

    #[test]
    fn rfc_7692_hello() {
        for level in 1..=9 {
            let mut out = vec![0xaa];
            Deflater::new(level).compress(b"Hello", 15, &mut out);
            assert_eq!(out[1..], HELLO, "level {level}");
            assert_eq!(out[0], 0xaa, "appends");
        }
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&HELLO, 5), Ok(&b"Hello"[..]));
        assert_eq!(inflater.inflate(&HELLO, 4), Err(InflateError::TooBig));
    }

    #[test]
    fn rfc_7692_other_examples() {
        let mut inflater = Inflater::new();
        // §7.2.3.3: a stored block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflater.inflate(&stored, 125), Ok(&b"Hello"[..]));
        // §7.2.3.5: two blocks in one message (a sync flush between).
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflater.inflate(&two, 125), Ok(&b"Hello"[..]));
        // §7.2.3.4: a final block, then the header octet of an empty stored block.
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflater.inflate(&bfinal, 125), Ok(&b"Hello"[..]));
        // ... or without that octet.
        assert_eq!(inflater.inflate(&bfinal[..7], 125), Ok(&b"Hello"[..]));
        // §7.2.3.2 needs the first message's window: not this inflater's job.
        assert_eq!(
            inflater.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], 125),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn empty_message() {
        let mut out = Vec::new();
        Deflater::new(6).compress(b"", 15, &mut out);
        assert_eq!(out, [0x00]);
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&[0x00], 0), Ok(&b""[..]));
        // An empty payload with RSV1, as some senders do.
        assert_eq!(inflater.inflate(&[], 0), Ok(&b""[..]));
        // An empty final block, as some zlib bindings compress "" (a
        // final fixed-Huffman block holding only its end code).
        assert_eq!(inflater.inflate(&[0x03, 0x00], 0), Ok(&b""[..]));
        // The tail itself, untrimmed: an empty block then another one.
        assert_eq!(
            inflater.inflate(&[0x00, 0x00, 0x00, 0xff, 0xff, 0x00], 0),
            Ok(&b""[..])
        );
    }

    #[test]
    fn limit_zero() {
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&[0x00], 0), Ok(&b""[..]));
        assert_eq!(inflater.inflate(&HELLO, 0), Err(InflateError::TooBig));
        assert!(inflater.buffer_capacity() <= 1);
    }

    #[test]
    fn corrupt_inputs() {
        let mut inflater = Inflater::new();
        let cases: &[&[u8]] = &[
            // BTYPE = 11 (reserved).
            &[0x06],
            &[0xff, 0xff, 0xff],
            // A stored block whose NLEN is not !LEN.
            &[
                0x00, 0x05, 0x00, 0x00, 0x00, b'H', b'e', b'l', b'l', b'o', 0x00,
            ],
            // A distance before the start of the output.
            &[0x02, 0x01, 0x00],
            // Cut inside the block: "Hello" without its last octets.
            &HELLO[..5],
            &HELLO[..3],
            // Cut inside a stored block.
            &[0x00, 0x05, 0x00, 0xfa, 0xff, b'H', b'e'],
            // Data after a final block.
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00],
            &[
                0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ];
        for &case in cases {
            assert_eq!(
                inflater.inflate(case, 1 << 20),
                Err(InflateError::Corrupt),
                "{case:02x?}"
            );
            // And the next message does not suffer from it.
            assert_eq!(inflater.inflate(&HELLO, 125), Ok(&b"Hello"[..]));
        }
    }

    #[test]
    fn cut_messages_are_corrupt() {
        // Found by the fuzzer: a final fixed-Huffman block that never ends,
        // which the tail continues with literals and the probe ends with
        // one more literal and an end-of-block code.
        let cut = [0xd3, 0x6e, 0xff, 0xfa, 0x60];
        assert_eq!(
            Inflater::new().inflate(&cut, 4096),
            Err(InflateError::Corrupt)
        );
        let mut out = Vec::new();
        assert_eq!(
            ContextInflater::new(15).inflate_into(&cut, 4096, &mut out),
            Err(InflateError::Corrupt)
        );
        // Every cut of a real message short of its end.
        let mut compressed = Vec::new();
        Deflater::new(6).compress(&text(3000), 15, &mut compressed);
        let mut inflater = Inflater::new();
        for len in 1..compressed.len() {
            assert_eq!(
                inflater.inflate(&compressed[..len], 1 << 20),
                Err(InflateError::Corrupt),
                "cut at {len} of {}",
                compressed.len()
            );
        }
        // The context-keeping inflater sees only the cuts whose tail is
        // taken as data or ends the stream: here 81 of the 105 (the tail's
        // bits often make an unfinished code of the block's dynamic
        // Huffman table, with no output).
        let missed = (1..compressed.len())
            .filter(|&len| {
                let mut out = Vec::new();
                ContextInflater::new(15)
                    .inflate_into(&compressed[..len], 1 << 20, &mut out)
                    .is_ok()
            })
            .count();
        assert!(
            missed * 3 < compressed.len(),
            "{missed} of {}",
            compressed.len()
        );
    }

    #[test]
    fn distance_too_far_back_in_a_real_stream() {
        let mut deflater = Deflater::new(6);
        let mut first = Vec::new();
        deflater.compress(b"Hello", 15, &mut first);
        // What a context-keeping sender sends next (RFC 7692 §7.2.3.2).
        let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&first, 125), Ok(&b"Hello"[..]));
        assert_eq!(inflater.inflate(&second, 125), Err(InflateError::Corrupt));
    }

    #[test]
    fn messages_are_independent() {
        let mut deflater = Deflater::new(6);
        let mut inflater = Inflater::new();
        let a = text(10_000);
        let mut ca = Vec::new();
        deflater.compress(&a, 15, &mut ca);
        let mut again = Vec::new();
        deflater.compress(&a, 15, &mut again);
        // Compressing the same message twice gives the same bytes: nothing
        // of the first was kept.
        assert_eq!(ca, again);
        // Inflating after an unrelated message (and after an error) gives
        // the same result as on a fresh inflater.
        let fresh = Inflater::new().inflate(&ca, 1 << 20).unwrap().to_vec();
        inflater.inflate(&HELLO, 125).unwrap();
        assert_eq!(
            inflater.inflate(&HELLO[..4], 125),
            Err(InflateError::Corrupt)
        );
        assert_eq!(inflater.inflate(&ca, 1 << 20).unwrap(), &fresh[..]);
        assert_eq!(fresh, a);
        // A TooBig in the middle of a message leaves nothing behind either.
        assert_eq!(inflater.inflate(&ca, 100), Err(InflateError::TooBig));
        assert_eq!(inflater.inflate(&ca, 1 << 20).unwrap(), &a[..]);
    }

    #[test]
    fn the_tail_is_stripped() {
        let mut deflater = Deflater::new(6);
        for data in [text(1), text(300), random(300, 9), random(100_000, 1)] {
            let mut with = Vec::new();
            let mut compressor = Compress::new_with_window_bits(Compression::new(6), false, 15);
            assert!(sync_flush(&mut compressor, &data, &mut with));
            assert!(with.ends_with(&TAIL));
            let mut out = Vec::new();
            deflater.compress(&data, 15, &mut out);
            assert_eq!(out, with[..with.len() - 4]);
        }
    }

    #[test]
    fn inflation_bomb_is_bounded() {
        // About 1 GiB of zeros in 6.5 MB (deflate's best ratio is ~1032:1,
        // so no 1 KiB input inflates past ~1 MiB).
        let matches = (1 << 30) / 258;
        let bomb = zeros_bomb(matches);
        assert!(bomb.len() < 7 << 20);
        let limit = 1 << 20;
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&bomb, limit), Err(InflateError::TooBig));
        assert!(
            inflater.buffer_capacity() <= limit + INFLATE_STEP,
            "{}",
            inflater.buffer_capacity()
        );
        // It stopped right past the limit: about limit / 258 matches in.
        let read = inflater.inflater.total_in() as usize;
        assert!(read < bomb.len() / 100, "read {read} of {}", bomb.len());
        assert!(inflater.inflater.total_out() as usize <= limit + 1);
        // The same stream, small enough, inflates.
        let small = zeros_bomb(1000);
        assert_eq!(
            inflater.inflate(&small, 258_001).unwrap(),
            &vec![0; 258_001][..]
        );
        assert_eq!(inflater.inflate(&small, 258_000), Err(InflateError::TooBig));
        // A small limit keeps the buffer small.
        let mut small_limit = Inflater::new();
        assert_eq!(small_limit.inflate(&bomb, 100), Err(InflateError::TooBig));
        assert!(small_limit.buffer_capacity() <= 101);
        // inflate_into grows the caller's buffer by no more than the limit.
        let mut out = Vec::new();
        assert_eq!(
            small_limit.inflate_into(&bomb, 5000, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(out.is_empty() && out.capacity() <= 5001);
    }

    #[test]
    fn release_gives_back_a_large_buffer() {
        let mut inflater = Inflater::new();
        let data = text(1 << 20);
        let mut compressed = Vec::new();
        Deflater::new(1).compress(&data, 15, &mut compressed);
        assert_eq!(inflater.inflate(&compressed, 1 << 20).unwrap(), &data[..]);
        assert!(inflater.buffer_capacity() > RETAINED_OUTPUT);
        assert!(inflater.buffer_capacity() <= (1 << 20) + 1);
        inflater.release();
        assert_eq!(inflater.buffer_capacity(), 0);
        assert_eq!(inflater.inflate(&HELLO, 125), Ok(&b"Hello"[..]));
        // A small buffer is kept.
        inflater.release();
        assert!(inflater.buffer_capacity() > 0);
    }

    #[test]
    fn inflate_into_appends() {
        let mut inflater = Inflater::new();
        let mut out = b"ab".to_vec();
        inflater.inflate_into(&HELLO, 5, &mut out).unwrap();
        assert_eq!(out, b"abHello");
        assert_eq!(
            inflater.inflate_into(&HELLO, 4, &mut out),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            inflater.inflate_into(&[0x06], 4, &mut out),
            Err(InflateError::Corrupt)
        );
        assert_eq!(out, b"abHello");
    }

    #[test]
    fn context_inflater_keeps_the_window() {
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            // A context-keeping sender: one compressor, never reset.
            let mut compressor = Compress::new_with_window_bits(Compression::new(6), false, bits);
            let mut inflater = ContextInflater::new(bits);
            assert_eq!(inflater.window_bits(), bits);
            let mut total = Vec::new();
            for i in 0..20 {
                let data = if i % 3 == 2 {
                    random(3000, i)
                } else {
                    text(500 + 700 * i as usize)
                };
                let mut compressed = Vec::new();
                assert!(sync_flush(&mut compressor, &data, &mut compressed));
                compressed.truncate(compressed.len() - 4);
                let mut out = Vec::new();
                inflater
                    .inflate_into(&compressed, data.len(), &mut out)
                    .unwrap();
                assert_eq!(out, data, "message {i} at {bits} bits");
                total.extend_from_slice(&compressed);
            }
        }
    }

    #[test]
    fn context_inflater_rfc_and_errors() {
        let mut inflater = ContextInflater::new(15);
        let mut out = Vec::new();
        inflater.inflate_into(&HELLO, 5, &mut out).unwrap();
        inflater
            .inflate_into(&[0xf2, 0x00, 0x11, 0x00, 0x00], 5, &mut out)
            .unwrap();
        inflater.inflate_into(&[], 5, &mut out).unwrap();
        assert_eq!(out, b"HelloHello");
        // A final block ends the stream: the next message starts afresh.
        inflater
            .inflate_into(
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
                5,
                &mut out,
            )
            .unwrap();
        inflater.inflate_into(&HELLO, 5, &mut out).unwrap();
        assert_eq!(out, b"HelloHelloHelloHello");
        // Too big, then every later call is Corrupt.
        assert_eq!(
            inflater.inflate_into(&HELLO, 4, &mut out),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            inflater.inflate_into(&HELLO, 5, &mut out),
            Err(InflateError::Corrupt)
        );
        assert_eq!(out, b"HelloHelloHelloHello");
        // Window sizes are clamped.
        assert_eq!(ContextInflater::new(8).window_bits(), 9);
        assert_eq!(ContextInflater::new(16).window_bits(), 15);
        // A bomb is stopped at the limit.
        let mut inflater = ContextInflater::new(15);
        let mut out = Vec::new();
        assert_eq!(
            inflater.inflate_into(&zeros_bomb(100_000), 4096, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(out.capacity() <= 4097);
        let mut inflater = ContextInflater::new(15);
        assert_eq!(
            inflater.inflate_into(&[0x06], 4096, &mut out),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        let mut inflater = Inflater::new();
        let mut context = ContextInflater::new(9);
        let mut out = Vec::new();
        for seed in 0..2000u64 {
            let data = random((seed % 300) as usize, seed);
            let _ = inflater.inflate(&data, 1000);
            let _ = context.inflate_into(&data, 1000, &mut out);
            if context.failed {
                context = ContextInflater::new(9);
            }
            out.clear();
        }
    }
}
