//! A connection's outbound queue: encoded frames waiting to be written.
//!
//! Frames are written corked: everything queued during a loop turn goes out
//! in one `writev`. Broadcast frames are shared (`Rc`), so a recipient that
//! cannot take one now holds a pointer and an offset, never a copy. Control
//! frames that must not wait (pongs, and closes that end a failing
//! connection) go in an urgent lane that is written ahead of queued data,
//! but never in the middle of a partly written frame.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use crate::protocol::frame::FrameHeader;

/// The most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// The iovec array used when no more chunks than this are queued.
const FEW_IOVECS: usize = 4;
/// Small owned frames are appended to the previous owned chunk up to this
/// size, so a burst of replies costs one buffer and one iovec.
const COALESCE_LIMIT: usize = 64 * 1024;
/// Frames larger than this get a buffer of their own: appending them would
/// mostly move bytes around as the shared buffer grows.
const COALESCE_FRAME: usize = 4 * 1024;
/// Pongs queued before older ones are dropped.
const MAX_PENDING_PONGS: usize = 16;

/// One queued piece of output.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Whole WebSocket frames only this connection will send, coalesced:
    /// frame boundaries can be found again by walking the headers.
    Frames(Vec<u8>),
    /// Other bytes only this connection will send: an HTTP response, a
    /// control frame.
    Owned(Vec<u8>),
    /// Frames shared with other recipients of the same broadcast.
    Shared(Rc<Vec<u8>>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Frames(v) | Chunk::Owned(v) => v,
            Chunk::Shared(v) => v,
        }
    }
}

/// A loop-wide pool of spare buffers and queue sets, so replies do not
/// allocate in the steady state.
///
/// The pool's own memory is bounded by its tiers: at most 256 buffers of
/// up to 4 KiB and 32 of up to 64 KiB (`MAX_SMALL`, `SMALL_CAPACITY`,
/// `MAX_LARGE`, `LARGE_CAPACITY`). A single tier
/// would let every pooled buffer ratchet up to the largest frame it ever
/// carried, so occasional large messages would slowly turn the whole pool
/// into large buffers (the soak test saw RSS creep for minutes that way).
#[derive(Debug, Default)]
pub struct BufferPool {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    /// Boxed because an outbox holds its lanes boxed: they move back and
    /// forth without being reallocated.
    #[allow(clippy::vec_box)]
    spare_lanes: Vec<Box<Lanes>>,
}

impl BufferPool {
    /// Replies up to this size (a burst of small frames coalesced) are
    /// served from the small tier.
    const SMALL_CAPACITY: usize = 4 * 1024;
    const MAX_SMALL: usize = 256;
    /// Larger buffers are kept up to this capacity; beyond it a frame gets
    /// a buffer of its own that is freed once written.
    const LARGE_CAPACITY: usize = 64 * 1024;
    const MAX_LARGE: usize = 32;
    /// A fan-out to thousands of connections takes thousands of lane sets
    /// at once; keeping them avoids reallocating them for the next one.
    const MAX_SPARE_LANES: usize = 4096;
    /// Lane sets whose queues grew past this many entries (a slow reader
    /// behind a burst of broadcasts) are freed rather than kept.
    const MAX_KEPT_LANE_ENTRIES: usize = 32;

    /// A cleared buffer for a frame of about `len_hint` bytes.
    pub(crate) fn take(&mut self, len_hint: usize) -> Vec<u8> {
        let tier = if len_hint > Self::SMALL_CAPACITY {
            &mut self.large
        } else {
            &mut self.small
        };
        tier.pop().unwrap_or_default()
    }

    /// Returns a written buffer for reuse, or frees it if its tier is full
    /// or it is too large to keep.
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        let (tier, max) = match buf.capacity() {
            0 => return,
            c if c <= Self::SMALL_CAPACITY => (&mut self.small, Self::MAX_SMALL),
            c if c <= Self::LARGE_CAPACITY => (&mut self.large, Self::MAX_LARGE),
            _ => return,
        };
        if tier.len() < max {
            buf.clear();
            tier.push(buf);
        }
    }

    fn take_lanes(&mut self) -> Box<Lanes> {
        self.spare_lanes.pop().unwrap_or_default()
    }

    fn give_lanes(&mut self, lanes: Box<Lanes>) {
        let grown = [
            lanes.pongs.capacity(),
            lanes.urgent.capacity(),
            lanes.data.capacity(),
        ]
        .into_iter()
        .any(|c| c > Self::MAX_KEPT_LANE_ENTRIES);
        if !grown && self.spare_lanes.len() < Self::MAX_SPARE_LANES {
            self.spare_lanes.push(lanes);
        }
    }
}

