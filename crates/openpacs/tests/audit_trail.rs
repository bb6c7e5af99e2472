//! The audit trail answers "who saw this patient" and cannot be flooded.
//!
//! Regressions: retrievals were audited without the Patient ID (filtering by patient missed
//! every image view); the viewer wrote one line per frame; one STOW-RS request wrote one line
//! per part (100,000 for 100,000 parts); a failed log-in stored a 500 KB user name.

use std::path::Path;

use pacs_testkit::server::{dcmtk, dicomweb_client, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// `openpacs audit`: time, event, actor, peer, patient, study, outcome, detail.
fn audit(server: &TestServer) -> Vec<Vec<String>> {
    let out = server.cli(&["audit"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

#[test]
fn every_kind_of_retrieval_names_the_patient_and_a_viewing_session_is_one_line() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let spec = pacs_testkit::StudySpec::ct(1506, 3);
    let files = pacs_testkit::write_study(&spec, dir.path()).unwrap();
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let study = spec.study_instance_uid();
    let series = spec.series_instance_uid(0);
    let patient = spec.resolved_patient().patient_id;

    // One STOW-RS request of three parts (dicomweb-client): one audit line.
    let url = server.dicomweb_url();
    let mut args = vec!["store", "instances"];
    args.extend(paths.iter().map(String::as_str));
    dicomweb_client(&url, &args);

    // C-GET (DCMTK), WADO-RS (dicomweb-client), WADO-URI, the ZIP, then a viewer's frames
    // and renderings: 30 requests.
    let got = dir.path().join("got");
    std::fs::create_dir_all(&got).unwrap();
    let port = server.dicom_port.to_string();
    let out = dcmtk("getscu")
        .args(["-S", "-aec", "OPENPACS", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}"), "-od"])
        .arg(&got)
        .args(["127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = dir.path().join("wado");
    std::fs::create_dir_all(&saved).unwrap();
    let saved = saved.display().to_string();
    dicomweb_client(
        &url,
        &[
            "retrieve",
            "studies",
            "--study",
            &study,
            "full",
            "--save",
            "--output-dir",
            &saved,
        ],
    );
    let sop = spec.sop_instance_uid(0, 0);
    let (status, _, _) = server.http(&format!(
        "/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&contentType=application/dicom"
    ));
    assert_eq!(status, 200);
    let (status, _, _) = server.http(&format!("/api/studies/{study}/archive"));
    assert_eq!(status, 200);
    for round in 0..10 {
        for i in 0..3 {
            let sop = spec.sop_instance_uid(0, i);
            let base = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
            let path = if round % 2 == 0 {
                format!("{base}/frames/1")
            } else {
                format!("{base}/rendered")
            };
            let (status, _, _) = server.http_bytes(&path, &[("Accept", "*/*")]);
            assert_eq!(status, 200, "{path}");
        }
    }

    let lines = audit(&server);
    let of_patient: Vec<&Vec<String>> = lines.iter().filter(|l| l[4] == patient).collect();
    let events: Vec<&str> = of_patient.iter().map(|l| l[1].as_str()).collect();
    for kind in [
        "store",
        "retrieve-get",
        "retrieve-wado",
        "retrieve-wado-uri",
        "retrieve-zip",
        "retrieve-frames",
        "retrieve-rendered",
    ] {
        assert!(
            events.contains(&kind),
            "no {kind} line names patient {patient}: {events:?}"
        );
    }
    let count = |kind: &str| events.iter().filter(|e| **e == kind).count();
    assert_eq!(count("store"), 1, "one STOW-RS request, one line: {events:?}");
    let store = of_patient.iter().find(|l| l[1] == "store").unwrap();
    assert!(store[7].contains("parts=3 stored=3"), "{store:?}");
    // 15 frame and 15 rendering requests: one opening line each until the session ends.
    assert_eq!(count("retrieve-frames"), 1, "{events:?}");
    assert_eq!(count("retrieve-rendered"), 1, "{events:?}");
}

#[test]
fn audit_fields_are_bounded_whatever_a_request_sends() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users: vec![("admin1".into(), "admin".into(), "admin-secret-pw".into())],
            ..ServerOptions::default()
        },
    );
    let name = "x".repeat(500_000);
    let body = serde_json::json!({ "username": name, "password": "wrong" }).to_string();
    let (status, _, _) = server.http_request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert!(status == 401 || status == 400 || status == 413, "{status}");
    let out = server.cli(&["audit"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8 * 1024, "an audit line of {longest} bytes");
    if status == 401 {
        assert!(text.contains("bytes cut"), "the cut is marked: {text}");
    }
}
