//! permessage-deflate in the loop (cargo feature `deflate`): the server's
//! side of compression, shared by every connection.
//!
//! One [`Compression`] per loop holds the compressors (one per window size
//! in use, reset for every message), the inflater (reset for every
//! message: clients are asked for `client_no_context_takeover`) and a
//! scratch buffer, so a connection that negotiated the extension keeps
//! only its two-byte [`DeflateParams`]. A broadcast is compressed once per
//! window size among its deflate recipients and shared by all of them,
//! as the plain frames are shared by the rest.

use std::rc::Rc;

use std::collections::HashMap;

use crate::protocol::ProtocolError;
use crate::protocol::deflate::codec::ContextInflater;
use crate::protocol::deflate::{DeflateParams, DeflatePolicy, Deflater, Inflater};
use crate::protocol::frame::{FrameHeader, OpCode, encode_frame_rsv1};
use crate::protocol::message::Message;

/// How the server uses permessage-deflate ([`Config::deflate`](crate::Config::deflate)).
///
/// ```
/// let mut config = wsloop::Config::default();
/// config.deflate = Some(wsloop::DeflateConfig::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Messages shorter than this many bytes go out uncompressed (RFC 7692
    /// lets every message choose): on small messages compression from a
    /// fresh context saves little and costs CPU on both sides. Longer ones
    /// go out compressed when that makes them smaller. 0 sends every
    /// message compressed, smaller or not, for clients (and test suites)
    /// that mishandle uncompressed messages on a compressed connection.
    /// Default 128.
    pub threshold: usize,
    /// zlib compression level, 0 to 9 (default 1: fastest; JSON shrinks
    /// almost as much as at 6).
    pub level: u32,
    /// The largest window the server compresses with, 9 to 15 (default 15).
    /// Smaller windows need less memory in every client's inflater.
    pub server_max_window_bits: u8,
    /// Let clients keep their compression context between messages
    /// (default false). By default the server answers
    /// `client_no_context_takeover`, so one loop-wide inflater, reset per
    /// message, serves every connection. With this set, a client that did
    /// not offer `client_no_context_takeover` may refer back to its earlier
    /// messages, which compresses a stream of similar messages better; each
    /// such connection then gets its own inflater on its first compressed
    /// message, about 48 KiB (zlib-rs sizes it for a 15-bit window), freed
    /// when the connection ends. Budget `max_connections` × 48 KiB.
    pub client_context_takeover: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            threshold: 128,
            level: 1,
            server_max_window_bits: 15,
            client_context_takeover: false,
        }
    }
}

impl DeflateConfig {
    /// The negotiation policy this configuration implies.
    pub(crate) fn policy(&self) -> DeflatePolicy {
        DeflatePolicy {
            server_max_window_bits: self.server_max_window_bits,
            client_no_context_takeover: !self.client_context_takeover,
        }
    }
}

/// The loop's compression state.
#[derive(Debug)]
pub(crate) struct Compression {
    pub(crate) config: DeflateConfig,
    deflater: Deflater,
    /// Out of its slot while an inflated message is lent to the
    /// application.
    inflater: Option<Inflater>,
    /// Compressed payloads on their way into a frame.
    scratch: Vec<u8>,
    /// The last frame [`Compression::frame_for`] built.
    frame: Vec<u8>,
    /// The inflaters of connections that keep their compression context
    /// ([`DeflateConfig::client_context_takeover`]), by slab key: beside
    /// the slab, so other connections stay small.
    contexts: HashMap<usize, Box<ContextInflater>>,
    /// Where a context-keeping connection's message is inflated.
    context_output: Vec<u8>,
}

impl Compression {
    pub(crate) fn new(config: DeflateConfig) -> Compression {
        Compression {
            config,
            deflater: Deflater::new(config.level),
            inflater: Some(Inflater::new()),
            scratch: Vec::new(),
            frame: Vec::new(),
            contexts: HashMap::new(),
            context_output: Vec::new(),
        }
    }

    /// Lends connection `key`'s own inflater (made on its first message)
    /// and the buffer its messages inflate into, for a connection that
    /// keeps its compression context between messages; give them back with
    /// [`Compression::put_context`].
    pub(crate) fn take_context(&mut self, key: usize) -> (Box<ContextInflater>, Vec<u8>) {
        let inflater = self
            .contexts
            .remove(&key)
            .unwrap_or_else(|| Box::new(ContextInflater::new(15)));
        (inflater, std::mem::take(&mut self.context_output))
    }

