//! The index on PostgreSQL, used as a hospital would: a modality stores over DICOM, a
//! workstation finds and retrieves, a viewer reads over DICOMweb, the RIS renames the patient
//! over HL7, and everything is still there after a restart. Nothing of the index is in the
//! data directory; the rows are in PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Output;

use pacs_testkit::postgres::{fresh_database, psql_on};
use pacs_testkit::server::{dcmtk, repo_root, send_hl7, ServerOptions, TestServer};

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

fn findscu(server: &TestServer, keys: &[&str]) -> String {
    let mut cmd = dcmtk("findscu");
    cmd.args(["-S", "-v", "-aec", "OPENPACS"]);
    for k in keys {
        cmd.args(["-k", k]);
    }
    let out = cmd
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

const STUDY: &str = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.1";

#[test]
fn a_hospital_day_on_a_postgresql_index_survives_a_restart() {
    let url = fresh_database("day");
    let mut server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!("index_url = {url:?}\n"),
            ..ServerOptions::default()
        },
    );
    let port = server.dicom_port.to_string();

    // A modality stores two CT images and an MR.
    let out = dcmtk("storescu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &port])
        .arg(fixture("ct_series_a_1_explicit_le.dcm"))
        .arg(fixture("ct_series_a_2_explicit_le.dcm"))
        .arg(fixture("mr_explicit_le.dcm"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !server.data_dir.join("index.sqlite").exists(),
        "the index must not be the embedded file"
    );
    assert_eq!(
        psql_on(&url, "SELECT count(*) FROM instance WHERE superseded_at IS NULL").trim(),
        "3"
    );

    // A workstation finds the CT study with its counts and modalities.
    let found = findscu(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={STUDY}"),
            "PatientName",
            "NumberOfStudyRelatedInstances",
            "ModalitiesInStudy",
        ],
    );
    assert!(found.contains("(0020,1208) IS [2 ]"), "{found}");
    assert!(found.contains("(0008,0061) CS [CT]"), "{found}");

    // …and retrieves it with C-GET: two instances.
    let get_dir = tempfile::tempdir().unwrap();
    let out = dcmtk("getscu")
        .args(["-S", "-aec", "OPENPACS", "-od"])
        .arg(get_dir.path())
        .args([
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={STUDY}"),
            "127.0.0.1",
            &port,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(get_dir.path()).unwrap().count(),
        2,
        "{}",
        text(&out)
    );

    // A viewer lists the study over QIDO-RS.
    let (status, _, body) = server.http(&format!("/dicom-web/studies?StudyInstanceUID={STUDY}"));
    assert_eq!(status, 200, "{body}");
    let studies: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(studies[0]["00201208"]["Value"][0], 2, "{body}");
    let patient_id = studies[0]["00100020"]["Value"][0].as_str().unwrap().to_string();

    // The RIS renames the patient (ADT^A08): the workstation sees the new name.
    let dir = tempfile::tempdir().unwrap();
    let acks = send_hl7(
        server.hl7_port,
        dir.path(),
        &[&format!(
            "MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261207090000||ADT^A08^ADT_A01|C1|P|2.5|||AL|NE||UNICODE UTF-8\n\
             EVN|A08|20261207090000\nPID|1||{patient_id}||RENAMED^BY^RIS"
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let renamed = findscu(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={STUDY}"),
            "PatientName",
        ],
    );
    assert!(renamed.contains("RENAMED^BY^RIS"), "{renamed}");

    // A restart keeps everything: the index lives in PostgreSQL.
    assert!(server.stop().success(), "{}", server.log());
    server.restart();
    let after = findscu(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyInstanceUID",
            "PatientName",
            "NumberOfStudyRelatedInstances",
        ],
    );
    assert_eq!(
        after.matches("Find Response").count(),
        3,
        "two studies and the final response: {after}"
    );
    assert!(after.contains("RENAMED^BY^RIS"), "{after}");
    assert!(
        server.log().contains("PostgreSQL index schema migrated"),
        "{}",
        server.log()
    );
}

#[test]
fn an_unreachable_postgresql_index_stops_the_server_with_a_clear_error_and_no_password() {
    // Nothing listens on port 1.
    let url = "postgres://pacs:hunter2@127.0.0.1:1/pacs";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("openpacs.toml"),
        format!("data_dir = \"data\"\ndicom_port = 0\nindex_url = {url:?}\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{all}");
    assert!(all.to_lowercase().contains("index"), "{all}");
    assert!(
        !all.contains("hunter2"),
        "the password must not be printed: {all}"
    );
}

/// An installation that started on the embedded index moves to PostgreSQL: images, accounts
/// and audit log come along, and new work continues after the copied keys.
#[test]
fn migrate_index_moves_an_embedded_installation_to_postgresql() {
    let url = fresh_database("migrate");
    let mut server = TestServer::start(
        binary(),
        ServerOptions {
            users: vec![("ana".into(), "admin".into(), "correct horse battery".into())],
            ..ServerOptions::default()
        },
    );
    let port = server.dicom_port.to_string();
    let store = |files: &[&str]| {
        let out = dcmtk("storescu")
            .args(["-aec", "OPENPACS", "127.0.0.1", &port])
            .args(files.iter().map(|f| fixture(f)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    store(&["ct_series_a_1_explicit_le.dcm", "ct_series_a_2_explicit_le.dcm"]);
    assert!(server.stop().success(), "{}", server.log());

    let out = server.cli(&["migrate-index", "--to", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("instance\t2"), "{report}");
    assert!(report.contains("user_account\t1"), "{report}");
    let audit_rows: u64 = psql_on(&url, "SELECT count(*) FROM audit")
        .trim()
        .parse()
        .unwrap();
    assert!(audit_rows >= 2, "the audit log came along: {audit_rows} rows");

    // A second run refuses: the database now holds an index.
    let again = server.cli(&["migrate-index", "--to", &url]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("not empty"), "{}", text(&again));

    // The server now runs on PostgreSQL: the study, the account, and new images.
    let config = server.work_dir.join("openpacs.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!("index_url = {url:?}\n"));
    std::fs::write(&config, toml).unwrap();
    std::fs::remove_file(server.data_dir.join("index.sqlite")).unwrap();
    server.restart();
    store(&["mr_explicit_le.dcm"]);
    assert_eq!(
        psql_on(&url, "SELECT count(*) FROM instance").trim(),
        "3",
        "the new image got a key after the copied ones"
    );
    let found = findscu(
        &server,
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={STUDY}"),
            "NumberOfStudyRelatedInstances",
        ],
    );
    assert!(found.contains("(0020,1208) IS [2 ]"), "{found}");
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ana:correct horse battery")
    );
    let (status, _, body) =
        server.http_request("GET", "/dicom-web/studies", &[("Authorization", &basic)], &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let studies: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(studies.as_array().map(Vec::len), Some(2), "{studies}");
}
