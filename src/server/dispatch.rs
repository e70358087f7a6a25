//! Dispatch into the application: turns what sessions report (a request
//! head, messages, errors, the end of a connection) into [`Handler`]
//! callbacks, and applies what reads, writes and deadlines mean for the
//! connection. Everything that calls into the handler lives here; the
//! protocol's decisions are the session's.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::conn::AppSlot;
use super::ctx::{ConnCtx, Ctx};
use super::handler::{Handler, Response};
use super::metrics::Metrics;
use super::state::LoopState;
use super::timers::SLACK;
use crate::protocol::close::CloseCode;
use crate::protocol::handshake::{Request, parse_request, switching_protocols};
use crate::protocol::message::Decoder;
use crate::session::{CloseOrder, Control, Expiry, Flushed, Inbound, Timeout};

pub(crate) struct Dispatch<H: Handler> {
    pub(crate) handler: H,
    pub(crate) state: LoopState<H::State>,
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
        /// permessage-deflate, when negotiated (the response says so).
        #[cfg(feature = "deflate")]
        deflate: Option<crate::protocol::deflate::DeflateParams>,
        head_len: usize,
        path: String,
        /// The client's address when a trusted proxy forwarded the request
        /// and it differs from the TCP peer.
        forwarded: Option<std::net::SocketAddr>,
    },
}

