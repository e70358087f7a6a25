//! One TLS connection on a non-blocking socket: rustls' buffered
//! `ServerConnection` driven the way the reactor needs (cargo feature
//! `tls`).
//!
//! - Reads: plaintext rustls already holds comes first; only when it has
//!   none is the socket read, once, and the records processed. A short
//!   socket read is what says the socket is drained, never a short
//!   plaintext read (one record may carry many messages, one read many
//!   records).
//! - Writes are corked: the session's whole queue goes into rustls in one
//!   `write_vectored` (many small frames share a record), and the
//!   ciphertext reaches the socket in one `writev` per flush. rustls' own
//!   buffer is capped at [`CIPHERTEXT_LIMIT`]: past it rustls takes
//!   nothing (`Ok(0)`), which here means "would block", so a slow
//!   reader's backlog stays in the session's queue, where broadcast
//!   frames are shared, not copied into per-connection ciphertext.
//! - Closing: `close_notify` goes out before the FIN on every orderly
//!   close, after every byte queued before it.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::transport::Input;

/// Most ciphertext (and pre-handshake plaintext) rustls buffers for one
/// connection: two full records, so one flush moves up to 32 KiB.
pub(crate) const CIPHERTEXT_LIMIT: usize = 32 * 1024;

/// A TLS connection: the socket and rustls' state for it.
#[derive(Debug)]
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    conn: ServerConnection,
    /// Plaintext handed to rustls since its ciphertext buffer was last
    /// empty: what `pending_out` reports (rustls does not say how many
    /// bytes it holds; this bounds it, within the record overhead).
    unflushed: usize,
    /// `close_notify` has been queued.
    close_notify_sent: bool,
    /// Send the FIN once the ciphertext ahead of it is on the socket.
    fin_wanted: bool,
}

/// Counts whether the socket read came back short: the socket is drained.
struct ShortReads<'a> {
    tcp: &'a mut TcpStream,
    short: bool,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl TlsStream {
    pub(crate) fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(CIPHERTEXT_LIMIT));
        Ok(TlsStream {
            tcp,
            conn,
            unflushed: 0,
            close_notify_sent: false,
            fin_wanted: false,
        })
    }

    /// Reads plaintext into `buf`. A TLS error (garbage, an alert, a bad
    /// handshake) comes back as `InvalidData` after rustls' alert for it
    /// has been written, best effort.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<Input> {
        let mut drained = false;
        loop {
            match self.conn.reader().read(buf) {
                // The peer's close_notify: no more data will come.
                Ok(0) if !buf.is_empty() => return Ok(Input::Eof),
                Ok(len) => {
                    return Ok(Input::Data {
                        len,
                        // rustls' reader fills `buf` while it has
                        // plaintext, so a short one emptied it.
                        drained: drained && len < buf.len(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: as final as a FIN; the
                // WebSocket closing handshake says whether it was clean.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Input::Eof),
                Err(e) => return Err(e),
            }
            // No plaintext: read the socket (again). After a short read
            // that costs one syscall that says WouldBlock, but only when
            // the records read carried no data (a handshake flight, a
            // ticket), and it is what finds a FIN that came with them.
            let mut socket = ShortReads {
                tcp: &mut self.tcp,
                short: false,
            };
            match self.conn.read_tls(&mut socket) {
                Ok(0) => return Ok(Input::Eof),
                Ok(_) => drained = socket.short,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Input::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued the alert that describes the error.
                let _ = self.conn.write_tls(&mut self.tcp);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Whether rustls holds ciphertext for the socket (a handshake flight,
    /// an alert, a session ticket, or data).
    #[inline]
    pub(crate) fn has_output(&self) -> bool {
        self.conn.wants_write()
    }

    #[inline]
    pub(crate) fn pending_out(&self) -> usize {
        if self.conn.wants_write() {
            self.unflushed.max(1)
        } else {
            0
        }
    }

    /// Whether the TLS handshake is still running.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Writes held ciphertext to the socket until it is all there or the
    /// socket is full; then sends a FIN that was waiting for it. Returns
    /// whether everything went.
    pub(crate) fn send_ciphertext(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.unflushed = 0;
        if std::mem::take(&mut self.fin_wanted) {
            self.tcp.shutdown(Shutdown::Write)?;
        }
        Ok(true)
    }

    /// Queues `close_notify` (once), after everything queued before it.
    /// Not before the handshake is done: there is no session to close
    /// (a failed handshake already sent its own alert), so a connection
    /// dropped mid-handshake (a timeout, a shutdown, the peer's FIN) just
    /// gets the FIN.
    pub(crate) fn close_notify(&mut self) {
        if self.conn.is_handshaking() {
            return;
        }
        if !std::mem::replace(&mut self.close_notify_sent, true) {
            self.conn.send_close_notify();
        }
    }

    /// `close_notify`, then the FIN once the ciphertext ahead is sent.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        self.close_notify();
        self.fin_wanted = true;
        self.send_ciphertext().map(|_| ())
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Encrypts as much of `bufs` as rustls' buffer takes. When it is full
    /// its ciphertext goes to the socket first; when the socket is full
    /// too, this is `WouldBlock`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let taken = self.conn.writer().write_vectored(bufs)?;
            if taken > 0 || bufs.iter().all(|b| b.is_empty()) {
                self.unflushed += taken;
                return Ok(taken);
            }
            if !self.send_ciphertext()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.send_ciphertext()? {
            true => Ok(()),
            false => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}
