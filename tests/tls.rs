//! wss:// and https:// against a real TLS client (rustls, verifying a CA
//! made for the test) with tungstenite on top, and raw TCP for what a TLS
//! client would never send. `cargo test --features tls --test tls`.
#![cfg(feature = "tls")]

mod common;

use std::any::Any;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message as WsMessage, WebSocket};
use wsloop::{
    Accept, CloseCode, Config, ConnCtx, Ctx, Handler, Message, Metrics, Request, Response,
    TlsConfig,
};

use common::{Running, probe, run_probe, spawn, test_config, wait_until};

// ------------------------------------------------------------ certificates

/// A CA, and leaf certificates for localhost / 127.0.0.1 signed by it.
struct Pki {
    ca_der: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsloop test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca_der: ca.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self) -> Leaf {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> ClientConfig {
        self.client_with_alpn(versions, vec![b"http/1.1".to_vec()])
    }

    fn client_with_alpn(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: Vec<Vec<u8>>,
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(wsloop::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        config
    }
}

impl Leaf {
    fn server_config(&self) -> TlsConfig {
        TlsConfig::from_der(self.chain.clone(), self.key.clone_key()).unwrap()
    }
}

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ server

/// Echoes, except on `/sub/TOPIC` (subscribes, sends nothing back) and
/// `/pub/TOPIC` (publishes each message to the topic); runs probes.
struct App;

impl Handler for App {
    type State = String;

    fn on_upgrade(&mut self, req: &Request<'_>) -> Result<Accept<String>, Response> {
        Ok(Accept::new(req.path().to_string()))
    }

    fn on_open(&mut self, conn: &mut ConnCtx<'_, String>) {
        if let Some(topic) = conn.state().strip_prefix("/sub/").map(str::to_string) {
            conn.subscribe(&topic);
        }
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, String>, msg: Message<'_>) {
        match conn.state().strip_prefix("/pub/").map(str::to_string) {
            Some(topic) => {
                conn.publish(&topic, msg);
            }
            None if conn.state().starts_with("/sub/") => {}
            None => {
                conn.send(msg);
            }
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, String>, value: Box<dyn Any + Send>) {
        run_probe(ctx, value);
    }
}

fn tls_server(leaf: &Leaf, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = test_config();
    config.tls = Some(leaf.server_config());
    tweak(&mut config);
    spawn(config, || App)
}

fn metrics(server: &Running) -> Metrics {
    probe::<String, _>(&server.handle, |ctx| ctx.metrics().clone())
}

// ------------------------------------------------------------------ client

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn tls_connect(addr: SocketAddr, config: ClientConfig) -> io::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn wss(addr: SocketAddr, path: &str, config: ClientConfig) -> WebSocket<Tls> {
    let stream = tls_connect(addr, config).expect("TLS handshake");
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) = tungstenite::client(url.as_str(), stream).expect("upgrade over TLS");
    assert_eq!(response.status(), 101);
    ws
}

fn read_data(ws: &mut WebSocket<Tls>) -> WsMessage {
    loop {
        match ws.read().expect("read") {
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => return other,
        }
    }
}

fn assert_echo(ws: &mut WebSocket<Tls>, text: &str) {
    ws.send(WsMessage::text(text)).unwrap();
    assert_eq!(read_data(ws), WsMessage::text(text));
}

/// Reads what is left after the WebSocket is done: `Ok(0)` is a clean
/// close_notify, `UnexpectedEof` a bare FIN.
fn tls_end(tls: &mut Tls) -> io::Result<usize> {
    let mut rest = [0u8; 256];
    loop {
        match tls.read(&mut rest) {
            Ok(0) => return Ok(0),
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn http_over_tls(addr: SocketAddr, config: ClientConfig, path: &str) -> String {
    let mut tls = tls_connect(addr, config).unwrap();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------------------- tests

#[test]
fn echo_over_tls_1_3_and_1_2_with_alpn_http_1_1() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    for (versions, expected) in [
        (TLS13, rustls::ProtocolVersion::TLSv1_3),
        (TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let mut ws = wss(server.addr, "/echo", pki.client(versions));
        let conn = &ws.get_ref().conn;
        assert_eq!(conn.protocol_version(), Some(expected));
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_echo(&mut ws, "hello over TLS");
        ws.close(None).unwrap();
    }
}

/// What a browser gets: its first key exchange choice without a
/// HelloRetryRequest (an extra round trip). Browsers offer the post-quantum
/// hybrid X25519MLKEM768 first, which the `tls-aws-lc` provider has and
/// ring has not; with ring they get X25519.
#[test]
fn the_key_exchange_browsers_offer_first_needs_no_retry() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut provider = (*wsloop::tls::provider()).clone();
    let rank = |group: rustls::NamedGroup| match group {
        rustls::NamedGroup::X25519MLKEM768 => 0,
        rustls::NamedGroup::X25519 => 1,
        rustls::NamedGroup::secp256r1 => 2,
        _ => 3,
    };
    provider.kx_groups.sort_by_key(|g| rank(g.name()));
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut ws = wss(server.addr, "/echo", config);
    let conn = &ws.get_ref().conn;
    let expected = if cfg!(feature = "tls-aws-lc") {
        rustls::NamedGroup::X25519MLKEM768
    } else {
        rustls::NamedGroup::X25519
    };
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(expected)
    );
    assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    assert_echo(&mut ws, "key exchange as a browser makes it");
}

#[test]
fn a_16_mib_message_and_1000_in_order() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut ws = wss(server.addr, "/echo", pki.client(TLS13));
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(WsMessage::binary(big.clone())).unwrap();
    assert_eq!(read_data(&mut ws).into_data().as_ref(), &big[..]);
    for i in 0..1000 {
        ws.write(WsMessage::text(i.to_string())).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..1000 {
        assert_eq!(read_data(&mut ws), WsMessage::text(i.to_string()));
    }
}

#[test]
fn ten_thousand_small_messages_pipelined_come_back_intact() {
    // Corked writes: many frames per record, the 32 KiB ciphertext cap.
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut ws = wss(server.addr, "/echo", pki.client(TLS13));
    let writer = {
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let payload = format!("{i:016}");
            ws.write(WsMessage::text(payload.clone())).unwrap();
            expected.push(payload);
            if i % 500 == 0 {
                ws.flush().unwrap();
            }
        }
        ws.flush().unwrap();
        expected
    };
    for payload in writer {
        assert_eq!(read_data(&mut ws), WsMessage::text(payload));
    }
}

#[test]
fn a_large_echo_to_a_client_reading_slowly() {
    // The server's ciphertext buffer fills and the socket blocks, again
    // and again: rustls' "full" must be "would block", never "gone".
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut ws = wss(server.addr, "/echo", pki.client(TLS13));
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 241) as u8).collect();
    ws.send(WsMessage::binary(big.clone())).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let the server block
    assert_eq!(read_data(&mut ws).into_data().as_ref(), &big[..]);
    assert_echo(&mut ws, "still here");
}

