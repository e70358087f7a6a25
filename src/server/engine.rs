//! The application and the loop state together: turns input bytes into
//! handshakes, frames and callbacks, and runs removals, deadlines and
//! flushes. Everything that calls into the [`Handler`] lives here.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::conn::{AppSlot, Phase};
use super::core::Core;
use super::ctx::{ConnCtx, Ctx};
use super::timers::SLACK;
use crate::handler::{Handler, Message};
use crate::http;
use crate::protocol::close::CloseCode;
use crate::protocol::frame::{OpCode, encode_frame};
use crate::protocol::handshake::{Request, parse_request, switching_protocols};
use crate::protocol::message::{Decoder, Event};

pub(crate) struct Engine<H: Handler> {
    pub(crate) handler: H,
    pub(crate) core: Core<H::State>,
    /// The decoder for connections that are between messages.
    pub(crate) decoder: Decoder,
}

/// What a complete request head leads to. Computed while the request still
/// borrows the input, acted on after.
enum HeadOutcome<S> {
    NeedMore,
    Respond {
        response: Vec<u8>,
        refused: bool,
    },
    Open {
        state: S,
        response: Vec<u8>,
        head_len: usize,
        path: String,
    },
}

impl<H: Handler> Engine<H> {
    /// Runs a callback about connection `key`, containing a panic to that
    /// connection: it is closed with 1011 and the loop carries on.
    pub(crate) fn call_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut ConnCtx<'_, H::State>),
    ) {
        let Engine { handler, core, .. } = self;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            f(handler, &mut ConnCtx::new(core, key))
        }));
        if outcome.is_err() {
            self.core.metrics.handler_panics += 1;
            log::error!(
                "handler panicked on {}: closing it with 1011",
                self.core.id_of(key)
            );
            self.core
                .close_urgently(key, CloseCode::INTERNAL_ERROR, "internal error");
        }
    }

    /// Runs a callback not tied to a connection, containing a panic.
    pub(crate) fn call_loop(&mut self, f: impl FnOnce(&mut H, &mut Ctx<'_, H::State>)) {
        let Engine { handler, core, .. } = self;
        let outcome = catch_unwind(AssertUnwindSafe(|| f(handler, &mut Ctx::new(core, None))));
        if outcome.is_err() {
            self.core.metrics.handler_panics += 1;
            log::error!("handler panicked outside a connection callback; the loop carries on");
        }
    }

    /// Handles bytes just read from connection `key`.
    pub(crate) fn ingest(&mut self, key: usize, data: &mut [u8]) {
        let phase = &self.core.conns[key].phase;
        if matches!(phase, Phase::Handshaking { .. }) {
            self.handshake_input(key, data);
        } else if phase.wants_frames() {
            self.frame_input(key, data);
        }
    }

    fn handshake_input(&mut self, key: usize, data: &mut [u8]) {
        let Phase::Handshaking { buf, .. } = &mut self.core.conns[key].phase else {
            return;
        };
        let mut pending = std::mem::take(buf);
        if !pending.is_empty() {
            pending.extend_from_slice(data);
        }
        let outcome = {
            let source: &[u8] = if pending.is_empty() { data } else { &pending };
            self.evaluate_head(key, source)
        };
        match outcome {
            HeadOutcome::NeedMore => {
                if pending.is_empty() {
                    pending.extend_from_slice(data);
                }
                if let Phase::Handshaking { buf, .. } = &mut self.core.conns[key].phase {
                    *buf = pending;
                }
            }
            HeadOutcome::Respond { response, refused } => {
                if refused {
                    self.core.metrics.handshake_failures += 1;
                } else {
                    self.core.metrics.http_requests += 1;
                }
                self.core.respond_and_close(key, response);
            }
            HeadOutcome::Open {
                state,
                response,
                head_len,
                path,
            } => {
                self.open(key, state, response, &path);
                // Bytes after the head are the client's first frames.
                let rest: &mut [u8] = if pending.is_empty() {
                    &mut data[head_len..]
                } else {
                    &mut pending[head_len..]
                };
                if !rest.is_empty() && self.core.conns.contains(key) {
                    self.frame_input(key, rest);
                }
            }
        }
    }

    /// Parses and judges a request head, consulting the application.
    fn evaluate_head(&mut self, key: usize, source: &[u8]) -> HeadOutcome<H::State> {
        let limits = self.core.config.head_limits();
        let peer = self.core.conns[key].peer_addr();
        let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let (request, head_len) = match parse_request(source, &mut headers, limits) {
            Ok(None) => return HeadOutcome::NeedMore,
            Ok(Some(parsed)) => parsed,
            Err(e) => {
                log::debug!("handshake from {peer:?} refused: {e}");
                return HeadOutcome::Respond {
                    response: e.response(),
                    refused: true,
                };
            }
        };
        let request = request.with_peer(peer);
        if !request.wants_upgrade() {
            return HeadOutcome::Respond {
                response: self.serve_http(&request),
                refused: false,
            };
        }
        let client_key = match request.validate_upgrade() {
            Ok(k) => k,
            Err(e) => {
                log::debug!("upgrade from {peer:?} refused: {e}");
                return HeadOutcome::Respond {
                    response: e.response(),
                    refused: true,
                };
            }
        };
        let decision = catch_unwind(AssertUnwindSafe(|| self.handler.on_upgrade(&request)));
        match decision {
            Ok(Ok(accept)) => HeadOutcome::Open {
                response: switching_protocols(
                    client_key,
                    accept.protocol.as_deref(),
                    &accept.headers,
                ),
                state: accept.state,
                head_len,
                path: request.path().to_owned(),
            },
            Ok(Err(refusal)) => {
                log::debug!(
                    "upgrade from {peer:?} rejected by the application: {}",
                    refusal.status
                );
                HeadOutcome::Respond {
                    response: refusal.to_bytes(),
                    refused: true,
                }
            }
            Err(_) => {
                self.core.metrics.handler_panics += 1;
                log::error!("on_upgrade panicked; answering 500");
                let response = crate::Response::new(500, "internal error\n");
                HeadOutcome::Respond {
                    response: response.to_bytes(),
                    refused: true,
                }
            }
        }
    }

    fn serve_http(&mut self, request: &Request<'_>) -> Vec<u8> {
        let head_only = request.method() == "HEAD";
        if request.method() != "GET" && !head_only {
            return crate::Response::new(405, "method not allowed\n")
                .header("Allow", "GET, HEAD")
                .serialize(false);
        }
        let Engine { handler, core, .. } = self;
        let custom = catch_unwind(AssertUnwindSafe(|| {
            handler.on_http(&mut Ctx::new(core, None), request)
        }));
        let response = match custom {
            Ok(Some(response)) => response,
            Ok(None) => http::builtin_route(request.path(), &self.core.metrics),
            Err(_) => {
                self.core.metrics.handler_panics += 1;
                crate::Response::new(500, "internal error\n")
            }
        };
        response.serialize(head_only)
    }

    fn open(&mut self, key: usize, state: H::State, response: Vec<u8>, path: &str) {
        // Broadcasts made before this connection opened are not for it.
        self.core.seal();
        let core = &mut self.core;
        let now = core.now;
        let conn = &mut core.conns[key];
        conn.outbox
            .push_owned_with(&mut core.pool, response.len(), |buf| {
                buf.extend_from_slice(&response)
            });
        conn.phase = Phase::Open {
            partial: None,
            ping_sent: None,
        };
        conn.app = Some(AppSlot {
            state,
            topics: Vec::new(),
        });
        conn.last_seen = now;
        conn.last_message = now;
        core.metrics.open += 1;
        core.mark_dirty(key);
        core.schedule(key);
        log::debug!("{} open: {path}", core.id_of(key));
        self.call_conn(key, |h, conn| h.on_open(conn));
    }

    /// Decodes frames and dispatches their events.
    ///
    /// Between messages a connection keeps no decoder: the loop-wide one
    /// is used, and only a connection that stopped mid-frame or mid-message
    /// gets its own (boxed) decoder state. The decoder is out of the
    /// connection meanwhile, so callbacks may touch the connection (even
    /// close it) while its input is being decoded.
    fn frame_input(&mut self, key: usize, data: &mut [u8]) {
        let Some(slot) = self.core.conns[key].phase.decoder_slot() else {
            return;
        };
        let mut decoder = match slot.take() {
            Some(partial) => *partial,
            None => std::mem::take(&mut self.decoder),
        };
        let mut at = 0;
        let mut failure = None;
        while at < data.len() {
            match decoder.decode(&mut data[at..]) {
                Err(e) => {
                    failure = Some(e);
                    break;
                }
                Ok(decoded) => {
                    at += decoded.consumed;
                    if let Some(event) = decoded.event {
                        self.dispatch(key, event);
                    }
                }
            }
            if !self.core.conns[key].phase.wants_frames() {
                break;
            }
        }
        if let Some(error) = failure {
            log::debug!("{} protocol error: {error}", self.core.id_of(key));
            if self.core.conns[key].is_open() {
                self.call_conn(key, |h, conn| h.on_error(conn, &error));
            }
            self.core.fail(key, &error);
            decoder = Decoder::new(self.core.config.decoder_limits());
        }
        // Only an idle decoder may serve the next connection: one that
        // stopped mid-message stays with its connection, or is dropped if
        // the connection wants no more frames (say, a close frame arrived
        // between two fragments), so no partial message leaks elsewhere.
        let slot = self.core.conns[key].phase.decoder_slot();
        if decoder.is_idle() {
            decoder.release();
            self.decoder = decoder;
        } else {
            if let Some(slot) = slot {
                *slot = Some(Box::new(decoder));
            }
            self.decoder = Decoder::new(self.core.config.decoder_limits());
        }
    }

    fn dispatch(&mut self, key: usize, event: Event<'_>) {
        let open = self.core.conns[key].is_open();
        match event {
            Event::Text(text) if open => self.deliver(key, Message::Text(text)),
            Event::Binary(bytes) if open => self.deliver(key, Message::Binary(bytes)),
            Event::Ping(payload) if open => {
                let mut pong = self.core.pool.take(2 + payload.len());
                encode_frame(&mut pong, OpCode::Pong, payload);
                self.core.conns[key]
                    .outbox
                    .push_pong(&mut self.core.pool, pong);
                self.core.mark_dirty(key);
            }
            Event::Close(frame) => self.core.peer_closed(key, frame.code, frame.reason),
            // Pongs only prove liveness, already noted when the bytes were
            // read. Data and pings after our close frame are ignored.
            _ => {}
        }
    }

    #[inline]
    fn deliver(&mut self, key: usize, msg: Message<'_>) {
        let core = &mut self.core;
        core.metrics.messages_in += 1;
        core.conns[key].last_message = core.now;
        self.call_conn(key, |h, conn| h.on_message(conn, msg));
    }

    /// The peer closed its side of the TCP connection.
    pub(crate) fn end_of_input(&mut self, key: usize) {
        // Half-closed: the peer may still read what was queued for it (the
        // echo of its last message, the reply to its close frame).
        self.core.seal();
        let conn = &mut self.core.conns[key];
        if let Ok(written) = conn.outbox.flush(&mut conn.stream, &mut self.core.pool) {
            self.core.metrics.bytes_out += written as u64;
        }
        self.remove(key);
    }

    /// Frees connection `key`: tells the application (once, if it opened)
    /// with the close code from the closing handshake or 1006, leaves its
    /// topics and drops the socket.
    pub(crate) fn remove(&mut self, key: usize) {
        let conn = &mut self.core.conns[key];
        let (code, reason) = match std::mem::replace(&mut conn.phase, Phase::Removing) {
            Phase::Closing(closing) => (closing.code, closing.reason),
            Phase::Removing => return,
            _ => (CloseCode::ABNORMAL, String::new()),
        };
        if conn.app.is_some() {
            let core = &mut self.core;
            core.metrics.open -= 1;
            *core
                .metrics
                .closed_by_code
                .entry(code.as_u16())
                .or_default() += 1;
            log::debug!("{} closed: {code} {reason}", core.id_of(key));
            self.call_conn(key, |h, conn| h.on_close(conn, code, &reason));
            self.core.leave_all_topics(key);
        }
        self.core.conns.remove(key);
    }

    /// Writes what connection `key` has queued, then applies what the
    /// outcome means: removal after a finished closing handshake, the
    /// drain callback, resumed reads.
    pub(crate) fn flush(&mut self, key: usize) {
        let core = &mut self.core;
        let Some(conn) = core.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        if !conn.outbox.is_empty() {
            match conn.outbox.flush(&mut conn.stream, &mut core.pool) {
                Ok(written) => core.metrics.bytes_out += written as u64,
                Err(e) => {
                    log::debug!("{} write failed: {e}", core.id_of(key));
                    return self.remove(key);
                }
            }
        }
        let cap = core.config.max_outbound_buffer;
        let conn = &mut core.conns[key];
        if conn.read_paused && conn.outbox.queued() <= cap / 2 {
            conn.read_paused = false;
            core.pending_reads.push(key);
        }
        if !conn.outbox.is_empty() {
            conn.congested = true;
            return;
        }
        match &conn.phase {
            Phase::Closing(closing) if closing.peer_closed => return self.remove(key),
            Phase::Closing(_) if !conn.write_shut => {
                // Nothing more will ever be sent: say so, and wait for the
                // peer's close frame or EOF.
                conn.write_shut = true;
                let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            }
            _ => {}
        }
        if std::mem::take(&mut conn.congested) && conn.is_open() {
            self.call_conn(key, |h, conn| h.on_drain(conn));
        }
    }

    /// Acts on connection `key`'s deadlines that are due.
    pub(crate) fn check_deadlines(&mut self, key: usize) {
        let core = &mut self.core;
        let now = core.now + SLACK;
        let config = &core.config;
        let conn = &core.conns[key];
        match &conn.phase {
            Phase::Handshaking { deadline, .. } if *deadline <= now => {
                log::debug!("handshake from {:?} timed out", conn.peer_addr());
                core.metrics.handshake_failures += 1;
                self.remove(key);
            }
            Phase::Closing(closing) if closing.deadline <= now => self.remove(key),
            Phase::Open { ping_sent, .. } => {
                let idle = config
                    .idle_timeout
                    .is_some_and(|idle| conn.last_message + idle <= now);
                if let Some(sent) = *ping_sent {
                    if sent + config.pong_timeout <= now {
                        log::debug!("{} sent nothing after a ping: dropping it", core.id_of(key));
                        return self.remove(key);
                    }
                } else if config
                    .ping_interval
                    .is_some_and(|i| conn.last_seen + i <= now)
                {
                    core.send_ping(key);
                }
                if idle {
                    core.close_gracefully(key, CloseCode::GOING_AWAY, "idle timeout");
                }
            }
            _ => {}
        }
    }
}
