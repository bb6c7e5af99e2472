//! A node dies during ingest (issue 16 §5): two `openpacs serve` on one PostgreSQL index and
//! one Garage bucket take a study over four associations, two on each node; node A is killed
//! with SIGKILL half-way. Every instance either node acknowledged is retrievable byte for byte
//! through the survivor, the survivor's own ingest is not disturbed, and once A is back (its
//! recovery run against the shared engines) `openpacs verify` finds everything intact.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacs_testkit::garage::Garage;
use pacs_testkit::postgres::fresh_database;
use pacs_testkit::server::{dataset_sha256, describe, pynetdicom, repo_root, ServerOptions, TestServer};
use pacs_testkit::{write_study, GeneratedInstance, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// pynetdicom storing `files` to `node` over two associations, each acknowledged SOP Instance
/// UID written (and fsynced) to `ack_log` as its success arrives.
fn sender(node: &TestServer, files: &[GeneratedInstance], ack_log: &Path) -> Child {
    Command::new("python3")
        .arg(repo_root().join("tests/interop/peer.py"))
        .args([
            "store",
            "--port",
            &node.dicom_port.to_string(),
            "--associations",
            "2",
        ])
        .arg("--ack-log")
        .arg(ack_log)
        .args(files.iter().map(|g| &g.path))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn acknowledged(ack_log: &Path) -> Vec<String> {
    std::fs::read_to_string(ack_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_node_killed_during_ingest_loses_nothing_it_acknowledged() {
    let url = fresh_database("node_failure");
    let garage = Garage::start();
    let secrets = tempfile::tempdir().unwrap();
    let shared = format!(
        "index_url = {url:?}\n{}",
        garage.openpacs_toml(secrets.path(), "archive")
    );
    let node = || {
        TestServer::start(
            binary(),
            ServerOptions {
                extra_toml: shared.clone(),
                ..ServerOptions::default()
            },
        )
    };
    let mut a = node();
    let b = node();

    let source = tempfile::tempdir().unwrap();
    let spec = StudySpec {
        rows: 128,
        columns: 128,
        ..StudySpec::ct(1616, 300)
    };
    let study = write_study(&spec, source.path()).unwrap();
    let (to_a, to_b) = study.split_at(150);
    let (log_a, log_b) = (source.path().join("acks-a.txt"), source.path().join("acks-b.txt"));
    let mut sender_a = sender(&a, to_a, &log_a);
    let mut sender_b = sender(&b, to_b, &log_b);

    // Node A dies once a good part of its share is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(180);
    while acknowledged(&log_a).len() < 40 {
        assert!(Instant::now() < deadline, "ingest too slow\n{}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill9();
    let _ = sender_a.wait();
    assert!(sender_b.wait().unwrap().success());
    let acked_a = acknowledged(&log_a);
    let acked_b = acknowledged(&log_b);
    assert!(
        acked_a.len() < to_a.len(),
        "the kill must fall mid-ingest ({} acknowledged by A)",
        acked_a.len()
    );
    assert_eq!(
        acked_b.len(),
        to_b.len(),
        "the survivor's own ingest was disturbed"
    );

    // Through the survivor, every acknowledged instance, byte for byte.
    let got = pynetdicom(&[
        "get",
        "--port",
        &b.dicom_port.to_string(),
        "--level",
        "STUDY",
        "-k",
        &format!("StudyInstanceUID={}", study[0].study_instance_uid),
    ]);
    assert_eq!(got["failed"], 0, "{}", got["status"]);
    let path_of = |uid: &str| -> &PathBuf { &study.iter().find(|g| g.sop_instance_uid == uid).unwrap().path };
    for uid in acked_a.iter().chain(&acked_b) {
        assert_eq!(
            got["instances"][uid.as_str()]["sha256"].as_str(),
            Some(dataset_sha256(path_of(uid)).as_str()),
            "acknowledged instance {uid} not retrievable intact through node B\n{}",
            b.log()
        );
    }
    println!(
        "node A acknowledged {} of {} before kill -9, node B {} of {}; node B serves {}",
        acked_a.len(),
        to_a.len(),
        acked_b.len(),
        to_b.len(),
        got["completed"]
    );

    // A comes back: its recovery runs against the shared index and bucket, and everything
    // is intact.
    a.restart();
    let (status, _, _) = a.http_request("GET", "/healthz", &[], b"");
    assert_eq!(status, 200, "{}", a.log());
    let verify = b.cli(&["verify"]);
    assert!(verify.status.success(), "{}", describe(&verify));
}
