//! The hot path does not allocate: once warmed up, echoing a message costs
//! the server thread no heap allocation (buffers and queues come from the
//! loop's pools). Measured with a counting global allocator that counts
//! only allocations made on the server's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use wsloop::{Accept, Config, ConnCtx, Handler, Message, Request, Response, Server};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNT_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNT_THIS_THREAD.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only an atomic and a const-initialised thread-local
// (neither allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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

const KEY: [u8; 4] = [1, 2, 3, 4];

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    frame
}

fn echo_once(stream: &mut TcpStream, frame: &[u8], payload_len: usize) {
    stream.write_all(frame).unwrap();
    let mut reply = vec![0u8; 2 + payload_len];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 0x81);
}

#[test]
fn echo_does_not_allocate_per_message() {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_server = stop.clone();
    let server = std::thread::spawn(move || {
        let mut config = Config::default();
        config.ping_interval = None;
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap(), config, Echo).unwrap();
        ready_tx.send(server.local_addr()).unwrap();
        COUNT_THIS_THREAD.with(|c| c.set(true));
        while !stop_server.load(Ordering::Relaxed) {
            server.poll_once(Some(Duration::from_millis(20))).unwrap();
        }
        COUNT_THIS_THREAD.with(|c| c.set(false));
    });
    let addr = ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    let payload = [b'x'; 64];
    let frame = masked_text(&payload);
    for _ in 0..200 {
        echo_once(&mut stream, &frame, payload.len()); // warm the pools
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..2000 {
        echo_once(&mut stream, &frame, payload.len());
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;

    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(
        allocations <= 2,
        "{allocations} allocations on the server thread for 2,000 echoed messages"
    );
}
