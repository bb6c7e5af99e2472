//! The modality workflow over DIMSE against the real binary, driven by pynetdicom: MPPS with
//! its state rules, and Storage Commitment (committed only what is stored and intact).

use std::path::{Path, PathBuf};

use pacs_testkit::server::{pynetdicom, valid_fixtures, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn blob_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            blob_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn audit(server: &TestServer) -> String {
    String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned()
}

#[test]
fn mpps_follows_the_state_rules_of_ps3_4_annex_f() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let port = server.dicom_port.to_string();
    let uid = "1.2.826.0.1.3680043.10.543.1";
    let mpps = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--port", port.as_str()]);
        pynetdicom(&all)
    };
    let created = mpps(&[
        "mpps-create",
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=IN PROGRESS",
        "-k",
        "Modality=CT",
        "-k",
        "ScheduledStepAttributesSequence.AccessionNumber=ACC-77",
        "-k",
        "ScheduledStepAttributesSequence.StudyInstanceUID=1.2.826.0.1.3680043.10.543.2",
    ]);
    assert_eq!(created["status"], 0, "{created}");
    assert_eq!(created["affected_sop_instance_uid"], uid);
    // The same instance twice: duplicate.
    let again = mpps(&[
        "mpps-create",
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=IN PROGRESS",
    ]);
    assert_eq!(again["status"], 0x0111, "{again}");
    // Created in another state than IN PROGRESS, or without a state: refused.
    let completed = mpps(&["mpps-create", "-k", "PerformedProcedureStepStatus=COMPLETED"]);
    assert_eq!(completed["status"], 0x0106, "{completed}");
    let stateless = mpps(&["mpps-create", "-k", "Modality=CT"]);
    assert_eq!(stateless["status"], 0x0120, "{stateless}");
    // Without a UID, we choose one.
    let generated = mpps(&["mpps-create", "-k", "PerformedProcedureStepStatus=IN PROGRESS"]);
    assert_eq!(generated["status"], 0, "{generated}");
    assert!(generated["affected_sop_instance_uid"]
        .as_str()
        .unwrap()
        .starts_with("2.25."));

    // Updates while IN PROGRESS, then a final state, then nothing more.
    let bad = mpps(&[
        "mpps-set",
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=FINISHED",
    ]);
    assert_eq!(bad["status"], 0x0106, "{bad}");
    let update = mpps(&[
        "mpps-set",
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepDescription=CT thorax",
    ]);
    assert_eq!(update["status"], 0, "{update}");
    let done = mpps(&[
        "mpps-set",
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=COMPLETED",
    ]);
    assert_eq!(done["status"], 0, "{done}");
    let after = mpps(&[
        "mpps-set",
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=DISCONTINUED",
    ]);
    assert_eq!(after["status"], 0x0110, "{after}");
    let unknown = mpps(&[
        "mpps-set",
        "--uid",
        "1.2.3.404",
        "-k",
        "PerformedProcedureStepStatus=COMPLETED",
    ]);
    assert_eq!(unknown["status"], 0x0112, "{unknown}");

    let log = audit(&server);
    assert!(
        log.contains("mpps-create") && log.contains("status=COMPLETED"),
        "{log}"
    );
    assert!(log.contains("exam-completed"), "{log}");
}

