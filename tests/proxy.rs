//! wsloop behind a real nginx (Debian's `nginx` package): upgrades pass
//! through, heartbeats keep an idle connection alive past nginx's
//! `proxy_read_timeout` (and without them nginx closes it), and the client
//! address reaches the application only from trusted proxies.
//!
//! nginx runs as the current user from a temporary directory that holds
//! its configuration, pid file, logs and temp paths, listens on a free
//! port of 127.0.0.1 and proxies to a wsloop server in this process. It is
//! killed by its PID when the test ends, passing or failing.
//!
//! Without nginx (looked up on `PATH`, then as Debian's `/usr/sbin/nginx`,
//! which a non-root `PATH` often lacks) each test says so loudly and
//! passes, unless `WSLOOP_REQUIRE_NGINX` is set (to anything but `0`; CI sets
//! it to 1): then a
//! missing nginx fails the test. Nothing is installed here.

mod common;

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::IntoClientRequest;
use wsloop::{Accept, CloseCode, Config, ConnCtx, Handler, IpNet, Message, Request, Response};

// ------------------------------------------------------------------- nginx

/// nginx's `proxy_read_timeout`: an upgraded connection on which the
/// upstream sends nothing for this long is closed.
const NGINX_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The nginx binary, or `None` (after saying so) if the test should skip.
fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let found = on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file());
    if found.is_some() {
        return found;
    }
    let required =
        std::env::var_os("WSLOOP_REQUIRE_NGINX").is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "WSLOOP_REQUIRE_NGINX is set but nginx is not on PATH (nor /usr/sbin/nginx): \
         install Debian's nginx package (apt-get install nginx)"
    );
    // Straight to the terminal: the test harness captures `eprintln!` of
    // passing tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** {test}: SKIPPED, nginx is not installed (not on PATH, no /usr/sbin/nginx).\n\
         *** Install Debian's nginx package to run it; set WSLOOP_REQUIRE_NGINX=1 to make this a failure.\n"
    );
    None
}

/// A running nginx; dropping it kills the process and removes its
/// directory.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `master_process off`: this PID is all of nginx.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, empty directory under the system's temp dir.
fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "wsloop-nginx-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create nginx's temp dir");
    dir
}

/// A port of 127.0.0.1 that was free a moment ago, below the kernel's
/// ephemeral range: a probe connecting to it while nothing listens there
/// cannot be given the same port as its own end and connect to itself.
fn free_port() -> u16 {
    let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Spread over the range by the process id and a counter, so parallel
    // tests rarely try the same one.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let span = low.saturating_sub(10_000).max(1);
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 10_000
            + ((std::process::id() as u16)
                .wrapping_mul(31)
                .wrapping_add(n.wrapping_mul(97))
                % span);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low}");
}

/// The configuration: one process, everything inside `dir`, one server
/// that proxies WebSocket upgrades to `upstream` the way the README's
/// recipe does.
fn nginx_conf(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let dir = dir.display();
    let timeout = NGINX_READ_TIMEOUT.as_secs();
    format!(
        r#"# One process (no master, no workers), so killing its PID stops nginx.
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout {timeout}s;
        }}
    }}
}}
"#
    )
}

