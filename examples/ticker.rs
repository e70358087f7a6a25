//! A price ticker: a background thread pushes an update ten times a second
//! to every connected client through a [`wsloop::Handle`].
//!
//! ```text
//! cargo run --release --example ticker -- 127.0.0.1:9004
//! ```

use std::time::Duration;

use wsloop::{Accept, Config, Handler, Message, Request, Response, Server};

struct Ticker;

impl Handler for Ticker {
    type State = ();

    fn on_upgrade(&mut self, _req: &Request<'_>) -> Result<Accept<()>, Response> {
        Ok(Accept::new(()))
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9004".into());
    let server = Server::bind(addr.parse().expect("ADDR:PORT"), Config::default(), Ticker)?;
    println!("ticker on ws://{}", server.local_addr());
    let handle = server.handle();
    std::thread::spawn(move || {
        let mut price = 100.0_f64;
        for seq in 0u64.. {
            price += ((seq * 7919) % 200) as f64 / 100.0 - 0.995;
            let update = format!(r#"{{"seq":{seq},"price":{price:.2}}}"#);
            // Encoded on this thread; the loop only queues the shared frame.
            if !handle.broadcast(Message::Text(&update)) {
                break; // the server stopped
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    server.run()
}
