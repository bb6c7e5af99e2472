//! Re-sends of a known SOP Instance UID (issue 15 §7, 14 §6): a re-encoding of the same object
//! keeps the stored bytes whatever the policy; another object is not indexed under the default
//! `keep-first` policy (and the re-send is audited), and replaces the current one, audited as
//! a replacement with the previous hash, under `replace`.

use std::path::Path;

use pacs_testkit::server::{
    dataset_sha256, dcmtk, getscu_study, modality_image, pynetdicom, ServerOptions, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const STUDY: &str = "1.2.826.0.1.3680043.10.1507.1";
const SOP: &str = "1.2.826.0.1.3680043.10.1507.1.1";

fn store_as_is(server: &TestServer, file: &str) {
    let port = server.dicom_port.to_string();
    let stored = pynetdicom(&["store", "--port", &port, file]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
}

/// What C-GET (DCMTK getscu, bit-preserving) returns for the study: the data set's SHA-256.
fn retrieved_sha(server: &TestServer, into: &Path) -> String {
    let files = getscu_study(server.dicom_port, STUDY, into);
    assert_eq!(files.len(), 1, "{files:?}");
    dataset_sha256(&files[0])
}

/// Audit lines (event, outcome, detail) about the SOP Instance.
fn audit_of_sop(server: &TestServer) -> Vec<(String, String, String)> {
    let out = server.cli(&["audit"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect::<Vec<_>>())
        .filter(|f| f.len() > 7 && f[7].contains(SOP))
        .map(|f| (f[1].clone(), f[6].clone(), f[7].clone()))
        .collect()
}

#[test]
fn a_re_encoding_is_the_same_object_and_another_object_keeps_the_first_or_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = |name: &str, patient_name: &str| {
        modality_image(
            dir.path(),
            name,
            &[
                ("StudyInstanceUID", STUDY),
                ("SOPInstanceUID", SOP),
                ("PatientName", patient_name),
            ],
        )
    };
    let first = image("first.dcm", "MOREAU^ANNE");
    let other = image("other.dcm", "MOREAU^ANNA");
    let original = dataset_sha256(Path::new(&first));
    let mut server = TestServer::start(binary(), ServerOptions::default());
    store_as_is(&server, &first);

    // DCMTK storescu proposing implicit VR little endian only: it re-encodes the object on
    // the way. Same object: success, and the stored original is what comes back.
    let port = server.dicom_port.to_string();
    let out = dcmtk("storescu")
        .args(["-xi", "-aec", "OPENPACS", "127.0.0.1", &port, &first])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(retrieved_sha(&server, &dir.path().join("1")), original);
    let audit = audit_of_sop(&server);
    assert!(
        audit
            .iter()
            .any(|(e, o, d)| e == "store" && o == "duplicate" && d.contains("re-encoded")),
        "{audit:?}"
    );

    // Another object with the same SOP Instance UID, default policy: the first stays.
    store_as_is(&server, &other);
    assert_eq!(retrieved_sha(&server, &dir.path().join("2")), original);
    let audit = audit_of_sop(&server);
    assert!(
        audit
            .iter()
            .any(|(e, o, d)| e == "store" && o == "kept-first" && d.contains(&original)),
        "{audit:?}"
    );

    // Under `replace`: the newest becomes current, audited as a replacement naming the
    // previous data set's hash; the previous is kept (verify still checks it).
    let config = server.work_dir.join("openpacs.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\nduplicate_policy = \"replace\"\n");
    std::fs::write(&config, toml).unwrap();
    assert!(server.stop().success());
    server.restart();
    store_as_is(&server, &other);
    assert_eq!(
        retrieved_sha(&server, &dir.path().join("3")),
        dataset_sha256(Path::new(&other))
    );
    let audit = audit_of_sop(&server);
    assert!(
        audit
            .iter()
            .any(|(e, _, d)| e == "replace" && d.contains(&original)),
        "{audit:?}"
    );
    assert!(server.cli(&["verify"]).status.success());
}