/// Starts nginx in front of `upstream` and waits (up to 5 s) until it
/// accepts connections. Retries on another port if the one picked was
/// taken in the meantime.
fn start_nginx(binary: &Path, upstream: SocketAddr) -> Nginx {
    let mut last_log = String::new();
    for _attempt in 0..5 {
        let dir = temp_dir();
        let port = free_port();
        fs::write(dir.join("nginx.conf"), nginx_conf(&dir, port, upstream)).unwrap();
        let stderr = fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .args(["-c", "nginx.conf", "-g", "daemon off;", "-e"])
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let mut nginx = Nginx {
            child,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect_timeout(&nginx.addr, Duration::from_millis(200)).is_ok() {
                return nginx;
            }
            let exited = nginx.child.try_wait().expect("nginx status").is_some();
            if exited || Instant::now() >= deadline {
                last_log = nginx.logs();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !last_log.contains("Address already in use") {
            break;
        }
    }
    panic!("nginx did not start:\n{last_log}");
}

impl Nginx {
    /// nginx's error log and stderr, for failure messages.
    fn logs(&self) -> String {
        ["error.log", "stderr.log"]
            .iter()
            .map(|f| fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ----------------------------------------------------------------- wsloop

/// The two addresses the application can see.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Addrs {
    peer: Option<SocketAddr>,
    remote: Option<SocketAddr>,
}

#[derive(Debug)]
enum Event {
    Upgrade {
        addrs: Addrs,
        forwarded_for: Option<String>,
    },
    Opened(Addrs),
    Closed(u16),
}

/// Echoes; reports the addresses seen at the upgrade and at open, and
/// every close.
struct App {
    events: Sender<Event>,
}

impl Handler for App {
    type State = ();

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<()>, Response> {
        let _ = self.events.send(Event::Upgrade {
            addrs: Addrs {
                peer: req.peer_addr(),
                remote: req.remote_addr(),
            },
            forwarded_for: req.header("X-Forwarded-For").map(str::to_string),
        });
        Ok(Accept::new(()))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, ()>) {
        let _ = self.events.send(Event::Opened(Addrs {
            peer: conn.peer_addr(),
            remote: conn.remote_addr(),
        }));
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
        conn.send(msg);
    }

    fn on_close(&mut self, _conn: &mut ConnCtx<'_, ()>, code: CloseCode, _reason: &str) {
        let _ = self.events.send(Event::Closed(code.as_u16()));
    }
}

/// wsloop with `config`, behind a fresh nginx.
struct Stack {
    // Dropped in this order: nginx first, then the server.
    nginx: Nginx,
    _server: Running,
    events: Receiver<Event>,
}

fn stack(binary: &Path, config: Config) -> Stack {
    let (tx, events) = mpsc::channel();
    let server = spawn(config, move || App { events: tx });
    let nginx = start_nginx(binary, server.addr);
    Stack {
        nginx,
        _server: server,
        events,
    }
}

impl Stack {
    /// The next upgrade the application saw: its addresses and the
    /// `X-Forwarded-For` that reached it.
    fn upgrade(&self) -> (Addrs, Option<String>) {
        recv_matching(&self.events, EVENT_TIMEOUT, |e| match e {
            Event::Upgrade {
                addrs,
                forwarded_for,
            } => Some((*addrs, forwarded_for.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no on_upgrade; nginx says:\n{}", self.nginx.logs()))
    }

    fn opened(&self) -> Addrs {
        recv_matching(&self.events, EVENT_TIMEOUT, |e| match e {
            Event::Opened(addrs) => Some(*addrs),
            _ => None,
        })
        .expect("no on_open")
    }

    fn closed_within(&self, within: Duration) -> Option<u16> {
        recv_matching(&self.events, within, |e| match e {
            Event::Closed(code) => Some(*code),
            _ => None,
        })
    }
}

fn base_config() -> Config {
    let mut config = Config::default();
    config.ping_interval = None;
    config.close_timeout = Duration::from_secs(1);
    config
}

fn trusting_localhost() -> Config {
    let mut config = base_config();
    config.trusted_proxies = vec!["127.0.0.1".parse::<IpNet>().unwrap()];
    config
}

/// A tungstenite client through nginx on `stream`, sending `extra`
/// headers with its upgrade request.
fn ws_via(stream: TcpStream, nginx: SocketAddr, extra: &[(&'static str, &str)]) -> Client {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut request = format!("ws://{nginx}/echo").into_client_request().unwrap();
    for (name, value) in extra {
        request
            .headers_mut()
            .append(*name, value.parse().expect("header value"));
    }
    let (ws, response) = tungstenite::client::client(request, stream)
        .unwrap_or_else(|e| panic!("upgrade through nginx failed: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// A TCP connection to `to` from `from` (any port).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind the client's source address");
    socket
        .connect_timeout(&to.into(), READ_TIMEOUT)
        .expect("connect to nginx");
    socket.into()
}

/// Reads for `during`, counting pings (tungstenite answers each on the
/// next read). `Err` says when and how the connection ended.
fn idle_reading(ws: &mut Client, during: Duration) -> Result<usize, (Duration, String)> {
    set_timeout(ws, Duration::from_millis(50));
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < during {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(other) => return Err((start.elapsed(), format!("{other:?}"))),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err((start.elapsed(), e.to_string())),
        }
    }
    set_timeout(ws, READ_TIMEOUT);
    Ok(pings)
}

// ------------------------------------------------------------------ tests

#[test]
fn an_upgrade_through_nginx_echoes() {
    let Some(nginx) = nginx_or_skip("an_upgrade_through_nginx_echoes") else {
        return;
    };
    let stack = stack(&nginx, base_config());
    let stream = TcpStream::connect(stack.nginx.addr).unwrap();
    let mut ws = ws_via(stream, stack.nginx.addr, &[]);
    let (_, forwarded_for) = stack.upgrade();
    assert_eq!(
        forwarded_for.as_deref(),
        Some("127.0.0.1"),
        "nginx's header"
    );
    stack.opened();
    for text in ["hello through nginx", "and again"] {
        assert_echo(&mut ws, text);
    }
    // The closing handshake passes through too: the client's close frame
    // (no code: 1005) reaches the application, not a dropped socket (1006).
    ws_close(ws);
    assert_eq!(stack.closed_within(EVENT_TIMEOUT), Some(1005));
}

#[test]
fn heartbeats_keep_an_idle_connection_open_through_nginx() {
    let Some(nginx) = nginx_or_skip("heartbeats_keep_an_idle_connection_open_through_nginx") else {
        return;
    };
    // Pings every 0.5 s: the upstream is never silent for nginx's 2 s.
    let mut config = base_config();
    config.ping_interval = Some(Duration::from_millis(500));
    config.pong_timeout = Duration::from_secs(2);
    let stack = stack(&nginx, config);
    let stream = TcpStream::connect(stack.nginx.addr).unwrap();
    let mut ws = ws_via(stream, stack.nginx.addr, &[]);
    stack.opened();
    let idle = NGINX_READ_TIMEOUT * 5 / 2;
    let pings = idle_reading(&mut ws, idle).unwrap_or_else(|(after, how)| {
        panic!(
            "closed after {after:?} ({how}) despite heartbeats; nginx says:\n{}",
            stack.nginx.logs()
        )
    });
    assert!(pings >= 3, "only {pings} pings in {idle:?}");
    assert_echo(&mut ws, "still here after the idle spell");
    assert_eq!(stack.closed_within(Duration::ZERO), None, "closed early");
    ws_close(ws);
}

#[test]
fn without_heartbeats_nginx_closes_an_idle_connection() {
    // The control for the test above: the same idle spell with heartbeats
    // off ends at nginx's read timeout, so that test can fail.
    let Some(nginx) = nginx_or_skip("without_heartbeats_nginx_closes_an_idle_connection") else {
        return;
    };
    let stack = stack(&nginx, base_config());
    let stream = TcpStream::connect(stack.nginx.addr).unwrap();
    let mut ws = ws_via(stream, stack.nginx.addr, &[]);
    stack.opened();
    let idle = NGINX_READ_TIMEOUT * 5 / 2;
    let (after, _how) = match idle_reading(&mut ws, idle) {
        Ok(pings) => panic!("still open after {idle:?} ({pings} pings) with heartbeats off"),
        Err(ended) => ended,
    };
    assert!(
        after >= NGINX_READ_TIMEOUT - Duration::from_millis(100),
        "closed after {after:?}, before nginx's read timeout"
    );
    // nginx drops the upstream connection without a close frame.
    assert_eq!(stack.closed_within(EVENT_TIMEOUT), Some(1006));
}

// The trust model. `trusted_proxies = [127.0.0.1]` says: whatever connects
// from 127.0.0.1 is a proxy that appends the address it saw to
// X-Forwarded-For. nginx connects to wsloop from 127.0.0.1 and appends its
// client's address ($proxy_add_x_forwarded_for), after whatever the client
// sent. wsloop reads the list from the right, skips trusted proxies and
// takes the first other address (rightmost-untrusted), so entries a client
// prepends are never reached, unless the client is itself at a trusted
// address: that host is then believed as a proxy would be.

#[test]
fn a_client_behind_a_trusted_nginx_cannot_spoof_its_address() {
    let Some(nginx) = nginx_or_skip("a_client_behind_a_trusted_nginx_cannot_spoof_its_address")
    else {
        return;
    };
    let stack = stack(&nginx, trusting_localhost());
    // The client is 127.0.0.2 (loopback, but not a trusted proxy) and
    // claims to be 198.51.100.9. nginx forwards
    // `198.51.100.9, 127.0.0.2`: the rightmost untrusted entry is the
    // client's real address, and the spoofed one is never read.
    let stream = connect_from([127, 0, 0, 2], stack.nginx.addr);
    let mut ws = ws_via(
        stream,
        stack.nginx.addr,
        &[("X-Forwarded-For", "198.51.100.9")],
    );
    let (addrs, forwarded_for) = stack.upgrade();
    assert_eq!(forwarded_for.as_deref(), Some("198.51.100.9, 127.0.0.2"));
    assert_eq!(
        addrs.peer,
        Some("127.0.0.2:0".parse().unwrap()),
        "the client, with no port (X-Forwarded-For carries none)"
    );
    let remote = addrs.remote.expect("the TCP peer");
    assert_eq!(
        remote.ip().to_string(),
        "127.0.0.1",
        "nginx's side of the TCP"
    );
    // The connection reports the same addresses for its whole life.
    assert_eq!(stack.opened(), addrs);
    assert_echo(&mut ws, "hi");
    ws_close(ws);
}

#[test]
fn a_client_on_a_trusted_address_is_believed_like_a_proxy() {
    let Some(nginx) = nginx_or_skip("a_client_on_a_trusted_address_is_believed_like_a_proxy")
    else {
        return;
    };
    let stack = stack(&nginx, trusting_localhost());
    // The client connects from 127.0.0.1, the trusted address, and sends
    // `X-Forwarded-For: 198.51.100.9`; nginx forwards
    // `198.51.100.9, 127.0.0.1`. 127.0.0.1 is a trusted proxy by
    // configuration, so its entry is skipped and 198.51.100.9 is the
    // client: correct by the configuration, which says anything at
    // 127.0.0.1 writes honest entries. (A real deployment lists only its
    // proxies, and clients arrive from elsewhere: the test above.)
    let stream = TcpStream::connect(stack.nginx.addr).unwrap();
    let mut ws = ws_via(
        stream,
        stack.nginx.addr,
        &[("X-Forwarded-For", "198.51.100.9")],
    );
    let (addrs, forwarded_for) = stack.upgrade();
    assert_eq!(forwarded_for.as_deref(), Some("198.51.100.9, 127.0.0.1"));
    assert_eq!(addrs.peer, Some("198.51.100.9:0".parse().unwrap()));
    assert_eq!(stack.opened(), addrs);
    assert_echo(&mut ws, "hi");
    ws_close(ws);

    // With no header of its own, a local client is the leftmost (and
    // only) entry: every entry is trusted, so the leftmost is the client.
    let stream = TcpStream::connect(stack.nginx.addr).unwrap();
    let ws = ws_via(stream, stack.nginx.addr, &[]);
    let (addrs, forwarded_for) = stack.upgrade();
    assert_eq!(forwarded_for.as_deref(), Some("127.0.0.1"));
    assert_eq!(addrs.peer, Some("127.0.0.1:0".parse().unwrap()));
    ws_close(ws);
}

#[test]
fn an_untrusted_nginx_is_the_peer() {
    let Some(nginx) = nginx_or_skip("an_untrusted_nginx_is_the_peer") else {
        return;
    };
    // Nothing trusted (the default): the headers are ignored and the
    // application sees nginx's TCP address.
    let stack = stack(&nginx, base_config());
    let stream = TcpStream::connect(stack.nginx.addr).unwrap();
    let client_port = stream.local_addr().unwrap().port();
    let mut ws = ws_via(
        stream,
        stack.nginx.addr,
        &[("X-Forwarded-For", "198.51.100.9")],
    );
    let (addrs, forwarded_for) = stack.upgrade();
    assert_eq!(forwarded_for.as_deref(), Some("198.51.100.9, 127.0.0.1"));
    let peer = addrs.peer.expect("a peer address");
    assert_eq!(addrs.remote, Some(peer));
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
    assert_ne!(
        peer.port(),
        client_port,
        "nginx's connection, not the client's"
    );
    assert_eq!(stack.opened(), addrs);
    assert_echo(&mut ws, "hi");
    ws_close(ws);
}
