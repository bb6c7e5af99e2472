//! Decompression bombs: a Deflated Explicit VR Little Endian object of about a megabyte that
//! inflates to a gibibyte. Regression for issue 14 §2: it used to be stored with success while
//! the server's RSS went from 46 MB to 1.58 GB (three at once: 5.8 GB), because everything
//! before Pixel Data was held in memory and the inflated size was only capped at 4 GiB.
//! Sent by pynetdicom (which sends a file's data set as it is, without decoding it) and over
//! STOW-RS; refused while inflating, with memory bounded by configuration.

use std::io::Write;
use std::path::Path;

use dicom_object::meta::FileMetaTableBuilder;
use pacs_testkit::server::{pynetdicom, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// One explicit VR little endian element with a short (2-byte) length.
fn short_element(group: u16, element: u16, vr: &[u8; 2], value: &str) -> Vec<u8> {
    let mut value = value.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(if vr == b"UI" { 0 } else { b' ' });
    }
    let mut e = Vec::new();
    e.extend_from_slice(&group.to_le_bytes());
    e.extend_from_slice(&element.to_le_bytes());
    e.extend_from_slice(vr);
    e.extend_from_slice(&(value.len() as u16).to_le_bytes());
    e.extend_from_slice(&value);
    e
}

/// Raw deflate blocks of `bytes`, not final, ending on a byte boundary with the dictionary
/// reset (a full flush): such pieces can follow one another in one stream, repeated at will.
fn deflate_piece(bytes: &[u8], last: bool) -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = Vec::with_capacity(bytes.len() / 100 + 1024);
    let flush = if last {
        flate2::FlushCompress::Finish
    } else {
        flate2::FlushCompress::Full
    };
    compress.compress_vec(bytes, &mut out, flush).unwrap();
    assert_eq!(compress.total_in(), bytes.len() as u64, "output buffer too small");
    out
}

/// A deflated CT object whose private OB element of `mib` MiB of zeros comes before a tiny
/// Pixel Data: about a kilobyte on the wire per inflated mebibyte.
fn write_bomb(path: &Path, uid_suffix: u32, mib: u32) {
    let sop = format!("1.2.826.0.1.3680043.10.1432.{uid_suffix}");
    let mut head = Vec::new();
    head.extend(short_element(0x0008, 0x0016, b"UI", CT_IMAGE_STORAGE));
    head.extend(short_element(0x0008, 0x0018, b"UI", &sop));
    head.extend(short_element(0x0008, 0x0060, b"CS", "CT"));
    head.extend(short_element(0x0010, 0x0010, b"PN", "BOMB^DEFLATE"));
    head.extend(short_element(0x0010, 0x0020, b"LO", "BOMB1"));
    head.extend(short_element(
        0x0020,
        0x000D,
        b"UI",
        "1.2.826.0.1.3680043.10.1432.1",
    ));
    head.extend(short_element(
        0x0020,
        0x000E,
        b"UI",
        "1.2.826.0.1.3680043.10.1432.2",
    ));
    head.extend(short_element(0x0029, 0x0010, b"LO", "BOMB"));
    head.extend_from_slice(&[0x29, 0x00, 0x10, 0x10, b'O', b'B', 0, 0]);
    head.extend_from_slice(&(mib << 20).to_le_bytes());
    let zeros = deflate_piece(&vec![0u8; 1 << 20], false);
    let mut tail = Vec::new();
    tail.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);

    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(&sop)
        .transfer_syntax(DEFLATED)
        .implementation_class_uid("1.2.826.0.1.3680043.10.1432")
        .build()
        .unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&[0u8; 128]).unwrap();
    file.write_all(b"DICM").unwrap();
    meta.write(&mut file).unwrap();
    file.write_all(&deflate_piece(&head, false)).unwrap();
    for _ in 0..mib {
        file.write_all(&zeros).unwrap();
    }
    file.write_all(&deflate_piece(&tail, true)).unwrap();
    file.flush().unwrap();
}

/// The bomb inflates to what it claims: the test would prove nothing with a broken stream.
fn inflated_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let offset = pacs_testkit::server::part10_dataset_offset(&bytes).unwrap();
    let mut decoder = flate2::read::DeflateDecoder::new(&bytes[offset..]);
    std::io::copy(&mut decoder, &mut std::io::sink()).unwrap()
}

#[test]
fn deflate_bombs_are_refused_while_inflating_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let bombs: Vec<_> = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("bomb{i}.dcm"));
            write_bomb(&path, 10 + i, 1024);
            path
        })
        .collect();
    let wire = std::fs::metadata(&bombs[0]).unwrap().len();
    assert!(wire < 2 << 20, "a bomb is {wire} bytes on the wire");
    assert!(inflated_len(&bombs[0]) > 1 << 30);
    // Under the inflated limit (128 MiB) but past the header limit (64 MiB).
    let header_bomb = dir.path().join("header.dcm");
    write_bomb(&header_bomb, 20, 100);

    let server = TestServer::start(binary(), ServerOptions::default());
    let port = server.dicom_port.to_string();
    let baseline = server.rss_kib();

    // Three at once over C-STORE, each on its own association.
    let mut args = vec!["store", "--port", &port, "--associations", "3"];
    let paths: Vec<String> = bombs.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let stored = pynetdicom(&args);
    for result in stored["results"].as_array().unwrap() {
        assert_eq!(result["status"], 0xA700, "{stored}");
        let comment = result["error_comment"].as_str().unwrap_or_default();
        assert!(comment.contains("max_inflated_bytes"), "{stored}");
    }
    let header = header_bomb.display().to_string();
    let stored = pynetdicom(&["store", "--port", &port, &header]);
    assert_eq!(stored["results"][0]["status"], 0xA700, "{stored}");
    let comment = stored["results"][0]["error_comment"].as_str().unwrap_or_default();
    assert!(
        comment.contains("before Pixel Data") && comment.contains("max_header_bytes"),
        "{stored}"
    );

    // The same bomb over STOW-RS: a failed part with Out of Resources (0xA700), naming it.
    let mut body = b"--BOMB\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend(std::fs::read(&bombs[0]).unwrap());
    body.extend_from_slice(b"\r\n--BOMB--\r\n");
    let (status, _, answer) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=BOMB",
        )],
        &body,
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 409, "{answer}");
    let failed = &answer["00081198"]["Value"][0];
    assert_eq!(failed["00081197"]["Value"][0], 0xA700, "{answer}");
    assert_eq!(
        failed["00081155"]["Value"][0], "1.2.826.0.1.3680043.10.1432.10",
        "{answer}"
    );

    // Memory stayed bounded by the limits (128 MiB inflated is streamed to nowhere, never
    // held), whatever the bombs claimed: before the fix the peak passed 1.5 GB per bomb.
    let peak = server.peak_rss_kib();
    assert!(
        peak < baseline + 150 * 1024,
        "peak RSS {peak} KiB from a baseline of {baseline} KiB"
    );
    // Nothing was stored, the server still serves, and each refusal is a security event.
    let found = pynetdicom(&[
        "find",
        "--port",
        &port,
        "--level",
        "IMAGE",
        "-k",
        "SOPInstanceUID=",
    ]);
    assert_eq!(found["matches"].as_array().map(Vec::len), Some(0), "{found}");
    assert_eq!(pynetdicom(&["echo", "--port", &port])["status"], 0);
    let audit = server.cli(&["audit"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    let security = audit
        .lines()
        .filter(|l| l.split('\t').nth(1) == Some("security"))
        .count();
    assert_eq!(security, 5, "{audit}");
}
