//! The technologists' worklist (issue 15 §3): orders sent by the RIS over HL7 (python-hl7,
//! ORM^O01 NW and CA) and exams reported by the modality over MPPS (pynetdicom N-CREATE and
//! N-SET) appear with their states in `GET /api/worklist` and, in headless Chromium driven by
//! `tests/browser/worklist.mjs`, on the `/worklist` page, read from its text, filtered by day,
//! modality and station, in English and French. Screenshots are kept in
//! `target/browser-artifacts/worklist/`.

use std::path::Path;

use pacs_testkit::server::{pynetdicom, repo_root, run_browser_script, send_hl7, ServerOptions, TestServer};
use serde_json::json;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const READER: (&str, &str) = ("wl-reader", "reader-secret-pw");
const UPLOADER: (&str, &str) = ("wl-uploader", "uploader-secret-pw");
const DAY: &str = "20261128";

/// An order: accession, patient ID and name, modality, station, start (YYYYMMDDHHMMSS).
struct Order {
    accession: &'static str,
    patient_id: &'static str,
    name: &'static str,
    modality: &'static str,
    station: &'static str,
    start: &'static str,
}

const ORDERS: [Order; 5] = [
    Order {
        accession: "WL1",
        patient_id: "WLP1",
        name: "MARTIN^AMÉLIE",
        modality: "CT",
        station: "CT_1",
        start: "20261128080000",
    },
    Order {
        accession: "WL2",
        patient_id: "WLP2",
        name: "DURAND^ÉLODIE",
        modality: "MR",
        station: "MR_1",
        start: "20261128093000",
    },
    Order {
        accession: "WL3",
        patient_id: "WLP3",
        name: "LEROY^PAUL",
        modality: "CT",
        station: "CT_2",
        start: "20261128100000",
    },
    Order {
        accession: "WL4",
        patient_id: "WLP4",
        name: "PETIT^LUC",
        modality: "CT",
        station: "CT_1",
        start: "20261128110000",
    },
    // Another day: never listed for DAY.
    Order {
        accession: "WL5",
        patient_id: "WLP5",
        name: "ROUX^ANNE",
        modality: "CT",
        station: "CT_1",
        start: "20261129080000",
    },
];

fn msh(control: &str) -> String {
    format!("MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261128070000||ORM^O01^ORM_O01|{control}|P|2.5|||AL|NE||UNICODE UTF-8")
}

