//! Larger synthetic studies: a 500-instance CT over four associations, and a kill -9 in the
//! middle of a multi-association ingest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pacs_testkit::server::{dataset_sha256, dcmtk, pynetdicom, repo_root, ServerOptions, TestServer};
use pacs_testkit::{write_study, GeneratedInstance, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn generate(seed: u64, instances: u32, dir: &Path) -> Vec<GeneratedInstance> {
    write_study(&StudySpec::ct(seed, instances), dir).expect("generate study")
}

fn study_counts(server: &TestServer, study: &str) -> String {
    let out = dcmtk("findscu")
        .args(["-S", "-v", "-aec", "OPENPACS", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}")])
        .args([
            "-k",
            "NumberOfStudyRelatedInstances",
            "-k",
            "NumberOfStudyRelatedSeries",
            "-k",
            "ModalitiesInStudy",
        ])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// C-GET of a whole study with pynetdicom.
fn get_study(port: &str, study_uid: &str) -> serde_json::Value {
    pynetdicom(&[
        "get",
        "--port",
        port,
        "--level",
        "STUDY",
        "-k",
        &format!("StudyInstanceUID={study_uid}"),
    ])
}

#[test]
fn five_hundred_instances_over_four_associations_come_back_identical() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let source = tempfile::tempdir().unwrap();
    let study = generate(500, 500, source.path());
    let files: Vec<String> = study.iter().map(|g| g.path.display().to_string()).collect();
    let p = server.dicom_port.to_string();

    let started = Instant::now();
    let mut args = vec!["store", "--port", &p, "--associations", "4"];
    args.extend(files.iter().map(String::as_str));
    let stored = pynetdicom(&args);
    let elapsed = started.elapsed().as_secs_f64();
    let results = stored["results"].as_array().unwrap();
    assert_eq!(results.len(), 500);
    assert!(results.iter().all(|r| r["status"] == 0), "{stored}");
    let bytes: u64 = study.iter().map(|g| g.size).sum();
    // Reported, not asserted: tests run in debug builds on shared machines.
    println!(
        "stored 500 instances over 4 associations in {elapsed:.1} s ({:.0} instances/s, {:.1} MB/s; debug build, pynetdicom sender)",
        500.0 / elapsed,
        bytes as f64 / 1e6 / elapsed
    );

    let counts = study_counts(&server, &study[0].study_instance_uid);
    assert!(counts.contains("IS [500 ]"), "{counts}");
    assert!(counts.contains("IS [1 ]"), "one series: {counts}");

    let got = get_study(&p, &study[0].study_instance_uid);
    assert_eq!(got["completed"], 500, "{}", got["status"]);
    assert_eq!(got["failed"], 0);
    for g in &study {
        assert_eq!(
            got["instances"][&g.sop_instance_uid]["sha256"].as_str(),
            Some(dataset_sha256(&g.path).as_str()),
            "{} differs",
            g.sop_instance_uid
        );
    }
}

#[test]
fn kill_nine_during_ingest_loses_no_acknowledged_instance() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    let source = tempfile::tempdir().unwrap();
    let study = generate(900, 400, source.path());
    let ack_log = source.path().join("acks.txt");
    let p = server.dicom_port.to_string();

    let mut sender = Command::new("python3");
    sender
        .arg(repo_root().join("tests/interop/peer.py"))
        .args(["store", "--port", &p, "--associations", "4", "--ack-log"])
        .arg(&ack_log)
        .args(study.iter().map(|g| &g.path))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut sender = sender.spawn().unwrap();

    // Let a good part of the ingest be acknowledged, then crash the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let acked = std::fs::read_to_string(&ack_log)
            .unwrap_or_default()
            .lines()
            .count();
        if acked >= 60 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingest too slow: {acked} acknowledged\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    let _ = sender.wait();
    let acked: Vec<String> = std::fs::read_to_string(&ack_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        acked.len() < study.len(),
        "the crash must happen mid-ingest ({} acknowledged)",
        acked.len()
    );

    server.restart();
    let got = get_study(&p, &study[0].study_instance_uid);
    let by_uid: HashMap<&str, &PathBuf> = study
        .iter()
        .map(|g| (g.sop_instance_uid.as_str(), &g.path))
        .collect();
    for uid in &acked {
        let received = &got["instances"][uid.as_str()];
        assert_eq!(
            received["sha256"].as_str(),
            Some(dataset_sha256(by_uid[uid.as_str()]).as_str()),
            "acknowledged instance {uid} not retrievable intact after the crash\n{}",
            server.log()
        );
    }
    assert_eq!(got["failed"], 0, "{}", got["status"]);
    println!(
        "{} acknowledged before kill -9, {} retrievable after restart",
        acked.len(),
        got["completed"]
    );

    assert!(server.stop().success());
    let verify = server.cli(&["verify"]);
    assert!(
        verify.status.success(),
        "verify after the crash: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(server.log().contains("recovery done"));
}

#[test]
fn sigterm_during_ingest_exits_zero_and_keeps_what_it_acknowledged() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    let source = tempfile::tempdir().unwrap();
    let study = generate(77, 200, source.path());
    let ack_log = source.path().join("acks.txt");
    let p = server.dicom_port.to_string();
    let mut sender = Command::new("python3")
        .arg(repo_root().join("tests/interop/peer.py"))
        .args(["store", "--port", &p, "--associations", "2", "--ack-log"])
        .arg(&ack_log)
        .args(study.iter().map(|g| &g.path))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&ack_log)
        .unwrap_or_default()
        .lines()
        .count()
        < 20
    {
        assert!(Instant::now() < deadline, "ingest too slow\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = server.stop();
    let _ = sender.wait();
    assert!(
        status.success(),
        "SIGTERM must end with exit 0: {status:?}\n{}",
        server.log()
    );
    let acked: Vec<String> = std::fs::read_to_string(&ack_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();

    server.restart();
    let got = get_study(&p, &study[0].study_instance_uid);
    for uid in &acked {
        assert!(
            got["instances"][uid.as_str()]["sha256"].is_string(),
            "{uid} lost after SIGTERM"
        );
    }
    assert!(
        server.log().contains("temp_removed=0"),
        "a clean stop leaves no partial file\n{}",
        server.log()
    );
}

#[test]
fn c_cancel_stops_c_get_and_c_move_with_consistent_counts() {
    let dest = pacs_testkit::server::free_port();
    let server = TestServer::start(binary(), ServerOptions::with_peer("PEERPY", dest));
    let source = tempfile::tempdir().unwrap();
    let spec = StudySpec {
        rows: 128,
        columns: 128,
        ..StudySpec::ct(31, 60)
    };
    let study = write_study(&spec, source.path()).unwrap();
    let p = server.dicom_port.to_string();
    let files: Vec<String> = study.iter().map(|g| g.path.display().to_string()).collect();
    let mut args = vec!["store", "--port", &p];
    args.extend(files.iter().map(String::as_str));
    pynetdicom(&args);
    let key = format!("StudyInstanceUID={}", study[0].study_instance_uid);
    let dest = dest.to_string();
    for mut args in [
        vec!["get", "--port", &p],
        vec![
            "move",
            "--port",
            &p,
            "--dest",
            "PEERPY",
            "--listen",
            &dest,
            "--listen-addr",
            "127.0.0.1",
        ],
    ] {
        args.extend(["--level", "STUDY", "-k", &key, "--cancel-after", "5"]);
        let r = pynetdicom(&args);
        assert_eq!(r["cancelled"], true, "{}: {r}", args[0]);
        assert_eq!(r["status"], 0xFE00, "{}: {}", args[0], r["status"]);
        let completed = r["completed"].as_u64().unwrap();
        let remaining = r["remaining"].as_u64().unwrap();
        assert!(
            completed < 60,
            "{}: cancel stopped the sub-operations ({completed})",
            args[0]
        );
        assert_eq!(
            completed + remaining + r["failed"].as_u64().unwrap(),
            60,
            "{}",
            args[0]
        );
        assert_eq!(
            r["instances"].as_object().unwrap().len() as u64,
            completed,
            "{}",
            args[0]
        );
    }
}