/// The outbound queue of one connection.
///
/// An idle connection's queue is one word and a counter: the lanes are
/// allocated (from the pool) only while output is pending, and go back to
/// the pool when it is all written.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Unwritten bytes across all lanes.
    queued: usize,
    lanes: Option<Box<Lanes>>,
}

/// A chunk whose writing has begun: bytes `written..end` are still to go.
/// `end` is the chunk's length unless an urgent close cut it at the end of
/// the frame being written.
#[derive(Debug)]
struct Partial {
    chunk: Chunk,
    written: usize,
    end: usize,
}

impl Partial {
    fn new(chunk: Chunk, written: usize) -> Partial {
        let end = chunk.bytes().len();
        Partial {
            chunk,
            written,
            end,
        }
    }

    fn rest(&self) -> &[u8] {
        &self.chunk.bytes()[self.written..self.end]
    }
}

/// The queues behind an [`Outbox`], written in field order.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    /// The chunk being written and how much of it is already out.
    partial: Option<Partial>,
    /// Pongs not yet started, at most [`MAX_PENDING_PONGS`]: past that the
    /// oldest is dropped, so a ping flood cannot grow the queue (RFC 6455
    /// §5.5.3 allows answering only the most recent ping).
    pongs: VecDeque<Vec<u8>>,
    urgent: VecDeque<Chunk>,
    data: VecDeque<Chunk>,
}

impl Outbox {
    fn lanes(&mut self, pool: &mut BufferPool) -> &mut Lanes {
        self.lanes.get_or_insert_with(|| pool.take_lanes())
    }

    /// Unwritten bytes.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Appends one whole frame to the data lane, written by `encode` into a
    /// buffer taken from the pool or shared with the previous small frame.
    pub(crate) fn push_frame_with(
        &mut self,
        pool: &mut BufferPool,
        len_hint: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) {
        let data = &mut self.lanes(pool).data;
        let coalesce = matches!(
            data.back(),
            Some(Chunk::Frames(buf))
                if len_hint <= COALESCE_FRAME && buf.len() + len_hint <= COALESCE_LIMIT
        );
        if !coalesce {
            data.push_back(Chunk::Frames(pool.take(len_hint)));
        }
        let Some(Chunk::Frames(buf)) = data.back_mut() else {
            unreachable!("the back chunk holds frames");
        };
        let before = buf.len();
        encode(buf);
        let added = buf.len() - before;
        self.queued += added;
    }

    /// Queues `bytes` to be written before anything queued later, in any
    /// lane: an HTTP response, such as the `101`, which must precede even a
    /// pong queued for a ping that arrived with the upgrade request. The
    /// outbox must be empty.
    pub(crate) fn push_first(&mut self, pool: &mut BufferPool, bytes: &[u8]) {
        debug_assert!(self.is_empty(), "push_first on a non-empty outbox");
        let mut buf = pool.take(bytes.len());
        buf.extend_from_slice(bytes);
        self.queued += buf.len();
        self.lanes(pool).partial = Some(Partial::new(Chunk::Owned(buf), 0));
    }

    /// Appends a shared frame to the data lane.
    pub(crate) fn push_shared(&mut self, pool: &mut BufferPool, frame: Rc<Vec<u8>>) {
        self.queued += frame.len();
        self.lanes(pool).data.push_back(Chunk::Shared(frame));
    }

    /// Queues a pong ahead of data, dropping the oldest unsent pong when
    /// too many are waiting.
    pub(crate) fn push_pong(&mut self, pool: &mut BufferPool, frame: Vec<u8>) {
        let added = frame.len();
        let pongs = &mut self.lanes(pool).pongs;
        let dropped = if pongs.len() == MAX_PENDING_PONGS {
            pongs.pop_front().map_or(0, |old| old.len())
        } else {
            0
        };
        pongs.push_back(frame);
        self.queued = self.queued + added - dropped;
    }

