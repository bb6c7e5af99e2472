//! The RIS workflow end to end against the real binary, with third-party peers only:
//! python-hl7 (`hl7.client`, through tests/interop/hl7_peer.py) as the RIS sending ADT, ORM and
//! ORU, and hl7apy's MLLP server as the RIS receiving the end-of-exam notice; pynetdicom as the modality
//! (worklist, images, MPPS); DCMTK `findscu -W` for the worklist; dicomweb-client and plain
//! HTTP for what the archive then serves.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacs_testkit::server::{
    dcmtk, dicomweb_client, free_port, pynetdicom, repo_root, ServerOptions, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn hl7_peer() -> Command {
    let mut c = Command::new("python3");
    c.arg(repo_root().join("tests/interop/hl7_peer.py"));
    c
}

fn send_hl7(server: &TestServer, dir: &Path, messages: &[&str]) -> Vec<serde_json::Value> {
    pacs_testkit::server::send_hl7(server.hl7_port, dir, messages)
}

/// The RIS stand-in (hl7apy's MLLPServer): saves what it receives, answers AA.
struct Ris {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Ris {
    fn start(out: PathBuf) -> Ris {
        let port = free_port();
        let mut child = hl7_peer()
            .args(["ris", "--port", &port.to_string(), "--out"])
            .arg(&out)
            .args(["--max-seconds", "300"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening"), "{line}");
        Ris { child, port, out }
    }

    fn received(&self, wait_for: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&self.out)
                .map(|d| {
                    d.map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            if files.len() >= wait_for || Instant::now() > deadline {
                return files
                    .iter()
                    .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).replace('\r', "\n"))
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Ris {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A modality's image: a fixture with this patient, accession and new UIDs (pydicom).
fn image(
    dir: &Path,
    name: &str,
    patient_id: &str,
    patient_name: &str,
    accession: &str,
    study_uid: &str,
) -> String {
    pacs_testkit::server::modality_image(
        dir,
        name,
        &[
            ("PatientID", patient_id),
            ("PatientName", patient_name),
            ("AccessionNumber", accession),
            ("StudyInstanceUID", study_uid),
        ],
    )
}

fn msh(kind: &str, control: &str) -> String {
    format!("MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261128090000||{kind}|{control}|P|2.5|||AL|NE||UNICODE UTF-8")
}

#[test]
fn ris_workflow_from_registration_to_report() {
    let dir = tempfile::tempdir().unwrap();
    let ris = Ris::start(dir.path().join("ris"));
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!(
                "ris_address = \"127.0.0.1:{}\"\nstudy_stable_secs = 2\n",
                ris.port
            ),
            ..ServerOptions::default()
        },
    );
    let study = "1.2.826.0.1.3680043.10.543.100";

    // ADT^A01 registers the patient; ORM^O01 NW schedules a CT.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[
            &format!(
                "{}\nEVN|A01|20261128090000\nPID|1||P100^^^HOSP^PI||MARTIN^AMÉLIE||19800315|F",
                msh("ADT^A01^ADT_A01", "C1")
            ),
            &format!(
                "{}\nPID|1||P100^^^HOSP^PI||MARTIN^AMÉLIE||19800315|F\n\
                 ORC|NW|PO100|FO100||SC||1^^^20261128100000^^R||20261128090000|||1234^DURAND^PAUL\n\
                 OBR|1|PO100|FO100|CTTHORAX^CT thorax^L||||||||||||||ACC100|RP100|SPS100|CT_1|||CT\n\
                 ZDS|{study}^^Application^DICOM",
                msh("ORM^O01^ORM_O01", "C2")
            ),
        ],
    );
    assert!(acks.iter().all(|a| a["code"] == "AA"), "{acks:?}");

    // The modality's worklist (pynetdicom, then DCMTK findscu -W).
    let port = server.dicom_port.to_string();
    let worklist = pynetdicom(&[
        "mwl-find",
        "--port",
        &port,
        "-k",
        "PatientName=",
        "-k",
        "PatientID=",
        "-k",
        "AccessionNumber=",
        "-k",
        "StudyInstanceUID=",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledStationAETitle=CT_1",
        "-k",
        "ScheduledProcedureStepSequence.Modality=CT",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate=20261128",
    ]);
    assert_eq!(worklist["status"], 0, "{worklist}");
    let item = &worklist["matches"][0];
    assert_eq!(worklist["matches"].as_array().unwrap().len(), 1, "{worklist}");
    assert_eq!(item["AccessionNumber"], "ACC100");
    assert_eq!(item["PatientName"], "MARTIN^AMÉLIE");
    assert_eq!(item["StudyInstanceUID"], study);
    let other_station = pynetdicom(&[
        "mwl-find",
        "--port",
        &port,
        "-k",
        "ScheduledProcedureStepSequence.ScheduledStationAETitle=MR_1",
    ]);
    assert_eq!(
        other_station["matches"].as_array().map(Vec::len),
        Some(0),
        "{other_station}"
    );
    let findscu = dcmtk("findscu")
        .args([
            "-W",
            "-aec",
            "OPENPACS",
            "-k",
            "AccessionNumber",
            "-k",
            "PatientName",
        ])
        .args([
            "-k",
            "ScheduledProcedureStepSequence[0].Modality=CT",
            "127.0.0.1",
            &port,
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&findscu.stderr).into_owned() + &String::from_utf8_lossy(&findscu.stdout);
    assert!(text.contains("ACC100"), "{text}");

    // The modality sends an image with the worklist's accession number (and a typo in the
    // patient ID), then completes MPPS.
    let file = image(dir.path(), "ct.dcm", "P100X", "MARTIN^A", "ACC100", study);
    let stored = pynetdicom(&["store", "--port", &port, &file]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    let mpps_uid = "1.2.826.0.1.3680043.10.543.101";
    let accession_key = "ScheduledStepAttributesSequence.AccessionNumber=ACC100";
    let study_key = format!("ScheduledStepAttributesSequence.StudyInstanceUID={study}");
    let created = pynetdicom(&[
        "mpps-create",
        "--port",
        &port,
        "--uid",
        mpps_uid,
        "-k",
        "PerformedProcedureStepStatus=IN PROGRESS",
        "-k",
        accession_key,
        "-k",
        &study_key,
        "-k",
        "PatientID=P100",
    ]);
    assert_eq!(created["status"], 0, "{created}");
    // In progress: still on the worklist; completed: gone, and the RIS is told.
    let done = pynetdicom(&[
        "mpps-set",
        "--port",
        &port,
        "--uid",
        mpps_uid,
        "-k",
        "PerformedProcedureStepStatus=COMPLETED",
    ]);
    assert_eq!(done["status"], 0, "{done}");
    let after = pynetdicom(&["mwl-find", "--port", &port, "-k", "AccessionNumber=ACC100"]);
    assert_eq!(after["matches"].as_array().map(Vec::len), Some(0), "{after}");
    let received = ris.received(1);
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].contains("ORM^O01"), "{}", received[0]);
    assert!(
        received[0].contains("ORC|SC") && received[0].contains("|CM"),
        "{}",
        received[0]
    );
    assert!(received[0].contains("ACC100"), "{}", received[0]);

    // Reconciled: the study is the order's patient's, with the RIS's demographics, in C-FIND,
    // QIDO-RS and the retrieved object itself (the stored one unchanged).
    let url = server.dicomweb_url();
    let found = dicomweb_client(&url, &["search", "studies", "--filter", "AccessionNumber=ACC100"]);
    assert_eq!(found[0]["00100020"]["Value"][0], "P100", "{found}");
    assert_eq!(
        found[0]["00100010"]["Value"][0]["Alphabetic"], "MARTIN^AMÉLIE",
        "{found}"
    );
    let retrieved = dir.path().join("retrieved");
    std::fs::create_dir_all(&retrieved).unwrap();
    let mut args = vec![
        "retrieve",
        "studies",
        "--study",
        study,
        "full",
        "--save",
        "--output-dir",
    ];
    let out_dir = retrieved.display().to_string();
    args.push(&out_dir);
    dicomweb_client(&url, &args);
    let file = std::fs::read_dir(&retrieved)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let dumped = dcmtk("dcmdump").arg(&file).output().unwrap();
    let dumped = String::from_utf8_lossy(&dumped.stdout);
    assert!(dumped.contains("[P100]"), "{dumped}");
    assert!(
        dumped.contains("MARTIN^AMÉLIE") || dumped.contains("MARTIN^AM"),
        "{dumped}"
    );

    // ORU^R01 brings the report; the REST API serves it with the study.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&format!(
            "{}\nPID|1||P100^^^HOSP^PI||MARTIN^AMÉLIE\n\
             OBR|1|PO100|FO100|CTTHORAX^CT thorax^L|||20261128100000|||||||||||ACC100||||||CT|F\n\
             OBX|1|TX|REPORT^Compte rendu^L|1|Pas d'anomalie.||||||F\n\
             OBX|2|TX|REPORT^Compte rendu^L|1|Conclusion : examen normal.||||||F",
            msh("ORU^R01^ORU_R01", "C3")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let (status, _, body) = server.http(&format!("/api/studies/{study}/reports"));
    assert_eq!(status, 200, "{body}");
    let reports: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reports[0]["status"], "F");
    assert_eq!(reports[0]["text"], "Pas d'anomalie.\nConclusion : examen normal.");

