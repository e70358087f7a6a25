//! Hostile and faulty peers: connection limits, slowloris, resets, ping
//! floods, descriptor exhaustion and panicking handlers. Each must affect
//! only the offending connection while everyone else is served.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use wsloop::{Accept, CloseCode, ConnCtx, Handler, Message, Request, Response, Server};

fn open_connections(server: &TestServer) -> u64 {
    let (response, _) = http_exchange(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    metric(&response.body_text(), "wsloop_connections_open")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Polls `check` until it holds or `within` passes.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

#[test]
fn beyond_max_connections_new_clients_get_503_and_the_rest_carry_on() {
    let mut config = test_config();
    config.max_connections = 3;
    let server = TestServer::with(config, None);
    let mut clients: Vec<Client> = (0..3).map(|_| ws_connect(server.addr, "/")).collect();
    let (response, mut stream) = http_exchange(server.addr, upgrade_request("/", &[]).as_bytes());
    assert_eq!(response.status, 503);
    assert_eof(&mut stream);
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_echo(ws, &format!("still here {i}"));
    }
    // A slot freed is a slot available again.
    ws_close(clients.pop().unwrap());
    assert!(eventually(Duration::from_secs(2), || {
        let mut stream = connect(server.addr);
        stream
            .write_all(upgrade_request("/", &[]).as_bytes())
            .unwrap();
        read_http_response(&mut stream).status == 101
    }));
}

#[test]
fn slowloris_connections_are_timed_out_while_others_are_served() {
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(400);
    config.ping_interval = Some(Duration::from_millis(200));
    config.pong_timeout = Duration::from_millis(200);
    let server = TestServer::with(config, None);
    // 150 stall mid-request, 150 stall mid-frame after a good handshake.
    let mut stalled_heads = Vec::new();
    for _ in 0..150 {
        let mut s = connect(server.addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
        stalled_heads.push(s);
    }
    let mut stalled_frames = Vec::new();
    for _ in 0..150 {
        let mut ws = RawWs::connect(server.addr, "/");
        let frame = client_frame(true, 0, 0x1, b"never finished");
        ws.send_raw(&frame[..frame.len() - 4]);
        stalled_frames.push(ws);
    }
    // Meanwhile a normal client is served promptly.
    let mut good = ws_connect(server.addr, "/");
    let started = Instant::now();
    assert_echo(&mut good, "served despite 300 stalled peers");
    assert!(started.elapsed() < Duration::from_millis(500));
    for s in &mut stalled_heads {
        assert_eof(s);
    }
    for ws in &mut stalled_frames {
        // A ping, then nothing: the silent peer is dropped.
        let frame = ws.read_frame();
        assert_eq!(frame.opcode, 0x9, "expected a heartbeat ping");
        assert!(
            ws.try_read_frame().is_err(),
            "expected the connection to end"
        );
    }
    // Every stalled peer is gone (the good client may be too: it did not
    // read, so it did not answer its pings either), and service goes on.
    drop(good);
    assert!(eventually(Duration::from_secs(2), || open_connections(
        &server
    ) == 0));
    let mut fresh = ws_connect(server.addr, "/");
    assert_echo(&mut fresh, "still fine");
}

#[test]
fn a_reset_at_any_point_frees_the_slot() {
    let server = TestServer::start();
    // Closing a socket with unread received data makes the kernel send RST.
    for stage in 0..3 {
        let mut stream = connect(server.addr);
        stream
            .write_all(upgrade_request("/", &[]).as_bytes())
            .unwrap();
        if stage >= 1 {
            std::thread::sleep(Duration::from_millis(50)); // the 101 arrives unread
        }
        if stage == 2 {
            let frame = client_frame(false, 0, 0x2, &[7; 100]);
            stream.write_all(&frame).unwrap(); // mid-message
        }
        drop(stream);
    }
    assert!(eventually(Duration::from_secs(2), || open_connections(
        &server
    ) == 0));
    let mut ws = ws_connect(server.addr, "/");
    assert_echo(&mut ws, "after resets");
}

#[test]
fn a_ping_flood_is_answered_without_unbounded_queueing() {
    let server = TestServer::start();
    let mut ws = RawWs::connect(server.addr, "/");
    let ping = client_frame(true, 0, 0x9, &[b'p'; 125]);
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 20_000)
        .collect();
    // Send 2.6 MB of pings without reading a single pong.
    let mut writer = ws.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        writer.write_all(&flood).is_ok()
    });
    assert!(
        sender.join().unwrap(),
        "the server stopped reading the flood"
    );
    ws.send_text("after the flood");
    let mut pongs = 0;
    loop {
        let frame = ws.read_frame();
        match frame.opcode {
            0xA => pongs += 1,
            0x1 => {
                assert_eq!(frame.payload, b"after the flood");
                break;
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert!(pongs >= 1, "the flood was answered");
    assert!(
        pongs < 20_000,
        "unsent pongs were dropped, not queued ({pongs})"
    );
}

/// A handler that panics on the text "boom" and echoes anything else.
struct Fragile;

impl Handler for Fragile {
    type State = ();
    fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
        Ok(Accept::new(()))
    }
    fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
        if msg == Message::Text("boom") {
            panic!("handler bug triggered on purpose");
        }
        conn.send(msg);
    }
}

#[test]
fn a_panicking_handler_closes_only_its_connection_with_1011() {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), test_config(), Fragile).unwrap();
        tx.send((server.local_addr(), server.handle())).unwrap();
        server.run()
    });
    let (addr, handle) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut bystander = ws_connect(addr, "/");
    let mut victim = RawWs::connect(addr, "/");
    victim.send_text("boom");
    assert_eq!(victim.read_close().0, CloseCode::INTERNAL_ERROR.as_u16());
    assert_echo(&mut bystander, "the loop survived");
    let mut newcomer = ws_connect(addr, "/");
    assert_echo(&mut newcomer, "and still accepts");
    handle.shutdown();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(thread.is_finished(), "server did not stop");
}

/// The real binary, started with a small descriptor limit.
struct LimitedServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_with_fd_limit(limit: u32) -> LimitedServer {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let script = format!(
        "ulimit -n {limit} && exec {} --listen {addr} --mode echo --ping-interval 0",
        env!("CARGO_BIN_EXE_wsloop")
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = LimitedServer { child, addr };
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(addr).is_ok()),
        "server did not start"
    );
    server
}

/// CPU time (user + system, in clock ticks) used by a process so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_backs_off_instead_of_spinning_and_resumes() {
    let server = start_with_fd_limit(24);
    // Fill every descriptor the server has, then some.
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let mut stream = connect(server.addr);
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        stream
            .write_all(upgrade_request("/", &[]).as_bytes())
            .unwrap();
        let mut first = [0u8; 12];
        match stream.read_exact(&mut first) {
            Ok(()) if first.starts_with(b"HTTP/1.1 101") => held.push(stream),
            _ => waiting.push(stream), // still in the listen backlog
        }
    }
    assert!(
        !waiting.is_empty(),
        "the descriptor limit was never reached"
    );
    assert!(
        held.len() >= 10,
        "only {} connections were served",
        held.len()
    );
    // Starved of descriptors, the loop must sleep, not spin.
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 30,
        "server burned {used} ticks in 1 s while out of descriptors"
    );
    // Free descriptors: the waiting clients get served.
    drop(held);
    // The oldest waiting client is first in the listen backlog.
    let mut stream = waiting.remove(0);
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let response = read_http_response(&mut stream);
    assert_eq!(response.status, 101, "accepting did not resume");
}