#[test]
fn publish_reaches_every_tls_subscriber_in_order() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut subscribers: Vec<_> = (0..4)
        .map(|_| wss(server.addr, "/sub/news", pki.client(TLS13)))
        .collect();
    assert!(wait_until(TIMEOUT, || probe::<String, _>(
        &server.handle,
        |ctx| ctx.subscriber_count("news")
    ) == 4));
    let mut publisher = wss(server.addr, "/pub/news", pki.client(TLS12));
    for i in 0..200 {
        publisher
            .send(WsMessage::text(format!("item {i}")))
            .unwrap();
    }
    for ws in &mut subscribers {
        for i in 0..200 {
            assert_eq!(read_data(ws), WsMessage::text(format!("item {i}")));
        }
    }
}

#[test]
fn http_routes_answer_over_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let health = http_over_tls(server.addr, pki.client(TLS13), "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok\n"), "{health}");
    let metrics = http_over_tls(server.addr, pki.client(TLS12), "/metrics");
    assert!(
        metrics.contains("wsloop_tls_handshake_failures_total 0"),
        "{metrics}"
    );
}

/// Sends `bytes` over raw TCP to the TLS port and returns what came back
/// before the server closed (or `None` if it kept the socket open).
fn raw_exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Option<Vec<u8>> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(bytes).unwrap();
    if half_close {
        tcp.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    match tcp.read_to_end(&mut out) {
        Ok(_) => Some(out),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Some(out),
        Err(_) => None,
    }
}

#[test]
fn plain_http_and_garbage_get_an_alert_and_hurt_no_one_else() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut bystander = wss(server.addr, "/echo", pki.client(TLS13));

    let answer = raw_exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        false,
    )
    .expect("the server closes the connection");
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "no plain HTTP answer on the TLS port"
    );
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 256) as u8).collect();
    raw_exchange(server.addr, &garbage, false).expect("closed after garbage");

    assert_echo(&mut bystander, "unaffected");
    assert!(wait_until(TIMEOUT, || metrics(&server)
        .tls_handshake_failures
        == 2));
    assert_eq!(metrics(&server).handshake_failures, 2);
}

/// The first bytes of a TLS 1.2+ ClientHello record, cut short.
const TRUNCATED_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

#[test]
fn a_truncated_client_hello_then_fin_is_closed_at_once() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let started = Instant::now();
    let answer = raw_exchange(server.addr, TRUNCATED_HELLO, true).expect("closed after the FIN");
    assert!(started.elapsed() < Duration::from_secs(1));
    // No session was set up, so nothing to close_notify: just the FIN.
    assert_eq!(answer, b"", "no alert for a handshake the peer abandoned");
    assert!(wait_until(TIMEOUT, || {
        let m = metrics(&server);
        m.handshake_failures == 1 && m.tls_handshake_failures == 1
    }));
}

