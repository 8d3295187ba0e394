//! MLLP framing, the bytes-to-frames layer: `0x0B` message `0x1C 0x0D`, with no IO.
//!
//! [`FrameDecoder`] is fed whatever a socket read returned (one byte, several frames, a frame
//! split anywhere) and hands out complete frames in order. Its policy, chosen for senders seen in
//! the field:
//! - bytes before a start block are discarded and counted (a sender's stray CR/LF, or garbage);
//! - a frame is complete at `0x1C`; the `0x0D` that should follow is consumed when it comes and
//!   not required (some senders omit it), so the ACK is never held back waiting for it;
//! - a start block inside a frame means the sender restarted: the partial frame is abandoned
//!   (counted) and the new one read;
//! - a frame longer than the limit is an error: the connection must be closed, and memory stays
//!   bounded by the limit whatever the peer sends;
//! - at end of stream an unfinished frame is reported, never delivered.

/// Start block.
pub const START_BLOCK: u8 = 0x0B;
/// End block.
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return that closes a frame.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Wraps a message in an MLLP frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(message);
    out.push(END_BLOCK);
    out.push(CARRIAGE_RETURN);
    out
}

/// Why a stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame grew past the limit without an end block.
    #[error("an MLLP frame exceeds {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
}

/// Splits a byte stream into MLLP frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Whether `buffer` holds a frame's content (after its start block).
    in_frame: bool,
    /// How much of `buffer` has been searched for an end block.
    scanned: usize,
    /// The previous frame ended; a CR may follow.
    expect_cr: bool,
    limit: usize,
    discarded: u64,
    abandoned: u64,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            in_frame: false,
            scanned: 0,
            expect_cr: false,
            limit,
            discarded: 0,
            abandoned: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame's content, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if !self.in_frame {
                if self.expect_cr && !self.buffer.is_empty() {
                    if self.buffer[0] == CARRIAGE_RETURN {
                        self.buffer.drain(..1);
                    }
                    self.expect_cr = false;
                }
                match self.buffer.iter().position(|&byte| byte == START_BLOCK) {
                    Some(start) => {
                        self.discarded += start as u64;
                        self.buffer.drain(..=start);
                        self.in_frame = true;
                        self.scanned = 0;
                    }
                    None => {
                        self.discarded += self.buffer.len() as u64;
                        self.buffer.clear();
                        return Ok(None);
                    }
                }
            }
            let found = self.buffer[self.scanned..]
                .iter()
                .position(|&byte| byte == END_BLOCK || byte == START_BLOCK)
                .map(|offset| self.scanned + offset);
            match found {
                Some(end) if end > self.limit => {
                    return Err(FrameError::TooLarge { limit: self.limit });
                }
                Some(end) if self.buffer[end] == END_BLOCK => {
                    let content = self.buffer[..end].to_vec();
                    self.buffer.drain(..=end);
                    self.in_frame = false;
                    self.expect_cr = true;
                    return Ok(Some(content));
                }
                Some(restart) => {
                    self.abandoned += 1;
                    self.buffer.drain(..=restart);
                    self.scanned = 0;
                }
                None => {
                    self.scanned = self.buffer.len();
                    if self.buffer.len() > self.limit {
                        return Err(FrameError::TooLarge { limit: self.limit });
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Bytes of an unfinished frame held now (at end of stream: a truncated frame, never
    /// delivered).
    pub fn pending(&self) -> usize {
        if self.in_frame { self.buffer.len() } else { 0 }
    }

    /// Bytes discarded outside frames so far (a CR after an end block is not counted).
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Frames abandoned because a start block arrived inside them.
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all(decoder: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn one_frame_in_one_read() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&frame(b"MSH|^~\\&|A\r"));
        assert_eq!(all(&mut decoder), vec![b"MSH|^~\\&|A\r".to_vec()]);
        assert_eq!((decoder.pending(), decoder.discarded()), (0, 0));
    }

    #[test]
    fn several_frames_in_one_read_come_out_in_order() {
        let mut stream = frame(b"one");
        stream.extend(frame(b"two"));
        stream.extend(frame(b"three"));
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&stream);
        assert_eq!(
            all(&mut decoder),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    #[test]
    fn a_frame_split_into_single_bytes_is_reassembled() {
        let mut stream = frame(b"MSH|first");
        stream.extend(frame(b"MSH|second"));
        let mut decoder = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for byte in stream {
            decoder.push(&[byte]);
            frames.extend(all(&mut decoder));
        }
        assert_eq!(frames, vec![b"MSH|first".to_vec(), b"MSH|second".to_vec()]);
        assert_eq!(decoder.discarded(), 0);
    }

    #[test]
    fn a_missing_final_cr_is_tolerated() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(b"\x0bone\x1c");
        assert_eq!(all(&mut decoder), vec![b"one".to_vec()]);
        decoder.push(b"\x0btwo\x1c\r");
        assert_eq!(all(&mut decoder), vec![b"two".to_vec()]);
        assert_eq!(decoder.discarded(), 0);
    }

    #[test]
    fn garbage_before_the_start_block_is_discarded_and_counted() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(b"GET / HTTP/1.1\r\n\r\n");
        assert!(all(&mut decoder).is_empty());
        decoder.push(b"\nMSH|no start block\x1c\r\x0bMSH|real\x1c\r");
        assert_eq!(all(&mut decoder), vec![b"MSH|real".to_vec()]);
        assert_eq!(decoder.discarded(), 18 + 21);
    }

    #[test]
    fn a_start_block_inside_a_frame_abandons_the_partial_frame() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(b"\x0bMSH|cut off\x0bMSH|whole\x1c\r");
        assert_eq!(all(&mut decoder), vec![b"MSH|whole".to_vec()]);
        assert_eq!(decoder.abandoned(), 1);
    }

    #[test]
    fn no_end_block_leaves_a_pending_frame_that_is_never_delivered() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(b"\x0bMSH|never finished");
        assert!(all(&mut decoder).is_empty());
        assert_eq!(decoder.pending(), 18);
    }

    #[test]
    fn an_oversized_frame_is_an_error_and_memory_stays_bounded() {
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&[START_BLOCK]);
        let mut failed = false;
        for _ in 0..100 {
            decoder.push(&[b'x'; 16]);
            match decoder.next_frame() {
                Ok(None) => {}
                Err(FrameError::TooLarge { limit: 64 }) => {
                    failed = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(failed);
        assert!(decoder.pending() <= 64 + 16);
        // A complete frame over the limit in one read is refused too.
        let mut decoder = FrameDecoder::new(4);
        decoder.push(&frame(b"too long"));
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { limit: 4 }));
    }

    #[test]
    fn endless_garbage_without_a_start_block_is_not_buffered() {
        let mut decoder = FrameDecoder::new(16);
        for _ in 0..1000 {
            decoder.push(&[b'g'; 100]);
            assert_eq!(decoder.next_frame(), Ok(None));
        }
        assert_eq!(decoder.discarded(), 100_000);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn an_empty_frame_is_a_frame() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(b"\x0b\x1c\r");
        assert_eq!(all(&mut decoder), vec![Vec::<u8>::new()]);
    }
}
