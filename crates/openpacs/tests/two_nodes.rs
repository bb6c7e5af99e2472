//! Two `openpacs serve` nodes on one PostgreSQL index and one Garage bucket behave as one PACS
//! (issue 16 §3): what is stored through one is found and retrieved byte-identical through
//! the other at once, and what an administrator changes through one (a session ended, an
//! account removed, an AE added to the table) holds on the other within 5 seconds.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine;
use pacs_testkit::garage::Garage;
use pacs_testkit::postgres::fresh_database;
use pacs_testkit::server::{
    dataset_sha256, dcmtk, free_port, getscu_study, repo_root, ServerOptions, StoreScp, TestServer,
};

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

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Status of `method path` on `node` with one header.
fn status(node: &TestServer, method: &str, path: &str, header: (&str, &str), body: &str) -> u16 {
    let mut headers = vec![header];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    node.http_request(method, path, &headers, body.as_bytes()).0
}

/// How long it took until `done` held, polled every 100 ms; panics after 10 s.
fn time_until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still not so after 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

fn movescu(node: &TestServer, destination: &str, study: &str) -> Output {
    dcmtk("movescu")
        .args(["-S", "-aec", "OPENPACS", "-aem", destination])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k"])
        .arg(format!("StudyInstanceUID={study}"))
        .args(["127.0.0.1", &node.dicom_port.to_string()])
        .output()
        .unwrap()
}

const CT_STUDY: &str = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.1";

#[test]
fn two_nodes_on_one_index_and_one_bucket_act_as_one_pacs() {
    let url = fresh_database("two_nodes");
    let garage = Garage::start();
    let secrets = tempfile::tempdir().unwrap();
    let shared = format!(
        "index_url = {url:?}\n{}",
        garage.openpacs_toml(secrets.path(), "archive")
    );
    let a = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: shared.clone(),
            users: vec![
                ("root".into(), "admin".into(), "root-password".into()),
                ("reader1".into(), "reader".into(), "reader-secret-pw".into()),
            ],
            ..ServerOptions::default()
        },
    );
    // The second node: its own ports and data directory, nothing else of its own.
    let b = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: shared,
            ..ServerOptions::default()
        },
    );
    let root = basic("root", "root-password");

    // A modality stores a CT series through node A.
    let files = [
        fixture("ct_series_a_1_explicit_le.dcm"),
        fixture("ct_series_a_2_explicit_le.dcm"),
    ];
    let out = dcmtk("storescu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &a.dicom_port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // A workstation on node B finds it at once, with its counts.
    let out = dcmtk("findscu")
        .args(["-S", "-v", "-aec", "OPENPACS", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={CT_STUDY}")])
        .args(["-k", "NumberOfStudyRelatedInstances"])
        .args(["127.0.0.1", &b.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let found = text(&out);
    assert!(found.contains("(0020,1208) IS [2 ]"), "node B's C-FIND: {found}");
    // And retrieves byte for byte the data sets node A serves.
    let shas = |node: &TestServer| {
        let into = tempfile::tempdir().unwrap();
        let got = getscu_study(node.dicom_port, CT_STUDY, into.path());
        let mut shas: Vec<String> = got.iter().map(|p| dataset_sha256(p)).collect();
        shas.sort();
        shas
    };
    let sent = shas(&a);
    assert_eq!(sent.len(), 2);
    assert_eq!(shas(&b), sent, "node B's C-GET");

    // A reader logs in on node A; the session works on node B, and ends there too when it
    // is logged out on A.
    let (code, head, _) = a.http_request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        br#"{"username":"reader1","password":"reader-secret-pw"}"#,
    );
    assert_eq!(code, 200, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.split(';').next().unwrap().trim().to_string())
        })
        .expect("a session cookie");
    assert_eq!(status(&b, "GET", "/api/me", ("Cookie", &cookie), ""), 200);
    assert_eq!(status(&a, "POST", "/api/logout", ("Cookie", &cookie), ""), 204);
    let ended = time_until("the session logged out on A refused on B", || {
        status(&b, "GET", "/api/me", ("Cookie", &cookie), "") == 401
    });
    assert!(ended <= Duration::from_secs(5), "{ended:?}");

    // An account removed through node A is refused by node B, Basic credentials included
    // (node B had verified and remembered them).
    let reader = basic("reader1", "reader-secret-pw");
    assert_eq!(status(&b, "GET", "/api/me", ("Authorization", &reader), ""), 200);
    assert_eq!(
        status(&a, "DELETE", "/api/users/reader1", ("Authorization", &root), ""),
        204
    );
    let refused = time_until("the removed account refused on B", || {
        status(&b, "GET", "/api/me", ("Authorization", &reader), "") == 401
    });
    assert!(refused <= Duration::from_secs(5), "{refused:?}");

    // An AE added to the table through node A is a C-MOVE destination on node B within 5 s.
    let port = free_port();
    let scp = StoreScp::start("WS_B", port, &["+xa"]);
    let out = movescu(&b, "WS_B", CT_STUDY);
    assert!(text(&out).contains("MoveDestinationUnknown"), "{}", text(&out));
    let added = Instant::now();
    assert_eq!(
        status(
            &a,
            "PUT",
            "/api/aes/WS_B",
            ("Authorization", &root),
            &format!(r#"{{"host": "127.0.0.1", "port": {port}}}"#)
        ),
        201
    );
    time_until("node B knows WS_B", || {
        movescu(&b, "WS_B", CT_STUDY).status.success()
    });
    let known = added.elapsed();
    assert!(known <= Duration::from_secs(6), "{known:?}");
    let moved = scp.received();
    assert_eq!(moved.len(), 2, "{moved:?}");
    let mut moved: Vec<String> = moved.iter().map(|p| dataset_sha256(p)).collect();
    moved.sort();
    assert_eq!(moved, sent, "node B's C-MOVE");
    eprintln!("two nodes: session end seen on B after {ended:?}, account removal after {refused:?}, new AE after {known:?}");
}
