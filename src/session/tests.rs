//! The lifecycle of one session in memory: byte vectors and a fake clock,
//! no socket and no sleep.

use super::*;

// ---- Harness ------------------------------------------------------------

/// The origin of every test's clock (ms); offsets are added to it.
const T0: u64 = 1_000;
const RESPONSE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The tick `offset` ms after [`T0`].
fn at(offset: u64) -> Tick {
    Tick::from_millis(T0 + offset)
}

fn config() -> SessionConfig {
    SessionConfig {
        handshake_timeout: ms(3_000),
        close_timeout: ms(2_000),
        ping_interval: Some(ms(10_000)),
        pong_timeout: ms(4_000),
        idle_timeout: None,
        decoder_limits: DecoderLimits::default(),
    }
}

/// A frame the server wrote: opcode and payload.
type Frame = (u8, Vec<u8>);

fn frame(opcode: u8, payload: impl AsRef<[u8]>) -> Frame {
    (opcode, payload.as_ref().to_vec())
}

/// A close payload, built by hand: the code, then the reason.
fn close_body(code: u16, reason: &str) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
}

/// How [`Session::finish`] reports a connection's end.
fn ended(code: CloseCode, reason: &str) -> Option<(CloseCode, String)> {
    Some((code, reason.to_owned()))
}

/// A masked client frame; `b0` carries FIN, the reserved bits and opcode.
fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "the builder makes short frames only");
    let mut out = vec![b0, 0x80 | payload.len() as u8];
    out.extend_from_slice(&KEY);
    out.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
    out
}

/// Parses unmasked, unfragmented server frames; panics on anything else.
fn parse_frames(mut wire: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        assert!(wire.len() >= 2, "truncated header {wire:02x?}");
        let (b0, b1) = (wire[0], wire[1]);
        assert_eq!(b0 & 0xF0, FIN, "FIN set, no reserved bits: {b0:#04x}");
        assert_eq!(b1 & 0x80, 0, "server frames are unmasked");
        let (len, head) = match b1 {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (
                u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        assert!(wire.len() >= head + len, "truncated payload {wire:02x?}");
        frames.push(frame(b0 & 0x0F, &wire[head..head + len]));
        wire = &wire[head + len..];
    }
    frames
}

/// What the application sees of the input, owned.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Error(CloseCode, &'static str),
}

/// A writer that takes `budget` bytes in all, then blocks.
struct Limited {
    out: Vec<u8>,
    budget: usize,
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One session and what the loop around it holds.
struct Peer {
    session: Session,
    pool: BufferPool,
    shared: Decoder,
    config: SessionConfig,
    now: Tick,
    /// What the last `feed`'s `bytes_arrived` returned.
    woke: bool,
}

impl Peer {
    /// A session accepted at [`T0`], waiting for its request head.
    fn handshaking(config: SessionConfig) -> Peer {
        let now = at(0);
        Peer {
            session: Session::new(now, &config),
            pool: BufferPool::default(),
            shared: Decoder::new(config.decoder_limits),
            config,
            now,
            woke: false,
        }
    }

    /// An open session whose 101 is already written.
    fn open(config: SessionConfig) -> Peer {
        let mut peer = Peer::handshaking(config);
        peer.accept();
        assert_eq!(peer.take_raw(), RESPONSE);
        peer
    }

    fn accept(&mut self) {
        self.session.accept(RESPONSE, self.now, &mut self.pool);
    }

    fn deadline(&self) -> Option<Tick> {
        self.session.poll_timeout(&self.config)
    }

    /// Moves the clock on by `by` ms and acts on the deadlines due.
    fn advance(&mut self, by: u64) -> Timeout {
        self.now = self.now + ms(by);
        self.session
            .handle_timeout(self.now, &self.config, &mut self.pool)
    }

