//! The real binary driven by DCMTK: echo, store, find, get, move, refusals, shutdown.

use std::path::{Path, PathBuf};
use std::process::Output;

use pacs_testkit::server::{dcmtk, free_port, repo_root, ServerOptions, StoreScp, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/valid").join(name)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// findscu in Study Root; returns its full output (responses are logged on stderr with -v).
fn findscu(server: &TestServer, keys: &[&str]) -> String {
    let mut cmd = dcmtk("findscu");
    cmd.args(["-S", "-v", "-aec", "OPENPACS"]);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.args(["127.0.0.1", &server.dicom_port.to_string()]);
    let out = cmd.output().expect("findscu");
    assert!(out.status.success(), "findscu failed: {}", text(&out));
    text(&out)
}

fn storescu(server: &TestServer, files: &[PathBuf]) -> Output {
    let mut cmd = dcmtk("storescu");
    cmd.args(["-aec", "OPENPACS", "127.0.0.1", &server.dicom_port.to_string()]);
    cmd.args(files);
    cmd.output().expect("storescu")
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn echoscu_gets_success() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let out = dcmtk("echoscu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn storescu_then_findscu_at_every_level() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let files = [
        fixture("ct_series_a_1_explicit_le.dcm"),
        fixture("ct_series_a_2_explicit_le.dcm"),
        fixture("mr_explicit_le.dcm"),
        fixture("ot_charset_latin1_french.dcm"),
    ];
    let out = storescu(&server, &files);
    assert!(out.status.success(), "{}", text(&out));

    // Study level: the two CT instances are one study with two instances.
    let all = findscu(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "PatientName",
            "NumberOfStudyRelatedInstances",
            "ModalitiesInStudy",
        ],
    );
    assert_eq!(count(&all, "(Pending)"), 3, "three studies: {all}");
    assert!(all.contains("Received Final Find Response (Success)"), "{all}");
    assert!(all.contains("NumberOfStudyRelatedInstances"));
    assert!(all.contains("IS [2 ]"), "two CT instances in one study: {all}");

    // Wildcard and case-insensitive, accent-insensitive person-name matching.
    let jerome = findscu(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=buc*",
            "SpecificCharacterSet=ISO_IR 192",
        ],
    );
    assert_eq!(count(&jerome, "(Pending)"), 1, "{jerome}");
    assert!(
        jerome.contains("Jérôme") || jerome.contains("J\\303\\251r\\303\\264me") || jerome.contains("Buc^J"),
        "{jerome}"
    );

    // Series level under one study, and image level under one series.
    let ct_study = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.1";
    let series = findscu(
        &server,
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={ct_study}"),
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
        ],
    );
    assert_eq!(count(&series, "(Pending)"), 1, "one series: {series}");
    assert!(
        series.contains("IS [2 ]"),
        "two instances in the series: {series}"
    );
    assert!(series.contains("CS [CT]"), "{series}");
}

#[test]
fn calling_ae_not_in_allow_list_is_rejected() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: "allowed_calling_aes = [\"GOODSCU\"]".into(),
            ..ServerOptions::default()
        },
    );
    let port = server.dicom_port.to_string();
    let refused = dcmtk("echoscu")
        .args(["-aet", "BADSCU", "-aec", "OPENPACS", "127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("Calling AE Title Not Recognized"),
        "expected an A-ASSOCIATE-RJ with that reason: {err}"
    );
    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\tassociation\t") && l.contains("\trefused\t") && l.contains("BADSCU")),
        "the refusal is audited: {audit}"
    );
    let allowed = dcmtk("echoscu")
        .args(["-aet", "GOODSCU", "-aec", "OPENPACS", "127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(allowed.status.success(), "{}", text(&allowed));
}

#[test]
fn getscu_and_movescu_retrieve_a_study() {
    let dest_port = free_port();
    let server = TestServer::start(binary(), ServerOptions::with_peer("STORESCP", dest_port));
    let files = [
        fixture("ct_series_a_1_explicit_le.dcm"),
        fixture("ct_series_a_2_explicit_le.dcm"),
    ];
    let out = storescu(&server, &files);
    assert!(out.status.success(), "{}", text(&out));
    let study = "StudyInstanceUID=1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.1";
    let port = server.dicom_port.to_string();

    // C-GET into a folder; DCMTK writes one file per received instance.
    let get_dir = tempfile::tempdir().unwrap();
    let out = dcmtk("getscu")
        .args(["-S", "-aec", "OPENPACS", "-od"])
        .arg(get_dir.path())
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", study, "127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(get_dir.path()).unwrap().count(),
        2,
        "{}",
        text(&out)
    );

    // C-MOVE to storescp. storescu re-encodes what it sends, so byte identity with the fixture
    // files is checked in the pynetdicom corpus test; here the move must deliver exactly the
    // two instances.
    let scp = StoreScp::start("STORESCP", dest_port, &["+xa"]);
    let out = movescu(&server, "STORESCP", &["QueryRetrieveLevel=STUDY", study]);
    assert!(out.status.success(), "{}", text(&out));
    let names: Vec<String> = scp
        .received()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "CT.1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.3".to_string(),
            "CT.1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.5".to_string()
        ]
    );
    drop(scp);

    // Unknown destination: refused with A801.
    let out = movescu(&server, "NOBODY", &["QueryRetrieveLevel=STUDY", study]);
    assert!(
        text(&out).contains("Refused: MoveDestinationUnknown"),
        "{}",
        text(&out)
    );
}