    /// Queues a frame ahead of data. With `discard_data`, queued data not
    /// yet started is dropped (the frame is a close ending the connection,
    /// and nothing may follow it).
    pub(crate) fn push_urgent(
        &mut self,
        pool: &mut BufferPool,
        frame: Vec<u8>,
        discard_data: bool,
    ) {
        let added = frame.len();
        let lanes = self.lanes(pool);
        let dropped = if discard_data {
            lanes.discard_unstarted_frames(pool)
        } else {
            0
        };
        lanes.urgent.push_back(Chunk::Owned(frame));
        self.queued = self.queued + added - dropped;
    }

    /// Writes as much as the socket takes. Returns the bytes written; stops
    /// without error at `WouldBlock`.
    pub(crate) fn flush(
        &mut self,
        stream: &mut impl Write,
        pool: &mut BufferPool,
    ) -> io::Result<usize> {
        let mut total = 0;
        while self.queued > 0 {
            let Some(lanes) = self.lanes.as_deref_mut() else {
                break;
            };
            // Most flushes carry one chunk (small replies coalesce): plain
            // `write` skips the kernel's iovec import that `writev` pays.
            // A few chunks take a small iovec array, which spares
            // initialising the full one every time.
            let result = match lanes.chunk_count() {
                1 => lanes.write_first(stream),
                n if n <= FEW_IOVECS => lanes.write_to::<FEW_IOVECS>(stream),
                _ => lanes.write_to::<MAX_IOVECS>(stream),
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            lanes.consume(written, pool);
            self.queued -= written;
            total += written;
        }
        if self.queued == 0
            && let Some(lanes) = self.lanes.take()
        {
            pool.give_lanes(lanes);
        }
        Ok(total)
    }
}

impl Lanes {
    /// Drops every data frame not yet started, including those coalesced
    /// behind a partly written one (which is finished, never split).
    /// Returns the bytes dropped.
    fn discard_unstarted_frames(&mut self, pool: &mut BufferPool) -> usize {
        let mut dropped: usize = self.data.drain(..).map(|c| c.bytes().len()).sum();
        let Some(partial) = &mut self.partial else {
            return dropped;
        };
        // Owned and shared data chunks hold whole frames, coalesced or
        // batched; other chunks (an HTTP response, a control frame) are one
        // piece.
        if matches!(partial.chunk, Chunk::Frames(_) | Chunk::Shared(_)) {
            let end = end_of_started_frames(&partial.chunk.bytes()[..partial.end], partial.written);
            dropped += partial.end - end;
            partial.end = end;
            if partial.written == end {
                // What was written ended on a frame boundary.
                if let Some(partial) = self.partial.take() {
                    recycle(partial.chunk, pool);
                }
            }
        }
        dropped
    }

    /// Queued chunks, including a partly written one.
    fn chunk_count(&self) -> usize {
        usize::from(self.partial.is_some()) + self.pongs.len() + self.urgent.len() + self.data.len()
    }

    /// The unwritten bytes of every queued chunk, in write order: the rest
    /// of a partly written chunk, pongs, urgent frames, then data.
    fn chunks_in_order(&self) -> impl Iterator<Item = &[u8]> {
        let partial = self.partial.iter().map(Partial::rest);
        let pongs = self.pongs.iter().map(Vec::as_slice);
        let rest = self.urgent.iter().chain(self.data.iter()).map(Chunk::bytes);
        partial.chain(pongs).chain(rest)
    }

    /// One `write` of the first chunk in write order.
    fn write_first(&self, stream: &mut impl Write) -> io::Result<usize> {
        match self.chunks_in_order().next() {
            Some(bytes) => stream.write(bytes),
            None => Ok(0),
        }
    }

    /// One `writev` of up to `N` chunks, in write order.
    fn write_to<const N: usize>(&self, stream: &mut impl Write) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        for bytes in self.chunks_in_order().take(N) {
            slices[count] = IoSlice::new(bytes);
            count += 1;
        }
        stream.write_vectored(&slices[..count])
    }