    /// One read of `bytes`, handled as the reactor does: `bytes_arrived`,
    /// then (while frames are wanted) lend, receive in a loop, return.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Ev> {
        self.woke = self.session.bytes_arrived(self.now);
        let mut events = Vec::new();
        if !self.session.wants_frames() {
            return events;
        }
        let mut data = bytes.to_vec();
        let mut decoder = self.session.lend_decoder(&mut self.shared);
        let mut pos = 0;
        while pos < data.len() {
            let received = self
                .session
                .receive(&mut decoder, &mut data[pos..], self.now);
            assert!(
                received.consumed > 0 || received.event.is_some(),
                "no progress"
            );
            pos += received.consumed;
            match received.event {
                Some(Inbound::Message(Message::Text(t))) => events.push(Ev::Text(t.to_owned())),
                Some(Inbound::Message(Message::Binary(b))) => events.push(Ev::Binary(b.to_vec())),
                Some(Inbound::Control(control)) => {
                    let (now, config) = (self.now, &self.config);
                    if let Some(e) = self.session.apply(control, now, config, &mut self.pool) {
                        events.push(Ev::Error(e.code, e.reason));
                    }
                }
                #[cfg(feature = "deflate")]
                Some(Inbound::Compressed { text, payload }) => {
                    let limit = self.config.decoder_limits.max_message_size;
                    let mut inflater = crate::protocol::deflate::Inflater::new();
                    match super::inflate_message(&mut inflater, text, payload, limit) {
                        Ok(Message::Text(t)) => events.push(Ev::Text(t.to_owned())),
                        Ok(Message::Binary(b)) => events.push(Ev::Binary(b.to_vec())),
                        Err(error) => {
                            let (now, config) = (self.now, &self.config);
                            let control = Control::Error(error);
                            if let Some(e) =
                                self.session.apply(control, now, config, &mut self.pool)
                            {
                                events.push(Ev::Error(e.code, e.reason));
                            }
                        }
                    }
                }
                None => {}
            }
            if !self.session.wants_frames() {
                break;
            }
        }
        self.session.return_decoder(decoder, &mut self.shared);
        assert!(self.shared.is_idle(), "the shared decoder holds nothing");
        events
    }

    fn send(&mut self, text: &str) -> bool {
        self.session.send(&mut self.pool, Message::Text(text))
    }

    fn send_shared(&mut self, frame: &[u8]) -> bool {
        self.session
            .send_shared(&mut self.pool, Rc::new(frame.to_vec()))
    }

    fn close(&mut self, code: CloseCode, reason: &str) {
        self.session.close_with(
            CloseOrder::AfterData,
            code,
            reason,
            self.now,
            &self.config,
            &mut self.pool,
        );
    }

    fn close_urgently(&mut self, code: CloseCode, reason: &str) {
        self.session.close_with(
            CloseOrder::AheadOfData,
            code,
            reason,
            self.now,
            &self.config,
            &mut self.pool,
        );
    }

    fn write_into(&mut self, out: &mut impl Write) -> usize {
        self.session.write_to(out, &mut self.pool).unwrap()
    }

    /// Writes everything queued and returns it.
    fn take_raw(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        assert_eq!(self.write_into(&mut wire), wire.len());
        assert_eq!(self.session.queued(), 0);
        wire
    }

    fn take_output(&mut self) -> Vec<Frame> {
        parse_frames(&self.take_raw())
    }

    /// What a closing session waits for (`None` in any other phase).
    fn awaiting(&self) -> Option<&Awaiting> {
        match &self.session.state {
            State::Closing(closing) => Some(&closing.awaiting),
            _ => None,
        }
    }

    /// Whether the session keeps a decoder of its own (mid-message).
    fn own_decoder(&self) -> bool {
        match &self.session.state {
            State::Open { partial, .. } => partial.is_some(),
            _ => matches!(self.awaiting(), Some(Awaiting::CloseFrame(Some(_)))),
        }
    }
}

// ---- Heartbeats ---------------------------------------------------------

