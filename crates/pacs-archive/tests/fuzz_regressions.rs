//! Data sets the fuzz targets found (tests/fuzz-regressions/dicom/), replayed through
//! ingest's check and header parse: each is refused cleanly, quickly, and without the memory
//! its lengths claim.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pacs_archive::ingest::check_and_parse_part10;
use pacs_archive::ArchiveError;
use pacs_dimse::dataset_check::Limits;

fn input(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz-regressions")
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

/// An FL element of 255 bytes: the parser reads 63 floats and leaves 3 bytes, then reads
/// element headers out of the middle of the next values; one of them "declared" 0x14000042
/// bytes, which the parser allocated (320 MiB, from 6 KB) before finding them missing.
#[test]
fn a_binary_value_of_a_partial_length_is_refused_before_the_parser_loses_its_place() {
    let bytes = input("dicom/fl_partial_length.dcm");
    assert!(bytes.len() < 8 << 10);
    let before = peak_rss_kib();
    let started = Instant::now();
    let error = check_and_parse_part10(&bytes, Limits::default()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, ArchiveError::Invalid(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("(0027,104B)") && text.contains("not a whole number of 4-byte values"),
        "{text}"
    );
    let peak = peak_rss_kib();
    assert!(
        peak < before + 32 * 1024,
        "peak RSS {peak} KiB, {before} KiB before"
    );
}

/// The part10_header campaign's findings (objects of 4 KB that made the parser allocate 1.0
/// and 1.25 GiB, same cause as `dimse/item_tag_value_*`): refused before the parse.
#[test]
fn part10_campaign_findings_are_refused_with_memory_bounded() {
    for name in ["part10/campaign_1.dcm", "part10/campaign_2.dcm"] {
        let bytes = input(name);
        let before = peak_rss_kib();
        let started = Instant::now();
        let error = check_and_parse_part10(&bytes, Limits::default()).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            started.elapsed()
        );
        assert!(matches!(error, ArchiveError::Invalid(_)), "{name}: {error:?}");
        // Both are (FFFE,xxxx) elements of some 250 bytes, which the parser read as values and
        // ran into a gigabyte "length" inside them.
        assert!(
            error.to_string().contains("is not an item or a delimiter"),
            "{name}: {error}"
        );
        let peak = peak_rss_kib();
        assert!(
            peak < before + 32 * 1024,
            "{name}: peak RSS {peak} KiB, {before} KiB before"
        );
    }
}

/// JPIP HTJ2K Referenced Deflate (1.2.840.10008.1.2.4.205): the parser inflates its data set,
/// the structural check, which knew two deflated syntaxes of its own, walked the compressed
/// bytes. This object's deflate stream is one stored block whose raw bytes read as one long
/// explicit-VR element, while the inflated data starts with an OB of 0xC0C00010 bytes (the
/// length CI's short part10_header run found, its input not kept): the parser allocated
/// 3 GiB. The check now takes byte order and compression from the parser's own registry.
#[test]
fn a_deflated_syntax_the_parser_knows_is_inflated_by_the_check_too() {
    let bytes = input("part10/jpip_htj2k_deflate.dcm");
    assert!(bytes.len() < 64 << 10);
    let before = peak_rss_kib();
    let started = Instant::now();
    let error = check_and_parse_part10(&bytes, Limits::default()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, ArchiveError::Invalid(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("(0D4F,00B3) declares 3233808400 bytes"), "{text}");
    let peak = peak_rss_kib();
    assert!(
        peak < before + 32 * 1024,
        "peak RSS {peak} KiB, {before} KiB before"
    );
}

/// A part10_header campaign finding (25 KB, a mutated NM object in JPEG Extended): a sequence
/// delimiter in an item left open. The check closed both the item and the sequence, the parser
/// the item only, and it read on inside the sequence, where the Pixel Data at the check's top
/// level was a nested one it parsed: a basic offset table of 0x36000004 entries (3.4 GiB).
#[test]
fn a_sequence_delimiter_in_an_open_item_is_refused() {
    let bytes = input("part10/sequence_delimiter_in_open_item.dcm");
    let before = peak_rss_kib();
    let started = Instant::now();
    let error = check_and_parse_part10(&bytes, Limits::default()).unwrap_err();
    let peak = peak_rss_kib();
    assert!(
        peak < before + 32 * 1024,
        "peak RSS {peak} KiB, {before} KiB before"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, ArchiveError::Invalid(_)), "{error:?}");
    assert!(error.to_string().contains("(FFFE,E0DD)"), "{error}");
}
