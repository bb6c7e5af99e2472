//! Blobs on a Garage of three nodes in two zones (two data centres), three copies of each
//! object (issue 16 §5): one node stops during ingest, another during retrieval, and openpacs
//! goes on through both: every instance is acknowledged, and every one comes back byte for
//! byte.
//!
//! Garage needs two of an object's three copies to answer (its `consistent` mode). Objects
//! written while a node was down have only two until Garage has repaired the third, so the
//! retrieval during the second node's stop reads a study stored while all three were up.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacs_testkit::garage::Garage;
use pacs_testkit::server::{dataset_sha256, repo_root, ServerOptions, TestServer};
use pacs_testkit::{write_study, GeneratedInstance, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// `tests/interop/peer.py ARGS…`, its JSON answer on a pipe.
fn peer(args: &[String]) -> Child {
    Command::new("python3")
        .arg(repo_root().join("tests/interop/peer.py"))
        .args(args)
        .stderr(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn answer(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn study(seed: u64, instances: u32, dir: &Path) -> Vec<GeneratedInstance> {
    let spec = StudySpec {
        rows: 128,
        columns: 128,
        ..StudySpec::ct(seed, instances)
    };
    write_study(&spec, &dir.join(seed.to_string())).unwrap()
}

fn store(port: &str, files: &[GeneratedInstance], ack_log: &Path) -> Child {
    let mut args = strings(&["store", "--port", port, "--associations", "2", "--ack-log"]);
    args.push(ack_log.display().to_string());
    args.extend(files.iter().map(|g| g.path.display().to_string()));
    peer(&args)
}

fn get(port: &str, study: &[GeneratedInstance]) -> Child {
    let key = format!("StudyInstanceUID={}", study[0].study_instance_uid);
    peer(&strings(&["get", "--port", port, "--level", "STUDY", "-k", &key]))
}

/// Every instance of `study` retrieved, byte for byte.
fn assert_all_back(got: &serde_json::Value, study: &[GeneratedInstance], server: &TestServer) {
    assert_eq!(
        got["completed"],
        study.len(),
        "{}\n{}",
        got["status"],
        server.log()
    );
    assert_eq!(got["failed"], 0);
    for g in study {
        assert_eq!(
            got["instances"][&g.sop_instance_uid]["sha256"].as_str(),
            Some(dataset_sha256(&g.path).as_str()),
            "{} differs",
            g.sop_instance_uid
        );
    }
}

fn assert_all_stored(stored: &serde_json::Value, server: &TestServer) {
    let refused: Vec<_> = stored["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != 0)
        .collect();
    assert!(
        refused.is_empty(),
        "stores refused with one Garage node down: {refused:?}\n{}",
        server.log()
    );
}

#[test]
fn ingest_and_retrieval_go_on_while_one_garage_node_of_three_is_down() {
    let mut garage = Garage::start_cluster(&["dc1", "dc1", "dc2"]);
    let secrets = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: garage.openpacs_toml(secrets.path(), "archive"),
            ..ServerOptions::default()
        },
    );
    let port = server.dicom_port.to_string();
    let source = tempfile::tempdir().unwrap();
    let (first, second) = (study(3131, 40, source.path()), study(3232, 120, source.path()));

    // All three nodes up.
    let stored = answer(store(&port, &first, &source.path().join("acks-1.txt")));
    assert_all_stored(&stored, &server);

    // The other data centre's node stops once the second study's ingest is well under way.
    let ack_log = source.path().join("acks-2.txt");
    let sender = store(&port, &second, &ack_log);
    let acked = || {
        std::fs::read_to_string(&ack_log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked() < 20 {
        assert!(Instant::now() < deadline, "ingest too slow\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    garage.stop_node(2);
    assert_all_stored(&answer(sender), &server);
    assert_eq!(acked(), second.len());
    // Still down: the second study comes back from the two nodes left.
    assert_all_back(&answer(get(&port, &second)), &second, &server);

    // It comes back; a node of the first data centre stops while the first study is retrieved.
    garage.start_node(2);
    let getter = get(&port, &first);
    std::thread::sleep(Duration::from_millis(300));
    garage.stop_node(1);
    assert_all_back(&answer(getter), &first, &server);
}