#[test]
fn a_silent_connection_is_pinged_and_any_bytes_answer_the_ping() {
    let mut peer = Peer::open(config());
    assert!(!peer.session.bytes_arrived(at(0)), "no ping is outstanding");
    assert_eq!(peer.deadline(), Some(at(10_000)));
    assert_eq!(peer.advance(9_999), Timeout::Nothing);
    assert_eq!(peer.take_raw(), b"");
    assert_eq!(peer.advance(1), Timeout::Queued);
    assert_eq!(peer.take_raw(), [0x89, 0x00]);
    assert_eq!(peer.deadline(), Some(at(14_000)), "ping + pong timeout");
    assert_eq!(peer.advance(1_000), Timeout::Nothing, "no second ping");
    assert_eq!(peer.take_raw(), b"");
    // Any bytes prove the peer alive: the ping counts as answered, once.
    assert!(peer.session.bytes_arrived(at(11_000)));
    assert!(!peer.session.bytes_arrived(at(11_000)));
    assert_eq!(peer.deadline(), Some(at(21_000)));
    assert_eq!(peer.advance(3_000), Timeout::Nothing, "no pong timeout");
    assert_eq!(peer.session.phase(), Phase::Open);
}

#[test]
fn a_pong_reschedules_the_next_ping_at_the_interval() {
    // The interval is shorter than the pong timeout: the pong deadline
    // must give way to the next ping.
    let mut peer = Peer::open(SessionConfig {
        ping_interval: Some(ms(1_000)),
        pong_timeout: ms(5_000),
        ..config()
    });
    for round in 0..3 {
        let sent = 1_200 * round + 1_000;
        assert_eq!(peer.deadline(), Some(at(sent)), "round {round}");
        assert_eq!(peer.advance(999), Timeout::Nothing);
        assert_eq!(peer.advance(1), Timeout::Queued);
        assert_eq!(peer.take_output(), [frame(PING, b"")]);
        assert_eq!(peer.deadline(), Some(at(sent + 5_000)));
        assert_eq!(peer.advance(200), Timeout::Nothing);
        assert_eq!(peer.feed(&client(FIN | PONG, b"")), []);
        assert!(peer.woke, "round {round}: the deadline moved earlier");
        assert_eq!(peer.take_raw(), b"", "a pong is not answered");
    }
    assert_eq!(peer.feed(&client(FIN | PONG, b"")), []);
    assert!(!peer.woke, "no ping was outstanding");
}

#[test]
fn silence_after_a_ping_ends_at_the_pong_timeout_reported_once() {
    let mut peer = Peer::open(config());
    assert_eq!(peer.advance(10_000), Timeout::Queued);
    assert_eq!(peer.take_output(), [frame(PING, b"")]);
    assert_eq!(peer.advance(3_999), Timeout::Nothing);
    assert_eq!(peer.advance(1), Timeout::Expired(Expiry::Pong));
    assert_eq!(peer.session.finish(), ended(CloseCode::ABNORMAL, ""));
    assert_eq!(peer.session.phase(), Phase::Closed);
    assert_eq!(peer.session.finish(), None);
    assert_eq!(peer.deadline(), None);
    assert_eq!(peer.advance(100_000), Timeout::Nothing);
    assert!(!peer.send("late"));
}

#[test]
fn without_ping_or_idle_timeout_an_open_session_has_no_deadline() {
    let mut peer = Peer::open(SessionConfig {
        ping_interval: None,
        ..config()
    });
    assert_eq!(peer.deadline(), None);
    assert_eq!(peer.advance(1_000_000), Timeout::Nothing);
    assert_eq!(peer.take_raw(), b"");
    assert_eq!(peer.session.phase(), Phase::Open);
}

// ---- Idle timeout -------------------------------------------------------

