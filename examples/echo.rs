//! The smallest wsloop server: echoes every message on every path.
//!
//! ```text
//! cargo run --release --example echo -- 127.0.0.1:9002
//! ```

use wsloop::{Accept, Config, ConnCtx, Handler, Message, Request, Response, Server};

struct Echo;

impl Handler for Echo {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
        Ok(Accept::new(()))
    }

    fn on_message(&mut self, conn: &mut ConnCtx<'_, ()>, msg: Message<'_>) {
        conn.send(msg);
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let server = Server::bind(addr.parse().expect("ADDR:PORT"), Config::default(), Echo)?;
    println!("echo server on ws://{}", server.local_addr());
    server.run()
}
