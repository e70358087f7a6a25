//! Shared harness for the integration tests, in three parts:
//! - this module: a real `Server` on an ephemeral port in a background
//!   thread with a recording test handler ([`TestServer`]);
//! - [`spawn`]: any handler on such a server, and probes that run a closure
//!   on the loop's thread;
//! - [`wire`]: the clients (raw TCP and HTTP, a raw WebSocket client,
//!   tungstenite helpers).
//!
//! Every socket read has a timeout and every wait a deadline, so no test
//! can hang.
#![allow(dead_code)]

mod spawn;
mod wire;

// Each test crate uses a different part of the harness.
#[allow(unused_imports)]
pub use spawn::*;
#[allow(unused_imports)]
pub use wire::*;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use wsloop::{
    Accept, CloseCode, Config, ConnCtx, ConnId, Handle, Handler, Message, ProtocolError, Request,
    Response,
};

/// What the application saw of an upgrade request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub origin: Option<String>,
    pub peer: Option<SocketAddr>,
    pub subprotocols: Vec<String>,
}

impl RequestInfo {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }
}

/// A handler callback, recorded in order.
#[derive(Debug, Clone)]
pub enum Event {
    Upgrade(RequestInfo),
    Opened(ConnId, String),
    Message(ConnId, Vec<u8>),
    Closed(ConnId, u16, String),
    Error(ConnId, u16),
}

/// Decides an upgrade; the accepted state is the request path.
pub type UpgradeFn = Box<dyn FnMut(&Request<'_>) -> Result<Accept<String>, Response> + Send>;

/// Echoes every message, except the text `close-me`, which makes the
/// server close with 4001 "bye". Every callback is reported on a channel.
pub struct TestHandler {
    events: Sender<Event>,
    upgrade: Option<UpgradeFn>,
}

impl Handler for TestHandler {
    type State = String;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<String>, Response> {
        let info = RequestInfo {
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query().map(str::to_string),
            headers: req
                .headers()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            origin: req.origin().map(str::to_string),
            peer: req.peer_addr(),
            subprotocols: req.subprotocols().map(str::to_string).collect(),
        };
        let _ = self.events.send(Event::Upgrade(info));
        match &mut self.upgrade {
            Some(decide) => decide(req),
            None => Ok(Accept::new(req.path().to_string())),
        }
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, String>) {
        let _ = self
            .events
            .send(Event::Opened(conn.id(), conn.state().clone()));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, String>, msg: Message<'_>) {
        let _ = self
            .events
            .send(Event::Message(conn.id(), msg.as_bytes().to_vec()));
        if msg == Message::Text("close-me") {
            conn.close(CloseCode(4001), "bye");
        } else {
            conn.send(msg);
        }
    }

    fn on_close(&mut self, conn: &mut ConnCtx<'_, String>, code: CloseCode, reason: &str) {
        let _ = self
            .events
            .send(Event::Closed(conn.id(), code.as_u16(), reason.to_string()));
    }

    fn on_error(&mut self, conn: &mut ConnCtx<'_, String>, error: &ProtocolError) {
        let _ = self
            .events
            .send(Event::Error(conn.id(), error.code.as_u16()));
    }
}

/// The configuration tests start from: short timeouts, no heartbeats (a
/// stray ping would confuse the raw frame readers).
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.handshake_timeout = Duration::from_secs(2);
    config.close_timeout = Duration::from_secs(1);
    config.ping_interval = None;
    config
}

/// A server with the recording [`TestHandler`], running in a background
/// thread ([`spawn`]). Dropping it shuts it down, and fails the test if it
/// did not stop cleanly.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub events: Receiver<Event>,
    running: Running,
}

impl TestServer {
    /// An echo server with the test configuration.
    pub fn start() -> TestServer {
        TestServer::with(test_config(), None)
    }

    /// A server with `config` and, optionally, an upgrade decision.
    pub fn with(config: Config, upgrade: Option<UpgradeFn>) -> TestServer {
        let (event_tx, events) = mpsc::channel();
        let running = spawn(config, move || TestHandler {
            events: event_tx,
            upgrade,
        });
        TestServer {
            addr: running.addr,
            handle: running.handle.clone(),
            events,
            running,
        }
    }

    /// Waits for the next event matching `pred`, skipping others.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        pred: impl FnMut(&Event) -> Option<T>,
    ) -> Option<T> {
        recv_matching(&self.events, timeout, pred)
    }

    /// The next upgrade request the handler saw.
    pub fn expect_upgrade(&self) -> RequestInfo {
        self.wait_for(EVENT_TIMEOUT, |e| match e {
            Event::Upgrade(info) => Some(info.clone()),
            _ => None,
        })
        .expect("no on_upgrade call")
    }

    /// The id and path of the next connection opened.
    pub fn expect_opened(&self) -> (ConnId, String) {
        self.wait_for(EVENT_TIMEOUT, |e| match e {
            Event::Opened(id, path) => Some((*id, path.clone())),
            _ => None,
        })
        .expect("no on_open call")
    }

    /// The code and reason of the next `on_close` (of any connection).
    pub fn expect_closed(&self) -> (ConnId, u16, String) {
        self.expect_closed_within(EVENT_TIMEOUT)
            .expect("no on_close call")
    }

    pub fn expect_closed_within(&self, timeout: Duration) -> Option<(ConnId, u16, String)> {
        self.wait_for(timeout, |e| match e {
            Event::Closed(id, code, reason) => Some((*id, *code, reason.clone())),
            _ => None,
        })
    }

    /// The code of the next `on_error`.
    pub fn expect_error(&self) -> u16 {
        self.wait_for(EVENT_TIMEOUT, |e| match e {
            Event::Error(_, code) => Some(*code),
            _ => None,
        })
        .expect("no on_error call")
    }

    /// Shuts the server down and waits (bounded) for its thread. Returns
    /// whether it stopped in time.
    pub fn stop(&mut self) -> bool {
        self.running.stop()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let stopped = self.stop();
        if !stopped && !std::thread::panicking() {
            panic!("server did not shut down cleanly within 3 s");
        }
    }
}