#[test]
fn idle_timeout_counts_messages_only_and_closes_1001_after_queued_data() {
    let mut peer = Peer::open(SessionConfig {
        ping_interval: Some(ms(2_000)),
        pong_timeout: ms(1_000),
        idle_timeout: Some(ms(5_000)),
        ..config()
    });
    assert_eq!(peer.deadline(), Some(at(2_000)), "the ping comes first");
    assert_eq!(peer.advance(1_000), Timeout::Nothing);
    assert_eq!(peer.feed(&client(FIN | TEXT, b"a")), [Ev::Text("a".into())]);
    // The message moved both the next ping and the idle deadline.
    assert_eq!(peer.deadline(), Some(at(3_000)));
    assert_eq!(peer.advance(2_000), Timeout::Queued);
    assert_eq!(peer.take_output(), [frame(PING, b"")]);
    assert_eq!(peer.deadline(), Some(at(4_000)), "the pong deadline");
    assert_eq!(peer.advance(500), Timeout::Nothing);
    assert_eq!(peer.feed(&client(FIN | PONG, b"")), []);
    assert_eq!(peer.deadline(), Some(at(5_500)), "the next ping");
    assert_eq!(peer.advance(1_000), Timeout::Nothing);
    assert_eq!(peer.feed(&client(FIN | PING, b"p")), []);
    assert_eq!(peer.take_output(), [frame(PONG, b"p")]);
    // Neither the pong nor the ping reset the idle deadline (1 000 + 5 000).
    assert_eq!(peer.deadline(), Some(at(6_000)));
    assert!(peer.send("reply"));
    assert_eq!(peer.advance(1_499), Timeout::Nothing);
    assert_eq!(peer.session.phase(), Phase::Open);
    assert_eq!(peer.advance(1), Timeout::Queued);
    assert_eq!(peer.session.phase(), Phase::Closing);
    assert_eq!(peer.deadline(), Some(at(8_000)), "now + close timeout");
    assert!(peer.session.wants_frames(), "waiting for the peer's close");
    assert_eq!(
        peer.take_output(),
        [
            frame(TEXT, b"reply"),
            frame(CLOSE, close_body(1001, "idle timeout"))
        ]
    );
    assert_eq!(
        peer.session.finish(),
        ended(CloseCode::GOING_AWAY, "idle timeout")
    );
}

// ---- Closing handshake ----------------------------------------------------

#[test]
fn our_close_follows_queued_data_and_the_peers_reply_finishes_it() {
    let mut peer = Peer::open(config());
    assert!(peer.send("one"));
    assert!(peer.send_shared(&[0x82, 2, 7, 8]));
    assert_eq!(peer.advance(500), Timeout::Nothing);
    peer.close(CloseCode::NORMAL, "done");
    assert_eq!(peer.session.phase(), Phase::Closing);
    assert!(!peer.session.is_open());
    assert!(peer.session.wants_frames());
    assert_eq!(peer.deadline(), Some(at(2_500)));
    assert!(!peer.send("after"), "nothing follows a close frame");
    assert!(!peer.send_shared(&[0x82, 0]));
    assert_eq!(
        peer.take_output(),
        [
            frame(TEXT, b"one"),
            frame(BINARY, [7, 8]),
            frame(CLOSE, close_body(1000, "done"))
        ]
    );
    assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
    assert_eq!(peer.session.after_write(), Flushed::Idle);
    // Data and pings from the peer are ignored now: no event, no pong.
    let late = [client(FIN | TEXT, b"late"), client(FIN | PING, b"x")].concat();
    assert_eq!(peer.feed(&late), []);
    assert_eq!(peer.take_raw(), b"");
    assert_eq!(peer.session.after_write(), Flushed::Idle);
    assert_eq!(peer.feed(&client(FIN | CLOSE, &close_body(1000, ""))), []);
    assert!(!peer.session.wants_frames());
    assert_eq!(peer.take_raw(), b"", "no second close frame");
    assert_eq!(peer.session.after_write(), Flushed::Finished);
    assert_eq!(peer.session.finish(), ended(CloseCode::NORMAL, "done"));
    assert_eq!(peer.session.finish(), None);
}

