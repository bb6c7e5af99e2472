//! The platform operator (issue 17 §2): a user of the platform itself, outside every tenant,
//! who manages tenants over `/api/tenants` and reads usage and the platform's audit trail —
//! and whom every route to patient data refuses, prefixed or not.

use std::path::Path;

use pacs_testkit::server::{describe, fill_route, pynetdicom, repo_root, ServerOptions, TestServer};
use pacs_web::auth::{Access, Permission};
use pacs_web::routes::{route_table, Rule};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const SERIES: &str = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322";
const SOP: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

/// A server with tenant `hopa` (AE HOPA) holding the CT fixture, its administrator `alice` and
/// the operators `op1` and `op2`; returns it with `alice`'s and `op1`'s bearer tokens.
fn platform_with_hopa() -> (TestServer, String, String) {
    let server = TestServer::start(binary(), ServerOptions::default());
    server.cli_ok(&["tenant", "add", "hopa", "--ae", "HOPA"]);
    for (user, tenant, role) in [
        ("op1", "platform", "operator"),
        ("op2", "platform", "operator"),
        ("alice", "hopa", "admin"),
    ] {
        let out = server.add_user(user, tenant, role, "a-long-secret-pw");
        assert!(out.status.success(), "{}", describe(&out));
    }
    server.wait_for_tenants();
    let ct = repo_root().join("tests/fixtures/valid/ct_explicit_le.dcm");
    let port = server.dicom_port.to_string();
    let stored = pynetdicom(&[
        "store",
        "--port",
        &port,
        "--aec",
        "HOPA",
        &ct.display().to_string(),
    ]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    let token = |user: &str, tenant: &str| {
        format!(
            "Bearer {}",
            server.cli_ok(&["user", "token", user, "--tenant", tenant]).trim()
        )
    };
    let (alice, op1) = (token("alice", "hopa"), token("op1", "platform"));
    (server, alice, op1)
}

#[test]
fn the_operator_manages_tenants_and_never_reads_patient_data() {
    let (server, alice, op) = platform_with_hopa();
    // The operator role is the platform's alone, and the platform has no other.
    let wrong = server.add_user("eve", "hopa", "operator", "a-long-secret-pw");
    assert!(
        describe(&wrong).contains("the role operator is the platform's"),
        "{}",
        describe(&wrong)
    );
    let wrong = server.add_user("eve", "platform", "admin", "a-long-secret-pw");
    assert!(!wrong.status.success());
    let port = server.dicom_port.to_string();
    let find = pynetdicom(&[
        "find",
        "--port",
        &port,
        "--aec",
        "HOPA",
        "--level",
        "STUDY",
        "-k",
        "PatientID=",
    ]);
    let patient = find["matches"][0]["PatientID"].as_str().unwrap().to_string();

    // Every route that needs a tenant permission refuses the operator, and a tenant's prefix
    // is not the operator's: nothing of the patient's in any answer.
    let values = [
        ("study", STUDY),
        ("series", SERIES),
        ("instance", SOP),
        ("frames", "1"),
        ("tag", "7FE00010"),
        ("username", "alice"),
        ("aet", "HOPA"),
        ("id", "1"),
        ("name", "hopa"),
    ];
    let mut refused = 0;
    let mut failures = Vec::new();
    let mut table = route_table();
    table.sort_by_key(|spec| spec.method != "GET");
    for spec in &table {
        let needed = spec.rule.resolve(Some("contentType=application/dicom"));
        let path = fill_route(spec.path, &values);
        let target = match spec.rule {
            Rule::Is(_) => path,
            Rule::WadoUri => format!(
                "{path}?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}&contentType=application/dicom"
            ),
        };
        let method = spec.method.as_str();
        let headers = [
            ("Authorization", op.as_str()),
            ("Content-Type", "application/json"),
        ];
        let (status, _, body) = server.http_request(method, &target, &headers, b"{}");
        let (prefixed, _, prefixed_body) =
            server.http_request(method, &format!("/t/hopa{target}"), &headers, b"{}");
        for (what, body) in [("unprefixed", &body), ("/t/hopa", &prefixed_body)] {
            if String::from_utf8_lossy(body).contains(&patient) {
                failures.push(format!("{method} {target} ({what}): the patient in the answer"));
            }
        }
        if let Access::Need(p) = needed {
            if p != Permission::Operate {
                refused += 1;
                if status != 403 {
                    failures.push(format!("{method} {target}: {status}, not 403"));
                }
            }
        }
        if !matches!(needed, Access::Public) && prefixed != 404 {
            failures.push(format!("{method} /t/hopa{target}: {prefixed}, not 404"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(refused > 50, "{refused} patient-data routes tried");

    // What the operator does: tenants, usage, the platform's audit trail.
    let call = |method: &str, path: &str, auth: &str, body: &str| {
        let (status, _, bytes) = server.http_request(
            method,
            path,
            &[("Authorization", auth), ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    let (status, list) = call("GET", "/api/tenants", &op, "");
    assert_eq!(status, 200, "{list}");
    let tenants: serde_json::Value = serde_json::from_str(&list).unwrap();
    let hopa = tenants
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "hopa")
        .unwrap();
    assert!(hopa["usageBytes"].as_u64().unwrap() > 0, "{hopa}");
    assert!(!list.contains(&patient), "usage names no patient: {list}");
    let (status, added) = call(
        "POST",
        "/api/tenants",
        &op,
        r#"{"name":"hopc","title":"Clinique C","aeTitles":["HOPC"],"quotaBytes":1000}"#,
    );
    assert_eq!(status, 201, "{added}");
    assert!(added.contains("\"quotaBytes\":1000"), "{added}");
    let (status, taken) = call(
        "POST",
        "/api/tenants",
        &op,
        r#"{"name":"hopd","aeTitles":["HOPA"]}"#,
    );
    assert_eq!(status, 409, "{taken}");
    assert!(taken.contains("AE title HOPA belongs to tenant hopa"), "{taken}");
    let (status, bad) = call("POST", "/api/tenants", &op, r#"{"name":"Hop D"}"#);
    assert_eq!(status, 400, "{bad}");
    let (status, set) = call(
        "PUT",
        "/api/tenants/hopc",
        &op,
        r#"{"quotaBytes":null,"title":"Clinique du Parc"}"#,
    );
    assert_eq!(status, 200, "{set}");
    assert!(
        set.contains("\"quotaBytes\":null") && set.contains("Clinique du Parc"),
        "{set}"
    );
    let (status, disabled) = call("POST", "/api/tenants/hopc/disable", &op, "");
    assert_eq!(status, 200, "{disabled}");
    assert!(disabled.contains("\"disabled\":true"), "{disabled}");
    assert_eq!(call("POST", "/api/tenants/nosuch/enable", &op, "").0, 404);
    assert!(server.cli_ok(&["tenant", "list"]).contains("hopc"));
    // A tenant's administrator manages none of it.
    assert_eq!(call("GET", "/api/tenants", &alice, "").0, 403);
    assert_eq!(call("POST", "/api/tenants", &alice, r#"{"name":"mine"}"#).0, 403);
    assert_eq!(call("GET", "/api/platform/audit", &alice, "").0, 403);
    // nor can make anyone an operator.
    let (status, text) = call(
        "POST",
        "/api/users",
        &alice,
        r#"{"username":"eve","password":"a-long-secret-pw","role":"operator"}"#,
    );
    assert_eq!(status, 400, "{text}");

    // The operator logs in as op1@platform; the platform's trail holds the tenant changes
    // and the refusal of the conflicting one, and no patient.
    let (status, me) = call(
        "POST",
        "/api/login",
        "",
        r#"{"username":"op1@platform","password":"a-long-secret-pw"}"#,
    );
    assert_eq!(status, 200, "{me}");
    assert!(
        me.contains("\"role\":\"operator\"") && me.contains("\"tenant\":\"platform\""),
        "{me}"
    );
    let (status, audit) = call("GET", "/api/platform/audit?event=tenant&limit=100", &op, "");
    assert_eq!(status, 200, "{audit}");
    for line in [
        "add hopc",
        "set hopc",
        "disable hopc",
        "AE title HOPA belongs to tenant hopa",
    ] {
        assert!(audit.contains(line), "{line} not in {audit}");
    }
    let (_, everything) = call("GET", "/api/platform/audit?limit=1000", &op, "");
    assert!(!everything.contains(&patient), "{everything}");
    // and a tenant's own log holds none of the platform's lines.
    let (_, theirs) = call("GET", "/api/audit?event=tenant&limit=100", &alice, "");
    assert_eq!(theirs.trim(), "[]", "{theirs}");
}

/// Break-glass: `openpacs tenant grant-access` lets one operator read one tenant's data under
/// its prefix for a limited time, never store; each request and the grant itself are in the
/// tenant's own log; the access ends when the grant runs out or is revoked.
#[test]
fn break_glass_grants_time_limited_audited_read_access() {
    let (server, alice, op1) = platform_with_hopa();
    let ct = repo_root().join("tests/fixtures/valid/ct_explicit_le.dcm");
    let op2 = format!(
        "Bearer {}",
        server
            .cli_ok(&["user", "token", "op2", "--tenant", "platform"])
            .trim()
    );
    let get = |path: &str, auth: &str| {
        let (status, _, body) = server.http_bytes(path, &[("Authorization", auth)]);
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(get("/t/hopa/dicom-web/studies", &op1).0, 404, "no grant yet");

    // The grant names an operator and a reason, and lasts a few seconds here.
    let refused = server.cli(&[
        "tenant",
        "grant-access",
        "hopa",
        "--operator",
        "alice",
        "--reason",
        "x",
        "--hours",
        "1",
    ]);
    assert!(
        describe(&refused).contains("no operator \"alice\""),
        "{}",
        describe(&refused)
    );
    let refused = server.cli(&[
        "tenant",
        "grant-access",
        "hopa",
        "--operator",
        "op1",
        "--reason",
        " ",
        "--hours",
        "1",
    ]);
    assert!(!refused.status.success());
    let started = std::time::Instant::now();
    server.cli_ok(&[
        "tenant",
        "grant-access",
        "hopa",
        "--operator",
        "op1",
        "--reason",
        "ticket 4521: viewer shows no images",
        "--hours",
        "0.002",
    ]);
    let (status, studies) = get("/t/hopa/dicom-web/studies", &op1);
    assert_eq!(status, 200, "{studies}");
    assert!(
        studies.contains("1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"),
        "{studies}"
    );
    // Read only, under the prefix only, for this operator only.
    let mut stow = b"--Q\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    stow.extend(std::fs::read(&ct).unwrap());
    stow.extend_from_slice(b"\r\n--Q--\r\n");
    let (status, _, _) = server.http_request(
        "POST",
        "/t/hopa/dicom-web/studies",
        &[
            ("Authorization", &op1),
            (
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=Q",
            ),
        ],
        &stow,
    );
    assert_eq!(status, 403, "break-glass never stores");
    assert_eq!(get("/dicom-web/studies", &op1).0, 403);
    assert_eq!(get("/t/hopa/dicom-web/studies", &op2).0, 404);
    // The grant and the access are in the tenant's own log, with the reason.
    let (_, log) = get("/api/audit?limit=100", &alice);
    assert!(log.contains("ticket 4521: viewer shows no images"), "{log}");
    assert!(
        log.contains("\"event\":\"break-glass\"") && log.contains("http:op1@platform"),
        "{log}"
    );
    // It runs out by itself (0.002 h: 7.2 s, counted in whole seconds: 8 s).
    let remaining = std::time::Duration::from_millis(9500).saturating_sub(started.elapsed());
    std::thread::sleep(remaining);
    assert_eq!(get("/t/hopa/dicom-web/studies", &op1).0, 404, "the grant ran out");
    // and can be ended early.
    server.cli_ok(&[
        "tenant",
        "grant-access",
        "hopa",
        "--operator",
        "op1",
        "--reason",
        "again",
        "--hours",
        "1",
    ]);
    assert_eq!(get("/t/hopa/dicom-web/studies", &op1).0, 200);
    server.cli_ok(&["tenant", "revoke-access", "hopa", "--operator", "op1"]);
    assert_eq!(get("/t/hopa/dicom-web/studies", &op1).0, 404);
    let (_, log) = get("/api/audit?event=tenant&limit=100", &alice);
    assert!(log.contains("ended op1's access"), "{log}");
}

/// The operator console in the browser: the operator's home page, the tenants with their
/// usage, adding one through the form, disabling and enabling it from its row.
#[test]
fn the_operator_console_lists_adds_and_disables_tenants_in_the_browser() {
    let (server, _alice, _op1) = platform_with_hopa();
    let artifacts = repo_root().join("target/browser-artifacts/platform");
    let _ = std::fs::remove_dir_all(&artifacts);
    let args: Vec<String> = [
        "--server".to_string(),
        format!("http://127.0.0.1:{}", server.http_port),
        "--artifacts".to_string(),
        artifacts.display().to_string(),
        "--login".to_string(),
        "op1@platform:a-long-secret-pw".to_string(),
        "--tenant".to_string(),
        "hopa".to_string(),
    ]
    .to_vec();
    let run = pacs_testkit::server::run_browser_script("platform.mjs", &args);
    let report = format!("{:#}\nscreenshots: {}", run.summary, artifacts.display());
    run.assert_passed(&report);
    // What the page did, the server holds.
    let listed = server.cli_ok(&["tenant", "list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with("clinique-z"))
        .unwrap_or_default();
    assert!(
        line.contains("CLINZ,CLINZ_MR") && line.contains("1.9 GiB") && line.ends_with("enabled"),
        "{listed}"
    );
}
