//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A text message may be split across fragments and reads at any byte,
//! including inside a multi-byte character. [`Utf8Validator`] checks each
//! piece as it arrives and fails as soon as the bytes seen so far can no
//! longer be the start of valid UTF-8 (RFC 6455 §8.1 "fail fast"). It keeps
//! at most three bytes of an unfinished character between pieces.

/// Validates a byte stream as UTF-8, piece by piece.
///
/// ```
/// use wsloop::protocol::utf8::Utf8Validator;
/// let euro = "€".as_bytes(); // three bytes
/// let mut v = Utf8Validator::default();
/// assert!(v.feed(&euro[..1]));
/// assert!(v.feed(&euro[1..]));
/// assert!(v.is_complete());
/// assert!(!Utf8Validator::default().feed(&[0xC0])); // can never be valid
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// Checks the next piece. Returns `false` once the stream is known to
    /// be invalid; the validator should then be discarded.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.pending_len > 0 {
            // Complete the character left unfinished by the previous piece.
            let have = usize::from(self.pending_len);
            let take = (4 - have).min(bytes.len());
            let mut joined = self.pending;
            joined[have..have + take].copy_from_slice(&bytes[..take]);
            match std::str::from_utf8(&joined[..have + take]) {
                Ok(_) => {
                    self.pending_len = 0;
                    bytes = &bytes[take..];
                }
                Err(e) if e.valid_up_to() > 0 => {
                    // The pending character ended inside `joined`.
                    let used = e.valid_up_to() - have;
                    self.pending_len = 0;
                    bytes = &bytes[used..];
                }
                Err(e) if e.error_len().is_none() => {
                    // Still unfinished: all of `bytes` was consumed.
                    self.pending = joined;
                    self.pending_len = (have + take) as u8;
                    return true;
                }
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the bytes fed so far end on a character boundary, i.e. form
    /// complete valid UTF-8 (given that every `feed` returned `true`).
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Forgets any unfinished character, ready for the next message.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_in_pieces(bytes: &[u8], piece: usize) -> bool {
        let mut v = Utf8Validator::default();
        bytes.chunks(piece.max(1)).all(|c| v.feed(c)) && v.is_complete()
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        let samples: Vec<Vec<u8>> = vec![
            "Hello-µ@ßöäüàá-UTF-8!!".into(),
            "κόσμε".into(),
            "\u{10FFFF}\u{FFFF}\u{800}".into(),
            vec![
                0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
            ],
            vec![0xF4, 0x90, 0x80, 0x80],
            vec![0xED, 0x9F, 0xBF],
            vec![0xF0, 0x9F, 0x98],
            vec![0xE0, 0x80, 0xAF],
            vec![0x80],
        ];
        for sample in &samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for piece in 1..=sample.len() {
                assert_eq!(
                    valid_in_pieces(sample, piece),
                    expected,
                    "{sample:02x?} by {piece}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        let mut v = Utf8Validator::default();
        assert!(v.feed("κόσμε".as_bytes()));
        // 0xED 0xA0 begins a UTF-16 surrogate: invalid whatever follows.
        assert!(!v.feed(&[0xED, 0xA0]));
    }

    #[test]
    fn unfinished_character_is_not_complete() {
        let mut v = Utf8Validator::default();
        assert!(v.feed(&[0xE2, 0x82]));
        assert!(!v.is_complete());
    }
}
