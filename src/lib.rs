//! # wsloop
//!
//! A WebSocket server (RFC 6455) that runs in one single-threaded mio event
//! loop: connection state machines in a slab, frames parsed from a
//! loop-wide read buffer, corked writes, encode-once broadcast, and
//! heartbeats and timeouts in one set of deadline buckets.
//!
//! The crate has four layers, each using only the ones below it:
//! - [`protocol`]: the sans-IO RFC 6455 codec (handshake, frames, messages,
//!   UTF-8, close codes, the extension seam) that never touches a socket
//!   or a clock;
//! - the session: one connection's whole lifecycle (handshaking, open,
//!   closing, closed; heartbeats, timeouts, the closing handshake) as a
//!   sans-IO state machine that takes bytes and the time and gives back
//!   events, bytes to send and its next deadline;
//! - [`Server`]: the reactor that owns all I/O and time, moving bytes
//!   between each connection's transport and its session;
//! - [`Handler`], [`Ctx`], [`ConnCtx`] and [`Handle`]: what the application
//!   implements and uses.
//!
//! ```no_run
//! use wsloop::{Accept, Config, ConnCtx, Handler, Message, Request, Response, Server};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     type State = ();
//!     fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
//!         Ok(Accept::new(()))
//!     }
//!     fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
//!         conn.send(msg);
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     Server::bind("127.0.0.1:9001".parse().unwrap(), Config::default(), Echo)?.run()
//! }
//! ```
// One audited exception, allowed where it stands: `unmask_text` in
// protocol/message.rs (see the README's "Unsafe code").
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod protocol;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
// Public for the fuzzer and the benches, which drive sessions in memory;
// not part of the documented API.
#[doc(hidden)]
pub mod session;

pub use protocol::ProtocolError;
pub use protocol::close::CloseCode;
pub use protocol::forwarded::{ForwardedHeader, IpNet};
pub use protocol::handshake::Request;
pub use protocol::message::Message;
#[cfg(feature = "deflate")]
pub use server::DeflateConfig;
pub use server::{
    Accept, Backpressure, Config, ConnCtx, ConnId, Ctx, Handle, Handler, Metrics, Response,
    SendStatus, Server,
};
#[cfg(feature = "tls")]
pub use tls::{TlsConfig, TlsError};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