fn basic((user, password): (&str, &str)) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[test]
fn worklist_page_shows_orders_from_hl7_with_their_mpps_state() {
    let users = [(READER, "reader"), (UPLOADER, "uploader")]
        .iter()
        .map(|((user, password), role)| (user.to_string(), role.to_string(), password.to_string()))
        .collect();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users,
            ..ServerOptions::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();

    // The RIS schedules five exams (ORM^O01 NW) and cancels the fourth (CA).
    let mut messages: Vec<String> = ORDERS
        .iter()
        .enumerate()
        .map(|(i, o)| {
            format!(
                "{}\nPID|1||{}^^^HOSP^PI||{}||19700101|F\n\
                 ORC|NW|PO-{acc}|FO-{acc}||SC||1^^^{}^^R||20261127090000\n\
                 OBR|1|PO-{acc}|FO-{acc}|PROC{i}^{} exam {i}^L||||||||||||||{acc}|RP-{acc}|SPS-{acc}|{}|||{}",
                msh(&format!("N{i}")),
                o.patient_id,
                o.name,
                o.start,
                o.modality,
                o.station,
                o.modality,
                acc = o.accession,
            )
        })
        .collect();
    messages.push(format!("{}\nPID|1||WLP4\nORC|CA|PO-WL4", msh("CA4")));
    let texts: Vec<&str> = messages.iter().map(String::as_str).collect();
    let acks = send_hl7(server.hl7_port, dir.path(), &texts);
    assert!(acks.iter().all(|a| a["code"] == "AA"), "{acks:?}");

    // The modality reports the first exam done and the second started (MPPS, pynetdicom).
    let port = server.dicom_port.to_string();
    let mpps = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--port", port.as_str()]);
        let answer = pynetdicom(&all);
        assert_eq!(answer["status"], 0, "{answer}");
    };
    for (uid, accession) in [
        ("1.2.826.0.1.3680043.10.543.1531", "WL1"),
        ("1.2.826.0.1.3680043.10.543.1532", "WL2"),
    ] {
        let key = format!("ScheduledStepAttributesSequence.AccessionNumber={accession}");
        mpps(&[
            "mpps-create",
            "--uid",
            uid,
            "-k",
            "PerformedProcedureStepStatus=IN PROGRESS",
            "-k",
            "Modality=CT",
            "-k",
            &key,
        ]);
    }
    mpps(&[
        "mpps-set",
        "--uid",
        "1.2.826.0.1.3680043.10.543.1531",
        "-k",
        "PerformedProcedureStepStatus=COMPLETED",
    ]);

    // The REST API: every state of the day, each with its MPPS status.
    let get = |path: &str, who: (&str, &str)| {
        let (status, _, body) = server.http_request("GET", path, &[("Authorization", &basic(who))], b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let listed = |query: &str| -> Vec<(String, String, String)> {
        let (status, body) = get(&format!("/api/worklist?{query}"), READER);
        assert_eq!(status, 200, "{query}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["accession_number"].as_str().unwrap_or_default().to_string(),
                    i["status"].as_str().unwrap_or_default().to_string(),
                    i["mpps_status"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    };
    let row = |a: &str, s: &str, m: &str| (a.to_string(), s.to_string(), m.to_string());
    assert_eq!(
        listed(&format!("date={DAY}")),
        [
            row("WL1", "COMPLETED", "COMPLETED"),
            row("WL2", "IN PROGRESS", "IN PROGRESS"),
            row("WL3", "SCHEDULED", "-"),
            row("WL4", "DISCONTINUED", "-"),
        ]
    );
    assert_eq!(listed("date=2026-11-28&modality=ct").len(), 3);
    assert_eq!(
        listed("date=2026-11-28&station=CT_1"),
        [
            row("WL1", "COMPLETED", "COMPLETED"),
            row("WL4", "DISCONTINUED", "-")
        ]
    );
    assert_eq!(listed("date=20261129"), [row("WL5", "SCHEDULED", "-")]);
    for bad in ["date=2026-13-45", "date=20261128XYZ", "day=20261128"] {
        let (status, body) = get(&format!("/api/worklist?{bad}"), READER);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(
        get("/api/worklist", UPLOADER).0,
        403,
        "uploaders have no search permission"
    );
    assert_eq!(server.http("/api/worklist").0, 401);
    let (_, openapi) = get("/api/openapi.json", READER);
    let openapi: serde_json::Value = serde_json::from_str(&openapi).unwrap();
    assert!(openapi["paths"]["/api/worklist"]["get"].is_object());

    // The page, read as the technologist reads it.
    let expected = json!([
        { "accession": "WL1", "patient": "MARTIN, AMÉLIE", "state": "Completed", "mpps": "Completed", "modality": "CT", "station": "CT_1" },
        { "accession": "WL2", "patient": "DURAND, ÉLODIE", "state": "In progress", "mpps": "In progress", "modality": "MR", "station": "MR_1" },
        { "accession": "WL3", "patient": "LEROY, PAUL", "state": "Scheduled", "mpps": "not started", "modality": "CT", "station": "CT_2" },
        { "accession": "WL4", "patient": "PETIT, LUC", "state": "Discontinued", "mpps": "not started", "modality": "CT", "station": "CT_1" },
    ]);
    let artifacts = repo_root().join("target/browser-artifacts/worklist");
    let _ = std::fs::remove_dir_all(&artifacts);
    let args = vec![
        "--server".to_string(),
        format!("http://127.0.0.1:{}", server.http_port),
        "--artifacts".into(),
        artifacts.display().to_string(),
        "--user".into(),
        format!("{}:{}", READER.0, READER.1),
        "--date".into(),
        "2026-11-28".into(),
        "--expect".into(),
        expected.to_string(),
        "--next-day".into(),
        json!(["WL5"]).to_string(),
    ];
    let run = run_browser_script("worklist.mjs", &args);
    let summary = &run.summary;
    let report = format!(
        "failures: {:#}\npage errors: {:#}\nHTTP errors: {:#}\nrows: {:#}\nsummary and screenshots: {}",
        summary["failures"],
        summary["pageErrors"],
        summary["httpErrors"],
        summary["rows"],
        artifacts.display()
    );
    eprintln!("{report}");
    run.assert_passed(&report);
}
