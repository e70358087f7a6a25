//! The transport seam: the reactor reads and writes every connection
//! through one [`Transport`], an enum rather than a trait object, so the
//! plain path costs one predictable branch and no indirection.
//!
//! Today it is plain TCP; TLS will be a second variant. The methods carry
//! the semantics a TLS transport needs, so the reactor already follows
//! them:
//! - [`Transport::read`] says whether the socket is known to be drained:
//!   under edge-triggered readiness the reactor may stop reading only
//!   then. A short read of plaintext from TLS says nothing about the
//!   socket, which may hold more records.
//! - [`Transport::pending_out`] counts bytes the transport holds that are
//!   not yet on the socket (ciphertext); they count toward the outbound
//!   cap and `buffered_amount`.
//! - [`Transport::shutdown_write`] ends our side in order: a TLS transport
//!   first sends its own close (close_notify), then the FIN.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;

/// One connection's byte stream.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP: bytes go to and from the socket as they are.
    Plain(TcpStream),
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
        }
    }

    /// Bytes accepted for sending that are not yet on the socket.
    #[inline]
    pub(crate) fn pending_out(&self) -> usize {
        match self {
            Transport::Plain(_) => 0,
        }
    }

    /// Ends our side of the stream in order; the peer reads EOF after the
    /// last byte we sent.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.shutdown(Shutdown::Write),
        }
    }

    /// The peer's address; asked of the socket rather than stored, to keep
    /// connections small. `None` once the socket is disconnected.
    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Transport::Plain(stream) => stream.peer_addr().ok(),
        }
    }

    /// The mio source to register.
    pub(crate) fn source(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
        }
    }
}

/// Writes go to the socket (through the transport's own framing, once
/// there is one).
impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
        }
    }
}
