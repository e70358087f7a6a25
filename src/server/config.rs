//! Server configuration: limits, timeouts and the backpressure policy.

use std::time::Duration;

use crate::protocol::close::CloseCode;
use crate::protocol::forwarded::{ForwardedHeader, IpNet};
use crate::protocol::handshake::HeadLimits;
use crate::protocol::message::DecoderLimits;
use crate::session::SessionConfig;

/// What happens to a message for a connection whose outbound queue is
/// already over [`Config::max_outbound_buffer`].
///
/// This applies to messages from elsewhere (broadcasts, other connections,
/// other threads). A connection's replies to itself are always queued; its
/// reads pause instead, so TCP flow control slows that sender down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Skip the message for that connection and count it as dropped.
    Drop,
    /// Close the connection with this code (1008 or 1013 are usual), ahead
    /// of its queued data, and count the message as dropped.
    Close(CloseCode),
}

/// Everything tunable about a [`Server`](crate::Server). Start from
/// `Config::default()` and change what you need; new fields may come in
/// any release, so it cannot be built field by field outside this crate.
///
/// ```
/// use std::time::Duration;
/// use wsloop::{Backpressure, Config};
/// let mut config = Config::default();
/// config.ping_interval = Some(Duration::from_secs(5));
/// config.backpressure = Backpressure::Drop;
/// assert_eq!(config.max_message_size, 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Largest message, over all its fragments (default 16 MiB). Over it: 1009.
    pub max_message_size: usize,
    /// Largest payload one frame may announce (default 16 MiB). Over it: 1009.
    pub max_frame_size: usize,
    /// Most frames one message may span (default 100,000; admits a 4 MiB
    /// message in 65,536 fragments). Over it: 1009.
    pub max_fragments: usize,
    /// Largest HTTP request head (default 8 KiB). Over it: 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request (default 64). Over it: 431.
    pub max_headers: usize,
    /// Most simultaneous connections (default 100,000). Beyond it new
    /// connections get `503` and are closed.
    pub max_connections: usize,
    /// Cap on a connection's queued outbound bytes (default 1 MiB).
    pub max_outbound_buffer: usize,
    /// Policy for messages that would exceed the cap (default: close 1008).
    pub backpressure: Backpressure,
    /// Time allowed to complete the upgrade request (default 10 s).
    pub handshake_timeout: Duration,
    /// Time allowed for the closing handshake before the socket is dropped
    /// (default 5 s).
    pub close_timeout: Duration,
    /// Ping connections silent for this long (default 20 s; `None` disables
    /// heartbeats). Deadlines of open connections are rounded up to 1% of
    /// the shortest of this and `idle_timeout` (between 32 ms and 1 s), so
    /// a ping may go out that much later: in return, every connection that
    /// fell silent in the same window is pinged in one wake-up.
    pub ping_interval: Option<Duration>,
    /// Close a connection that sends nothing for this long after a ping
    /// (default 10 s). The application sees code 1006.
    pub pong_timeout: Duration,
    /// Close (1001) connections that send no message for this long, pings
    /// and pongs not counting (default: none).
    pub idle_timeout: Option<Duration>,
    /// Size of the loop-wide read buffer (default 64 KiB).
    pub read_buffer_size: usize,
    /// Serve TLS (`wss://`, `https://`) on the listening port with this
    /// configuration (default: none, plain TCP). Replace it on a running
    /// server with [`Handle::reload_tls`](crate::Handle::reload_tls).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it,
    /// with this configuration (default: none, so every connection opens
    /// uncompressed). Compression costs CPU on both sides; it pays for
    /// text that repeats itself (JSON) on slow links. Refuse it for one
    /// connection with [`Accept::without_deflate`](crate::Accept::without_deflate).
    #[cfg(feature = "deflate")]
    pub deflate: Option<crate::DeflateConfig>,
    /// Reverse proxies whose forwarding header is believed: addresses and
    /// CIDR networks (default: none, so the header is ignored). When the
    /// TCP peer is in this list, [`Request::peer_addr`] and
    /// [`ConnCtx::peer_addr`] report the client named by
    /// [`forwarded_header`](Self::forwarded_header), read from the right
    /// past the listed proxies (the rightmost-untrusted rule; see
    /// [`forwarded`](crate::protocol::forwarded)), and `remote_addr` the
    /// proxy. List only proxies that append to that header: anyone listed
    /// can claim any client address.
    ///
    /// ```
    /// use wsloop::Config;
    /// let mut config = Config::default();
    /// // nginx on this machine, and a load balancer somewhere in 10/8.
    /// config.trusted_proxies = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    /// assert!(config.trusted_proxies[1].contains("10.1.2.3".parse().unwrap()));
    /// ```
    ///
    /// [`Request::peer_addr`]: crate::Request::peer_addr
    /// [`ConnCtx::peer_addr`]: crate::ConnCtx::peer_addr
    pub trusted_proxies: Vec<IpNet>,
    /// The forwarding header the trusted proxies write, and the only one
    /// read (default `X-Forwarded-For`): a proxy passes the other one on
    /// from the client untouched.
    pub forwarded_header: ForwardedHeader,
}

impl Default for Config {
    fn default() -> Self {
        let session = SessionConfig::default();
        let limits = session.decoder_limits;
        Config {
            max_message_size: limits.max_message_size,
            max_frame_size: limits.max_frame_size,
            max_fragments: limits.max_fragments,
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            max_connections: 100_000,
            max_outbound_buffer: 1 << 20,
            backpressure: Backpressure::Close(CloseCode::POLICY),
            handshake_timeout: session.handshake_timeout,
            close_timeout: session.close_timeout,
            ping_interval: session.ping_interval,
            pong_timeout: session.pong_timeout,
            idle_timeout: session.idle_timeout,
            read_buffer_size: 64 * 1024,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "deflate")]
            deflate: None,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
        }
    }
}

impl Config {
    /// The part of the configuration each connection's session follows.
    pub(crate) fn session_config(&self) -> SessionConfig {
        SessionConfig {
            handshake_timeout: self.handshake_timeout,
            close_timeout: self.close_timeout,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            idle_timeout: self.idle_timeout,
            decoder_limits: self.decoder_limits(),
        }
    }

    pub(crate) fn decoder_limits(&self) -> DecoderLimits {
        DecoderLimits {
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            max_fragments: self.max_fragments,
        }
    }

    pub(crate) fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
        }
    }
}
