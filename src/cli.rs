//! Command-line flags of the `wsloop` binary, parsed by hand (the design
//! card keeps runtime dependencies to the essentials).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wsloop::{Backpressure, CloseCode, Config, ForwardedHeader, IpNet};

/// What every path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Route by path: `/broadcast`, `/chat/ROOM`, `/ticker`, anything else echoes.
    Playground,
    /// Every path echoes.
    Echo,
    /// Every message goes to every other connection.
    Broadcast,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub mode: Mode,
    pub config: Config,
    pub ticker_interval: Option<Duration>,
    /// Certificate chain and key PEM files: serve TLS.
    pub tls: Option<TlsFiles>,
}

/// Where `--tls-cert` and `--tls-key` point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const USAGE: &str = "\
wsloop — a WebSocket server in one single-threaded mio event loop

USAGE:
    wsloop [FLAGS]

With no flags, listens on 127.0.0.1:9001 as a playground that routes by path:
    /broadcast          each message goes to every other /broadcast client
    /chat/ROOM          chat room with join/leave notices; a message reaches the
    /chat?room=R&name=N room but not its sender (JSON {type, payload} frames;
                        send {\"type\":\"chat\",\"payload\":\"hi\"} or plain text)
    /ticker             prices pushed several times a second from a background thread
    any other path      echoes every message back
Plain HTTP on the same port: GET / (demo page), /healthz, /metrics.

FLAGS:
    --listen ADDR:PORT          address to listen on [default: 127.0.0.1:9001]
    --mode MODE                 playground | echo | broadcast [default: playground]
                                (echo and broadcast apply one behaviour to every path)
    --max-message-size BYTES    largest message, over all fragments [default: 16777216]
    --max-frame-size BYTES      largest frame payload [default: 16777216]
    --max-fragments N           most frames per message [default: 100000]
    --max-header-bytes BYTES    largest upgrade request head [default: 8192]
    --max-headers N             most request header fields [default: 64]
    --max-connections N         beyond it new connections get 503 [default: 100000]
    --max-outbound-buffer BYTES cap on a connection's queued output [default: 1048576]
    --backpressure POLICY       drop | close (close sends 1008) [default: close]
    --ping-interval SECS        ping connections silent this long (up to 1% later, so pings
                                go out in batches); 0 disables [default: 20]
    --pong-timeout SECS         close a connection silent this long after a ping [default: 10]
    --handshake-timeout SECS    time allowed for the upgrade request [default: 10]
    --close-timeout SECS        time allowed for the closing handshake [default: 5]
    --idle-timeout SECS         close (1001) connections sending no message this long;
                                0 disables [default: 0]
    --ticker-interval SECS      playground ticker period; 0 disables [default: 0.2]
    --tls-cert FILE             serve wss:// and https:// with this PEM certificate chain
                                (leaf first); needs --tls-key and a build with the `tls`
                                feature. SIGHUP reloads both files: new handshakes
                                present the new certificate, open connections stay
    --tls-key FILE              the certificate's PEM private key (PKCS#8, PKCS#1, SEC1)
    --deflate                   offer permessage-deflate (RFC 7692) to clients that ask;
                                needs a build with the `deflate` feature [default: off]
    --deflate-threshold BYTES   messages shorter than this go out uncompressed, longer ones
                                compressed if that makes them smaller; 0: every message
                                compressed [default: 128]
    --deflate-level N           zlib level, 0 (none) to 9 (smallest) [default: 1]
    --trusted-proxy LIST        reverse proxies whose forwarding header is believed:
                                comma-separated addresses and CIDR networks, e.g.
                                127.0.0.1,10.0.0.0/8,::1,fd00::/8; may be repeated. For
                                their requests the client is the header's rightmost
                                entry that is not a trusted proxy (port 0 unless the
                                entry has one) [default: none: headers ignored]
    --forwarded-header NAME     x-forwarded-for | forwarded (RFC 7239): the header the
                                trusted proxies write; only it is read
                                [default: x-forwarded-for]
    -h, --help                  print this help
    -V, --version               print the version

SECS accept fractions (0.5). Logging: RUST_LOG=debug|info|warn [default: info,rustls=error]
(rustls warns about each misbehaving TLS client; the loop counts those instead).
SIGINT/SIGTERM shut down gracefully: queued messages are flushed, then 1001.
";

/// The result of parsing: run with options, or print and exit.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
    Version,
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut options = Options {
        listen: "127.0.0.1:9001".parse().expect("valid default address"),
        mode: Mode::Playground,
        config: Config::default(),
        ticker_interval: Some(Duration::from_millis(200)),
        tls: None,
    };
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut deflate = false;
    let (mut deflate_threshold, mut deflate_level) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        if flag == "-V" || flag == "--version" {
            return Ok(Parsed::Version);
        }
        if flag == "--deflate" {
            if inline.is_some() {
                return Err("--deflate takes no value".into());
            }
            deflate = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let c = &mut options.config;
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                options.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: `{v}` is not ADDR:PORT"))?;
            }
            "--mode" => {
                options.mode = match value()?.as_str() {
                    "playground" => Mode::Playground,
                    "echo" => Mode::Echo,
                    "broadcast" => Mode::Broadcast,
                    other => return Err(format!("--mode: unknown mode `{other}`")),
                }
            }
            "--max-message-size" => c.max_message_size = number(&flag, &value()?)?,
            "--max-frame-size" => c.max_frame_size = number(&flag, &value()?)?,
            "--max-fragments" => c.max_fragments = number(&flag, &value()?)?,
            "--max-header-bytes" => c.max_header_bytes = number(&flag, &value()?)?,
            "--max-headers" => c.max_headers = number(&flag, &value()?)?,
            "--max-connections" => c.max_connections = number(&flag, &value()?)?,
            "--max-outbound-buffer" => c.max_outbound_buffer = number(&flag, &value()?)?,
            "--backpressure" => {
                c.backpressure = match value()?.as_str() {
                    "drop" => Backpressure::Drop,
                    "close" => Backpressure::Close(CloseCode::POLICY),
                    other => return Err(format!("--backpressure: unknown policy `{other}`")),
                }
            }
            "--ping-interval" => c.ping_interval = optional_seconds(&flag, &value()?)?,
            "--pong-timeout" => c.pong_timeout = seconds(&flag, &value()?)?,
            "--handshake-timeout" => c.handshake_timeout = seconds(&flag, &value()?)?,
            "--close-timeout" => c.close_timeout = seconds(&flag, &value()?)?,
            "--idle-timeout" => c.idle_timeout = optional_seconds(&flag, &value()?)?,
            "--ticker-interval" => options.ticker_interval = optional_seconds(&flag, &value()?)?,
            "--tls-cert" => tls_cert = Some(PathBuf::from(value()?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value()?)),
            "--deflate-threshold" => {
                let v = value()?;
                deflate_threshold = Some(
                    v.parse::<usize>()
                        .map_err(|_| format!("{flag}: `{v}` is not a whole number of bytes"))?,
                );
            }
            "--deflate-level" => {
                let v = value()?;
                deflate_level = match v.parse::<u32>() {
                    Ok(level) if level <= 9 => Some(level),
                    _ => return Err(format!("{flag}: `{v}` is not a level from 0 to 9")),
                };
            }
            "--trusted-proxy" => c.trusted_proxies.extend(proxies(&flag, &value()?)?),
            "--forwarded-header" => {
                c.forwarded_header = match value()?.to_ascii_lowercase().as_str() {
                    "x-forwarded-for" => ForwardedHeader::XForwardedFor,
                    "forwarded" => ForwardedHeader::Forwarded,
                    other => return Err(format!("--forwarded-header: unknown header `{other}`")),
                }
            }
            other => return Err(format!("unknown flag `{other}` (see --help)")),
        }
    }
    options.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
    };
    if !deflate && (deflate_threshold.is_some() || deflate_level.is_some()) {
        return Err("--deflate-threshold and --deflate-level need --deflate".into());
    }
    if deflate {
        #[cfg(not(feature = "deflate"))]
        return Err(
            "this wsloop was built without permessage-deflate: rebuild with \
             `--features deflate` to use --deflate"
                .into(),
        );
        #[cfg(feature = "deflate")]
        {
            let mut config = wsloop::DeflateConfig::default();
            if let Some(threshold) = deflate_threshold {
                config.threshold = threshold;
            }
            if let Some(level) = deflate_level {
                config.level = level;
            }
            options.config.deflate = Some(config);
        }
    }
    if options.tls.is_some() && !cfg!(feature = "tls") {
        return Err(
            "this wsloop was built without TLS: rebuild with `--features tls` to use --tls-cert"
                .into(),
        );
    }
    Ok(Parsed::Run(Box::new(options)))
}