impl<H: Handler> Dispatch<H> {
    /// Runs a callback about connection `key`, containing a panic to that
    /// connection: it is closed with 1011 and the loop carries on.
    pub(crate) fn call_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut H, &mut ConnCtx<'_, H::State>),
    ) {
        let Dispatch { handler, state, .. } = self;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            f(handler, &mut ConnCtx::new(state, key))
        }));
        if outcome.is_err() {
            self.state.metrics.handler_panics += 1;
            log::error!(
                "handler panicked on {}: closing it with 1011",
                self.state.id_of(key)
            );
            self.state.close(
                key,
                CloseCode::INTERNAL_ERROR,
                "internal error",
                CloseOrder::AheadOfData,
            );
        }
    }

    /// Runs a callback not tied to a connection, containing a panic.
    pub(crate) fn call_loop(&mut self, f: impl FnOnce(&mut H, &mut Ctx<'_, H::State>)) {
        let Dispatch { handler, state, .. } = self;
        let outcome = catch_unwind(AssertUnwindSafe(|| f(handler, &mut Ctx::new(state, None))));
        if outcome.is_err() {
            self.state.metrics.handler_panics += 1;
            log::error!("handler panicked outside a connection callback; the loop carries on");
        }
    }

    /// Handles bytes just read from connection `key`.
    pub(crate) fn ingest(&mut self, key: usize, data: &mut [u8]) {
        let session = &mut self.state.conns[key].session;
        if let Some(partial) = session.take_partial_head() {
            self.handshake_input(key, partial, data);
        } else if session.wants_frames() {
            self.frame_input(key, data);
        }
        // Anything else (a refused request, input after a protocol error)
        // is read and discarded until the peer hangs up.
    }

    fn handshake_input(&mut self, key: usize, mut pending: Vec<u8>, data: &mut [u8]) {
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
                self.state.conns[key].session.keep_partial_head(pending);
            }
            HeadOutcome::Respond { response, refused } => {
                if refused {
                    self.state.metrics.handshake_failures += 1;
                } else {
                    self.state.metrics.http_requests += 1;
                }
                let state = &mut self.state;
                let session = &mut state.conns[key].session;
                session.refuse(&response, state.now, &state.session_config, &mut state.pool);
                state.mark_dirty(key);
                state.schedule(key);
            }
            HeadOutcome::Open {
                state,
                response,
                #[cfg(feature = "deflate")]
                deflate,
                head_len,
                path,
                forwarded,
            } => {
                match forwarded {
                    Some(client) => self.state.forwarded_peers.insert(key, client),
                    None => self.state.forwarded_peers.remove(&key),
                };
                // With the extension the session opens here, and `open`
                // finds it open; broadcasts made before are not for it.
                #[cfg(feature = "deflate")]
                if let Some(params) = deflate {
                    let state = &mut self.state;
                    state.seal();
                    state.conns[key].session.accept_with_deflate(
                        &response,
                        params,
                        state.now,
                        &mut state.pool,
                    );
                }
                self.open(key, state, response, &path);
                // Bytes after the head are the client's first frames.
                let rest: &mut [u8] = if pending.is_empty() {
                    &mut data[head_len..]
                } else {
                    &mut pending[head_len..]
                };
                if !rest.is_empty() && self.state.conns.contains(key) {
                    self.frame_input(key, rest);
                }
            }
        }
    }

    /// Parses and judges a request head, consulting the application.
    fn evaluate_head(&mut self, key: usize, source: &[u8]) -> HeadOutcome<H::State> {
        let limits = self.state.config.head_limits();
        let peer = self.state.conns[key].transport.peer_addr();
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
        let config = &self.state.config;
        let request = request
            .with_peer(peer)
            .with_trusted_proxies(&config.trusted_proxies, config.forwarded_header);
        let forwarded = request.peer_addr().filter(|&client| Some(client) != peer);
        if let Some(client) = forwarded {
            log::debug!("{peer:?} forwards a request from {client}");
        }
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
        #[cfg(feature = "deflate")]
        let offer = match self.deflate_offer(&request) {
            Ok(offer) => offer,
            Err(refusal) => {
                log::debug!("upgrade from {peer:?} refused: {refusal}");
                return HeadOutcome::Respond {
                    response: Response::new(400, "malformed Sec-WebSocket-Extensions\n").to_bytes(),
                    refused: true,
                };
            }
        };
        let decision = catch_unwind(AssertUnwindSafe(|| self.handler.on_upgrade(&request)));
        match decision {
            #[cfg_attr(not(feature = "deflate"), allow(unused_mut))]
            Ok(Ok(mut accept)) => HeadOutcome::Open {
                // Before `response`: the answer joins the 101's headers
                // (fields are evaluated in the order written).
                #[cfg(feature = "deflate")]
                deflate: offer.filter(|_| accept.deflate).map(|negotiated| {
                    let params = negotiated.params;
                    accept
                        .headers
                        .push(("Sec-WebSocket-Extensions".into(), negotiated.response));
                    params
                }),
                response: switching_protocols(
                    client_key,
                    accept.protocol.as_deref(),
                    &accept.headers,
                ),
                state: accept.state,
                head_len,
                path: request.path().to_owned(),
                forwarded,
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
                self.state.metrics.handler_panics += 1;
                log::error!("on_upgrade panicked; answering 500");
                let response = Response::new(500, "internal error\n");
                HeadOutcome::Respond {
                    response: response.to_bytes(),
                    refused: true,
                }
            }
        }
    }

    /// The first acceptable permessage-deflate offer of an upgrade
    /// request, when the server offers the extension (the application may
    /// still refuse it, [`Accept::without_deflate`](crate::Accept::without_deflate)).
    /// A `Sec-WebSocket-Extensions` header that breaks RFC 6455 §9.1's
    /// grammar fails the handshake, as that section requires; offers that
    /// parse but cannot be accepted are only skipped (RFC 7692 §5).
    #[cfg(feature = "deflate")]
    fn deflate_offer(
        &self,
        request: &Request<'_>,
    ) -> Result<
        Option<crate::protocol::deflate::Negotiated>,
        crate::protocol::deflate::negotiate::MalformedExtensions,
    > {
        let Some(compression) = self.state.compression.as_ref() else {
            return Ok(None);
        };
        let offers = request
            .headers()
            .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, value)| value);
        crate::protocol::deflate::negotiate::negotiate_strict(offers, &compression.config.policy())
    }

    fn serve_http(&mut self, request: &Request<'_>) -> Vec<u8> {
        let head_only = request.method() == "HEAD";
        if request.method() != "GET" && !head_only {
            return Response::new(405, "method not allowed\n")
                .header("Allow", "GET, HEAD")
                .serialize(false);
        }
        let Dispatch { handler, state, .. } = self;
        let custom = catch_unwind(AssertUnwindSafe(|| {
            handler.on_http(&mut Ctx::new(state, None), request)
        }));
        let response = match custom {
            Ok(Some(response)) => response,
            Ok(None) => builtin_route(request.path(), &self.state.metrics),
            Err(_) => {
                self.state.metrics.handler_panics += 1;
                Response::new(500, "internal error\n")
            }
        };
        response.serialize(head_only)
    }

    fn open(&mut self, key: usize, app_state: H::State, response: Vec<u8>, path: &str) {
        // Broadcasts made before this connection opened are not for it.
        let state = &mut self.state;
        state.seal();
        let session = &mut state.conns[key].session;
        session.accept(&response, state.now, &mut state.pool);
        state.conns[key].app = Some(AppSlot {
            state: app_state,
            topics: Vec::new(),
        });
        state.metrics.open += 1;
        state.mark_dirty(key);
        state.schedule(key);
        log::debug!("{} open: {path}", state.id_of(key));
        self.call_conn(key, |h, conn| h.on_open(conn));
    }

    /// Feeds input to the session frame by frame and hands its events to
    /// the application.
    ///
    /// Between messages a connection keeps no decoder: the loop-wide one
    /// is lent to it (see [`Session::lend_decoder`](crate::session::Session::lend_decoder)).
    fn frame_input(&mut self, key: usize, data: &mut [u8]) {
        let mut decoder = self.state.conns[key]
            .session
            .lend_decoder(&mut self.decoder);
        let mut at = 0;
        while at < data.len() {
            let state = &mut self.state;
            let received =
                state.conns[key]
                    .session
                    .receive(&mut decoder, &mut data[at..], state.now);
            at += received.consumed;
            match received.event {
                Some(Inbound::Message(msg)) => {
                    state.metrics.messages_in += 1;
                    self.call_conn(key, |h, conn| h.on_message(conn, msg));
                }
                Some(Inbound::Control(control)) => self.control(key, control),
                #[cfg(feature = "deflate")]
                Some(Inbound::Compressed { text, payload }) => {
                    self.compressed_message(key, text, payload);
                }
                None => {}
            }
            if !self.state.conns[key].session.wants_frames() {
                break;
            }
        }
        let state = &mut self.state;
        state.conns[key]
            .session
            .return_decoder(decoder, &mut self.decoder);
        // A pong or a close reply may have been queued, or the peer's close
        // may have completed our closing handshake: `after_write` must run
        // either way. Messages only push deadlines later, which the timer
        // finds out when it comes due. (Readiness events usually report the socket writable
        // too, which would flush it, but that is epoll's habit, not a
        // promise.)
        let session = &state.conns[key].session;
        if !session.is_open() {
            // Closing: a deadline (the close timeout) may now be earlier.
            state.mark_dirty(key);
            state.schedule(key);
        } else if session.queued() > 0 {
            state.mark_dirty(key);
        }
    }

    /// Hands a control frame or protocol error to the session, and a
    /// protocol error on to the application.
    fn control(&mut self, key: usize, control: Control<'_>) {
        let state = &mut self.state;
        // Broadcasts already made go out before a close reply (it must
        // follow them); a pong goes ahead of data anyway. Data messages
        // leave the batch open, so a publisher's burst stays one shared
        // buffer.
        if !matches!(control, Control::Ping(_)) {
            state.seal();
        }
        let session = &mut state.conns[key].session;
        let error = session.apply(control, state.now, &state.session_config, &mut state.pool);
        if let Some(error) = error {
            log::debug!("{} protocol error: {error}", state.id_of(key));
            self.call_conn(key, |h, conn| h.on_error(conn, &error));
        }
    }

    /// Inflates a compressed message with the loop's inflater (lent out
    /// while the application reads the message) and delivers it, or closes
    /// with the error it is.
    #[cfg(feature = "deflate")]
    fn compressed_message(&mut self, key: usize, text: bool, payload: &[u8]) {
        let Some(compression) = self.state.compression.as_mut() else {
            return; // unreachable: RSV1 is allowed only with deflate on
        };
        let keeps_context = self.state.conns[key]
            .session
            .deflate()
            .is_some_and(|params| !params.client_no_context_takeover);
        if keeps_context {
            // Its own inflater and the output buffer are lent out while the
            // application reads the message; the compressors stay in the
            // loop for its replies.
            let (mut inflater, mut out) = compression.take_context(key);
            let limit = self.state.session_config.decoder_limits.max_message_size;
            let inflated = super::compression::inflate_with_context(
                &mut inflater,
                &mut out,
                text,
                payload,
                limit,
            );
            match inflated {
                Ok(msg) => {
                    self.state.metrics.messages_in += 1;
                    self.call_conn(key, |h, conn| h.on_message(conn, msg));
                }
                Err(error) => self.control(key, Control::Error(error)),
            }
            if let Some(compression) = self.state.compression.as_mut()
                && self.state.conns.contains(key)
            {
                compression.put_context(key, inflater, out);
            }
            return;
        }
        let mut inflater = compression.take_inflater();
        let limit = self.state.session_config.decoder_limits.max_message_size;
        match crate::session::inflate_message(&mut inflater, text, payload, limit) {
            Ok(msg) => {
                self.state.metrics.messages_in += 1;
                self.call_conn(key, |h, conn| h.on_message(conn, msg));
            }
            Err(error) => self.control(key, Control::Error(error)),
        }
        if let Some(compression) = self.state.compression.as_mut() {
            compression.put_inflater(inflater);
        }
    }

    /// The peer closed its side of the TCP connection.
    pub(crate) fn end_of_input(&mut self, key: usize) {
        // Half-closed: the peer may still read what was queued for it (the
        // echo of its last message, the reply to its close frame).
        let state = &mut self.state;
        state.seal();
        let conn = &mut state.conns[key];
        if let Ok(written) = conn.session.write_to(&mut conn.transport, &mut state.pool) {
            state.metrics.bytes_out += written as u64;
        }
        conn.transport.close_notify();
        let _ = conn.transport.send_pending();
        self.remove(key);
    }

    /// Frees connection `key`: ends its session, tells the application
    /// (once, if it opened) how it ended, leaves its topics and drops the
    /// socket.
    pub(crate) fn remove(&mut self, key: usize) {
        let conn = &mut self.state.conns[key];
        let Some((code, reason)) = conn.session.finish() else {
            return; // already being removed: `on_close` is running
        };
        if conn.app.is_some() {
            let state = &mut self.state;
            state.metrics.open -= 1;
            *state
                .metrics
                .closed_by_code
                .entry(code.as_u16())
                .or_default() += 1;
            log::debug!("{} closed: {code} {reason}", state.id_of(key));
            self.call_conn(key, |h, conn| h.on_close(conn, code, &reason));
            self.state.leave_all_topics(key);
        }
        let mut conn = self.state.conns.remove(key);
        // Every end, timeouts included, says close_notify when the socket
        // takes it (TLS; nothing for plain TCP), so the peer can tell it
        // from a truncation.
        conn.transport.close_notify();
        let _ = conn.transport.send_pending();
        self.state.forwarded_peers.remove(&key);
        #[cfg(feature = "deflate")]
        if let Some(compression) = self.state.compression.as_mut() {
            compression.forget(key);
        }
    }

    /// Writes what connection `key` has queued, then applies what the
    /// session says is left: removal after a finished closing handshake,
    /// the write shutdown, the drain callback, resumed reads.
    pub(crate) fn flush(&mut self, key: usize) {
        let state = &mut self.state;
        let Some(conn) = state.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let all_sent = conn
            .session
            .write_to(&mut conn.transport, &mut state.pool)
            .and_then(|written| {
                state.metrics.bytes_out += written as u64;
                conn.transport.send_pending()
            });
        let all_sent = match all_sent {
            Ok(all_sent) => all_sent,
            Err(e) => {
                log::debug!("{} write failed: {e}", state.id_of(key));
                return self.remove(key);
            }
        };
        let cap = state.config.max_outbound_buffer;
        if conn.read_paused && conn.queued() <= cap / 2 {
            conn.read_paused = false;
            state.pending_reads.push(key);
        }
        if !all_sent {
            // The transport holds ciphertext the socket did not take: wait
            // for the socket's writable edge before anything follows it.
            conn.congested = true;
            return;
        }
        match conn.session.after_write() {
            Flushed::Pending => {
                conn.congested = true;
                return;
            }
            Flushed::Finished => {
                // The closing handshake is over: close_notify goes before
                // the FIN (TLS), and if the socket cannot take it now, on
                // its next writable edge.
                conn.transport.close_notify();
                match conn.transport.send_pending() {
                    Ok(false) => conn.congested = true,
                    Ok(true) | Err(_) => self.remove(key),
                }
                return;
            }
            Flushed::ShutdownWrite => {
                // Nothing more will ever be sent: say so, and wait for the
                // peer's close frame or EOF.
                let _ = conn.transport.shutdown_write();
            }
            Flushed::Idle => {}
        }
        if std::mem::take(&mut conn.congested) && conn.is_open() {
            self.call_conn(key, |h, conn| h.on_drain(conn));
        }
    }

    /// Acts on connection `key`'s deadlines that are due.
    pub(crate) fn check_deadlines(&mut self, key: usize) {
        let state = &mut self.state;
        // Timer entries come due within SLACK of their tick.
        let now = state.now + SLACK;
        state.seal();
        let conn = &mut state.conns[key];
        match conn
            .session
            .handle_timeout(now, &state.session_config, &mut state.pool)
        {
            Timeout::Nothing => {}
            Timeout::Queued => state.mark_dirty(key),
            Timeout::Expired(expiry) => {
                match expiry {
                    Expiry::Handshake => {
                        log::debug!("handshake from {:?} timed out", conn.transport.peer_addr());
                        state.metrics.handshake_failures += 1;
                        if conn.transport.is_handshaking() {
                            state.metrics.tls_handshake_failures += 1;
                        }
                    }
                    Expiry::Pong => {
                        log::debug!(
                            "{} sent nothing after a ping: dropping it",
                            state.id_of(key)
                        );
                    }
                    Expiry::Close => {}
                }
                self.remove(key);
            }
        }
    }
}

/// Serves `GET /healthz` and `GET /metrics`; anything else is `404`.
/// Applications add routes with [`Handler::on_http`], which is consulted
/// first.
fn builtin_route(path: &str, metrics: &Metrics) -> Response {
    match path {
        "/healthz" => Response::new(200, "ok\n"),
        "/metrics" => Response::new(200, metrics.to_prometheus())
            .content_type("text/plain; version=0.0.4; charset=utf-8"),
        _ => Response::new(404, "not found\n"),
    }
}
