//! The application's view of the loop: [`Ctx`] for everything, and
//! [`ConnCtx`] for callbacks about one connection.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use mio::{Registry, Token};

use super::config::Config;
use super::conn::{ConnId, SendStatus};
use super::metrics::Metrics;
use super::state::LoopState;
use super::timers::TimerKind;
use crate::protocol::close::CloseCode;
use crate::protocol::message::Message;
use crate::session::CloseOrder;

/// The first token of the range reserved for the application's own sources.
pub(crate) const USER_TOKEN_BASE: usize = 1 << (usize::BITS - 2);

/// Access to the loop from a callback: send, broadcast, publish, close,
/// topics, timers and the application's own mio sources.
pub struct Ctx<'a, S> {
    pub(crate) state: &'a mut LoopState<S>,
    /// The connection on whose behalf the callback runs; its replies to
    /// itself are never dropped by the outbound cap.
    pub(crate) current: Option<usize>,
}

impl<'a, S> Ctx<'a, S> {
    pub(crate) fn new(state: &'a mut LoopState<S>, current: Option<usize>) -> Self {
        Ctx { state, current }
    }

    /// Sends a message to one connection.
    pub fn send_to(&mut self, id: ConnId, msg: Message<'_>) -> SendStatus {
        match self.state.open_key(id) {
            Some(key) => self.state.send_message(key, msg, Some(key) == self.current),
            None => SendStatus::Closed,
        }
    }

    /// Sends a message to every open connection; returns how many got it.
    /// The frame is encoded once and shared by all recipients.
    pub fn broadcast(&mut self, msg: Message<'_>) -> usize {
        self.state.broadcast(msg, None, self.current)
    }

    /// Sends a message to every open connection but `except`.
    pub fn broadcast_except(&mut self, msg: Message<'_>, except: ConnId) -> usize {
        let except = self.state.key_of(except);
        self.state.broadcast(msg, except, self.current)
    }

    /// Sends a message to every subscriber of `topic`.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.state.publish(topic, msg, None, self.current)
    }

    /// Sends a message to every subscriber of `topic` but `except`.
    pub fn publish_except(&mut self, topic: &str, msg: Message<'_>, except: ConnId) -> usize {
        let except = self.state.key_of(except);
        self.state.publish(topic, msg, except, self.current)
    }

    /// Subscribes a connection to a topic. Returns `false` if it already
    /// was a member or is not open.
    pub fn subscribe(&mut self, id: ConnId, topic: &str) -> bool {
        self.state
            .open_key(id)
            .is_some_and(|key| self.state.subscribe(key, topic))
    }

    /// Unsubscribes a connection from a topic. Returns `false` if it was
    /// not a member.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) -> bool {
        self.state
            .key_of(id)
            .is_some_and(|key| self.state.unsubscribe(key, topic))
    }

    /// The open connections subscribed to `topic`.
    pub fn subscribers(&self, topic: &str) -> Vec<ConnId> {
        self.state
            .topics
            .members(topic)
            .filter(|&k| self.state.conns[k].is_open())
            .map(|k| self.state.id_of(k))
            .collect()
    }

    /// How many connections are subscribed to `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.state.topics.count(topic)
    }

    /// Starts closing a connection with `code` and `reason`, after the
    /// messages already queued for it.
    pub fn close_conn(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        if let Some(key) = self.state.open_key(id) {
            self.state.close(key, code, reason, CloseOrder::AfterData);
        }
    }

    /// The application state of an open connection.
    pub fn state_of(&self, id: ConnId) -> Option<&S> {
        let key = self.state.key_of(id)?;
        self.state.conns[key].app.as_ref().map(|a| &a.state)
    }

    /// The application state of an open connection, mutably.
    pub fn state_of_mut(&mut self, id: ConnId) -> Option<&mut S> {
        let key = self.state.key_of(id)?;
        self.state.conns[key].app.as_mut().map(|a| &mut a.state)
    }

    /// Bytes queued for a connection and not yet written.
    pub fn buffered_amount(&self, id: ConnId) -> Option<usize> {
        self.state.key_of(id).map(|k| self.state.conns[k].queued())
    }

    /// The ids of all open connections.
    pub fn connections(&self) -> Vec<ConnId> {
        self.state
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(k, _)| self.state.id_of(k))
            .collect()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.state.metrics.open as usize
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The server's configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Begins a graceful shutdown (see [`Handle::shutdown`](crate::Handle::shutdown)).
    pub fn shutdown(&mut self) {
        self.state.shutdown_requested = true;
    }

    /// The loop's mio registry, to register the application's own sources
    /// with tokens from [`Ctx::user_token`].
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The token for the application's source number `n`; its events reach
    /// [`Handler::on_source_event`](crate::Handler::on_source_event) with `n`.
    pub fn user_token(n: usize) -> Token {
        Token(USER_TOKEN_BASE + (n % USER_TOKEN_BASE))
    }

    /// Calls [`Handler::on_timer`](crate::Handler::on_timer) with `timer`
    /// once `after` has passed.
    pub fn set_timer(&mut self, after: Duration, timer: u64) {
        self.state
            .timers
            .schedule(self.state.now + after, TimerKind::User(timer));
    }
}