fn number(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: `{value}` is not a positive whole number")),
    }
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{flag}: `{value}` is not a positive number of seconds"
        )),
    }
}

/// Seconds where 0 means "off".
fn optional_seconds(flag: &str, value: &str) -> Result<Option<Duration>, String> {
    if value.parse::<f64>() == Ok(0.0) {
        return Ok(None);
    }
    seconds(flag, value).map(Some)
}

/// A comma-separated list of addresses and CIDR networks.
fn proxies(flag: &str, value: &str) -> Result<Vec<IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|e| format!("{flag}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(options) => Ok(*options),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn defaults_need_no_flags() {
        let options = run(&[]).unwrap();
        assert_eq!(options.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(options.mode, Mode::Playground);
        assert_eq!(options.config, Config::default());
    }

    #[test]
    fn flags_set_limits_and_fractional_timeouts() {
        let options = run(&[
            "--listen=0.0.0.0:8080",
            "--mode",
            "echo",
            "--ping-interval",
            "0.5",
            "--idle-timeout",
            "0",
            "--max-message-size",
            "1024",
            "--backpressure",
            "drop",
        ])
        .unwrap();
        assert_eq!(options.listen.port(), 8080);
        assert_eq!(options.mode, Mode::Echo);
        assert_eq!(
            options.config.ping_interval,
            Some(Duration::from_millis(500))
        );
        assert_eq!(options.config.idle_timeout, None);
        assert_eq!(options.config.max_message_size, 1024);
        assert_eq!(options.config.backpressure, Backpressure::Drop);
    }

    #[test]
    fn trusted_proxies_are_a_list_and_may_repeat() {
        let options = run(&[
            "--trusted-proxy",
            "127.0.0.1, 10.0.0.0/8",
            "--trusted-proxy=::1,fd00::/8",
            "--forwarded-header",
            "Forwarded",
        ])
        .unwrap();
        let listed: Vec<String> = options
            .config
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            listed,
            ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
        );
        assert_eq!(options.config.forwarded_header, ForwardedHeader::Forwarded);
        let defaults = run(&[]).unwrap().config;
        assert!(defaults.trusted_proxies.is_empty());
        assert_eq!(defaults.forwarded_header, ForwardedHeader::XForwardedFor);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for args in [
            &["--listen", "nowhere"][..],
            &["--mode", "x"],
            &["--ping-interval"],
            &["--bogus"],
            &["--max-headers", "-3"],
            &["--tls-cert", "cert.pem"],
            &["--tls-key", "key.pem"],
            &["--trusted-proxy", "10.0.0.0/33"],
            &["--trusted-proxy", "127.0.0.1,nginx"],
            &["--trusted-proxy"],
            &["--forwarded-header", "x-real-ip"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
    }
}
