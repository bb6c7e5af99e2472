//! Requests the fuzz targets found (tests/fuzz-regressions/), sent to the real server: each
//! is refused with a clear answer, the server's memory stays bounded and it keeps serving.

use std::path::{Path, PathBuf};

use pacs_testkit::server::{ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn input(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz-regressions")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `stow_multipart` finding: its last part is a CT object of 6 KB whose FL element of
/// 255 bytes threw the parser 3 bytes off, into a "length" of 320 MiB it allocated. Before the
/// fix the server's peak RSS grew by those 320 MiB for this one request.
#[test]
fn stow_part_with_a_partial_binary_value_is_refused_with_memory_bounded() {
    let fuzz_input = input("stow/fl_partial_length.bin");
    // The target's input: a chunk-size byte, the Content-Type line, the body.
    let newline = fuzz_input.iter().position(|&b| b == b'\n').unwrap();
    let content_type = String::from_utf8(fuzz_input[1..newline].to_vec()).unwrap();
    let body = &fuzz_input[newline + 1..];

    let server = TestServer::start(binary(), ServerOptions::default());
    let baseline = server.peak_rss_kib();
    let (status, _, answer) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[("Content-Type", content_type.as_str())],
        body,
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer)
        .unwrap_or_else(|e| panic!("{status}: {e}: {}", String::from_utf8_lossy(&answer)));
    // Nothing stored (the parts before it are damaged too): 409, every part failed.
    assert_eq!(status, 409, "{answer}");
    assert!(answer.get("00081199").is_none(), "{answer}");
    let failed = answer["00081198"]["Value"].as_array().unwrap();
    // The CT part is a DICOM object with a damaged element: Cannot Understand (C000).
    let ct = failed
        .iter()
        .find(|f| f["00081150"]["Value"][0] == "1.2.840.10008.5.1.4.1.1.2")
        .unwrap_or_else(|| panic!("no failed CT part: {answer}"));
    assert_eq!(ct["00081197"]["Value"][0], 0xC000, "{answer}");
    let peak = server.peak_rss_kib();
    assert!(
        peak < baseline + 64 * 1024,
        "peak RSS {peak} KiB from {baseline} KiB before the request"
    );
    let (status, _, _) = server.http_request("GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
}