#[test]
fn the_handshake_timeout_covers_the_tls_handshake() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |c| {
        c.handshake_timeout = Duration::from_millis(300)
    });
    let started = Instant::now();
    // A hello that never completes, the socket left open.
    raw_exchange(server.addr, TRUNCATED_HELLO, false).expect("closed by the timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(wait_until(TIMEOUT, || {
        let m = metrics(&server);
        m.handshake_failures == 1 && m.tls_handshake_failures == 1
    }));
    // And a TLS handshake that completed but sent no upgrade request: a
    // handshake failure (of the HTTP upgrade), not a TLS one.
    let mut idle = tls_connect(server.addr, pki.client(TLS13)).unwrap();
    let started = Instant::now();
    assert!(tls_end(&mut idle).is_ok(), "closed with close_notify");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_client_offering_only_h2_is_refused() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let config = pki.client_with_alpn(TLS13, vec![b"h2".to_vec()]);
    let err = tls_connect(server.addr, config).expect_err("no common protocol");
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    assert!(wait_until(TIMEOUT, || metrics(&server)
        .tls_handshake_failures
        == 1));
}

#[test]
fn a_subscriber_that_stops_reading_is_bounded_and_closed() {
    let pki = Pki::new();
    let cap = 256 * 1024;
    let server = tls_server(&pki.leaf(), |c| c.max_outbound_buffer = cap);
    // The stalled subscriber: a tiny receive buffer, and it never reads.
    let stalled = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        let conn = ClientConnection::new(
            Arc::new(pki.client(TLS13)),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        let url = format!("wss://localhost:{}/sub/feed", server.addr.port());
        tungstenite::client(url.as_str(), tls).unwrap().0
    };
    let mut reader = wss(server.addr, "/sub/feed", pki.client(TLS13));
    assert!(wait_until(TIMEOUT, || probe::<String, _>(
        &server.handle,
        |ctx| ctx.subscriber_count("feed")
    ) == 2));
    let mut publisher = wss(server.addr, "/pub/feed", pki.client(TLS13));
    let chunk = vec![7u8; 32 * 1024];
    let mut worst = 0;
    for i in 0..128 {
        // 4 MiB in all, read by `reader` as it comes.
        publisher.send(WsMessage::binary(chunk.clone())).unwrap();
        assert_eq!(read_data(&mut reader).into_data().len(), chunk.len(), "{i}");
        let queued = probe::<String, _>(&server.handle, |ctx| {
            ctx.connections()
                .into_iter()
                .filter_map(|id| ctx.buffered_amount(id))
                .max()
                .unwrap_or(0)
        });
        worst = worst.max(queued);
    }
    // Over its cap the stalled one is closed (1008, the default policy),
    // and no queue, ciphertext included, ever got far past the cap.
    assert!(worst <= cap + 64 * 1024, "a queue reached {worst} bytes");
    assert!(wait_until(TIMEOUT, || probe::<String, _>(
        &server.handle,
        |ctx| ctx.subscriber_count("feed")
    ) == 1));
    assert!(metrics(&server).closed_by_code.get(&1008).copied() == Some(1));
    drop(stalled);
}

#[test]
fn reload_changes_the_certificate_of_new_handshakes_only() {
    let pki = Pki::new();
    let (first, second) = (pki.leaf(), pki.leaf());
    let server = tls_server(&first, |_| {});
    let mut before = wss(server.addr, "/echo", pki.client(TLS13));
    let seen = |ws: &WebSocket<Tls>| ws.get_ref().conn.peer_certificates().unwrap()[0].clone();
    assert_eq!(seen(&before), first.chain[0]);

    assert!(server.handle.reload_tls(second.server_config()));
    // The reload is a command: a probe after it runs after it.
    probe::<String, _>(&server.handle, |_| ());
    let after = wss(server.addr, "/echo", pki.client(TLS13));
    assert_eq!(seen(&after), second.chain[0]);
    assert_echo(&mut before, "the old connection stays open");
    assert_eq!(seen(&before), first.chain[0]);
}

#[test]
fn graceful_shutdown_sends_1001_then_close_notify() {
    let pki = Pki::new();
    let mut server = tls_server(&pki.leaf(), |_| {});
    let mut ws = wss(server.addr, "/echo", pki.client(TLS13));
    assert_echo(&mut ws, "before shutdown");
    server.handle.shutdown();
    match read_data(&mut ws) {
        WsMessage::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), CloseCode::GOING_AWAY.as_u16())
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // tungstenite answers the close; then the TLS stream ends cleanly.
    let _ = ws.flush();
    assert!(server.join_within(TIMEOUT).is_some(), "the server stopped");
    let mut tls = ws.into_inner();
    assert_eq!(tls_end(&mut tls).expect("close_notify, not a bare FIN"), 0);
}

#[test]
fn a_client_close_is_answered_then_close_notify() {
    let pki = Pki::new();
    let server = tls_server(&pki.leaf(), |_| {});
    let mut ws = wss(server.addr, "/echo", pki.client(TLS12));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(WsMessage::Close(_)) | Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let mut tls = ws.into_inner();
    assert_eq!(tls_end(&mut tls).expect("close_notify, not a bare FIN"), 0);
    drop(server);
}
