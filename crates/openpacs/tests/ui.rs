//! The embedded web UI (`web/`, served by `pacs-web`'s `ui.rs`): its HTTP answers (public,
//! typed, strict Content-Security-Policy, client-side routes answered with the page), and, in
//! headless Chromium driven by `tests/browser/ui.mjs`, log in and out, a patient-name search
//! listing exactly the studies the fixtures say it should, a study page with its series
//! thumbnails, role-aware controls (administrator versus referrer) and the French translation.
//! Screenshots and the script's summary are kept in `target/browser-artifacts/ui/`.

use std::collections::BTreeSet;
use std::path::Path;

use dicom_dictionary_std::tags;
use pacs_testkit::server::{
    fixture_file, repo_root, run_browser_script, valid_fixtures, ServerOptions, TestServer,
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

    // The studies a case-insensitive prefix search must list, from the manifest and the files.
    let expected: BTreeSet<String> = entries
        .iter()
        .filter(|e| patient_name(&fixture_file(e)).to_lowercase().starts_with(SEARCH))
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
    ];
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