    // Semantic errors: AE with ERR; unknown types: AR; the server keeps serving.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[
            &format!("{}\nPID|1||NOBODY||X^Y", msh("ADT^A08^ADT_A01", "C4")),
            &format!("{}\nPID|1||||X^Y", msh("ADT^A01^ADT_A01", "C5")),
            &format!("{}\nSCH|1", msh("SIU^S12^SIU_S12", "C6")),
        ],
    );
    let codes: Vec<&str> = acks
        .iter()
        .map(|a| a["code"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(codes, ["AE", "AE", "AR"], "{acks:?}");
    assert!(acks[0]["ack"].as_str().unwrap().contains("ERR|"), "{acks:?}");

    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    for needle in [
        "hl7-receive",
        "worklist-query",
        "mpps-set",
        "hl7-send",
        "exam-completed",
    ] {
        assert!(audit.contains(needle), "{needle} missing from the audit log");
    }
}

#[test]
fn adt_merge_and_update_reach_queries_and_retrieved_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(binary(), ServerOptions::default());
    let port = server.dicom_port.to_string();
    let first = "1.2.826.0.1.3680043.10.543.200";
    let second = "1.2.826.0.1.3680043.10.543.201";
    for (name, id, study) in [("a.dcm", "P200", first), ("b.dcm", "P201", second)] {
        let file = image(dir.path(), name, id, "BERNARD^LUC", "", study);
        let stored = pynetdicom(&["store", "--port", &port, &file]);
        assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    }
    // A08 corrects the name; A40 merges P201 into P200.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[
            &format!(
                "{}\nEVN|A08\nPID|1||P200||BERNARD^LUCIEN||19700101|M",
                msh("ADT^A08^ADT_A01", "M1")
            ),
            &format!(
                "{}\nEVN|A40\nPID|1||P200||BERNARD^LUCIEN\nMRG|P201",
                msh("ADT^A40^ADT_A39", "M2")
            ),
        ],
    );
    assert!(acks.iter().all(|a| a["code"] == "AA"), "{acks:?}");

    // C-FIND (DCMTK) sees both studies under P200 with the corrected name.
    let out = dcmtk("findscu")
        .args([
            "-S",
            "-aec",
            "OPENPACS",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=P200",
        ])
        .args(["-k", "PatientName", "-k", "StudyInstanceUID", "127.0.0.1", &port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(first) && text.contains(second), "{text}");
    assert!(
        text.contains("BERNARD^LUCIEN") && !text.contains("P201"),
        "{text}"
    );
    // QIDO-RS too.
    let url = server.dicomweb_url();
    let found = dicomweb_client(&url, &["search", "studies", "--filter", "PatientID=P201"]);
    assert_eq!(found.as_array().map(Vec::len), Some(0), "{found}");
    // The retrieved object of the merged patient carries the survivor's identity; the
    // metadata too.
    let (status, _, body) = server.http(&format!("/dicom-web/studies/{second}/metadata"));
    assert_eq!(status, 200);
    assert!(
        body.contains("\"P200\"") && body.contains("BERNARD^LUCIEN"),
        "{body}"
    );
    let out = dir.path().join("got");
    std::fs::create_dir_all(&out).unwrap();
    let got = dcmtk("getscu")
        .args(["-S", "-aec", "OPENPACS", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={second}"), "-od"])
        .arg(&out)
        .args(["127.0.0.1", &port])
        .output()
        .unwrap();
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let file = std::fs::read_dir(&out).unwrap().next().unwrap().unwrap().path();
    let dumped = dcmtk("dcmdump").arg(&file).output().unwrap();
    let dumped = String::from_utf8_lossy(&dumped.stdout);
    assert!(
        dumped.contains("[P200]") && dumped.contains("[BERNARD^LUCIEN]"),
        "{dumped}"
    );
    // The stored original is untouched.
    assert!(server.cli(&["verify"]).status.success());

    // An administrator undoes the merge: P201 has their study back.
    let (_, _, body) = server.http("/api/merges");
    let merges: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(merges[0]["merged_patient_id"], "P201", "{merges}");
    let id = merges[0]["id"].as_i64().unwrap();
    let (status, _, _) = server.http_request("POST", &format!("/api/merges/{id}/undo"), &[], b"");
    assert_eq!(status, 200);
    let found = dicomweb_client(&url, &["search", "studies", "--filter", "PatientID=P201"]);
    assert_eq!(found[0]["0020000D"]["Value"][0], second, "{found}");
    let (status, _, _) = server.http_request("POST", &format!("/api/merges/{id}/undo"), &[], b"");
    assert_eq!(status, 404);

    // A47: P200 is now known as P200N; queries follow, and a late image under P200 joins it.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&format!(
            "{}\nEVN|A47\nPID|1||P200N||BERNARD^LUCIEN\nMRG|P200",
            msh("ADT^A47^ADT_A30", "M3")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let found = dicomweb_client(&url, &["search", "studies", "--filter", "PatientID=P200N"]);
    assert_eq!(found[0]["0020000D"]["Value"][0], first, "{found}");
    let late = image(dir.path(), "late.dcm", "P200", "BERNARD^LUC", "", first);
    let stored = pynetdicom(&["store", "--port", &port, &late]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    let found = dicomweb_client(&url, &["search", "studies", "--filter", "PatientID=P200"]);
    assert_eq!(found.as_array().map(Vec::len), Some(0), "{found}");
}

#[test]
fn omi_orders_stable_studies_and_malformed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let ris = Ris::start(dir.path().join("ris"));
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!(
                "ris_address = \"127.0.0.1:{}\"\nstudy_stable_secs = 2\n",
                ris.port
            ),
            ..ServerOptions::default()
        },
    );
    let port = server.dicom_port.to_string();
    // OMI^O23 (v2.5.1, IPC segment) schedules an MR.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&format!(
            "{}\nPID|1||P300^^^HOSP^PI||LEFÈVRE^ÉLODIE||19920704|F\n\
             ORC|NW|PO300|FO300||SC|||||||5678^DURAND^PAUL\nTQ1|1||||||20261128110000\n\
             OBR|1|PO300|FO300|MRGENOU^IRM genou droit^L\n\
             IPC|ACC300|RP300|1.2.826.0.1.3680043.10.543.300^^Application^DICOM|SPS300|MR||MR SCANNER||MR_1",
            msh("OMI^O23^OMI_O23", "O1")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let worklist = pynetdicom(&[
        "mwl-find",
        "--port",
        &port,
        "-k",
        "PatientName=lefevre*",
        "-k",
        "AccessionNumber=",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledStationAETitle=MR_1",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledProcedureStepID=",
    ]);
    assert_eq!(worklist["matches"][0]["AccessionNumber"], "ACC300", "{worklist}");
    assert_eq!(
        worklist["matches"][0]["ScheduledProcedureStepSequence"][0]["ScheduledProcedureStepID"],
        "SPS300"
    );
    // ORM XO changes the order: another station, another day.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&format!(
            "{}\nPID|1||P300^^^HOSP^PI||LEFÈVRE^ÉLODIE||19920704|F\n\
             ORC|XO|PO300|FO300||SC||1^^^20261129083000^^R\n\
             OBR|1|PO300|FO300|MRGENOU^IRM genou droit^L||||||||||||||ACC300|RP300|SPS300|MR_2|||MR",
            msh("ORM^O01^ORM_O01", "O1b")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let moved = pynetdicom(&[
        "mwl-find",
        "--port",
        &port,
        "-k",
        "AccessionNumber=ACC300",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledStationAETitle=MR_2",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate=",
    ]);
    assert_eq!(
        moved["matches"][0]["ScheduledProcedureStepSequence"][0]["ScheduledProcedureStepStartDate"],
        "20261129",
        "{moved}"
    );

    // ORM CA cancels: gone from the worklist.
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&format!(
            "{}\nPID|1||P300\nORC|CA|PO300",
            msh("ORM^O01^ORM_O01", "O2")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let worklist = pynetdicom(&["mwl-find", "--port", &port, "-k", "AccessionNumber=ACC300"]);
    assert_eq!(
        worklist["matches"].as_array().map(Vec::len),
        Some(0),
        "{worklist}"
    );

    // Without MPPS, a study quiet for 2 s is reported ended to the RIS once.
    let file = image(
        dir.path(),
        "quiet.dcm",
        "P301",
        "X^Y",
        "ACC301",
        "1.2.826.0.1.3680043.10.543.301",
    );
    let stored = pynetdicom(&["store", "--port", &port, &file]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    let received = ris.received(1);
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(
        received[0].contains("ACC301") && received[0].contains("|CM"),
        "{}",
        received[0]
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ris.received(1).len(), 1, "notified once");

    // The malformed corpus: a clear AR or a closed connection each time, and a valid message
    // is still accepted afterwards.
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/hl7/malformed"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    files.sort();
    assert!(files.len() >= 8);
    let out = hl7_peer()
        .args(["send", "--raw", "--port", &server.hl7_port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for r in &results {
        // huge.hl7 is a 100 kB report: well under the 4 MiB default limit, so it is accepted
        // here (pacs-hl7's own tests refuse it under a 64 kB limit).
        if r["file"] == "huge.hl7" {
            assert_eq!(r["code"], "AA", "{r}");
            continue;
        }
        let code = r["code"].as_str();
        assert!(code.is_none() || code == Some("AR") || code == Some("AE"), "{r}");
    }
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&format!(
            "{}\nPID|1||P302||OK^STILL",
            msh("ADT^A04^ADT_A01", "O3")
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
}

/// The Study Instance UID of the worklist items DCMTK's `findscu -W` prints, in order.
fn worklist_study_uids(port: &str) -> Vec<String> {
    let out = dcmtk("findscu")
        .args([
            "-W",
            "-aec",
            "OPENPACS",
            "-k",
            "AccessionNumber",
            "-k",
            "StudyInstanceUID",
        ])
        .args(["127.0.0.1", port])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    text.lines()
        .filter(|l| l.contains("(0020,000d)"))
        .map(|l| {
            let value = l.split(['[', ']']).nth(1).unwrap_or_default();
            // DCMTK prints an odd-length UID's NUL padding inside the brackets.
            value.trim_end_matches('\0').to_string()
        })
        .collect()
}

/// Regression: `findscu -W` answered orders with an empty Study Instance UID (Type 1 in the
/// Requested Procedure module) when the RIS sent none.
#[test]
fn worklist_items_carry_a_study_instance_uid_that_links_the_images() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(binary(), ServerOptions::default());
    let port = server.dicom_port.to_string();
    let order = |control: &str, kind: &str, procedure: &str| {
        format!(
            "{}\nPID|1||P300^^^HOSP^PI||LEROY^PAUL||19700101|M\n\
             ORC|{kind}|PO300|FO300||SC||1^^^20261207100000^^R\n\
             OBR|1|PO300|FO300|{procedure}||||||||||||||ACC300|RP300|SPS300|CT_1|||CT",
            msh("ORM^O01^ORM_O01", control)
        )
    };
    let acks = send_hl7(&server, dir.path(), &[&order("W1", "NW", "CTHEAD^CT head^L")]);
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    let first = worklist_study_uids(&port);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("2.25.") && first[0].len() > 10, "{first:?}");
    // Asked again, and after the RIS replaces the order (XO): the same UID.
    assert_eq!(worklist_study_uids(&port), first);
    let acks = send_hl7(
        &server,
        dir.path(),
        &[&order("W2", "XO", "CTHEAD^CT head with contrast^L")],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");
    assert_eq!(worklist_study_uids(&port), first);

    // The modality uses it; its image has no accession number and a mistyped patient ID:
    // the Study Instance UID links it to the order, and so to the RIS's patient.
    let file = image(dir.path(), "ct.dcm", "P300X", "LEROY^P", "", &first[0]);
    let stored = pynetdicom(&["store", "--port", &port, &file]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    let url = server.dicomweb_url();
    let found = dicomweb_client(&url, &["search", "studies", "--filter", "PatientID=P300"]);
    assert_eq!(found[0]["0020000D"]["Value"][0], first[0].as_str(), "{found}");
}

/// A Study Instance UID from the RIS ends up in the worklist, the reports and URLs: one that
/// is not a UID (`thumbnail`, a route word) is refused with an AE pointing at its field.
#[test]
fn hl7_study_uids_that_are_not_uids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(binary(), ServerOptions::default());
    let acks = send_hl7(
        &server,
        dir.path(),
        &[
            &format!(
                "{}\nPID|1||P400^^^HOSP^PI||MARTIN^LUC||19800315|M\n\
                 ORC|NW|PO400|FO400||SC\nOBR|1|PO400|FO400|CT^CT^L\nZDS|thumbnail^^Application^DICOM",
                msh("ORM^O01^ORM_O01", "U1")
            ),
            &format!(
                "{}\nPID|1||P400^^^HOSP^PI||MARTIN^LUC\nOBR|1|PO400|FO400|CT^CT^L||||||||||||||ACC400\n\
                 OBX|1|TX|REPORT||Normal.||||||F\nZDS|1.2/3^^Application^DICOM",
                msh("ORU^R01^ORU_R01", "U2")
            ),
        ],
    );
    for (ack, field, value) in [(&acks[0], "ZDS-1", "thumbnail"), (&acks[1], "ZDS-1", "1.2/3")] {
        assert_eq!(ack["code"], "AE", "{ack}");
        let text = ack["ack"].as_str().unwrap_or_default();
        assert!(
            text.contains("|102") && text.contains(field) && text.contains(value),
            "{text}"
        );
    }
}

#[test]
fn messages_for_another_facility_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: "hl7_facilities = [\"HOSP\"]\n".into(),
            ..ServerOptions::default()
        },
    );
    let to = |facility: &str, kind: &str, control: &str| {
        format!("MSH|^~\\&|RIS|HOSP|OPENPACS|{facility}|20261207090000||{kind}|{control}|P|2.5")
    };
    let acks = send_hl7(
        &server,
        dir.path(),
        &[
            // For another hospital: refused, naming the facility, and not applied…
            &format!(
                "{}\nPID|1||P900^^^HOSP^PI||ROUX^ANNE||19700101|F",
                to("CLINIQUE-SUD", "ADT^A01", "F1")
            ),
            // …so the update of that patient, now for our facility, finds no one.
            &format!(
                "{}\nPID|1||P900^^^HOSP^PI||ROUX^ANNE||19700101|F",
                to("HOSP", "ADT^A08", "F2")
            ),
            // Ours, in another case: applied.
            &format!(
                "{}\nPID|1||P901^^^HOSP^PI||ROUX^JEAN||19700101|M",
                to("hosp", "ADT^A01", "F3")
            ),
            // No MSH-6 at all: not addressed to us.
            &format!("{}\nPID|1||P902^^^HOSP^PI||ROUX^LEA", to("", "ADT^A01", "F4")),
        ],
    );
    let codes: Vec<&str> = acks
        .iter()
        .map(|a| a["code"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(codes, ["AR", "AE", "AA", "AR"], "{acks:?}");
    let refusal = acks[0]["ack"].as_str().unwrap();
    assert!(
        refusal.contains("ERR|") && refusal.contains("CLINIQUE-SUD") && refusal.contains("MSH^1^6"),
        "{refusal}"
    );
    assert!(
        acks[1]["ack"].as_str().unwrap().contains("unknown patient P900"),
        "{acks:?}"
    );
}
