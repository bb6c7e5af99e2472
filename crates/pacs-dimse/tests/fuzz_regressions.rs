//! Data sets the fuzz targets found (tests/fuzz-regressions/dimse/), read as a DIMSE
//! identifier is: each is refused cleanly, quickly, and without the memory its lengths claim.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pacs_dimse::server::{parse_dataset, MAX_IDENTIFIER_BYTES};

fn input(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz-regressions/dimse")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// This process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 13 bytes: a (FFFE,FFFF) element "of" about 4 GiB. The structural check skipped item tags it
/// did not know; the parser reads them as values of their length and zero-filled 4 GiB first.
#[test]
fn an_item_tag_that_is_not_an_item_is_refused_without_allocating_its_length() {
    for (name, transfer_syntax) in [
        ("item_tag_value_implicit_le.bin", "1.2.840.10008.1.2"),
        ("item_tag_value_jpeg2000.bin", "1.2.840.10008.1.2.4.90"),
    ] {
        let bytes = input(name);
        assert!(bytes.len() < 64, "{name}");
        let before = peak_rss_kib();
        let started = Instant::now();
        let error = parse_dataset(&bytes, transfer_syntax, MAX_IDENTIFIER_BYTES).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: {:?}",
            started.elapsed()
        );
        assert!(error.contains("(FFFE,FFFF)"), "{name}: {error}");
        let peak = peak_rss_kib();
        assert!(
            peak < before + 32 * 1024,
            "{name}: peak RSS {peak} KiB, {before} KiB before"
        );
    }
}

/// 850 bytes, a mutation of an RT Plan: a top-level item (an item outside any sequence)
/// holding a sequence of undefined length that its item's defined length cut short. The
/// structural check walked it one way and the parser another, and the parser read a
/// "length" of 540,147,712 bytes that the check never saw, and allocated it (fuzz finding,
/// `dicom_json`, after 213,828 executions). Refused now by the check, before the parser.
#[test]
fn an_item_outside_a_sequence_is_refused_before_the_parser_reads_past_it() {
    let bytes = input("stray_item_implicit_le.bin");
    assert!(bytes.len() < 1024);
    let before = peak_rss_kib();
    let started = Instant::now();
    let error = parse_dataset(&bytes, "1.2.840.10008.1.2", MAX_IDENTIFIER_BYTES).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(error.contains("an item stands outside any sequence"), "{error}");
    let peak = peak_rss_kib();
    assert!(
        peak < before + 32 * 1024,
        "peak RSS {peak} KiB, {before} KiB before"
    );
}

/// A sequence delimiter (FFFE,E0DD) outside any sequence, with a length: 0xE0000000 bytes in a
/// mutated SR (explicit VR little endian, found by `dataset_check`) and 0x25000000 in a mutated
/// JPEG Lossless image (found by `dicom_json`), both campaigns of 2026-12-07. The check let a
/// stray delimiter pass whatever its length; the parser read it as a value of that length and
/// allocated 3.5 GiB and 592 MiB.
#[test]
fn a_stray_sequence_delimiter_with_a_length_is_refused_before_the_parser_allocates_it() {
    for (name, transfer_syntax, length) in [
        (
            "stray_sequence_delimiter_explicit_le.bin",
            "1.2.840.10008.1.2.1",
            0xE000_0000u32,
        ),
        (
            "stray_sequence_delimiter_jpeg_lossless.bin",
            "1.2.840.10008.1.2.4.70",
            0x2500_0000,
        ),
        // The next campaign's (dataset_check, dicom_json): delimiters with a length inside a
        // sequence, where the check took them for delimiters and the parser did not.
        (
            "delimiter_length_explicit_le_1.bin",
            "1.2.840.10008.1.2.1",
            0x8000_0000,
        ),
        (
            "delimiter_length_explicit_le_2.bin",
            "1.2.840.10008.1.2.1",
            0x3706_8600,
        ),
    ] {
        let bytes = input(name);
        assert!(bytes.len() < 2048, "{name}");
        let before = peak_rss_kib();
        let started = Instant::now();
        let error = parse_dataset(&bytes, transfer_syntax, MAX_IDENTIFIER_BYTES).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: {:?}",
            started.elapsed()
        );
        assert!(
            error.contains(&format!("(FFFE,E0DD) of {length} bytes")),
            "{name}: {error}"
        );
        let peak = peak_rss_kib();
        assert!(
            peak < before + 32 * 1024,
            "{name}: peak RSS {peak} KiB, {before} KiB before"
        );
    }
}