#[test]
fn the_peers_close_is_echoed_after_queued_data_and_nothing_follows() {
    // (close payload, echoed payload, what the application is told)
    let cases = [
        (
            close_body(4000, "bye"),
            close_body(4000, ""),
            CloseCode(4000),
            "bye",
        ),
        (vec![], close_body(1000, ""), CloseCode::NO_STATUS, ""),
    ];
    for (payload, echo, code, reason) in cases {
        let mut peer = Peer::open(config());
        assert!(peer.send("queued"));
        assert_eq!(peer.feed(&client(FIN | CLOSE, &payload)), []);
        assert_eq!(peer.session.phase(), Phase::Closing);
        assert!(!peer.session.wants_frames());
        assert_eq!(peer.deadline(), Some(at(2_000)));
        assert!(!peer.send("after"));
        assert!(!peer.send_shared(&[0x81, 1, b'x']));
        assert_eq!(
            peer.take_output(),
            [frame(TEXT, b"queued"), frame(CLOSE, &echo)]
        );
        assert_eq!(peer.session.after_write(), Flushed::Finished);
        assert_eq!(peer.session.finish(), ended(code, reason));
        assert_eq!(peer.session.finish(), None);
    }
}

#[test]
fn a_close_the_peer_never_answers_ends_at_the_close_timeout() {
    let mut peer = Peer::open(config());
    assert_eq!(peer.advance(500), Timeout::Nothing);
    peer.close(CloseCode::GOING_AWAY, "bye");
    assert_eq!(peer.deadline(), Some(at(2_500)));
    assert_eq!(peer.take_output(), [frame(CLOSE, close_body(1001, "bye"))]);
    assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
    // No pings while closing: the ping interval (10 s) is out of play.
    assert_eq!(peer.advance(1_999), Timeout::Nothing);
    assert_eq!(peer.take_raw(), b"");
    assert_eq!(peer.advance(1), Timeout::Expired(Expiry::Close));
    assert_eq!(peer.session.finish(), ended(CloseCode::GOING_AWAY, "bye"));
}

// ---- Protocol errors ------------------------------------------------------

#[test]
fn protocol_errors_close_with_their_code_after_queued_data() {
    let limits = DecoderLimits {
        max_frame_size: 8,
        ..DecoderLimits::default()
    };
    let unmasked = vec![FIN | TEXT, 2, b'h', b'i'];
    let cases = [
        (unmasked, 1002, "client frame is not masked"),
        (
            client(FIN | TEXT, &[b'o', 0xFF, 0xFE]),
            1007,
            "text message is not valid UTF-8",
        ),
        (client(FIN | BINARY, &[0; 9]), 1009, "frame too big"),
        (
            client(FIN | RSV1 | TEXT, b"hi"),
            1002,
            "reserved bits set without a negotiated extension",
        ),
    ];
    for (bad, code, reason) in cases {
        // Whole (the fast paths), then a byte per read (the slow path).
        for piece in [bad.len(), 1] {
            let context = format!("{code} piece {piece}");
            let mut peer = Peer::open(SessionConfig {
                decoder_limits: limits,
                ..config()
            });
            assert!(peer.send("before"));
            assert_eq!(peer.advance(100), Timeout::Nothing);
            let mut events = peer.feed(&client(FIN | TEXT, b"ok"));
            for chunk in bad.chunks(piece) {
                events.extend(peer.feed(chunk));
            }
            events.extend(peer.feed(&client(FIN | TEXT, b"after")));
            let error = Ev::Error(CloseCode(code), reason);
            assert_eq!(events, [Ev::Text("ok".into()), error], "{context}");
            assert_eq!(peer.session.phase(), Phase::Closing, "{context}");
            assert!(!peer.session.wants_frames(), "{context}");
            assert!(matches!(peer.awaiting(), Some(Awaiting::Eof)), "{context}");
            assert_eq!(peer.deadline(), Some(at(2_100)), "{context}");
            assert!(!peer.send("late"), "{context}");
            assert_eq!(
                peer.take_output(),
                [
                    frame(TEXT, b"before"),
                    frame(CLOSE, close_body(code, reason))
                ],
                "{context}"
            );
            assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
            assert_eq!(peer.session.after_write(), Flushed::Idle);
            // Input is discarded until EOF: not even a close frame counts.
            let more = [client(FIN | PING, b"x"), client(FIN | CLOSE, &[])].concat();
            assert_eq!(peer.feed(&more), [], "{context}");
            assert_eq!(peer.take_raw(), b"", "{context}");
            assert_eq!(peer.session.after_write(), Flushed::Idle);
            assert_eq!(
                peer.session.finish(),
                ended(CloseCode(code), reason),
                "{context}"
            );
        }
    }
}

