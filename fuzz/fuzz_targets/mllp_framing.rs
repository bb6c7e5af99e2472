//! MLLP framing: the listener's codec fed the input in pieces of a size the first byte
//! chooses, then end of stream; every complete frame parsed as a message.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use openpacs_fuzz::BoundedAllocator;
use pacs_hl7::mllp::{Frame, MllpCodec};
use tokio_util::codec::Decoder;

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

fn parse(frame: Frame) {
    if let Frame::Message(bytes) = frame {
        let _ = pacs_hl7::Message::parse(&bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((first, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(*first % 64) + 1;
    // A small frame limit, so that oversize frames are exercised too.
    let mut codec = MllpCodec::new(1024);
    let mut buf = BytesMut::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => parse(frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        parse(frame);
    }
});