/// The context of a callback about one connection: everything [`Ctx`] does
/// (through `Deref`), plus shortcuts for this connection.
pub struct ConnCtx<'a, S> {
    ctx: Ctx<'a, S>,
    key: usize,
}

impl<'a, S> ConnCtx<'a, S> {
    pub(crate) fn new(state: &'a mut LoopState<S>, key: usize) -> Self {
        ConnCtx {
            ctx: Ctx::new(state, Some(key)),
            key,
        }
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.ctx.state.id_of(self.key)
    }

    /// The client's address: the one [`Request::peer_addr`] reported at
    /// the upgrade. That is the TCP peer's (`None` once the socket is
    /// disconnected) unless a trusted proxy
    /// ([`Config::trusted_proxies`]) forwarded the connection; then it is
    /// the client its forwarding header named, kept for the connection's
    /// whole life.
    ///
    /// [`Request::peer_addr`]: crate::Request::peer_addr
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self.ctx.state.forwarded_peers.get(&self.key) {
            Some(&client) => Some(client),
            None => self.remote_addr(),
        }
    }

    /// The TCP peer's address, whatever a proxy's headers said: behind a
    /// reverse proxy, the proxy's (`None` once the socket is
    /// disconnected). See [`Request::remote_addr`](crate::Request::remote_addr).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.ctx.state.conns[self.key].transport.peer_addr()
    }

    /// Whether this connection negotiated permessage-deflate: messages at
    /// or over [`DeflateConfig::threshold`](crate::DeflateConfig::threshold)
    /// go to it compressed, and it may send compressed messages.
    #[cfg(feature = "deflate")]
    pub fn permessage_deflate(&self) -> bool {
        self.ctx.state.conns[self.key].session.deflate().is_some()
    }

    /// This connection's application state.
    pub fn state(&self) -> &S {
        &self.ctx.state.conns[self.key]
            .app
            .as_ref()
            .expect("state exists from open to close")
            .state
    }

    /// This connection's application state, mutably.
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.ctx.state.conns[self.key]
            .app
            .as_mut()
            .expect("state exists from open to close")
            .state
    }

    /// Sends a message to this connection. Replies are never dropped by the
    /// outbound cap; instead reads from a connection that does not read its
    /// replies pause until its queue drains.
    #[inline]
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        if !self.ctx.state.conns[self.key].is_open() {
            return SendStatus::Closed;
        }
        self.ctx.state.send_message(self.key, msg, true)
    }

    /// Closes this connection with `code` and `reason`, after the messages
    /// already queued for it.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.ctx
            .state
            .close(self.key, code, reason, CloseOrder::AfterData);
    }

    /// Subscribes this connection to `topic`.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        self.ctx.state.conns[self.key].is_open() && self.ctx.state.subscribe(self.key, topic)
    }

    /// Unsubscribes this connection from `topic`.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        self.ctx.state.unsubscribe(self.key, topic)
    }

    /// The topics this connection is subscribed to.
    pub fn topics(&self) -> Vec<String> {
        self.ctx.state.conns[self.key]
            .app
            .as_ref()
            .map(|a| a.topics.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    }

    /// Sends to every open connection except this one.
    pub fn broadcast_others(&mut self, msg: Message<'_>) -> usize {
        self.ctx.state.broadcast(msg, Some(self.key), None)
    }

    /// Sends to every subscriber of `topic` except this connection.
    pub fn publish_others(&mut self, topic: &str, msg: Message<'_>) -> usize {
        self.ctx.state.publish(topic, msg, Some(self.key), None)
    }

    /// Bytes queued for this connection and not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.ctx.state.conns[self.key].queued()
    }
}

impl<'a, S> Deref for ConnCtx<'a, S> {
    type Target = Ctx<'a, S>;
    fn deref(&self) -> &Self::Target {
        &self.ctx
    }
}

impl<'a, S> DerefMut for ConnCtx<'a, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ctx
    }
}