fn movescu(server: &TestServer, destination: &str, keys: &[&str]) -> Output {
    let mut cmd = dcmtk("movescu");
    cmd.args(["-S", "-v", "-aec", "OPENPACS", "-aem", destination]);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap()
}

#[test]
fn move_converts_to_a_syntax_the_destination_accepts_or_counts_a_failure() {
    let dest_port = free_port();
    let server = TestServer::start(binary(), ServerOptions::with_peer("IMPLICIT", dest_port));
    // Stored in explicit VR big endian (re-encoded), JPEG baseline (decoded) and 12-bit JPEG
    // (no decoder: that sub-operation fails).
    let files = [
        fixture("us_rgb_explicit_be.dcm"),
        fixture("ot_rgb_jpeg_baseline.dcm"),
        fixture("nm_jpeg_extended.dcm"),
    ];
    // pynetdicom sends the files' bytes as they are (DCMTK would convert them first).
    let port = server.dicom_port.to_string();
    let mut args = vec!["store", "--port", port.as_str()];
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let stored = pacs_testkit::server::pynetdicom(&args);
    assert!(
        stored["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 0),
        "{stored}"
    );
    // A destination that accepts implicit VR little endian only.
    let scp = StoreScp::start("IMPLICIT", dest_port, &["+xi"]);
    let all = "SOPInstanceUID=1.2.840.1136190195280574824680000700.3.0.1.19970424140438\\\
               1.2.276.0.7230010.3.1.4.8323329.15150.1506363677.126194\\\
               1.3.6.1.4.1.5962.1.1.8.1.5.20040826185059.5457";
    let out = movescu(&server, "IMPLICIT", &["QueryRetrieveLevel=IMAGE", all]);
    let log = text(&out);
    assert_eq!(
        log.matches("(Pending)").count(),
        3,
        "one pending response per sub-operation: {log}"
    );
    assert!(
        log.contains("Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)"),
        "the 12-bit JPEG one cannot be decoded: {log}"
    );
    let received = scp.received();
    assert_eq!(received.len(), 2);
    for file in &received {
        let dump = dcmtk("dcmdump").arg("-M").arg(file).output().unwrap();
        let dump = String::from_utf8_lossy(&dump.stdout);
        assert!(
            dump.contains("1.2.840.10008.1.2 ") || dump.contains("=LittleEndianImplicit"),
            "{dump}"
        );
        // Native pixel data: a plain OB/OW value, not an encapsulated pixel sequence.
        let pixels = dump
            .lines()
            .find(|l| l.starts_with("(7fe0,0010)"))
            .unwrap_or_default();
        assert!(
            (pixels.contains(" OW ") || pixels.contains(" OB ")) && !pixels.contains("PixelSequence"),
            "{pixels}"
        );
    }
}

#[test]
fn garbage_on_the_port_does_not_disturb_other_peers() {
    use std::io::Write;
    let mut server = TestServer::start(binary(), ServerOptions::default());
    for payload in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 1, 2, 3][..],
        &[0x04; 64][..],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.dicom_port)).unwrap();
        let _ = s.write_all(payload);
        drop(s);
    }
    let out = dcmtk("echoscu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.is_running());
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    assert!(server.http_get("/healthz").contains("ok"));
    let out = storescu(&server, &[fixture("ct_explicit_le.dcm")]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = server.http_get("/metrics");
    assert!(metrics.contains("openpacs_dimse_stores_total"), "{metrics}");
    let status = server.stop();
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
}
