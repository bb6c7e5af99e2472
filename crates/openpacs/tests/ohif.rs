//! OHIF Viewer (npm `@ohif/app`, its prebuilt `dist/`) in headless Chromium against our
//! DICOMweb, driven by `tests/browser/ohif.mjs` with playwright-core: the study list shows the
//! stored studies (one of them has no Modality, so no ModalitiesInStudy), and a CT study opened
//! from it renders pixels. Screenshots and the script's summary are kept in
//! `target/browser-artifacts/ohif/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use pacs_testkit::server::{
    browser_tests_dir, pynetdicom, repo_root, run_browser_script, ServerOptions, TestServer,
};
use pacs_testkit::{write_study, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// Fixtures stored next to the generated CT, and patients the study list must show (as OHIF
/// shows names: "Family, Given").
/// `sc_jpeg_baseline_no_modality.dcm` has no Modality: its study has no ModalitiesInStudy.
const FIXTURES: &[&str] = &[
    "valid/ct_explicit_le.dcm",
    "valid/ct_series_a_1_explicit_le.dcm",
    "valid/ct_series_a_2_explicit_le.dcm",
    "valid/mr_explicit_le.dcm",
    "valid/ot_charset_latin1_french.dcm",
    "valid/sr_basic_text_explicit_le.dcm",
    "valid/sc_jpeg_baseline_no_modality.dcm",
];
const FIXTURE_PATIENTS: &[&str] = &["CompressedSamples, CT1", "Doe, Peter", "Buc, Jérôme"];
/// Distinct studies among FIXTURES (the two ct_series_a files share one; the MR is another).
const FIXTURE_STUDIES: usize = 6;

/// Puts OHIF in place in `tests/browser` (with its tools).
fn install_ohif() {
    let browser_dir = browser_tests_dir();
    // Idempotent: puts OHIF in place when an older install lacks the pinned version.
    let status = Command::new("node")
        .arg(browser_dir.join("ohif.mjs"))
        .arg("fetch")
        .current_dir(&browser_dir)
        .status()
        .expect("run node");
    assert!(status.success(), "node ohif.mjs fetch failed");
}

fn shown_name(dicom_pn: &str) -> String {
    dicom_pn
        .replacen('^', ", ", 1)
        .replace('^', " ")
        .trim()
        .to_string()
}

fn store(server: &TestServer, files: &[PathBuf]) {
    let port = server.dicom_port.to_string();
    let mut args = vec!["store", "--port", &port];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let stored = pynetdicom(&args);
    assert!(
        stored["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 0),
        "{stored}"
    );
}

#[test]
fn ohif_viewer_lists_the_studies_and_renders_a_ct() {
    let root = repo_root();
    install_ohif();

    let server = TestServer::start(binary(), ServerOptions::default());
    let source = tempfile::tempdir().unwrap();
    let spec = StudySpec::ct(2024, 12);
    let ct = write_study(&spec, source.path()).expect("generate CT");
    let mut files: Vec<PathBuf> = ct.iter().map(|g| g.path.clone()).collect();
    files.extend(FIXTURES.iter().map(|f| root.join("tests/fixtures").join(f)));
    store(&server, &files);

    let artifacts = root.join("target/browser-artifacts/ohif");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();

    // OHIF shows a name with its first '^' as ", " and the others as spaces; the list shows
    // no UIDs, so the CT's row is found by its patient's name.
    let ct_patient = shown_name(&spec.resolved_patient().patient_name);
    let mut args: Vec<String> = vec![
        "run".into(),
        "--server".into(),
        format!("http://127.0.0.1:{}", server.http_port),
        "--artifacts".into(),
        artifacts.display().to_string(),
        "--study".into(),
        spec.study_instance_uid(),
        "--study-row".into(),
        ct_patient.clone(),
        "--expect-studies".into(),
        (FIXTURE_STUDIES + 1).to_string(),
        "--expect-patient".into(),
        ct_patient,
    ];
    for patient in FIXTURE_PATIENTS {
        args.extend(["--expect-patient".into(), patient.to_string()]);
    }
    let run = run_browser_script("ohif.mjs", &args);
    let summary = &run.summary;
    // The whole summary (every DICOMweb exchange, with status, content type and the start of
    // any error body) is in summary.json next to the screenshots.
    let dicomweb = summary["dicomweb"].as_array().cloned().unwrap_or_default();
    let http_failures: Vec<&serde_json::Value> = dicomweb
        .iter()
        .filter(|e| e["status"].as_u64().is_none_or(|s| s >= 400))
        .collect();
    let report = format!(
        "failures: {:#}\npage errors: {:#}\nconsole errors: {:#}\nfailed DICOMweb requests: {:#?}\n\
         study list: {:#}\nviewer: {}\nsummary and screenshots: {}",
        summary["failures"],
        summary["pageErrors"],
        summary["consoleErrors"],
        http_failures,
        summary["studyList"],
        summary["viewer"],
        artifacts.display()
    );
    eprintln!(
        "study list rows: {}, viewer: {}, console errors: {}, blocked requests to other hosts: {}",
        summary["studyList"]["rows"],
        summary["viewer"],
        summary["consoleErrors"].as_array().map_or(0, Vec::len),
        summary["blockedRequests"]
    );

    assert_eq!(
        summary["pageErrors"],
        serde_json::json!([]),
        "page errors\n{report}"
    );
    assert_eq!(
        summary["studyList"]["rows"],
        serde_json::json!(FIXTURE_STUDIES + 1),
        "every stored study listed once\n{report}"
    );
    assert_eq!(summary["studyList"]["missing"], serde_json::json!([]), "{report}");
    assert_eq!(
        summary["viewer"]["rendered"], true,
        "the CT shows pixels\n{report}"
    );
    assert!(
        dicomweb
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.contains("/frames/"))),
        "the pixels came through our WADO-RS frames\n{report}"
    );
    assert!(http_failures.is_empty(), "{report}");
    run.assert_passed(&report);
}
