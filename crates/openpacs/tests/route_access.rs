//! Authorization by route: every route of the table the router is built from, tried with every
//! role (and with no credentials), must answer 401/403 exactly where the route's rule says,
//! whatever strings fill its path; and ingest refuses UIDs that could pose as a route's words.

use std::path::Path;
use std::process::Command;

use pacs_store::Role;
use pacs_testkit::server::{pynetdicom, repo_root, ServerOptions, TestServer};
use pacs_web::auth::{allows, Access};
use pacs_web::routes::{route_table, Rule};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const CT: &str = "tests/fixtures/valid/ct_explicit_le.dcm";
const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const SERIES: &str = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322";
const SOP: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

fn server_with_every_role() -> TestServer {
    let users = Role::ALL
        .iter()
        .map(|r| {
            (
                format!("{}1", r.as_str()),
                r.as_str().to_string(),
                format!("{}-secret-pw", r.as_str()),
            )
        })
        .collect();
    TestServer::start(
        binary(),
        ServerOptions {
            users,
            ..ServerOptions::default()
        },
    )
}

fn store_ct(server: &TestServer) {
    let port = server.dicom_port.to_string();
    let ct = repo_root().join(CT).display().to_string();
    let stored = pynetdicom(&["store", "--port", &port, &ct]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
}

/// `Authorization` values, one per role, and none for the anonymous caller.
fn credentials(server: &TestServer) -> Vec<(Option<Role>, Option<String>)> {
    let mut all = vec![(None, None)];
    for role in Role::ALL {
        let user = format!("{}1", role.as_str());
        let out = server.cli(&["user", "token", &user, "--name", "matrix"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        all.push((Some(role), Some(format!("Bearer {token}"))));
    }
    all
}

/// Tries every route × every role and checks each status against the route's rule; returns
/// how many requests were made.
fn try_every_route(server: &TestServer, values: &[(&str, &str)]) -> usize {
    let callers = credentials(server);
    let (study, series, instance) = (values[0].1, values[1].1, values[2].1);
    let mut table = route_table();
    // Reads first: the state-changing routes (deleting the study) go last.
    table.sort_by_key(|spec| spec.method != "GET");
    let mut requests = 0;
    let mut failures = Vec::new();
    for spec in &table {
        let path = pacs_testkit::server::fill_route(spec.path, values);
        let queries: Vec<Option<String>> = match spec.rule {
            Rule::Is(_) => vec![None],
            Rule::WadoUri => {
                let q = format!("requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={instance}");
                vec![
                    Some(q.clone()),
                    Some(format!("{q}&contentType=application/dicom")),
                    Some(format!("{q}&contentType=application%2Fdicom")),
                ]
            }
        };
        let methods: Vec<&str> = if spec.method == "GET" {
            vec!["GET", "HEAD"]
        } else {
            vec![spec.method.as_str()]
        };
        for query in &queries {
            let target = match query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let needed = spec.rule.resolve(query.as_deref());
            for method in &methods {
                for (role, authorization) in &callers {
                    let headers: Vec<(&str, &str)> = authorization
                        .iter()
                        .map(|a| ("Authorization", a.as_str()))
                        .collect();
                    let (status, _, _) = server.http_request(method, &target, &headers, &[]);
                    requests += 1;
                    let expected = match (needed, role) {
                        (Access::Public, _) => None,
                        (_, None) => Some(401),
                        (Access::AnyUser, Some(_)) => None,
                        (Access::Need(p), Some(r)) => (!allows(*r, p)).then_some(403),
                    };
                    let refused = status == 401 || status == 403;
                    let ok = match expected {
                        Some(code) => status == code,
                        None => !refused,
                    };
                    if !ok {
                        let who = role.map_or("anonymous", |r| r.as_str());
                        failures.push(format!(
                            "{method} {target} as {who}: {status}, rule {needed:?} expects {}",
                            expected.map_or("not 401/403".to_string(), |c| c.to_string())
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    requests
}

#[test]
fn every_route_answers_every_role_as_its_rule_says() {
    let server = server_with_every_role();
    store_ct(&server);
    let started = std::time::Instant::now();
    let requests = try_every_route(
        &server,
        &[
            ("study", STUDY),
            ("series", SERIES),
            ("instance", SOP),
            ("frames", "1"),
            ("tag", "7FE00010"),
            ("username", "matrix-nobody"),
            ("aet", "MATRIXAE"),
            ("id", "999999"),
            ("name", "matrix-tenant"),
        ],
    );
    assert!(requests > 250, "{requests} requests");
    eprintln!("{requests} requests in {:?}", started.elapsed());
}

/// The attack: preview-only roles were recognised from the last word of the path, so a study
/// UID `thumbnail` (or a series `rendered`) made `/studies/thumbnail` a "thumbnail" request and
/// served the original to a referrer. Now every originals route refuses a referrer whatever
/// its path holds.
#[test]
fn referrer_cannot_reach_originals_through_uids_that_look_like_route_words() {
    let server = server_with_every_role();
    try_every_route(
        &server,
        &[
            ("study", "thumbnail"),
            ("series", "rendered"),
            ("instance", "thumbnail"),
            ("frames", "rendered"),
            ("tag", "thumbnail"),
            ("username", "thumbnail"),
            ("aet", "rendered"),
            ("id", "thumbnail"),
            ("name", "rendered"),
        ],
    );
    let referrer = server.cli(&["user", "token", "referrer1", "--name", "attack"]);
    let token = format!("Bearer {}", String::from_utf8_lossy(&referrer.stdout).trim());
    for path in [
        "/dicom-web/studies/thumbnail",
        "/dicom-web/studies/1.2/series/rendered",
        "/dicom-web/studies/1.2/series/3.4/instances/thumbnail",
        "/dicom-web/studies/1.2/series/3.4/instances/5.6/frames/thumbnail",
        "/dicom-web/studies/thumbnail/metadata",
    ] {
        let (status, _, _) = server.http_bytes(path, &[("Authorization", &token)]);
        assert_eq!(status, 403, "{path}");
    }
}

/// A copy of the CT fixture with `attribute` set to `value`, written by pydicom.
fn ct_with(dir: &Path, attribute: &str, value: &str) -> String {
    let out = dir.join(format!("{attribute}.dcm"));
    let script = format!(
        "import pydicom\nds = pydicom.dcmread({src:?})\nds.{attribute} = {value:?}\nds.save_as({out:?})\n",
        src = repo_root().join(CT).display().to_string(),
        out = out.display().to_string(),
    );
    let made = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    out.display().to_string()
}

#[test]
fn c_store_of_a_study_uid_that_is_a_route_word_is_refused_with_a900() {
    let server = server_with_every_role();
    let dir = tempfile::tempdir().unwrap();
    let port = server.dicom_port.to_string();
    for (attribute, value) in [
        ("StudyInstanceUID", "thumbnail"),
        ("SeriesInstanceUID", "rendered"),
        ("SOPInstanceUID", "1.2..3"),
    ] {
        let file = ct_with(dir.path(), attribute, value);
        let stored = pynetdicom(&["store", "--port", &port, &file]);
        let result = &stored["results"][0];
        assert_eq!(result["status"], 0xA900, "{attribute}={value}: {stored}");
        let comment = result["error_comment"].as_str().unwrap_or_default();
        assert!(
            comment.starts_with(attribute) && comment.contains(value),
            "{attribute}: {comment:?}"
        );
    }
    // Nothing was indexed, and the import path refuses the same file with a reason.
    let admin = server.cli(&["user", "token", "admin1", "--name", "check"]);
    let token = format!("Bearer {}", String::from_utf8_lossy(&admin.stdout).trim());
    let (status, _, _) = server.http_bytes("/dicom-web/studies", &[("Authorization", &token)]);
    assert_eq!(status, 204, "no study indexed");
    let file = ct_with(dir.path(), "StudyInstanceUID", "thumbnail");
    // STOW-RS: the part is in the FailedSOPSequence with reason A900.
    let mut body = b"--XYZ\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend(std::fs::read(&file).unwrap());
    body.extend(b"\r\n--XYZ--\r\n");
    let (status, _, answer) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[
            ("Authorization", &token),
            ("Accept", "application/dicom+json"),
            (
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=XYZ",
            ),
        ],
        &body,
    );
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&answer));
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900,
        "{answer}"
    );
    let import = server.cli(&["import", &file]);
    let out = String::from_utf8_lossy(&import.stdout);
    assert!(!import.status.success(), "{out}");
    assert!(
        out.contains("StudyInstanceUID.dcm: StudyInstanceUID must be digits and dots: \"thumbnail\""),
        "{out}"
    );

    // A leading zero in a component breaks PS3.5 but is what some modalities send: stored (the
    // log warns), since digits and dots cannot change what a URL means.
    let file = ct_with(dir.path(), "StudyInstanceUID", "1.2.03.4");
    let stored = pynetdicom(&["store", "--port", &port, &file]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
    assert!(server.log().contains("leading zero"), "the warning is logged");
}
