//! Echo server on fastwebsockets and a current-thread tokio runtime, for
//! `make bench-peers` (echo cells only: fastwebsockets has no fan-out of its
//! own). Handshake by hand, as fastwebsockets' own examples do without hyper.
//!
//!   fastwebsockets-peer PORT
use base64::Engine;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Role, WebSocket};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Reads the upgrade request and answers 101; returns whether it upgraded.
async fn handshake(socket: &mut TcpStream) -> Result<bool, Error> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(false);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let Some(key) = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    }) else {
        socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(false);
    };
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    socket.write_all(response.as_bytes()).await?;
    Ok(true)
}

async fn serve(mut socket: TcpStream) -> Result<(), Error> {
    socket.set_nodelay(true)?;
    if !handshake(&mut socket).await? {
        return Ok(());
    }
    let mut ws = WebSocket::after_handshake(socket, Role::Server);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                ws.write_frame(Frame::new(true, frame.opcode, None, frame.payload))
                    .await?;
            }
            _ => {}
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let port: u16 = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "9203".into())
        .parse()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("fastwebsockets echo on ws://127.0.0.1:{port}");
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(socket).await;
        });
    }
}