// ---- Urgent close ---------------------------------------------------------

#[test]
fn an_urgent_close_discards_queued_data_that_has_not_started() {
    let mut peer = Peer::open(config());
    assert!(peer.send("dropped"));
    assert!(peer.send_shared(&[0x81, 1, b'x']));
    peer.close_urgently(CloseCode::POLICY, "slow");
    assert_eq!(peer.session.phase(), Phase::Closing);
    assert!(peer.session.wants_frames());
    assert_eq!(peer.session.queued(), 8);
    assert_eq!(peer.take_output(), [frame(CLOSE, close_body(1008, "slow"))]);
    assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
    assert_eq!(peer.session.finish(), ended(CloseCode::POLICY, "slow"));
}

#[test]
fn an_urgent_close_never_splits_a_partly_written_frame() {
    let mut peer = Peer::open(config());
    let big = [&[0x82, 20][..], &[9; 20]].concat();
    assert!(peer.send_shared(&big));
    assert!(peer.send("dropped"));
    let mut sink = Limited {
        out: Vec::new(),
        budget: 5,
    };
    assert_eq!(peer.write_into(&mut sink), 5);
    assert_eq!(peer.session.after_write(), Flushed::Pending);
    peer.close_urgently(CloseCode::INTERNAL_ERROR, "panic");
    sink.budget = usize::MAX;
    assert_eq!(peer.write_into(&mut sink), 22 - 5 + 2 + 2 + 5);
    assert_eq!(
        parse_frames(&sink.out),
        [
            frame(BINARY, [9; 20]),
            frame(CLOSE, close_body(1011, "panic"))
        ]
    );
    assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
}

#[test]
fn an_urgent_close_discards_small_frames_behind_a_partly_written_one() {
    // Small frames are coalesced into one buffer; once its first byte is
    // written the whole buffer is the partly written chunk, yet the frames
    // behind the started one have not started and must be dropped.
    let mut peer = Peer::open(config());
    assert!(peer.send("first"));
    assert!(peer.send("second"));
    let mut sink = Limited {
        out: Vec::new(),
        budget: 3,
    };
    assert_eq!(peer.write_into(&mut sink), 3);
    peer.close_urgently(CloseCode::POLICY, "slow");
    sink.budget = usize::MAX;
    peer.write_into(&mut sink);
    assert_eq!(
        parse_frames(&sink.out),
        [
            frame(TEXT, b"first"),
            frame(CLOSE, close_body(1008, "slow"))
        ]
    );
}

// ---- Handshake ------------------------------------------------------------

#[test]
fn a_handshake_that_does_not_complete_expires_with_1006() {
    let mut peer = Peer::handshaking(config());
    assert_eq!(peer.session.phase(), Phase::Handshaking);
    assert!(!peer.session.is_open());
    assert!(!peer.session.wants_frames());
    assert!(!peer.send("early"));
    assert_eq!(peer.deadline(), Some(at(3_000)));
    assert_eq!(peer.advance(2_999), Timeout::Nothing);
    assert_eq!(peer.advance(1), Timeout::Expired(Expiry::Handshake));
    assert_eq!(peer.session.queued(), 0);
    assert_eq!(peer.session.finish(), ended(CloseCode::ABNORMAL, ""));
    assert_eq!(peer.session.finish(), None);
}

