//! MLLP framing: `0x0B message 0x1C 0x0D`.
//!
//! Decisions, for peers that do not quite follow the framing:
//! - Bytes before a start block are skipped, not refused: stray CR/LF between frames are
//!   common, and skipping costs no memory. A connection that sends more than `max_size` bytes
//!   outside any frame is ended with [`Hl7Error::Framing`], so this is not a way to hold a
//!   connection open forever either.
//! - A frame ends at `0x1C`; the `0x0D` after it is expected but not required (it is skipped
//!   as an inter-frame byte when it comes).
//! - A start block inside a frame means the sender gave up on the frame it was writing: that
//!   frame is reported as [`Frame::Truncated`] and the new one begins.
//! - A frame longer than `max_size` is not kept: its first [`PREFIX_LEN`] bytes are (so the
//!   listener can read the MSH and answer AR), the rest is discarded up to the end block, and
//!   it comes out as [`Frame::Oversize`].
//! - End of input inside a frame gives [`Frame::Truncated`].

use std::time::Instant;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::Hl7Error;

pub const START_BLOCK: u8 = 0x0B;
pub const END_BLOCK: u8 = 0x1C;
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// How much of an oversize or truncated frame is kept to read its MSH.
pub const PREFIX_LEN: usize = 4096;

/// What the decoder produces.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (the bytes between the blocks).
    Message(BytesMut),
    /// A frame larger than the limit: its first bytes and its full size.
    Oversize { prefix: Bytes, size: usize },
    /// A frame that never ended: its first bytes and the size received.
    Truncated { prefix: Bytes, size: usize },
}

#[derive(Debug)]
enum State {
    /// Between frames; counts the bytes skipped that are not CR/LF.
    Idle { skipped: usize },
    /// Inside a frame; the end block is not in `buf[..scanned]`.
    InFrame { scanned: usize },
    /// Inside an oversize frame, dropping bytes until the end block.
    Discarding { prefix: Bytes, size: usize },
}

/// The MLLP codec for `tokio_util::codec::Framed`.
#[derive(Debug)]
pub struct MllpCodec {
    max_size: usize,
    state: State,
    /// When the start block of the frame being received was decoded, for the listener's
    /// per-message deadline.
    frame_started: Option<Instant>,
}

impl MllpCodec {
    pub fn new(max_size: usize) -> MllpCodec {
        MllpCodec {
            max_size,
            state: State::Idle { skipped: 0 },
            frame_started: None,
        }
    }

    /// When the frame being received began; `None` between frames.
    pub fn frame_started(&self) -> Option<Instant> {
        self.frame_started
    }
}

