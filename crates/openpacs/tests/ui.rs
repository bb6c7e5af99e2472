//! The embedded web UI (`web/`, served by `pacs-web`'s `ui.rs`): its HTTP answers (public,
//! typed, strict Content-Security-Policy, client-side routes answered with the page), and, in
//! headless Chromium driven by `tests/browser/ui.mjs`, log in and out, a patient-name search
//! listing exactly the studies the fixtures say it should (by any word of the name: a given
//! name finds its patient), a study page with its series thumbnails and the RIS's report read as
//! text (it once showed `[object HTMLElement]` while this test passed), role-aware controls
//! (administrator versus referrer) and the French translation with its plurals.
//! Screenshots and the script's summary are kept in `target/browser-artifacts/ui/`.

use std::collections::BTreeSet;
use std::path::Path;

use dicom_dictionary_std::tags;
use pacs_testkit::server::{
    fixture_file, modality_image, pynetdicom, repo_root, run_browser_script, send_hl7, valid_fixtures,
    ServerOptions, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// Fixtures stored: three studies of patients named Doe (one with two CT images in a series,
/// one MR, one CR) among others.
const FIXTURES: &[&str] = &[
    "valid/ct_explicit_le.dcm",
    "valid/ct_series_a_1_explicit_le.dcm",
    "valid/ct_series_a_2_explicit_le.dcm",
    "valid/mr_explicit_le.dcm",
    "valid/cr_explicit_le.dcm",
    "valid/ot_charset_latin1_french.dcm",
    "valid/us_rgb_explicit_be.dcm",
    "valid/sc_jpeg_baseline_no_modality.dcm",
];
/// What the user types: the lowercase beginning of a family name, no wildcard.
const SEARCH: &str = "doe";
/// A given name typed alone, and the patient it must find (stored by the test).
const GIVEN: &str = "elodie";
const GIVEN_PATIENT: &str = "DURAND^ÉLODIE";
const GIVEN_STUDY: &str = "1.2.826.0.1.3680043.10.543.1503";
/// The report's lines, sent by the RIS as ORU^R01 OBX segments.
const REPORT: [&str; 2] = ["Pas d'anomalie décelable.", "Conclusion : examen normal."];
/// The study opened in the browser (the one of this fixture).
const OPEN: &str = "valid/ct_series_a_1_explicit_le.dcm";

const ADMIN: (&str, &str) = ("ui-admin", "admin-secret-pw");
const REFERRER: (&str, &str) = ("ui-referrer", "referrer-secret-pw");

/// The alphabetic group of a fixture's Patient Name, as stored.
fn patient_name(file: &str) -> String {
    let object = dicom_object::open_file(file).expect("open fixture");
    let name = object
        .element(tags::PATIENT_NAME)
        .ok()
        .and_then(|e| e.to_str().ok().map(|s| s.into_owned()))
        .unwrap_or_default();
    name.split('=').next().unwrap_or_default().trim().to_string()
}

#[test]
fn web_ui_logs_in_searches_opens_a_study_and_speaks_french() {
    let root = repo_root();

    let users = [(ADMIN, "admin"), (REFERRER, "referrer")]
        .iter()
        .map(|((user, password), role)| (user.to_string(), role.to_string(), password.to_string()))
        .collect();
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users,
            // Basic stays on (the default): the API's 401s and browsers' script requests get
            // no Basic challenge, so Chromium shows no password dialog of its own.
            ..ServerOptions::default()
        },
    );
    let manifest = valid_fixtures();
    let entries: Vec<&serde_json::Value> = FIXTURES
        .iter()
        .map(|path| {
            manifest
                .iter()
                .find(|e| e["path"] == *path)
                .unwrap_or_else(|| panic!("{path} not in the manifest"))
        })
        .collect();
    server.store_fixtures(entries.iter().copied());
    let dir = tempfile::tempdir().unwrap();
    let durand = modality_image(
        dir.path(),
        "durand.dcm",
        &[
            ("PatientName", GIVEN_PATIENT),
            ("PatientID", "UI-1503"),
            ("StudyInstanceUID", GIVEN_STUDY),
            ("SpecificCharacterSet", "ISO_IR 192"),
        ],
    );
    let stored = pynetdicom(&["store", "--port", &server.dicom_port.to_string(), &durand]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");

    // The studies the search must list, from the manifest and the files: a word of the name
    // (family, given…, or a word inside one) starts with what was typed, case aside.
    let expected: BTreeSet<String> = entries
        .iter()
        .filter(|e| {
            patient_name(&fixture_file(e))
                .to_lowercase()
                .split(['^', '=', ' ', '-'])
                .any(|word| word.starts_with(SEARCH))
        })
        .map(|e| e["study_instance_uid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        expected.len() >= 2,
        "the fixtures give a meaningful search: {expected:?}"
    );
    let open = entries
        .iter()
        .find(|e| e["path"] == OPEN)
        .and_then(|e| e["study_instance_uid"].as_str())
        .unwrap()
        .to_string();
    assert!(expected.contains(&open));

    // The RIS's report on the study opened (ZDS-1: its Study Instance UID).
    let acks = send_hl7(
        server.hl7_port,
        dir.path(),
        &[&format!(
            "MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261128090000||ORU^R01^ORU_R01|UI1|P|2.5|||AL|NE||UNICODE UTF-8\n\
             PID|1||UI-1||DOE^JOHN\n\
             OBR|1|PO1|FO1|CT^CT^L|||20261128100000|||||||||||||||||CT|F\n\
             OBX|1|TX|REPORT^Report^L|1|{}||||||F\n\
             OBX|2|TX|REPORT^Report^L|1|{}||||||F\n\
             ZDS|{open}^^Application^DICOM",
            REPORT[0], REPORT[1]
        )],
    );
    assert_eq!(acks[0]["code"], "AA", "{acks:?}");

    // Plain HTTP: the UI is public, typed, and under a strict policy; routes get the page.
    let (status, head, body) = server.http("/");
    assert_eq!(status, 200, "{head}");
    let head_lower = head.to_ascii_lowercase();
    assert!(head_lower.contains("content-type: text/html"), "{head}");
    assert!(head_lower.contains("cache-control: no-cache"), "{head}");
    assert!(
        head.contains("default-src 'self'") && !head.contains("unsafe-inline"),
        "{head}"
    );
    assert!(body.contains("/app.js"), "{body}");
    let (status, head, route) = server.http(&format!("/studies/{open}"));
    assert_eq!((status, route), (200, body), "{head}");
    let (status, head, _) = server.http("/app.js");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{head}"
    );
    assert_eq!(server.http("/no-such-file.js").0, 404);
    // The data roots are not the UI's: still refused without credentials.
    assert_eq!(server.http("/api/studies").0, 401);

    let artifacts = root.join("target/browser-artifacts/ui");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut args: Vec<String> = vec![
        "--server".into(),
        format!("http://127.0.0.1:{}", server.http_port),
        "--artifacts".into(),
        artifacts.display().to_string(),
        "--admin".into(),
        format!("{}:{}", ADMIN.0, ADMIN.1),
        "--referrer".into(),
        format!("{}:{}", REFERRER.0, REFERRER.1),
        "--search".into(),
        SEARCH.into(),
        "--open-study".into(),
        open,
        "--given-name".into(),
        GIVEN.into(),
        "--given-study".into(),
        GIVEN_STUDY.into(),
    ];
    for line in REPORT {
        args.extend(["--report-line".into(), line.into()]);
    }
    for uid in &expected {
        args.extend(["--expect-study".into(), uid.clone()]);
    }
    let run = run_browser_script("ui.mjs", &args);
    let summary = &run.summary;
    let report = format!(
        "failures: {:#}\npage errors: {:#}\nconsole errors: {:#}\nHTTP errors: {:#}\nsearch: {:#}\n\
         thumbnails: {:#}\ntimings: {:#}\nsummary and screenshots: {}",
        summary["failures"],
        summary["pageErrors"],
        summary["consoleErrors"],
        summary["httpErrors"],
        summary["search"],
        summary["thumbnails"],
        summary["timings"],
        artifacts.display()
    );
    eprintln!("{report}");
    assert_eq!(summary["pageErrors"], serde_json::json!([]), "{report}");
    run.assert_passed(&report);
}