    pub(crate) fn put_context(
        &mut self,
        key: usize,
        inflater: Box<ContextInflater>,
        mut out: Vec<u8>,
    ) {
        self.contexts.insert(key, inflater);
        // Keep a buffer for the next message, not the largest one ever.
        if out.capacity() > 64 * 1024 {
            out = Vec::new();
        }
        self.context_output = out;
    }

    /// Frees the inflater of connection `key`, if it had one.
    pub(crate) fn forget(&mut self, key: usize) {
        self.contexts.remove(&key);
    }

    /// Lends the inflater; give it back with [`Compression::put_inflater`].
    pub(crate) fn take_inflater(&mut self) -> Inflater {
        self.inflater.take().unwrap_or_default()
    }

    pub(crate) fn put_inflater(&mut self, mut inflater: Inflater) {
        // A 16 MiB message must not pin a 16 MiB buffer for good.
        inflater.release();
        self.inflater = Some(inflater);
    }

    /// Encodes `msg` as the frame a connection with `params` gets (see
    /// [`Compression::encode_payload`]) into a reused buffer, and returns it.
    pub(crate) fn frame_for(&mut self, msg: Message<'_>, params: DeflateParams) -> &[u8] {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        self.encode_payload(
            &mut frame,
            msg.opcode(),
            msg.as_bytes(),
            params.server_max_window_bits,
        );
        self.frame = frame;
        &self.frame
    }

    /// The frame [`Compression::frame_for`] built last.
    pub(crate) fn last_frame(&self) -> &[u8] {
        &self.frame
    }

    /// Appends one data message's frame to `out`: compressed (RSV1) when
    /// the payload is at least the threshold and compression makes it
    /// smaller (or the threshold is 0), else plain.
    fn encode_payload(&mut self, out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], bits: u8) {
        if payload.len() >= self.config.threshold {
            self.scratch.clear();
            self.deflater.compress(payload, bits, &mut self.scratch);
            if self.scratch.len() < payload.len() || self.config.threshold == 0 {
                encode_frame_rsv1(out, opcode, &self.scratch);
                return;
            }
        }
        crate::protocol::frame::encode_frame(out, opcode, payload);
    }

    /// The frames of a broadcast buffer (plain server frames back to back)
    /// as a connection compressing with a `bits`-bit window gets them.
    pub(crate) fn recompress(&mut self, frames: &[u8], bits: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(frames.len());
        let mut at = 0;
        while at < frames.len() {
            let Ok(Some((header, used))) = FrameHeader::decode(&frames[at..]) else {
                // Not frames this loop encoded: pass the rest on untouched.
                out.extend_from_slice(&frames[at..]);
                break;
            };
            let start = at + used;
            let end = start + header.payload_len as usize;
            let data = header.fin
                && header.rsv == 0
                && matches!(header.opcode, OpCode::Text | OpCode::Binary);
            if data && end <= frames.len() {
                self.encode_payload(&mut out, header.opcode, &frames[start..end], bits);
            } else {
                out.extend_from_slice(&frames[at..end.min(frames.len())]);
            }
            at = end;
        }
        out
    }
}

/// The compressed variants of one broadcast buffer, built on first use:
/// one per window size among its recipients (usually one, 15 bits).
#[derive(Debug, Default)]
pub(crate) struct Variants {
    by_window: [Option<Rc<Vec<u8>>>; 7],
}

impl Variants {
    /// The buffer a recipient with `params` gets for the plain `frames`.
    pub(crate) fn for_params(
        &mut self,
        compression: &mut Compression,
        frames: &Rc<Vec<u8>>,
        params: DeflateParams,
    ) -> Rc<Vec<u8>> {
        let bits = params.server_max_window_bits.clamp(9, 15);
        self.by_window[usize::from(bits - 9)]
            .get_or_insert_with(|| Rc::new(compression.recompress(frames, bits)))
            .clone()
    }
}

/// Inflates a message of a connection that keeps its compression context
/// with its own `inflater` into `out` (cleared first), as
/// [`crate::session::inflate_message`] does with the shared inflater.
pub(crate) fn inflate_with_context<'a>(
    inflater: &mut ContextInflater,
    out: &'a mut Vec<u8>,
    text: bool,
    payload: &[u8],
    limit: usize,
) -> Result<Message<'a>, ProtocolError> {
    out.clear();
    let result = inflater.inflate_into(payload, limit, out);
    let out: &'a [u8] = out;
    crate::session::inflated_message(result.map(|()| out), text)
}
