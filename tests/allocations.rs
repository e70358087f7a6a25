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

/// Reads one unfragmented server frame; returns its first byte.
fn read_frame(stream: &mut TcpStream) -> u8 {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext).unwrap();
            usize::from(u16::from_be_bytes(ext))
        }
        127 => panic!("no reply here is that long"),
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    head[0]
}

/// Runs an echo server with `config` on its own (counted) thread, opens a
/// connection with `extra_headers` in its upgrade, echoes `frame` 200 times
/// to warm the pools and 2,000 times counted; returns the allocations the
/// server thread made meanwhile, and the first byte of the last reply.
fn allocations_per_echo(config: Config, extra_headers: &str, frame: &[u8]) -> (usize, u8) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_server = stop.clone();
    let server = std::thread::spawn(move || {
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
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extra_headers}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));

    let mut first_byte = 0;
    for _ in 0..200 {
        stream.write_all(frame).unwrap(); // warm the pools
        first_byte = read_frame(&mut stream);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..2000 {
        stream.write_all(frame).unwrap();
        first_byte = read_frame(&mut stream);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;

    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    (allocations, first_byte)
}

#[test]
fn echo_does_not_allocate_per_message() {
    let mut config = Config::default();
    config.ping_interval = None;
    let frame = masked_text(&[b'x'; 64]);
    let (allocations, first_byte) = allocations_per_echo(config, "", &frame);
    assert_eq!(first_byte, 0x81);
    assert!(
        allocations <= 2,
        "{allocations} allocations on the server thread for 2,000 echoed messages"
    );
}

/// The compressed echo path allocates nothing either: the inflater's and
/// the compressor's buffers are loop-wide and reused.
#[cfg(feature = "deflate")]
#[test]
fn compressed_echo_does_not_allocate_per_message() {
    use flate2::{Compress, Compression, FlushCompress};
    let mut config = Config::default();
    config.ping_interval = None;
    config.deflate = Some(wsloop::DeflateConfig::default());
    // A 1 KiB JSON message, compressed by the client as RFC 7692 says.
    let json: String = (0..40)
        .map(|i| format!(r#"{{"sym":"S{i:02}","px":{}}},"#, 100 + i))
        .collect();
    let mut compressed = Vec::with_capacity(2 * json.len());
    Compress::new(Compression::default(), false)
        .compress_vec(json.as_bytes(), &mut compressed, FlushCompress::Sync)
        .unwrap();
    compressed.truncate(compressed.len() - 4);
    let mut frame = match u8::try_from(compressed.len()) {
        Ok(len) if len < 126 => vec![0xc1, 0x80 | len],
        _ => {
            let [hi, lo] = (compressed.len() as u16).to_be_bytes();
            vec![0xc1, 0x80 | 126, hi, lo]
        }
    };
    frame.extend_from_slice(&KEY);
    frame.extend(compressed.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (allocations, first_byte) = allocations_per_echo(config, offer, &frame);
    assert_eq!(first_byte, 0xc1, "the echo comes back compressed");
    assert!(
        allocations <= 2,
        "{allocations} allocations on the server thread for 2,000 compressed echoes"
    );
}
