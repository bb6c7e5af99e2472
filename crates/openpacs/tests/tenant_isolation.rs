//! The HTTP isolation matrix: every route of the table the router is built from (not a list
//! kept by hand), every method, called with tenant A's administrator token against tenant B's
//! resources — unprefixed, under B's prefix `/t/hopb/…`, and under a prefix naming no tenant —
//! never returns B's data, and B's prefix answers exactly as a tenant that does not exist.
//! B's own token, the control, does see its data, so the checks below can fail.

use std::path::Path;

use pacs_testkit::server::{describe, pynetdicom, ServerOptions, TestServer};
use pacs_testkit::{write_study, PatientSpec, StudySpec};
use pacs_web::routes::{route_table, Rule};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const B_PATIENT_ID: &str = "B-SECRET-ID";
const B_PATIENT_NAME: &str = "SECRET^BEE";

/// Stores one CT study of `patient` through the tenant's AE title; returns its UIDs.
fn store(server: &TestServer, called: &str, seed: u64, patient: (&str, &str)) -> [String; 3] {
    let spec = StudySpec {
        rows: 32,
        columns: 32,
        patient: Some(PatientSpec {
            patient_id: patient.0.into(),
            patient_name: patient.1.into(),
            birth_date: "19800101".into(),
            sex: "M".into(),
        }),
        ..StudySpec::ct(seed, 1)
    };
    let files = write_study(&spec, &server.work_dir.join(called)).unwrap();
    let port = server.dicom_port.to_string();
    let path = files[0].path.display().to_string();
    let out = pynetdicom(&["store", "--port", &port, "--aec", called, &path]);
    assert_eq!(out["results"][0]["status"], 0, "{out}");
    [
        spec.study_instance_uid(),
        spec.series_instance_uid(0),
        spec.sop_instance_uid(0, 0),
    ]
}

fn token(server: &TestServer, user: &str, tenant: &str) -> String {
    format!(
        "Bearer {}",
        server
            .cli_ok(&["user", "token", user, "--tenant", tenant, "--name", "matrix"])
            .trim()
    )
}