fn prefix_of(buf: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&buf[..buf.len().min(PREFIX_LEN)])
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = Hl7Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Hl7Error> {
        loop {
            match &mut self.state {
                State::Idle { skipped } => {
                    let start = buf.iter().position(|&b| b == START_BLOCK);
                    let gap = &buf[..start.unwrap_or(buf.len())];
                    *skipped += gap.iter().filter(|&&b| b != b'\r' && b != b'\n').count();
                    if *skipped > self.max_size {
                        return Err(Hl7Error::Framing("too much data outside MLLP frames"));
                    }
                    let Some(start) = start else {
                        buf.clear();
                        return Ok(None);
                    };
                    if *skipped > 0 {
                        tracing::debug!(bytes = *skipped, "skipped bytes before an MLLP start block");
                    }
                    buf.advance(start + 1);
                    self.state = State::InFrame { scanned: 0 };
                    self.frame_started = Some(Instant::now());
                }
                State::InFrame { scanned } => {
                    let found = buf[*scanned..]
                        .iter()
                        .position(|&b| b == END_BLOCK || b == START_BLOCK)
                        .map(|p| *scanned + p);
                    match found {
                        Some(end) if end <= self.max_size => {
                            let is_end = buf[end] == END_BLOCK;
                            let body = buf.split_to(end);
                            buf.advance(1);
                            if is_end {
                                self.state = State::Idle { skipped: 0 };
                                self.frame_started = None;
                                return Ok(Some(Frame::Message(body)));
                            }
                            self.state = State::InFrame { scanned: 0 };
                            self.frame_started = Some(Instant::now());
                            return Ok(Some(Frame::Truncated {
                                prefix: prefix_of(&body),
                                size: body.len(),
                            }));
                        }
                        None if buf.len() <= self.max_size => {
                            *scanned = buf.len();
                            return Ok(None);
                        }
                        _ => {
                            self.state = State::Discarding {
                                prefix: prefix_of(&buf[..buf.len().min(self.max_size)]),
                                size: 0,
                            };
                        }
                    }
                }
                State::Discarding { prefix, size } => {
                    match buf.iter().position(|&b| b == END_BLOCK || b == START_BLOCK) {
                        Some(end) => {
                            let frame = Frame::Oversize {
                                prefix: std::mem::take(prefix),
                                size: *size + end,
                            };
                            // A start block begins the next frame: leave it for Idle.
                            let skip = if buf[end] == END_BLOCK { end + 1 } else { end };
                            buf.advance(skip);
                            self.state = State::Idle { skipped: 0 };
                            self.frame_started = None;
                            return Ok(Some(frame));
                        }
                        None => {
                            *size += buf.len();
                            buf.clear();
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Hl7Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        let state = std::mem::replace(&mut self.state, State::Idle { skipped: 0 });
        self.frame_started = None;
        let frame = match state {
            State::Idle { .. } => None,
            State::InFrame { .. } => Some(Frame::Truncated {
                prefix: prefix_of(buf),
                size: buf.len(),
            }),
            State::Discarding { prefix, size } => Some(Frame::Truncated {
                prefix,
                size: size + buf.len(),
            }),
        };
        buf.clear();
        Ok(frame)
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = Hl7Error;

    fn encode(&mut self, message: &[u8], dst: &mut BytesMut) -> Result<(), Hl7Error> {
        if message.iter().any(|&b| b == START_BLOCK || b == END_BLOCK) {
            return Err(Hl7Error::Framing("the message contains an MLLP block character"));
        }
        dst.reserve(message.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(message);
        dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(m: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        MllpCodec::new(1 << 20).encode(m, &mut out).unwrap();
        out.to_vec()
    }

    /// Feeds `input` in chunks of `chunk` bytes, then EOF; collects every frame.
    fn decode_all(codec: &mut MllpCodec, input: &[u8], chunk: usize) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            frames.push(f);
        }
        frames
    }

    fn msg(s: &[u8]) -> Frame {
        Frame::Message(BytesMut::from(s))
    }

    #[test]
    fn split_across_reads_and_several_per_read() {
        let mut input = framed(b"MSH|first");
        input.extend(framed(b"MSH|second"));
        for chunk in [1, 2, 3, 7, input.len()] {
            let frames = decode_all(&mut MllpCodec::new(1024), &input, chunk);
            assert_eq!(frames, [msg(b"MSH|first"), msg(b"MSH|second")], "chunk {chunk}");
        }
    }

    #[test]
    fn garbage_before_start_is_skipped() {
        let mut input = b"\r\nnoise\x00\xff".to_vec();
        input.extend(framed(b"MSH|a"));
        input.extend(b"\n\n");
        input.extend(framed(b"MSH|b"));
        let frames = decode_all(&mut MllpCodec::new(1024), &input, 3);
        assert_eq!(frames, [msg(b"MSH|a"), msg(b"MSH|b")]);
    }

    #[test]
    fn endless_garbage_is_an_error() {
        let mut codec = MllpCodec::new(16);
        let mut buf = BytesMut::from(&[b'x'; 10][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[b'y'; 10]);
        assert!(matches!(codec.decode(&mut buf), Err(Hl7Error::Framing(_))));
    }

    #[test]
    fn end_block_without_cr_is_accepted() {
        let input = b"\x0bMSH|a\x1c\x0bMSH|b\x1c\r";
        let frames = decode_all(&mut MllpCodec::new(1024), input, 1);
        assert_eq!(frames, [msg(b"MSH|a"), msg(b"MSH|b")]);
    }

    #[test]
    fn oversize_frame_keeps_a_prefix_and_the_next_frame() {
        let big = [b"MSH|^~\\&|".as_slice(), &[b'x'; 10_000]].concat();
        let mut input = framed(&big);
        input.extend(framed(b"MSH|ok"));
        for chunk in [100, 4096, input.len()] {
            let frames = decode_all(&mut MllpCodec::new(5_000), &input, chunk);
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            match &frames[0] {
                Frame::Oversize { prefix, size } => {
                    assert_eq!(*size, big.len());
                    assert_eq!(&prefix[..], &big[..PREFIX_LEN]);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(frames[1], msg(b"MSH|ok"));
        }
    }

    #[test]
    fn truncated_at_eof_and_by_a_new_start() {
        let frames = decode_all(&mut MllpCodec::new(1024), b"\x0bMSH|cut", 2);
        assert_eq!(
            frames,
            [Frame::Truncated {
                prefix: Bytes::from_static(b"MSH|cut"),
                size: 7
            }]
        );
        let frames = decode_all(&mut MllpCodec::new(1024), b"\x0bMSH|cut\x0bMSH|whole\x1c\r", 4);
        assert_eq!(
            frames,
            [
                Frame::Truncated {
                    prefix: Bytes::from_static(b"MSH|cut"),
                    size: 7
                },
                msg(b"MSH|whole")
            ]
        );
        let big = [&b"\x0b"[..], &[b'x'; 3000]].concat();
        let frames = decode_all(&mut MllpCodec::new(1000), &big, 500);
        assert!(
            matches!(&frames[..], [Frame::Truncated { size: 3000, .. }]),
            "{frames:?}"
        );
    }

    #[test]
    fn encoder_refuses_block_characters() {
        let mut out = BytesMut::new();
        assert!(MllpCodec::new(10).encode(&b"a\x1cb"[..], &mut out).is_err());
    }
}
