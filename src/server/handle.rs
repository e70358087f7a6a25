//! [`Handle`]: reaching the loop from other threads.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use mio::Waker;

use super::conn::ConnId;
use crate::protocol::close::CloseCode;
use crate::protocol::frame::encoded_len;
use crate::protocol::message::{Message, encode_message};

/// A request from another thread, carried out by the loop.
pub(crate) enum Command {
    Send(ConnId, Vec<u8>),
    Broadcast(Vec<u8>),
    Publish(String, Vec<u8>),
    Close(ConnId, CloseCode, String),
    Post(Box<dyn Any + Send>),
    #[cfg(feature = "tls")]
    ReloadTls(crate::tls::TlsConfig),
}

/// A cloneable, `Send` handle to a running server.
///
/// Messages are encoded on the calling thread and handed to the loop, which
/// is woken through a `mio::Waker`. Every method returns `false` once the
/// server has stopped.
///
/// ```no_run
/// # use wsloop::{Accept, Config, Handler, Request, Response, Server};
/// # struct App;
/// # impl Handler for App {
/// #     type State = ();
/// #     fn on_upgrade(&mut self, _: &Request<'_>) -> Result<Accept<()>, Response> { Ok(Accept::new(())) }
/// # }
/// let server = Server::bind("127.0.0.1:0".parse().unwrap(), Config::default(), App)?;
/// let handle = server.handle();
/// std::thread::spawn(move || {
///     while handle.broadcast_text("tick") {
///         std::thread::sleep(std::time::Duration::from_millis(100));
///     }
/// });
/// server.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) commands: Sender<Command>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) shutdown: Arc<AtomicBool>,
}

impl Handle {
    fn submit(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
    }

    /// Sends a message to one connection.
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> bool {
        self.submit(Command::Send(id, encode(msg)))
    }

    /// Sends a message to every open connection.
    pub fn broadcast(&self, msg: Message<'_>) -> bool {
        self.submit(Command::Broadcast(encode(msg)))
    }

    /// Shorthand for broadcasting a text message.
    pub fn broadcast_text(&self, text: &str) -> bool {
        self.broadcast(Message::Text(text))
    }

    /// Sends a message to every subscriber of `topic`.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> bool {
        self.submit(Command::Publish(topic.to_owned(), encode(msg)))
    }

    /// Closes a connection with `code` after its queued messages.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        self.submit(Command::Close(id, code, reason.to_owned()))
    }

    /// Delivers `value` to [`Handler::on_post`](crate::Handler::on_post) on
    /// the loop's thread, where it can use the full [`Ctx`](crate::Ctx).
    pub fn post(&self, value: impl Any + Send) -> bool {
        self.submit(Command::Post(Box::new(value)))
    }

    /// Replaces the TLS configuration (cargo feature `tls`): handshakes
    /// that start after the loop picks it up present the new certificate;
    /// open connections, and handshakes already under way, keep the one
    /// they started with. A server started without TLS stays plain and
    /// logs a warning.
    ///
    /// ```no_run
    /// # fn reload(handle: &wsloop::Handle) -> Result<(), wsloop::TlsError> {
    /// let tls = wsloop::TlsConfig::from_pem_files("cert.pem", "key.pem")?;
    /// handle.reload_tls(tls);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, tls: crate::tls::TlsConfig) -> bool {
        self.submit(Command::ReloadTls(tls))
    }

    /// Starts a graceful shutdown: stop accepting, flush what is queued,
    /// send 1001 Going Away to every connection, wait up to the close
    /// timeout for the peers' close frames, then return from `run`.
    ///
    /// It only sets a flag and wakes the loop, so it is safe to call from a
    /// signal handler.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

fn encode(msg: Message<'_>) -> Vec<u8> {
    let mut frame = Vec::with_capacity(encoded_len(msg.len()));
    encode_message(&mut frame, msg);
    frame
}
