//! What the application implements: the [`Handler`] trait, the upgrade
//! decision and HTTP responses.

use std::any::Any;

use super::ctx::{ConnCtx, Ctx};
use crate::protocol::close::CloseCode;
use crate::protocol::handshake::{Request, http_response};
use crate::protocol::message::Message;

/// The application's decision to accept an upgrade request.
///
/// ```
/// use wsloop::Accept;
/// let accept = Accept::new("alice".to_string())
///     .protocol("chat.v1")
///     .header("X-Server", "wsloop");
/// # let _ = accept;
/// ```
#[derive(Debug)]
pub struct Accept<S> {
    pub(crate) state: S,
    pub(crate) protocol: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    /// permessage-deflate may be negotiated (when the server offers it).
    #[cfg(feature = "deflate")]
    pub(crate) deflate: bool,
}

impl<S> Accept<S> {
    /// Accepts, attaching `state` to the connection for its lifetime.
    pub fn new(state: S) -> Accept<S> {
        Accept {
            state,
            protocol: None,
            headers: Vec::new(),
            #[cfg(feature = "deflate")]
            deflate: true,
        }
    }

    /// Opens this connection without permessage-deflate even if the server
    /// offers it ([`Config::deflate`](crate::Config::deflate)) and the
    /// client asked: for a client known to handle it badly, or a route
    /// whose messages do not compress (already compressed binary).
    #[cfg(feature = "deflate")]
    pub fn without_deflate(mut self) -> Accept<S> {
        self.deflate = false;
        self
    }

    /// Selects a subprotocol; it should be one the client offered.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Accept<S> {
        self.protocol = Some(protocol.into());
        self
    }

    /// Adds a header to the `101` response.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Accept<S> {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// An HTTP response: a refused upgrade, or a plain HTTP route.
///
/// ```
/// use wsloop::Response;
/// let denied = Response::new(401, "missing token").header("WWW-Authenticate", "Bearer");
/// assert_eq!(denied.status(), 401);
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A `text/plain` response with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8".into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Sets the `Content-Type`.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Response {
        self.content_type = content_type.into();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The response on the wire; `head_only` (for HEAD requests) leaves
    /// out the body but keeps its `Content-Length`.
    pub(crate) fn serialize(&self, head_only: bool) -> Vec<u8> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut bytes = http_response(self.status, &headers, &self.content_type, &self.body);
        if head_only {
            bytes.truncate(bytes.len() - self.body.len());
        }
        bytes
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.serialize(false)
    }
}

/// The application's callbacks. Every method but [`Handler::on_upgrade`]
/// has a default that does nothing.
///
/// All callbacks run on the loop's thread: keep them short. A panic inside
/// one is caught; the connection it concerned is closed with 1011 and every
/// other connection carries on.
///
/// ```
/// use wsloop::{Accept, ConnCtx, Handler, Message, Request, Response};
///
/// /// Echoes every message; refuses clients without `?token=secret`.
/// struct Echo;
///
/// impl Handler for Echo {
///     type State = ();
///     fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<()>, Response> {
///         match req.query_param("token").as_deref() {
///             Some("secret") => Ok(Accept::new(())),
///             _ => Err(Response::new(401, "bad token")),
///         }
///     }
///     fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
///         conn.send(msg);
///     }
/// }
/// ```
pub trait Handler {
    /// Per-connection application data, created when an upgrade is
    /// accepted and reachable through [`ConnCtx::state`].
    type State;

    /// Decides whether to accept an upgrade request that passed RFC 6455
    /// validation. Return the connection's initial state, or an HTTP
    /// response (e.g. 401/403) to refuse it.
    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<Self::State>, Response>;

    /// The connection is open: the `101` response is queued.
    fn on_open(&mut self, conn: &mut ConnCtx<'_, Self::State>) {
        let _ = conn;
    }

    /// A complete message arrived.
    fn on_message(&mut self, conn: &mut ConnCtx<'_, Self::State>, msg: Message<'_>) {
        let _ = (conn, msg);
    }

    /// The connection ended. `code` is the peer's close code, the code the
    /// server closed with, or [`CloseCode::ABNORMAL`] (1006) when the
    /// connection was lost without a close frame. Called exactly once for
    /// every connection that was opened; sends to it are ignored.
    fn on_close(&mut self, conn: &mut ConnCtx<'_, Self::State>, code: CloseCode, reason: &str) {
        let _ = (conn, code, reason);
    }

    /// The connection broke a protocol rule or a limit and is being closed
    /// with `error.code`: the close frame is already queued after the data
    /// sent before, so sends from here are refused; [`Handler::on_close`]
    /// follows.
    fn on_error(&mut self, conn: &mut ConnCtx<'_, Self::State>, error: &crate::ProtocolError) {
        let _ = (conn, error);
    }

    /// The connection's outbound queue, which had backed up, is empty again.
    fn on_drain(&mut self, conn: &mut ConnCtx<'_, Self::State>) {
        let _ = conn;
    }

    /// A plain HTTP request (no upgrade) arrived. Return a response to serve
    /// it; `None` falls through to the built-in routes (`/healthz`,
    /// `/metrics`) and then 404.
    fn on_http(&mut self, ctx: &mut Ctx<'_, Self::State>, req: &Request<'_>) -> Option<Response> {
        let _ = (ctx, req);
        None
    }

    /// A mio source the application registered with
    /// [`Ctx::user_token`] is ready.
    fn on_source_event(
        &mut self,
        ctx: &mut Ctx<'_, Self::State>,
        source: usize,
        event: &mio::event::Event,
    ) {
        let _ = (ctx, source, event);
    }

    /// A timer set with [`Ctx::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self::State>, timer: u64) {
        let _ = (ctx, timer);
    }

    /// A value posted from another thread with
    /// [`Handle::post`](crate::Handle::post) arrived.
    fn on_post(&mut self, ctx: &mut Ctx<'_, Self::State>, value: Box<dyn Any + Send>) {
        let _ = (ctx, value);
    }
}
