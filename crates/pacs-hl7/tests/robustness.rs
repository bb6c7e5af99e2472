//! Property-style checks: no input makes the parser, the accessors, the ACK writer or the
//! MLLP codec panic, and the codec never yields a message over its limit.

mod common;

use bytes::BytesMut;
use pacs_hl7::mllp::{Frame, MllpCodec};
use pacs_hl7::{ack, AckCode, ErrorDetail, Hl7Error, Limits, Message};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::codec::Decoder;

const PATHS: [&str; 8] = [
    "MSH-9.2",
    "PID-3",
    "PID-3(2).4.1",
    "PID-5.2",
    "OBX(3)-5",
    "ZZZ-1",
    "MSH-18",
    "EVN-1",
];

/// Reads everything a handler might read; returns how many values were seen.
fn exercise(m: &Message) -> usize {
    let mut n = 0;
    for segment in m.all_segments() {
        for f in 1..=segment.field_count() + 1 {
            let Some(field) = segment.field(f) else { continue };
            for rep in field.repetitions().take(50) {
                for comp in rep.components().take(50) {
                    n += comp.subcomponents().take(50).flatten().count();
                }
            }
        }
    }
    n += PATHS.iter().filter_map(|p| m.value(p)).count();
    let _ = (m.message_type(), m.control_id(), m.version(), m.processing_id());
    let error = ErrorDetail::new(pacs_hl7::ErrorCode::DATA_TYPE, "bad \u{1F600} | ^ & ~ \\");
    for code in [AckCode::AA, AckCode::AR] {
        let bytes = ack(m, code, Some(&error).filter(|_| code == AckCode::AR));
        let a = Message::parse(&bytes).expect("our own ACK parses");
        assert_eq!(a.value("MSA-1").as_deref(), Some(code.as_str()));
    }
    n
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        let len = out.len().max(1);
        let at = rng.gen_range(0..len).min(out.len());
        match rng.gen_range(0..6) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] = rng.gen(),
            2 => {
                let alphabet = b"|^~\\&\r\n\x0b\x1cX";
                out.insert(at, alphabet[rng.gen_range(0..alphabet.len())]);
            }
            3 => {
                let end = (at + rng.gen_range(0..64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            4 if at < out.len() => {
                out.remove(at);
            }
            _ => out.splice(at..at, b"\\X".iter().copied()).for_each(drop),
        }
    }
    out
}

#[test]
fn random_and_mutated_messages_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x4c37);
    let mut corpus: Vec<Vec<u8>> = common::samples()
        .iter()
        .map(|p| common::sample(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    corpus.push(b"MSH#*$!@%#A#B#C#D#1##ORM*O01#42#P#2.3\rPID#1##A1*!S!*B$A2\r".to_vec());
    let limits = Limits {
        max_size: 2048,
        max_segments: 40,
        max_fields: 60,
    };
    let (mut parsed, mut values) = (0, 0);
    for i in 0..20_000 {
        let input = match i % 4 {
            0 => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
            1 => {
                let mut v = b"MSH|^~\\&|".to_vec();
                let alphabet = b"|^~\\&\rABCXF0123 .br";
                v.extend((0..rng.gen_range(0..200)).map(|_| alphabet[rng.gen_range(0..alphabet.len())]));
                v
            }
            _ => {
                let base = corpus[rng.gen_range(0..corpus.len())].clone();
                mutate(&mut rng, &base)
            }
        };
        match Message::parse_with(&input, &limits) {
            Ok(m) => {
                parsed += 1;
                values += exercise(&m);
            }
            Err(e) => {
                let _ = (e.to_string(), e.error_code(), e.location());
                if let Ok(header) = Message::parse_header(&input, &limits) {
                    exercise(&header);
                }
            }
        }
    }
    // The loop must have exercised the accessors, not only the error paths.
    assert!(
        parsed > 2_000 && values > 10_000,
        "parsed {parsed}, values {values}"
    );
}

#[test]
fn codec_never_panics_and_respects_its_limit() {
    let mut rng = StdRng::seed_from_u64(0x6d6c);
    for _ in 0..3_000 {
        let max = rng.gen_range(1..600);
        let mut codec = MllpCodec::new(max);
        let mut stream = Vec::new();
        for _ in 0..rng.gen_range(0..6) {
            match rng.gen_range(0..3) {
                0 => stream.extend((0..rng.gen_range(0..100)).map(|_| rng.gen::<u8>())),
                _ => {
                    stream.push(0x0b);
                    stream.extend((0..rng.gen_range(0..800)).map(|_| rng.gen_range(0x20u8..0x7f)));
                    if rng.gen_bool(0.8) {
                        stream.extend([0x1c, 0x0d]);
                    }
                }
            }
        }
        let mut buf = BytesMut::new();
        let mut at = 0;
        let check = |frame: Frame| match frame {
            Frame::Message(m) => assert!(m.len() <= max),
            Frame::Oversize { prefix, size } | Frame::Truncated { prefix, size } => {
                assert!(prefix.len() <= size.min(max.max(prefix.len())));
            }
        };
        let mut closed = false;
        while at < stream.len() {
            let n = rng.gen_range(1..64).min(stream.len() - at);
            buf.extend_from_slice(&stream[at..at + n]);
            at += n;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => check(frame),
                    Ok(None) => break,
                    Err(Hl7Error::Framing(_)) => {
                        closed = true;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            if closed {
                break;
            }
        }
        if !closed {
            while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
                check(frame);
            }
        }
    }
}
