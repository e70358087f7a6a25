//! # wsloop
//!
//! A WebSocket server (RFC 6455) that runs in one single-threaded mio event
//! loop: connection state machines in a slab, frames parsed from a
//! loop-wide read buffer, corked writes, encode-once broadcast, and
//! heartbeats and timeouts in one set of deadline buckets.
//!
//! The crate has three layers:
//! - [`protocol`]: a sans-IO RFC 6455 core (handshake, frames, messages,
//!   UTF-8, close codes) that never touches a socket or a clock;
//! - [`Server`]: the reactor that owns all I/O and time;
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

mod handler;
mod http;
pub mod protocol;
mod server;

pub use handler::{Accept, ConnId, Handler, Message, Response, SendStatus};
pub use protocol::ProtocolError;
pub use protocol::close::CloseCode;
pub use protocol::handshake::Request;
pub use server::{Backpressure, Config, ConnCtx, Ctx, Handle, Metrics, Server};

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
