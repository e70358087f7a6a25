//! Embedding: the WebSocket loop shares its thread with the application's
//! own mio source (a UDP socket) and timers, and the application drives the
//! loop itself with `poll_once`.
//!
//! Every UDP datagram sent to the UDP port is broadcast to all WebSocket
//! clients; a timer announces the client count every five seconds.
//!
//! ```text
//! cargo run --release --example embed -- 127.0.0.1:9005 127.0.0.1:9006
//! echo hello | nc -u -q0 127.0.0.1 9006
//! ```

use std::time::Duration;

use mio::Interest;
use mio::net::UdpSocket;
use wsloop::{Accept, Config, Ctx, Handler, Message, Request, Response, Server};

const UDP_SOURCE: usize = 1;
const STATUS_TIMER: u64 = 1;

struct Relay {
    udp: UdpSocket,
}

impl Handler for Relay {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
        Ok(Accept::new(()))
    }

    fn on_source_event(
        &mut self,
        ctx: &mut Ctx<'_, ()>,
        source: usize,
        _event: &mio::event::Event,
    ) {
        if source != UDP_SOURCE {
            return;
        }
        let mut datagram = [0u8; 2048];
        // Edge-triggered: drain every datagram that is waiting.
        while let Ok(len) = self.udp.recv(&mut datagram) {
            match std::str::from_utf8(&datagram[..len]) {
                Ok(text) => ctx.broadcast(Message::Text(text.trim_end())),
                Err(_) => ctx.broadcast(Message::Binary(&datagram[..len])),
            };
        }
    }

    fn on_post(&mut self, ctx: &mut Ctx<'_, ()>, value: Box<dyn std::any::Any + Send>) {
        if value.is::<StartTimer>() {
            ctx.set_timer(Duration::from_secs(5), STATUS_TIMER);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ()>, timer: u64) {
        if timer == STATUS_TIMER {
            println!("{} WebSocket clients", ctx.connection_count());
            ctx.set_timer(Duration::from_secs(5), STATUS_TIMER);
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let ws_addr = args.next().unwrap_or_else(|| "127.0.0.1:9005".into());
    let udp_addr = args.next().unwrap_or_else(|| "127.0.0.1:9006".into());
    let udp = UdpSocket::bind(udp_addr.parse().expect("ADDR:PORT"))?;
    let mut server = Server::bind(
        ws_addr.parse().expect("ADDR:PORT"),
        Config::default(),
        Relay { udp },
    )?;
    // Register the handler's socket with the loop's poller, in the
    // application's token range.
    let registry = server.registry().try_clone()?;
    registry.register(
        &mut server.handler_mut().udp,
        Ctx::<()>::user_token(UDP_SOURCE),
        Interest::READABLE,
    )?;
    // Callbacks get a Ctx; from outside the loop, post a value to reach one.
    server.handle().post(StartTimer);
    println!(
        "ws://{} relays UDP datagrams sent to {udp_addr}",
        server.local_addr()
    );

    // The application owns the loop: poll, then do its own work.
    while !server.is_stopped() {
        server.poll_once(Some(Duration::from_secs(1)))?;
    }
    Ok(())
}

/// Posted to the loop to start the status timer from inside a callback.
struct StartTimer;