#[test]
fn a_partial_head_is_kept_until_the_session_opens() {
    let mut peer = Peer::handshaking(config());
    assert_eq!(peer.session.take_partial_head(), Some(vec![]));
    peer.session.keep_partial_head(b"GET / HT".to_vec());
    assert_eq!(peer.session.take_partial_head(), Some(b"GET / HT".to_vec()));
    assert_eq!(peer.session.take_partial_head(), Some(vec![]), "taken");
    peer.session.keep_partial_head(b"GET /chat".to_vec());
    peer.accept();
    assert_eq!(peer.session.phase(), Phase::Open);
    assert_eq!(peer.session.take_partial_head(), None);
    peer.session.keep_partial_head(b"ignored".to_vec());
    assert_eq!(peer.session.take_partial_head(), None);
    assert_eq!(peer.take_raw(), RESPONSE);
}

#[test]
fn a_refused_request_gets_its_response_then_waits_for_eof() {
    let response = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
    let mut peer = Peer::handshaking(config());
    assert_eq!(peer.advance(100), Timeout::Nothing);
    peer.session
        .refuse(response, peer.now, &peer.config, &mut peer.pool);
    assert_eq!(peer.session.phase(), Phase::Closing);
    assert!(!peer.session.wants_frames());
    assert!(!peer.send("no"));
    peer.accept();
    assert_eq!(peer.session.phase(), Phase::Closing, "accept is ignored");
    assert_eq!(peer.take_raw(), response);
    assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
    assert_eq!(peer.session.after_write(), Flushed::Idle);
    assert_eq!(peer.feed(b"GET / HTTP/1.1\r\n\r\n"), []);
    assert_eq!(peer.take_raw(), b"");
    assert_eq!(peer.deadline(), Some(at(2_100)));
    assert_eq!(peer.advance(1_999), Timeout::Nothing);
    assert_eq!(peer.advance(1), Timeout::Expired(Expiry::Close));
    assert_eq!(peer.session.finish(), ended(CloseCode::ABNORMAL, ""));
}

// ---- Output order ---------------------------------------------------------

#[test]
fn a_ping_that_came_with_the_upgrade_is_answered_after_the_101() {
    let mut peer = Peer::handshaking(config());
    peer.accept();
    assert_eq!(peer.feed(&client(FIN | PING, b"hi")), []);
    let wire = peer.take_raw();
    assert_eq!(wire, [RESPONSE, &[0x8A, 2, b'h', b'i']].concat());
}

#[test]
fn pongs_overtake_data_that_has_not_started_but_not_a_started_frame() {
    let mut peer = Peer::open(config());
    assert!(peer.send("data"));
    assert_eq!(peer.feed(&client(FIN | PING, b"1")), []);
    assert_eq!(
        peer.take_output(),
        [frame(PONG, b"1"), frame(TEXT, b"data")]
    );
    let started = [&[0x82, 10][..], &[3; 10]].concat();
    assert!(peer.send_shared(&started));
    assert!(peer.send("after"));
    let mut sink = Limited {
        out: Vec::new(),
        budget: 4,
    };
    assert_eq!(peer.write_into(&mut sink), 4);
    assert_eq!(peer.feed(&client(FIN | PING, b"2")), []);
    sink.budget = usize::MAX;
    peer.write_into(&mut sink);
    assert_eq!(
        parse_frames(&sink.out),
        [
            frame(BINARY, [3; 10]),
            frame(PONG, b"2"),
            frame(TEXT, b"after")
        ]
    );
    assert_eq!(peer.session.queued(), 0);
}

// ---- Fragmented input -------------------------------------------------------

