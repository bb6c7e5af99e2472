//! Inputs the fuzz targets found (tests/fuzz-regressions/hl7/), each replayed through the
//! parser and the ACK writer as the listener runs them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pacs_hl7::{ack, AckCode, Charset, ErrorCode, ErrorDetail, Message};

fn inputs() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz-regressions/hl7");
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
    inputs
}

/// With `/` among the delimiters, the ACK's MSH-18 can only be written escaped (`8859\T\1`,
/// `8859/E/1`); our parser refused such a label, so it refused our own ACKs.
#[test]
fn ack_charset_label_written_escaped_is_read_back() {
    let mut checked = 0;
    for (name, bytes) in inputs().into_iter().filter(|(n, _)| n.starts_with("ack_charset")) {
        let original = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(original.charset(), Charset::Latin1, "{name}");
        let error = ErrorDetail::new(ErrorCode(207), "refused").at("PID-3");
        for (code, error) in [(AckCode::AA, None), (AckCode::AE, Some(&error))] {
            let started = Instant::now();
            let answer = ack(&original, code, error);
            let parsed = Message::parse(&answer).unwrap_or_else(|e| {
                panic!(
                    "{name}: our ACK does not parse ({e}): {:?}",
                    String::from_utf8_lossy(&answer)
                )
            });
            assert!(started.elapsed() < Duration::from_secs(1), "{name}");
            assert_eq!(
                parsed.charset(),
                Charset::Latin1,
                "{name}: the ACK declares what it is written in"
            );
            assert_eq!(parsed.value("MSA-1").as_deref(), Some(code.as_str()), "{name}");
            assert_eq!(
                parsed.value("MSA-2").as_deref(),
                Some(original.control_id().as_str()),
                "{name}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}
