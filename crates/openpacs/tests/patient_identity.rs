//! Patient identity and the bytes sent out (issue 15 §1–2).
//!
//! Regressions: two images of one Patient ID, one without birth date and sex, made every
//! retrieval of the first carry the second's (26 bytes longer, not what was stored), with no
//! HL7 involved; and images with Issuer of Patient ID `HOSP` plus a RIS sending `ID^^^HOSP`
//! made two patients, so A08 and A40 never reached the images.

use std::path::{Path, PathBuf};
use std::process::Output;

use pacs_testkit::server::{
    dataset_sha256, dcmtk, free_port, modality_image, multipart_parts, part10_dataset_offset, pynetdicom,
    send_hl7, ServerOptions, StoreScp, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn msh(kind: &str, control: &str) -> String {
    format!("MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261207090000||{kind}|{control}|P|2.5|||AL|NE||UNICODE UTF-8")
}

fn ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {text}");
    text
}

fn storescu(server: &TestServer, files: &[&str]) {
    let port = server.dicom_port.to_string();
    let out = dcmtk("storescu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &port])
        .args(files)
        .output()
        .unwrap();
    ok(out, "storescu");
}

/// The one file C-GET (DCMTK getscu, writing what it receives bit for bit) returns for a study.
fn getscu(server: &TestServer, study: &str, into: &Path) -> PathBuf {
    let files = pacs_testkit::server::getscu_study(server.dicom_port, study, into);
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// `dcmdump` of one attribute: its value as DCMTK prints it (`[...]`, or `(no value available)`).
fn dumped(file: &Path, keyword: &str) -> String {
    let out = dcmtk("dcmdump").args(["+P", keyword]).arg(file).output().unwrap();
    ok(out, "dcmdump").trim().to_string()
}

/// DCMTK's dump of a file's data set (not its file meta group), one element a line.
fn dataset_dump(file: &Path) -> Vec<String> {
    let out = dcmtk("dcmdump").arg(file).output().unwrap();
    ok(out, "dcmdump")
        .lines()
        .filter(|l| l.starts_with('(') && !l.starts_with("(0002,"))
        .map(String::from)
        .collect()
}

fn sha_of_part10(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let offset = part10_dataset_offset(bytes).expect("Part 10");
    hex::encode(Sha256::digest(&bytes[offset..]))
}

#[test]
fn originals_are_not_altered_on_retrieval_when_images_of_a_patient_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let (study_a, study_b) = ("1.2.826.0.1.3680043.10.1501.1", "1.2.826.0.1.3680043.10.1501.2");
    let a = modality_image(
        dir.path(),
        "a.dcm",
        &[
            ("PatientID", "PX15"),
            ("PatientName", "MARTIN^ALICE"),
            ("PatientBirthDate", ""),
            ("PatientSex", ""),
            ("StudyInstanceUID", study_a),
        ],
    );
    let b = modality_image(
        dir.path(),
        "b.dcm",
        &[
            ("PatientID", "PX15"),
            ("PatientName", "MARTIN^ALICE"),
            ("PatientBirthDate", "20000101"),
            ("PatientSex", "O"),
            ("StudyInstanceUID", study_b),
        ],
    );
    let expected = dataset_sha256(Path::new(&a));
    let dest = free_port();
    let scp = StoreScp::start("STORESCP", dest, &["+xa"]);
    let server = TestServer::start(binary(), ServerOptions::with_peer("STORESCP", dest));
    // pynetdicom sends a file's data set as it is (DCMTK's storescu would re-encode it). The
    // image with values first: the patient row then has them, and the other disagrees.
    let port = server.dicom_port.to_string();
    let stored = pynetdicom(&["store", "--port", &port, &b, &a]);
    for result in stored["results"].as_array().unwrap() {
        assert_eq!(result["status"], 0, "{stored}");
    }

    // C-GET.
    let got = getscu(&server, study_a, &dir.path().join("get"));
    assert_eq!(dataset_sha256(&got), expected, "C-GET changed the original");
    // C-MOVE to DCMTK storescp.
    let out = dcmtk("movescu")
        .args([
            "-S",
            "-aec",
            "OPENPACS",
            "-aem",
            "STORESCP",
            "-k",
            "QueryRetrieveLevel=STUDY",
        ])
        .args(["-k", &format!("StudyInstanceUID={study_a}"), "127.0.0.1", &port])
        .output()
        .unwrap();
    ok(out, "movescu");
    let moved = scp.received();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(dataset_sha256(&moved[0]), expected, "C-MOVE changed the original");
    // WADO-RS in the stored syntax.
    let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
    let (status, head, body) =
        server.http_bytes(&format!("/dicom-web/studies/{study_a}"), &[("Accept", accept)]);
    assert_eq!(status, 200, "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-type: ")
                .or_else(|| l.strip_prefix("Content-Type: "))
        })
        .unwrap();
    let parts = multipart_parts(content_type, &body);
    assert_eq!(parts.len(), 1);
    assert_eq!(
        sha_of_part10(&parts[0].1),
        expected,
        "WADO-RS changed the original"
    );
    // WADO-URI.
    let sop = dumped(Path::new(&a), "SOPInstanceUID");
    let sop = sop.split(['[', ']']).nth(1).unwrap().to_string();
    let series = dumped(Path::new(&a), "SeriesInstanceUID");
    let series = series.split(['[', ']']).nth(1).unwrap().to_string();
    let (status, _, body) = server.http_bytes(
        &format!(
            "/wado?requestType=WADO&studyUID={study_a}&seriesUID={series}&objectUID={sop}&contentType=application/dicom"
        ),
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(sha_of_part10(&body), expected, "WADO-URI changed the original");
    // The study as a ZIP, unpacked by Python's zipfile.
    let (status, _, body) = server.http_bytes(&format!("/api/studies/{study_a}/archive"), &[]);
    assert_eq!(status, 200);
    let zip = dir.path().join("study.zip");
    std::fs::write(&zip, body).unwrap();
    let unzipped = dir.path().join("unzipped");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
        ])
        .arg(&zip)
        .arg(&unzipped)
        .output()
        .unwrap();
    ok(out, "unzip");
    let files: Vec<PathBuf> = walk(&unzipped);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        dataset_sha256(&files[0]),
        expected,
        "the ZIP changed the original"
    );

    // Now the RIS renames the patient (A08 without birth date or sex): the name reaches the
    // first image, and only the name — not the other image's birth date and sex.
    let acks = send_hl7(
        server.hl7_port,
        dir.path(),
        &[&format!(
            "{}\nEVN|A08\nPID|1||PX15||MARTIN^ALICIA",
            msh("ADT^A08^ADT_A01", "R1")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let renamed = getscu(&server, study_a, &dir.path().join("get-renamed"));
    assert!(dumped(&renamed, "PatientName").contains("[MARTIN^ALICIA]"));
    // Spliced into the stored bytes: every other element reads as stored (DCMTK's dump of
    // the data sets differs in the name alone), and every byte after the patient group is
    // the original's.
    let differing: Vec<(String, String)> = dataset_dump(Path::new(&a))
        .into_iter()
        .zip(dataset_dump(&renamed))
        .filter(|(before, after)| before != after)
        .collect();
    assert_eq!(differing.len(), 1, "{differing:#?}");
    assert!(differing[0].1.contains("PatientName"), "{differing:#?}");
    let (before, after) = (std::fs::read(&a).unwrap(), std::fs::read(&renamed).unwrap());
    let tail = before.len()
        - before
            .windows(4)
            .position(|w| w == [0x20, 0x00, 0x0D, 0x00])
            .unwrap();
    assert_eq!(before[before.len() - tail..], after[after.len() - tail..]);
    assert!(
        !dumped(&renamed, "PatientBirthDate").contains("20000101"),
        "{}",
        dumped(&renamed, "PatientBirthDate")
    );
    assert!(!dumped(&renamed, "PatientSex").contains("[O]"));
    let renamed_b = getscu(&server, study_b, &dir.path().join("get-renamed-b"));
    assert!(dumped(&renamed_b, "PatientName").contains("[MARTIN^ALICIA]"));
    assert!(dumped(&renamed_b, "PatientBirthDate").contains("[20000101]"));
    // What is stored never changed.
    assert!(server.cli(&["verify"]).status.success());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// findscu's answer text for patient `id` at study level, with the name and study UID.
fn studies_of(server: &TestServer, id: &str, issuer: Option<&str>) -> String {
    let port = server.dicom_port.to_string();
    let mut cmd = dcmtk("findscu");
    cmd.args(["-S", "-aec", "OPENPACS", "-k", "QueryRetrieveLevel=STUDY"])
        .args([
            "-k",
            &format!("PatientID={id}"),
            "-k",
            "PatientName",
            "-k",
            "StudyInstanceUID",
        ]);
    if let Some(issuer) = issuer {
        cmd.args(["-k", &format!("IssuerOfPatientID={issuer}")]);
    }
    ok(cmd.args(["127.0.0.1", &port]).output().unwrap(), "findscu")
}

#[test]
fn one_patient_when_images_and_the_ris_both_name_the_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(binary(), ServerOptions::default());
    let (study_1, study_2) = ("1.2.826.0.1.3680043.10.1502.1", "1.2.826.0.1.3680043.10.1502.2");
    // Images of two patients copied their issuer from the worklist; the RIS registered them
    // with the same assigning authority in PID-3.4.
    let one = modality_image(
        dir.path(),
        "one.dcm",
        &[
            ("PatientID", "IPP100"),
            ("IssuerOfPatientID", "HOSP"),
            ("PatientName", "DURAND^ELODIE"),
            ("StudyInstanceUID", study_1),
        ],
    );
    let two = modality_image(
        dir.path(),
        "two.dcm",
        &[
            ("PatientID", "IPP101"),
            ("IssuerOfPatientID", "HOSP"),
            ("PatientName", "DURAND^E"),
            ("StudyInstanceUID", study_2),
        ],
    );
    storescu(&server, &[&one, &two]);
    let acks = send_hl7(
        server.hl7_port,
        dir.path(),
        &[
            &format!(
                "{}\nEVN|A08\nPID|1||IPP100^^^HOSP^PI||DURAND^ELODIE^MARIE||19800101|F",
                msh("ADT^A08^ADT_A01", "I1")
            ),
            &format!(
                "{}\nEVN|A40\nPID|1||IPP100^^^HOSP^PI||DURAND^ELODIE^MARIE\nMRG|IPP101^^^HOSP^PI",
                msh("ADT^A40^ADT_A39", "I2")
            ),
        ],
    );
    assert!(acks.iter().all(|a| a["code"] == "AA"), "{acks:?}");
    let text = studies_of(&server, "IPP100", Some("HOSP"));
    assert!(
        text.contains(study_1) && text.contains(study_2),
        "A40 did not reach the images: {text}"
    );
    assert!(
        text.contains("DURAND^ELODIE^MARIE"),
        "A08 did not reach the images: {text}"
    );
    assert!(!studies_of(&server, "IPP101", None).contains(study_2));
    let merged = getscu(&server, study_2, &dir.path().join("merged"));
    assert!(dumped(&merged, "PatientID").contains("[IPP100]"));
}

#[test]
fn images_without_issuer_join_the_tenants_identifier_domain_whatever_came_first() {
    let dir = tempfile::tempdir().unwrap();
    let study_1 = "1.2.826.0.1.3680043.10.1503.1";
    let study_2 = "1.2.826.0.1.3680043.10.1503.2";
    let image = |name: &str, study: &str| {
        modality_image(
            dir.path(),
            name,
            &[
                ("PatientID", "IPP200"),
                ("PatientName", "PETIT^JEAN"),
                ("StudyInstanceUID", study),
            ],
        )
    };
    // Before the domain is configured: an image without issuer, and the RIS with HOSP —
    // two patients, as it used to be.
    let mut server = TestServer::start(binary(), ServerOptions::default());
    storescu(&server, &[&image("early.dcm", study_1)]);
    let register = format!(
        "{}\nEVN|A04\nPID|1||IPP200^^^HOSP^PI||PETIT^JEAN^PAUL||19600101|M",
        msh("ADT^A04^ADT_A01", "D1")
    );
    let acks = send_hl7(server.hl7_port, dir.path(), &[&register]);
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    assert!(!studies_of(&server, "IPP200", Some("HOSP")).contains(study_1));

    // The operator names the tenant's domain; at start-up the split patient is merged back.
    let config = server.work_dir.join("openpacs.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str("\nissuer_of_patient_id = \"HOSP\"\n");
    std::fs::write(&config, toml).unwrap();
    assert!(server.stop().success());
    server.restart();
    let text = studies_of(&server, "IPP200", Some("HOSP"));
    assert!(
        text.contains(study_1) && text.contains("PETIT^JEAN^PAUL"),
        "{text}"
    );
    // A later image without issuer and a later A08 reach the same patient.
    storescu(&server, &[&image("late.dcm", study_2)]);
    let update = format!(
        "{}\nEVN|A08\nPID|1||IPP200||PETIT^JEAN^PIERRE||19600101|M",
        msh("ADT^A08^ADT_A01", "D2")
    );
    let acks = send_hl7(server.hl7_port, dir.path(), &[&update]);
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let text = studies_of(&server, "IPP200", None);
    assert!(text.contains(study_1) && text.contains(study_2), "{text}");
    assert!(
        text.contains("PETIT^JEAN^PIERRE") && !text.contains("PETIT^JEAN^PAUL"),
        "{text}"
    );
    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    assert!(audit.lines().any(|l| l.contains("patient-domain")), "{audit}");
}