#[test]
fn a_fragmented_message_reassembles_across_reads_split_anywhere() {
    let text = "héllo wörld";
    let bytes = text.as_bytes();
    // The first fragment ends inside 'é'; a ping comes between fragments.
    let stream = [
        client(TEXT, &bytes[..2]),
        client(FIN | PING, b"p"),
        client(CONT, &bytes[2..7]),
        client(FIN | CONT, &bytes[7..]),
    ]
    .concat();
    let uniform = (1..=stream.len()).map(|piece| stream.chunks(piece).collect::<Vec<_>>());
    let two_reads = (1..stream.len()).map(|cut| {
        let (a, b) = stream.split_at(cut);
        vec![a, b]
    });
    for reads in uniform.chain(two_reads) {
        let sizes: Vec<usize> = reads.iter().map(|r| r.len()).collect();
        let mut peer = Peer::open(config());
        let mut events = Vec::new();
        let mut fed = 0;
        for read in reads {
            events.extend(peer.feed(read));
            fed += read.len();
            // Mid-message the session keeps its own decoder (`feed`
            // checks that the shared one stays idle).
            assert_eq!(peer.own_decoder(), fed < stream.len(), "{sizes:?}");
        }
        assert_eq!(events, [Ev::Text(text.into())], "{sizes:?}");
        assert_eq!(peer.take_output(), [frame(PONG, b"p")], "{sizes:?}");
    }
}

#[test]
fn a_close_between_fragments_drops_the_partial_decoder() {
    // The peer closes first, in the middle of its message.
    let mut peer = Peer::open(config());
    assert_eq!(peer.feed(&client(BINARY, b"par")), []);
    assert!(peer.own_decoder());
    assert_eq!(peer.feed(&client(FIN | CLOSE, &close_body(1000, ""))), []);
    assert!(matches!(peer.awaiting(), Some(Awaiting::Nothing)));
    assert!(!peer.own_decoder());
    assert_eq!(peer.take_output(), [frame(CLOSE, close_body(1000, ""))]);
    assert_eq!(peer.session.after_write(), Flushed::Finished);
    assert_eq!(peer.session.finish(), ended(CloseCode::NORMAL, ""));

    // We close first: the partial decoder stays to find the peer's close
    // frame, and goes when it comes between two fragments.
    let mut peer = Peer::open(config());
    assert_eq!(peer.feed(&client(TEXT, b"par")), []);
    peer.close(CloseCode::NORMAL, "bye");
    assert!(matches!(
        peer.awaiting(),
        Some(Awaiting::CloseFrame(Some(_)))
    ));
    assert_eq!(
        peer.feed(&client(CONT, b"ti")),
        [],
        "no event while closing"
    );
    assert!(peer.own_decoder());
    assert_eq!(peer.feed(&client(FIN | CLOSE, &[])), []);
    assert!(matches!(peer.awaiting(), Some(Awaiting::Nothing)));
    assert!(!peer.own_decoder());
    assert!(peer.session.lend_decoder(&mut peer.shared).is_idle());
    assert_eq!(peer.take_output(), [frame(CLOSE, close_body(1000, "bye"))]);
    assert_eq!(peer.session.after_write(), Flushed::Finished);
    assert_eq!(peer.session.finish(), ended(CloseCode::NORMAL, "bye"));
}

#[test]
fn a_close_code_that_may_not_be_sent_goes_out_as_a_close_without_a_code() {
    for code in [0, 1004, 1005, 1006, 1015, 2999, 5000, 65535] {
        let mut peer = Peer::open(config());
        peer.close(CloseCode(code), "reason dropped too");
        assert_eq!(peer.take_output(), [frame(CLOSE, [])], "code {code}");
        assert_eq!(peer.session.after_write(), Flushed::ShutdownWrite);
        peer.feed(&client(0x80 | CLOSE, &[]));
        assert_eq!(peer.session.after_write(), Flushed::Finished);
        assert_eq!(
            peer.session.finish(),
            ended(CloseCode::NO_STATUS, ""),
            "code {code}"
        );
    }
}