#[test]
fn storage_commitment_commits_only_what_is_stored_and_intact() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let fixtures = valid_fixtures();
    let pick = |name: &str| fixtures.iter().find(|f| f["path"] == name).unwrap().clone();
    let ct = pick("valid/ct_explicit_le.dcm");
    let mr = pick("valid/mr_explicit_le.dcm");
    server.store_fixtures([&ct, &mr]);
    let reference = |f: &serde_json::Value| {
        format!(
            "{},{}",
            f["sop_class_uid"].as_str().unwrap(),
            f["sop_instance_uid"].as_str().unwrap()
        )
    };
    let port = server.dicom_port.to_string();
    let commit = |instances: &[String]| {
        let mut args = vec!["commit", "--port", port.as_str()];
        for i in instances {
            args.extend(["--instance", i.as_str()]);
        }
        pynetdicom(&args)
    };
    let uids = |report: &serde_json::Value, sequence: &str| -> Vec<String> {
        report["event_information"][sequence]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["ReferencedSOPInstanceUID"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };

    let unknown = format!("{},1.2.3.404", ct["sop_class_uid"].as_str().unwrap());
    let wrong_class = format!(
        "1.2.840.10008.5.1.4.1.1.4,{}",
        ct["sop_instance_uid"].as_str().unwrap()
    );
    let out = commit(&[reference(&ct), reference(&mr), unknown, wrong_class]);
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["reports"][0];
    assert_eq!(report["event_type_id"], 2, "{out}");
    assert_eq!(uids(report, "ReferencedSOPSequence").len(), 2, "{out}");
    let failed = report["event_information"]["FailedSOPSequence"]
        .as_array()
        .unwrap();
    let reasons: Vec<&str> = failed
        .iter()
        .map(|f| f["FailureReason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["274", "281"],
        "no such instance (0112), class conflict (0119): {out}"
    );

    // A stored object whose file no longer matches its checksum is not committed.
    let mut files = Vec::new();
    blob_files(&server.data_dir.join("blobs"), &mut files);
    let mr_uid = mr["sop_instance_uid"].as_str().unwrap();
    let mr_blob = files
        .iter()
        .find(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(mr_uid.len()).any(|w| w == mr_uid.as_bytes())
        })
        .expect("the MR's blob");
    let mut bytes = std::fs::read(mr_blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(mr_blob, bytes).unwrap();
    let out = commit(&[reference(&ct), reference(&mr)]);
    let report = &out["reports"][0];
    assert_eq!(
        uids(report, "ReferencedSOPSequence"),
        [ct["sop_instance_uid"].as_str().unwrap()]
    );
    assert_eq!(uids(report, "FailedSOPSequence"), [mr_uid]);
    assert_eq!(
        report["event_information"]["FailedSOPSequence"][0]["FailureReason"],
        "272"
    );

    let log = audit(&server);
    assert!(
        log.contains("commitment-request") && log.contains("commitment-report"),
        "{log}"
    );
}

/// A server that reports storage commitment on a new association to PEERPY at the port it
/// returns, a CT stored in it, and that CT as `CLASS,UID`.
fn reporting_on_new_associations() -> (TestServer, u16, String) {
    let listen = pacs_testkit::server::free_port();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!(
                "commitment_on_new_association = true\n[[peers]]\nae_title = \"PEERPY\"\nhost = \"127.0.0.1\"\nport = {listen}\n"
            ),
            ..ServerOptions::default()
        },
    );
    let ct = valid_fixtures()
        .into_iter()
        .find(|f| f["path"] == "valid/ct_explicit_le.dcm")
        .unwrap();
    server.store_fixtures([&ct]);
    let instance = format!(
        "{},{}",
        ct["sop_class_uid"].as_str().unwrap(),
        ct["sop_instance_uid"].as_str().unwrap()
    );
    (server, listen, instance)
}

#[test]
fn storage_commitment_reports_on_a_new_association_when_configured() {
    let (server, listen, instance) = reporting_on_new_associations();
    let port = server.dicom_port.to_string();
    let listen = listen.to_string();
    let out = pynetdicom(&[
        "commit",
        "--port",
        &port,
        "--listen-port",
        &listen,
        "--instance",
        &instance,
    ]);
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["reports"][0];
    assert_eq!(report["received_on"], "new", "{out}");
    assert_eq!(report["event_type_id"], 1, "{out}");
}

/// The requester's report listener is down when its report is ready: the report is kept as a
/// `commitment-report` job (listed by `openpacs jobs`) and sent again until the requester
/// takes it, with the same transaction and result; the job is then done.
#[test]
fn an_undelivered_commitment_report_is_sent_again_once_the_requester_listens() {
    let (server, listen, instance) = reporting_on_new_associations();
    let port = server.dicom_port.to_string();
    // Nobody listens on the requester's port yet.
    let out = pynetdicom(&["commit", "--port", &port, "--instance", &instance, "--wait", "1"]);
    assert_eq!(out["action_status"], 0, "{out}");
    assert_eq!(out["reports"].as_array().map(Vec::len), Some(0), "{out}");
    let transaction = out["transaction_uid"].as_str().unwrap().to_string();

    let jobs = || {
        let listed = server.cli(&["jobs", "list", "--kind", "commitment-report"]);
        assert!(
            listed.status.success(),
            "{}",
            pacs_testkit::server::describe(&listed)
        );
        String::from_utf8_lossy(&listed.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !jobs().contains(&transaction) {
        assert!(
            std::time::Instant::now() < deadline,
            "no job for the report:\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(jobs().contains("pending"), "{}", jobs());

    // The requester listens again: the report arrives, committed as before.
    let started = std::time::Instant::now();
    let listen = listen.to_string();
    let got = pynetdicom(&["commit-listen", "--listen-port", &listen, "--wait", "40"]);
    let report = &got["reports"][0];
    assert_eq!(report["received_on"], "new", "{got}\n{}", server.log());
    assert_eq!(report["event_type_id"], 1, "{got}");
    assert_eq!(
        report["event_information"]["TransactionUID"],
        transaction.as_str(),
        "{got}"
    );
    println!(
        "report delivered {:?} after the requester listened again",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !jobs().contains("done") {
        assert!(std::time::Instant::now() < deadline, "job not done:\n{}", jobs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    assert!(
        audit.contains("to be sent again (job") && audit.contains("on a new association (job"),
        "{audit}"
    );
}