#[test]
fn no_route_gives_one_tenant_anothers_data() {
    let server = TestServer::start(binary(), ServerOptions::default());
    server.cli_ok(&["tenant", "add", "hopa", "--ae", "HOPA"]);
    server.cli_ok(&["tenant", "add", "hopb", "--ae", "HOPB"]);
    for (user, tenant) in [("alice", "hopa"), ("bob", "hopb")] {
        let out = server.add_user(user, tenant, "admin", "a-long-secret-pw");
        assert!(out.status.success(), "{}", describe(&out));
    }
    server.wait_for_tenants();
    store(&server, "HOPA", 11, ("A-ID", "ALPHA^ANNE"));
    let [study, series, instance] = store(&server, "HOPB", 22, (B_PATIENT_ID, B_PATIENT_NAME));
    let alice = token(&server, "alice", "hopa");
    let bob = token(&server, "bob", "hopb");
    let leaks = |body: &[u8]| {
        let text = String::from_utf8_lossy(body);
        text.contains(B_PATIENT_ID) || text.contains(B_PATIENT_NAME)
    };

    // The control: B's token sees B's patient, unprefixed and under B's prefix.
    for path in ["/dicom-web/studies", "/t/hopb/dicom-web/studies"] {
        let (status, _, body) = server.http_bytes(path, &[("Authorization", &bob)]);
        assert_eq!(status, 200, "{path}");
        assert!(leaks(&body), "{path}: B's own study not found");
    }
    // Log-in names the tenant: bob@hopb, or bob under B's prefix.
    for (path, user) in [("/api/login", "bob@hopb"), ("/t/hopb/api/login", "bob")] {
        let body = format!("{{\"username\":\"{user}\",\"password\":\"a-long-secret-pw\"}}");
        let (status, _, answer) = server.http_request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{path} {user}: {answer}");
        assert!(answer.contains("\"tenant\":\"hopb\""), "{answer}");
    }

    let values = [
        ("study", study.as_str()),
        ("series", series.as_str()),
        ("instance", instance.as_str()),
        ("frames", "1"),
        ("tag", "7FE00010"),
        ("username", "bob"),
        ("aet", "HOPB"),
        ("id", "1"),
        ("name", "hopb"),
    ];
    let mut table = route_table();
    // Reads first: the state-changing routes (deleting the study) go last.
    table.sort_by_key(|spec| spec.method != "GET");
    let mut requests = 0;
    let mut cases = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for spec in &table {
        let path = pacs_testkit::server::fill_route(spec.path, &values);
        let target = match spec.rule {
            Rule::Is(_) => path.clone(),
            Rule::WadoUri => format!(
                "{path}?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={instance}&contentType=application/dicom"
            ),
        };
        let methods: Vec<&str> = if spec.method == "GET" {
            vec!["GET", "HEAD"]
        } else {
            vec![spec.method.as_str()]
        };
        let public = matches!(spec.rule, Rule::Is(pacs_web::auth::Access::Public));
        for method in methods {
            let call = |target: &str| {
                server.http_request(
                    method,
                    target,
                    &[("Authorization", &alice), ("Content-Type", "application/json")],
                    b"{}",
                )
            };
            let (plain, _, plain_body) = call(&target);
            let (theirs, _, theirs_body) = call(&format!("/t/hopb{target}"));
            let (none, _, none_body) = call(&format!("/t/nosuch{target}"));
            requests += 3;
            cases.insert((spec.method.to_string(), spec.path, method));
            let what = format!("{method} {target}");
            for (case, status, body) in [
                ("unprefixed", plain, &plain_body),
                ("/t/hopb", theirs, &theirs_body),
                ("/t/nosuch", none, &none_body),
            ] {
                if leaks(body) {
                    failures.push(format!("{what} ({case}): {status} with B's patient in the body"));
                }
            }
            if public {
                if theirs != none {
                    failures.push(format!("{what}: {theirs} under B's prefix, {none} under none"));
                }
            } else if (theirs, &theirs_body) != (404, &none_body) || none != 404 {
                failures.push(format!(
                    "{what}: {theirs} {:?} under B's prefix, {none} {:?} under a tenant that does not exist",
                    String::from_utf8_lossy(&theirs_body),
                    String::from_utf8_lossy(&none_body)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} leaks or differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // What A's administrator tried to change of B's (deleting the study, the user bob…)
    // changed nothing: B still sees its study with its own token.
    let (status, _, body) = server.http_bytes(
        &format!("/dicom-web/studies/{study}/series/{series}/instances/{instance}"),
        &[("Authorization", &bob), ("Accept", "application/dicom")],
    );
    assert_eq!(status, 200);
    assert!(leaks(&body), "B's instance is gone or changed");
    // Each prefixed refusal is in A's own audit log.
    let (_, _, audit) = server.http_bytes(
        "/api/audit?outcome=forbidden&limit=1000",
        &[("Authorization", &alice)],
    );
    let audit = String::from_utf8_lossy(&audit);
    assert!(
        audit.contains("the prefix names another tenant or none"),
        "{audit}"
    );
    // In the web UI: alice logs in naming her establishment and sees her patient only, and
    // her establishment's usage (the page writes it in decimal units, one decimal).
    let (_, _, stats) = server.http_bytes("/api/stats", &[("Authorization", &alice)]);
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["quotaBytes"], serde_json::Value::Null, "{stats}");
    let usage = format!("{:.1}", stats["usageBytes"].as_f64().unwrap() / 1000.0);
    let usage = format!("{} kB", usage.trim_end_matches(".0"));
    let artifacts = pacs_testkit::server::repo_root().join("target/browser-artifacts/tenant");
    let _ = std::fs::remove_dir_all(&artifacts);
    let args: Vec<String> = [
        "--server",
        &format!("http://127.0.0.1:{}", server.http_port),
        "--artifacts",
        &artifacts.display().to_string(),
        "--login",
        "alice@hopa:a-long-secret-pw",
        "--signed-in",
        "Signed in as alice (administrator) at hopa",
        "--expect-patient",
        "ALPHA",
        "--hidden-patient",
        "SECRET",
        "--expect-usage",
        &format!("{usage} used, no quota"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let run = pacs_testkit::server::run_browser_script("tenant.mjs", &args);
    let report = format!("{:#}\nscreenshots: {}", run.summary, artifacts.display());
    run.assert_passed(&report);

    // `openpacs import --tenant` stores into that tenant only.
    let fixture = pacs_testkit::server::repo_root().join("tests/fixtures/valid/ct_explicit_le.dcm");
    let imported = server.cli(&["import", "--tenant", "hopa", &fixture.display().to_string()]);
    assert!(imported.status.success(), "{}", describe(&imported));
    let studies = |authorization: &str| {
        let (status, _, body) = server.http_bytes("/dicom-web/studies", &[("Authorization", authorization)]);
        assert_eq!(status, 200);
        serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .unwrap()
            .len()
    };
    assert_eq!((studies(&alice), studies(&bob)), (2, 1));
    let unknown = server.cli(&["import", "--tenant", "nosuch", &fixture.display().to_string()]);
    assert!(
        describe(&unknown).contains("no tenant \"nosuch\""),
        "{}",
        describe(&unknown)
    );
    eprintln!(
        "isolation matrix: {} routes, {} route × method pairs, 3 cases each: {requests} requests",
        table.len(),
        cases.len()
    );
}