    /// Drops `n` written bytes from the front, in write order.
    fn consume(&mut self, mut n: usize, pool: &mut BufferPool) {
        if let Some(mut partial) = self.partial.take() {
            let left = partial.end - partial.written;
            if n < left {
                partial.written += n;
                self.partial = Some(partial);
                return;
            }
            n -= left;
            recycle(partial.chunk, pool);
        }
        while n > 0 {
            let chunk = match self.pongs.pop_front() {
                Some(pong) => Chunk::Owned(pong),
                None => match self.urgent.pop_front() {
                    Some(chunk) => chunk,
                    None => self.data.pop_front().expect("written bytes were queued"),
                },
            };
            let len = chunk.bytes().len();
            if n < len {
                self.partial = Some(Partial::new(chunk, n));
                return;
            }
            n -= len;
            recycle(chunk, pool);
        }
    }
}

fn recycle(chunk: Chunk, pool: &mut BufferPool) {
    if let Chunk::Frames(buf) | Chunk::Owned(buf) = chunk {
        pool.give(buf);
    }
}

/// The end of the last frame in `frames` that starts before `written`: the
/// frames up to there have begun going out and must be finished.
fn end_of_started_frames(frames: &[u8], written: usize) -> usize {
    let mut at = 0;
    while at < written {
        // The buffer holds frames this server encoded: their headers parse.
        let Ok(Some((header, used))) = FrameHeader::decode(&frames[at..]) else {
            return frames.len();
        };
        let end = at
            .saturating_add(used)
            .saturating_add(usize::try_from(header.payload_len).unwrap_or(usize::MAX));
        at = end.min(frames.len());
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{OpCode, encode_frame, encoded_len};

    /// A writer that takes at most `limit` bytes per call, then blocks.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let mut n = 0;
            for b in bufs {
                let take = (self.per_call - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A 10-byte binary frame whose payload is eight `byte`s.
    fn ten_byte_frame(byte: u8) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_frame(&mut frame, OpCode::Binary, &[byte; 8]);
        frame
    }

    /// Two shared 10-byte frames (of 1s and of 2s), of which one write of
    /// `first_write` bytes went out before the socket blocked.
    fn partly_written(first_write: usize) -> (BufferPool, Outbox, Trickle) {
        let mut pool = BufferPool::default();
        let mut outbox = Outbox::default();
        outbox.push_shared(&mut pool, Rc::new(ten_byte_frame(1)));
        outbox.push_shared(&mut pool, Rc::new(ten_byte_frame(2)));
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: first_write,
            calls_left: 1,
        };
        outbox.flush(&mut sink, &mut pool).unwrap();
        (pool, outbox, sink)
    }

    #[test]
    fn urgent_frames_never_split_a_partly_written_frame() {
        let (mut pool, mut outbox, mut sink) = partly_written(4);
        outbox.push_pong(&mut pool, vec![0x8A, 0]);
        sink.calls_left = usize::MAX;
        sink.per_call = 3;
        outbox.flush(&mut sink, &mut pool).unwrap();
        let mut expected = ten_byte_frame(1);
        expected.extend_from_slice(&[0x8A, 0]);
        expected.extend_from_slice(&ten_byte_frame(2));
        assert_eq!(sink.out, expected);
        assert!(outbox.is_empty());
    }

    #[test]
    fn ping_flood_keeps_a_bounded_number_of_pongs() {
        let mut pool = BufferPool::default();
        let mut outbox = Outbox::default();
        for i in 0..1000u32 {
            outbox.push_pong(
                &mut pool,
                vec![
                    0x8A,
                    4,
                    (i >> 24) as u8,
                    (i >> 16) as u8,
                    (i >> 8) as u8,
                    i as u8,
                ],
            );
        }
        assert_eq!(outbox.queued(), 6 * MAX_PENDING_PONGS);
    }

    #[test]
    fn small_owned_frames_share_one_buffer() {
        let mut pool = BufferPool::default();
        let mut outbox = Outbox::default();
        for _ in 0..100 {
            outbox.push_frame_with(&mut pool, 3, |b| encode_frame(b, OpCode::Text, b"a"));
        }
        assert_eq!(outbox.lanes.as_ref().unwrap().data.len(), 1);
        assert_eq!(outbox.queued(), 300);
    }

    #[test]
    fn an_urgent_close_cuts_coalesced_frames_at_the_end_of_the_started_one() {
        // Frames of every header length class, coalesced where small.
        let sizes = [5usize, 200, 70_000, 3];
        let mut whole = Vec::new();
        let mut ends = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            encode_frame(&mut whole, OpCode::Binary, &vec![i as u8; len]);
            ends.push(whole.len());
        }
        let cuts = [1, ends[0] - 1, ends[0], ends[0] + 1, ends[1], ends[2] - 7];
        for (written, shared) in cuts.into_iter().flat_map(|w| [(w, false), (w, true)]) {
            let mut pool = BufferPool::default();
            let mut outbox = Outbox::default();
            if shared {
                // One broadcast batch of all four frames.
                outbox.push_shared(&mut pool, Rc::new(whole.clone()));
            } else {
                for (i, &len) in sizes.iter().enumerate() {
                    let payload = vec![i as u8; len];
                    outbox.push_frame_with(&mut pool, encoded_len(len), |b| {
                        encode_frame(b, OpCode::Binary, &payload)
                    });
                }
            }
            let mut sink = Trickle {
                out: Vec::new(),
                per_call: written,
                calls_left: 1,
            };
            outbox.flush(&mut sink, &mut pool).unwrap();
            outbox.push_urgent(&mut pool, vec![0x88, 0], true);
            sink.per_call = usize::MAX;
            sink.calls_left = usize::MAX;
            outbox.flush(&mut sink, &mut pool).unwrap();
            // Everything up to the end of the frame that had started, then
            // the close, then nothing.
            let started_end = *ends.iter().find(|&&end| end >= written).unwrap();
            let mut expected = whole[..started_end].to_vec();
            expected.extend_from_slice(&[0x88, 0]);
            assert_eq!(
                sink.out.len(),
                expected.len(),
                "written {written}, shared {shared}"
            );
            assert_eq!(sink.out, expected, "written {written}, shared {shared}");
            assert!(outbox.is_empty());
        }
    }

    #[test]
    fn pool_keeps_bounded_tiers_and_frees_oversized_buffers() {
        let mut pool = BufferPool::default();
        for _ in 0..1000 {
            pool.give(Vec::with_capacity(100));
            pool.give(Vec::with_capacity(20_000));
            pool.give(Vec::with_capacity(BufferPool::LARGE_CAPACITY + 1));
        }
        assert_eq!(pool.small.len(), BufferPool::MAX_SMALL);
        assert_eq!(pool.large.len(), BufferPool::MAX_LARGE);
        assert!(pool.take(16_000).capacity() >= 20_000);
        assert!(pool.take(10).capacity() < BufferPool::SMALL_CAPACITY);
    }

    #[test]
    fn lanes_that_grew_long_queues_are_not_pooled() {
        let mut pool = BufferPool::default();
        let mut outbox = Outbox::default();
        for _ in 0..1000 {
            outbox.push_shared(&mut pool, Rc::new(vec![7; 4]));
        }
        let mut sink = Trickle {
            out: Vec::new(),
            per_call: usize::MAX,
            calls_left: usize::MAX,
        };
        outbox.flush(&mut sink, &mut pool).unwrap();
        assert_eq!(sink.out.len(), 4000);
        assert!(pool.spare_lanes.is_empty());
        outbox.push_shared(&mut pool, Rc::new(vec![7; 4]));
        outbox.flush(&mut sink, &mut pool).unwrap();
        assert_eq!(pool.spare_lanes.len(), 1);
    }

    #[test]
    fn discarding_data_keeps_the_partial_frame_whole() {
        let (mut pool, mut outbox, mut sink) = partly_written(5);
        outbox.push_urgent(&mut pool, vec![0x88, 0], true);
        sink.calls_left = usize::MAX;
        outbox.flush(&mut sink, &mut pool).unwrap();
        let mut expected = ten_byte_frame(1);
        expected.extend_from_slice(&[0x88, 0]);
        assert_eq!(sink.out, expected);
    }
}
