//! Tenants on one installation, through the real peers: `openpacs tenant` while the server
//! runs, DIMSE routed by the called AE title (DCMTK and pynetdicom), HL7 routed by MSH-6
//! (python-hl7). Both tenants hold the same Study Instance UID with different content; what
//! one tenant's AE title answers never shows the other's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pacs_testkit::server::{
    dataset_sha256, dcmtk, describe, pynetdicom, send_hl7, ServerOptions, StoreScp, TestServer,
};
use pacs_testkit::{write_study, PatientSpec, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn echo(server: &TestServer, called: &str) -> serde_json::Value {
    pynetdicom(&["echo", "--port", &server.dicom_port.to_string(), "--aec", called])
}

/// Waits until the server has read the tenant table again (it does every 2 s).
fn wait_until_served(server: &TestServer, called: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = echo(server, called);
        if answer["status"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{called} never served: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn find(server: &TestServer, called: &str, level: &str, keys: &[&str]) -> Vec<serde_json::Value> {
    let port = server.dicom_port.to_string();
    // The patient level is the Patient Root model's.
    let model = if level == "PATIENT" { "patient" } else { "study" };
    let mut args = vec![
        "find", "--port", &port, "--aec", called, "--model", model, "--level", level,
    ];
    for key in keys {
        args.extend(["-k", key]);
    }
    let out = pynetdicom(&args);
    assert_eq!(out["status"], 0, "{out}");
    out["matches"].as_array().cloned().unwrap_or_default()
}

/// One CT study of two slices for `patient`: the same UIDs whatever the patient (they derive
/// from the seed), different bytes.
fn study_for(dir: &Path, patient_id: &str, name: &str) -> (StudySpec, Vec<PathBuf>) {
    let spec = StudySpec {
        rows: 64,
        columns: 64,
        patient: Some(PatientSpec {
            patient_id: patient_id.into(),
            patient_name: name.into(),
            birth_date: "19700101".into(),
            sex: "F".into(),
        }),
        ..StudySpec::ct(1717, 2)
    };
    let out = dir.join(patient_id);
    let files = write_study(&spec, &out)
        .unwrap()
        .into_iter()
        .map(|i| i.path)
        .collect();
    (spec, files)
}

fn storescu(server: &TestServer, called: &str, files: &[PathBuf]) -> std::process::Output {
    dcmtk("storescu")
        .args(["-aec", called, "127.0.0.1", &server.dicom_port.to_string()])
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn each_called_ae_title_sees_only_its_tenant_over_dcmtk_and_pynetdicom() {
    let destination_port = pacs_testkit::server::free_port();
    let server = TestServer::start(binary(), ServerOptions::with_peer("STORESCP", destination_port));
    let work = server.work_dir.clone();
    let added = server.cli_ok(&[
        "tenant",
        "add",
        "montelimar",
        "--title",
        "Centre hospitalier de Montélimar",
        "--ae",
        "MONTEL",
        "--ae",
        "MONTEL_CT",
        "--hl7-facility",
        "CHM",
    ]);
    assert_eq!(added.trim(), "tenant montelimar added");
    server.cli_ok(&[
        "tenant",
        "add",
        "valence",
        "--ae",
        "VALENCE",
        "--hl7-facility",
        "CHV",
    ]);
    // An AE title, or the installation's own, cannot serve two tenants.
    let taken = server.cli(&["tenant", "add", "romans", "--ae", "MONTEL"]);
    assert!(!taken.status.success());
    assert!(
        describe(&taken).contains("AE title MONTEL belongs to tenant montelimar"),
        "{}",
        describe(&taken)
    );
    let own = server.cli(&["tenant", "add", "romans", "--ae", "OPENPACS"]);
    assert!(
        describe(&own).contains("AE title OPENPACS belongs to tenant default"),
        "{}",
        describe(&own)
    );
    let bad = server.cli(&["tenant", "add", "Romans"]);
    assert!(
        describe(&bad).contains("lower-case letters"),
        "{}",
        describe(&bad)
    );
    let list = server.cli_ok(&["tenant", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(
        lines[1].starts_with("default") && lines[1].contains("OPENPACS"),
        "{list}"
    );
    assert!(
        lines[2].contains("montelimar  Centre hospitalier de Montélimar  MONTEL,MONTEL_CT  CHM"),
        "{list}"
    );
    assert!(
        lines[3].starts_with("valence") && lines[3].contains("VALENCE"),
        "{list}"
    );
    // Until the server reads the table again (every 2 s) it has one tenant, which any called
    // AE title reaches; then an AE title no tenant has is rejected as the standard says.
    let deadline = Instant::now() + Duration::from_secs(15);
    let unknown = loop {
        let answer = echo(&server, "NOSUCH");
        if answer["status"] != 0 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let refusal = unknown["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        refusal.contains("rejected") && refusal.contains("called ae title not recognised"),
        "{unknown}"
    );
    let echoscu = dcmtk("echoscu")
        .args(["-aec", "NOSUCH", "127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(!echoscu.status.success());
    assert!(
        describe(&echoscu).contains("Called AE Title Not Recognized"),
        "{}",
        describe(&echoscu)
    );

    // The same study (same UIDs), one patient in each hospital.
    let (spec, montelimar_files) = study_for(&work, "IPP-M-1", "MARTIN^CLAIRE");
    let (_, valence_files) = study_for(&work, "IPP-V-9", "ROUX^PAUL");
    let study = spec.study_instance_uid();
    let stored = storescu(&server, "MONTEL", &montelimar_files);
    assert!(stored.status.success(), "{}", describe(&stored));
    let port = server.dicom_port.to_string();
    let mut store = vec!["store", "--port", &port, "--aec", "VALENCE"];
    let valence_paths: Vec<String> = valence_files.iter().map(|p| p.display().to_string()).collect();
    store.extend(valence_paths.iter().map(String::as_str));
    let out = pynetdicom(&store);
    let results = out["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "{out}");
    assert!(results.iter().all(|r| r["status"] == 0), "{out}");

    // C-FIND at every level: each AE title finds its own patient, whichever of its titles.
    for (called, patient) in [
        ("MONTEL", "IPP-M-1"),
        ("MONTEL_CT", "IPP-M-1"),
        ("VALENCE", "IPP-V-9"),
    ] {
        for level in ["PATIENT", "STUDY", "SERIES", "IMAGE"] {
            let keys = ["PatientID=", &format!("StudyInstanceUID={study}")];
            let keys: &[&str] = if level == "PATIENT" { &keys[..1] } else { &keys };
            let matches = find(&server, called, level, keys);
            let expected = if level == "IMAGE" { 2 } else { 1 };
            assert_eq!(matches.len(), expected, "{called} {level}: {matches:?}");
            for m in &matches {
                assert_eq!(m["PatientID"], patient, "{called} {level}: {m}");
            }
        }
    }
    // The default tenant holds neither.
    assert!(find(&server, "OPENPACS", "STUDY", &["PatientID="]).is_empty());
    // DCMTK's findscu says the same.
    let findscu = dcmtk("findscu")
        .args(["-S", "-v", "-aec", "VALENCE", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", "PatientID", "-k", &format!("StudyInstanceUID={study}")])
        .args(["127.0.0.1", &port])
        .output()
        .unwrap();
    let text = describe(&findscu);
    assert!(findscu.status.success(), "{text}");
    assert!(text.contains("IPP-V-9") && !text.contains("IPP-M-1"), "{text}");

    // C-GET brings back each tenant's own bytes for the same Study Instance UID.
    for (called, originals) in [("MONTEL", &montelimar_files), ("VALENCE", &valence_files)] {
        let into = work.join(format!("get-{called}"));
        std::fs::create_dir_all(&into).unwrap();
        let out = dcmtk("getscu")
            .args(["-S", "+B", "-aec", called, "-k", "QueryRetrieveLevel=STUDY"])
            .args(["-k", &format!("StudyInstanceUID={study}"), "-od"])
            .arg(&into)
            .args(["127.0.0.1", &port])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let mut got: Vec<String> = std::fs::read_dir(&into)
            .unwrap()
            .map(|e| dataset_sha256(&e.unwrap().path()))
            .collect();
        let mut sent: Vec<String> = originals.iter().map(|p| dataset_sha256(p)).collect();
        got.sort();
        sent.sort();
        assert_eq!(got, sent, "{called}: C-GET returned another tenant's bytes");
    }

    // C-MOVE destinations are the tenant's own: the configuration's peer is the default
    // tenant's, unknown to Valence, and Valence's study is not the default tenant's.
    let scp = StoreScp::start("STORESCP", destination_port, &[]);
    let study_key = format!("StudyInstanceUID={study}");
    let move_to_storescp = |called: &str| {
        pynetdicom(&[
            "move", "--port", &port, "--aec", called, "--level", "STUDY", "-k", &study_key, "--dest",
            "STORESCP",
        ])
    };
    let moved = move_to_storescp("VALENCE");
    assert_eq!(moved["status"], 0xA801, "{moved}");
    let moved = move_to_storescp("OPENPACS");
    assert_eq!(moved["status"], 0, "{moved}");
    assert_eq!(moved["completed"], 0, "{moved}");
    assert!(scp.received().is_empty());

    // A disabled tenant takes no association (its data is kept); the others go on.
    server.cli_ok(&["tenant", "disable", "valence"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while echo(&server, "VALENCE")["status"] == 0 {
        assert!(Instant::now() < deadline, "VALENCE still served once disabled");
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = storescu(&server, "VALENCE", &valence_files[..1]);
    assert!(!refused.status.success(), "{}", describe(&refused));
    assert_eq!(echo(&server, "MONTEL")["status"], 0);
    assert!(server.cli_ok(&["tenant", "list"]).contains("disabled"));
    server.cli_ok(&["tenant", "enable", "valence"]);
    wait_until_served(&server, "VALENCE");
    assert_eq!(
        find(
            &server,
            "VALENCE",
            "IMAGE",
            &[&format!("StudyInstanceUID={study}")]
        )
        .len(),
        2
    );

    // HL7: MSH-6 chooses the tenant; the same patient ID in another facility's message
    // touches nothing of the first; an unknown facility is refused and changes nothing.
    let adt = |facility: &str, control: &str, name: &str| {
        format!(
            "MSH|^~\\&|RIS|{facility}|PACS|{facility}|20261208120000||ADT^A08^ADT_A01|{control}|P|2.5.1\n\
             EVN|A08|20261208120000\n\
             PID|1||IPP-M-1^^^^PI||{name}||19700101|F"
        )
    };
    let answers = send_hl7(
        server.hl7_port,
        &work,
        &[
            &adt("CHM", "C1", "MARTIN^CLAIRE^ANNE"),
            &adt("CHX", "C2", "INTRUS^NOM"),
            &adt("chv", "C3", "AUTRE^NOM"),
        ],
    );
    assert_eq!(answers[0]["code"], "AA", "{answers:?}");
    assert_eq!(answers[1]["code"], "AR", "{answers:?}");
    let refusal = answers[1]["ack"].as_str().unwrap_or_default();
    assert!(
        refusal.contains("\rERR||MSH^1^6|103^")
            && refusal.contains("receiving facility \"CHX\" (MSH-6) is not served here"),
        "{answers:?}"
    );
    // Valence (its facility matched without regard to case) has no patient IPP-M-1: its
    // RIS is told so, nothing is created.
    assert_eq!(answers[2]["code"], "AE", "{answers:?}");
    assert!(answers[2]["ack"]
        .as_str()
        .unwrap_or_default()
        .contains("unknown patient IPP-M-1"));
    let names = |called: &str| -> Vec<String> {
        find(&server, called, "PATIENT", &["PatientID=", "PatientName="])
            .iter()
            .map(|m| format!("{} {}", m["PatientID"], m["PatientName"]))
            .collect()
    };
    assert_eq!(names("MONTEL"), ["\"IPP-M-1\" \"MARTIN^CLAIRE^ANNE\""]);
    assert_eq!(names("VALENCE"), ["\"IPP-V-9\" \"ROUX^PAUL\""]);
    assert!(names("OPENPACS").is_empty());

    // An order from Montélimar's RIS is on Montélimar's worklist only.
    let order = "MSH|^~\\&|RIS|CHM|PACS|CHM|20261208120000||ORM^O01^ORM_O01|C4|P|2.5.1\n\
         PID|1||IPP-M-1^^^^PI||MARTIN^CLAIRE^ANNE||19700101|F\n\
         ORC|NW|PO1|FO1||SC||1^^^20261208130000^^R||20261208120000\n\
         OBR|1|PO1|FO1|CTTHORAX^CT thorax^L||||||||||||||ACC-M-1|RP1|SPS1|CT_1|||CT";
    let answers = send_hl7(server.hl7_port, &work, &[order]);
    assert_eq!(answers[0]["code"], "AA", "{answers:?}");
    let worklist = |called: &str| {
        let out = pynetdicom(&[
            "mwl-find",
            "--port",
            &port,
            "--aec",
            called,
            "-k",
            "AccessionNumber=",
            "-k",
            "PatientID=",
        ]);
        assert_eq!(out["status"], 0, "{out}");
        out["matches"].as_array().cloned().unwrap_or_default()
    };
    let montelimar = worklist("MONTEL");
    assert_eq!(montelimar.len(), 1, "{montelimar:?}");
    assert_eq!(montelimar[0]["AccessionNumber"], "ACC-M-1");
    assert!(worklist("VALENCE").is_empty());
    assert!(worklist("OPENPACS").is_empty());
}

/// A one-hospital install is as before: any called AE title reaches its only tenant, and
/// the default tenant can be named in `tenant set`.
#[test]
fn one_tenant_answers_any_called_ae_title_as_before() {
    let server = TestServer::start(binary(), ServerOptions::default());
    assert_eq!(echo(&server, "ANY-SCP")["status"], 0);
    server.cli_ok(&[
        "tenant",
        "set",
        "default",
        "--title",
        "CH de Die",
        "--hl7-facility",
        "CHD",
    ]);
    let list = server.cli_ok(&["tenant", "list", "--format", "json"]);
    let tenants: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(tenants.as_array().map(Vec::len), Some(1), "{tenants}");
    assert_eq!(tenants[0]["title"], "CH de Die");
    assert_eq!(tenants[0]["hl7Facilities"][0], "CHD");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(echo(&server, "ANY-SCP")["status"], 0);
}
