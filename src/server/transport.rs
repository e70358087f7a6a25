//! The transport seam: the reactor reads and writes every connection
//! through one [`Transport`], an enum rather than a trait object, so the
//! plain path costs one predictable branch and no indirection.
//!
//! Plain TCP, or TLS with the `tls` feature ([`super::tls_stream`]). The
//! methods carry the semantics TLS needs, and the reactor follows them:
//! - [`Transport::read`] says whether the socket is known to be drained:
//!   under edge-triggered readiness the reactor may stop reading only
//!   then. A short read of plaintext from TLS says nothing about the
//!   socket, which may hold more records.
//! - [`Transport::pending_out`] counts bytes the transport holds that are
//!   not yet on the socket (ciphertext); they count toward the outbound
//!   cap and `buffered_amount`.
//! - [`Transport::shutdown_write`] ends our side in order: a TLS transport
//!   first sends its own close (close_notify), then the FIN.
//! - [`Transport::send_pending`] moves bytes the transport holds (a TLS
//!   handshake flight, ciphertext) to the socket, and says whether all
//!   went; the session's queue counts as written only then.
//!
//! With the feature compiled out the enum has one variant, and every
//! method is the plain socket call.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;

#[cfg(feature = "tls")]
use super::tls_stream::TlsStream;

/// One connection's byte stream.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP: bytes go to and from the socket as they are.
    Plain(TcpStream),
    /// TLS: the connection's rustls state is boxed, so a plain connection
    /// on a TLS-capable build pays one pointer's width, not rustls' size.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream>),
}

/// The result of one [`Transport::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// `len` bytes arrived. `drained` is true when the socket is known to
    /// have nothing more right now, so waiting for the next readiness edge
    /// loses nothing.
    Data { len: usize, drained: bool },
    /// The peer closed its side.
    Eof,
    /// Nothing to read now.
    WouldBlock,
}

impl Transport {
    /// Reads what is available into `buf`.
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<Input> {
        match self {
            Transport::Plain(stream) => match stream.read(buf) {
                Ok(0) => Ok(Input::Eof),
                // A short read of a plain socket drained it.
                Ok(len) => Ok(Input::Data {
                    len,
                    drained: len < buf.len(),
                }),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Input::WouldBlock),
                Err(e) => Err(e),
            },
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    /// Whether the transport holds bytes of its own for the socket (a TLS
    /// handshake flight or alert, read or not): the reactor flushes it.
    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.has_output(),
        }
    }

    /// Writes what the transport holds to the socket; `true` when nothing
    /// is left (a plain socket holds nothing).
    #[inline]
    pub(crate) fn send_pending(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(true),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.send_ciphertext(),
        }
    }

    /// Queues the transport's own end-of-stream notice (TLS close_notify)
    /// ahead of the socket's close; nothing for plain TCP.
    #[inline]
    pub(crate) fn close_notify(&mut self) {
        match self {
            Transport::Plain(_) => {}
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.close_notify(),
        }
    }

    /// Whether the transport's own handshake (TLS) is still running, so a
    /// failure now is a failed handshake.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.is_handshaking(),
        }
    }

    /// Bytes accepted for sending that are not yet on the socket.
    #[inline]
    pub(crate) fn pending_out(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.pending_out(),
        }
    }

    /// Ends our side of the stream in order; the peer reads EOF after the
    /// last byte we sent.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.shutdown(Shutdown::Write),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.shutdown_write(),
        }
    }

    /// The peer's address; asked of the socket rather than stored, to keep
    /// connections small. `None` once the socket is disconnected.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Transport::Plain(stream) => stream.peer_addr().ok(),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.tcp.peer_addr().ok(),
        }
    }

    /// The mio source to register.
    pub(crate) fn source(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &mut tls.tcp,
        }
    }
}

/// Writes go to the socket, or into TLS records (which
/// [`Transport::send_pending`] then moves to the socket).
impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.flush(),
        }
    }
}
