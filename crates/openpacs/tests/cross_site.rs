//! Requests another site's page makes with the browser's credentials, and Host headers we do
//! not know: state-changing requests from a foreign origin are refused, REST API bodies must
//! be JSON, and the URLs handed out never name a forged host. curl plays the browser (it sends
//! whatever Origin, Referer and Host it is told to).

use std::path::Path;
use std::process::Command;

use base64::Engine;
use pacs_testkit::server::{pynetdicom, repo_root, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn admin_server(extra_toml: &str) -> TestServer {
    TestServer::start(
        binary(),
        ServerOptions {
            users: vec![("admin1".into(), "admin".into(), "admin-secret-pw".into())],
            extra_toml: extra_toml.into(),
            ..ServerOptions::default()
        },
    )
}

/// curl with `args`; returns the status and the body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A session cookie for admin1, from a JSON log-in.
fn session(server: &TestServer) -> String {
    let (status, head, _) = server.http_request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        br#"{"username":"admin1","password":"admin-secret-pw"}"#,
    );
    assert_eq!(status, 200, "{head}");
    head.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        })
        .and_then(|(_, v)| v.split(';').next())
        .expect("a session cookie")
        .trim()
        .to_string()
}

fn new_user(name: &str) -> String {
    format!(r#"{{"username":"{name}","password":"a-long-password","role":"reader"}}"#)
}

fn user_exists(server: &TestServer, name: &str) -> bool {
    let out = server.cli(&["user", "list"]);
    String::from_utf8_lossy(&out.stdout).contains(name)
}

#[test]
fn admin_endpoints_refuse_foreign_origins_and_non_json_bodies() {
    let server = admin_server("cors_allowed_origins = [\"https://viewer.example.org\"]\n");
    let ours = format!("http://127.0.0.1:{}", server.http_port);
    let users = format!("{ours}/api/users");
    let cookie = format!("Cookie: {}", session(&server));
    let basic = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin1:admin-secret-pw")
    );
    let json = "Content-Type: application/json";

    // The attack: a page of evil.example posts with the browser's cookie or cached Basic
    // credentials. Before: 201 and a new administrator-made account.
    for (credential, name) in [(&cookie, "csrf-cookie"), (&basic, "csrf-basic")] {
        for origin in ["Origin: http://evil.example", "Origin: null"] {
            let body = new_user(name);
            let (status, text) = curl(&["-H", credential, "-H", origin, "-H", json, "-d", &body, &users]);
            assert_eq!(status, 403, "{origin}: {text}");
        }
        let (status, _) = curl(&[
            "-H",
            credential,
            "-H",
            "Referer: http://evil.example/page.html",
            "-H",
            json,
            "-d",
            &new_user(name),
            &users,
        ]);
        assert_eq!(status, 403, "foreign Referer");
        assert!(!user_exists(&server, name), "{name} was created");
    }
    // A same-site page on another port is another origin too.
    let other_port = format!("Origin: http://127.0.0.1:{}", server.http_port + 1);
    let (status, _) = curl(&[
        "-H",
        &cookie,
        "-H",
        &other_port,
        "-H",
        json,
        "-d",
        &new_user("x1"),
        &users,
    ]);
    assert_eq!(status, 403);
    // Deleting and the DICOMweb STOW-RS route are guarded the same way.
    let (status, _) = curl(&[
        "-X",
        "DELETE",
        "-H",
        &cookie,
        "-H",
        "Origin: http://evil.example",
        &format!("{users}/admin1"),
    ]);
    assert_eq!(status, 403);
    let (status, _) = curl(&[
        "-H",
        &basic,
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Content-Type: multipart/related; type=\"application/dicom\"; boundary=x",
        "--data-binary",
        "--x--",
        &format!("{ours}/dicom-web/studies"),
    ]);
    assert_eq!(status, 403);

    // A simple (preflight-free) content type is refused on the REST API even without Origin.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let header = format!("Content-Type: {content_type}");
        let (status, _) = curl(&["-H", &cookie, "-H", &header, "-d", &new_user("plain"), &users]);
        assert_eq!(status, 415, "{content_type}");
    }
    // However the body is framed (chunked: no Content-Length).
    let (status, _) = curl(&[
        "-H",
        &cookie,
        "-H",
        "Content-Type: text/plain",
        "-H",
        "Transfer-Encoding: chunked",
        "-d",
        &new_user("plain"),
        &users,
    ]);
    assert_eq!(status, 415, "chunked");
    assert!(!user_exists(&server, "plain"));

    // Our own origin, a configured one, and clients that send no Origin at all succeed.
    let own = format!("Origin: {ours}");
    for (origin, name) in [
        (own.as_str(), "same-origin"),
        ("Origin: https://viewer.example.org", "configured-origin"),
        ("X-No-Origin: 1", "no-origin"),
    ] {
        let (status, text) = curl(&[
            "-H",
            &cookie,
            "-H",
            origin,
            "-H",
            json,
            "-d",
            &new_user(name),
            &users,
        ]);
        assert_eq!(status, 201, "{origin}: {text}");
        assert!(user_exists(&server, name));
    }
    let referer = format!("Referer: {ours}/admin");
    let (status, _) = curl(&[
        "-H",
        &basic,
        "-H",
        &referer,
        "-H",
        json,
        "-d",
        &new_user("same-referer"),
        &users,
    ]);
    assert_eq!(status, 201);
    // Reads are not state changes: a foreign Origin on a GET is CORS's business, not ours.
    let (status, _) = curl(&["-H", &basic, "-H", "Origin: http://evil.example", &users]);
    assert_eq!(status, 200);
    // Every refusal of a foreign origin is in the audit log.
    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    assert!(
        audit.contains("cross-origin request from \\\"http://evil.example\\\"")
            || audit.contains("cross-origin request from \"http://evil.example\""),
        "{audit}"
    );
    // Plain HTTP sends no HSTS (only TLS does, see auth.rs).
    let head = server.http("/healthz").1.to_ascii_lowercase();
    assert!(!head.contains("strict-transport-security"), "{head}");
}

fn store_ct(server: &TestServer) {
    let port = server.dicom_port.to_string();
    let ct = repo_root().join("tests/fixtures/valid/ct_explicit_le.dcm");
    let stored = pynetdicom(&["store", "--port", &port, &ct.display().to_string()]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
}

/// RetrieveURLs (QIDO-RS) and BulkDataURIs (metadata) as answered to a request with `host`.
fn urls_for_host(server: &TestServer, host: &str) -> Vec<String> {
    let base = format!("http://127.0.0.1:{}", server.http_port);
    let host = format!("Host: {host}");
    let auth = ["-u", "admin1:admin-secret-pw", "-H", host.as_str()];
    let mut urls = Vec::new();
    for path in [
        "/dicom-web/instances",
        "/dicom-web/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322/metadata",
    ] {
        let target = format!("{base}{path}");
        let (status, body) = curl(&[&auth[..], &[target.as_str()]].concat());
        assert_eq!(status, 200, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        for item in json.as_array().unwrap() {
            if let Some(u) = item["00081190"]["Value"][0].as_str() {
                urls.push(u.to_string());
            }
            if let Some(u) = item["7FE00010"]["BulkDataURI"].as_str() {
                urls.push(u.to_string());
            }
        }
    }
    assert_eq!(urls.len(), 2, "{urls:?}");
    urls
}

#[test]
fn retrieve_urls_never_name_a_forged_host() {
    let server = admin_server("");
    store_ct(&server);
    let ours = format!("http://127.0.0.1:{}/dicom-web/studies/", server.http_port);
    for host in ["evil.example", "evil.example:80", "127.0.0.1:1"] {
        for url in urls_for_host(&server, host) {
            assert!(
                !url.contains("evil") && url.starts_with(&ours),
                "Host {host}: {url}"
            );
        }
    }
    // The Host clients really use is kept.
    let localhost = format!("localhost:{}", server.http_port);
    for url in urls_for_host(&server, &localhost) {
        assert!(
            url.starts_with(&format!("http://{localhost}/dicom-web/")),
            "{url}"
        );
    }
    drop(server);

    // With public_base_url, that is the root whatever the Host; allowed_hosts adds hosts.
    let server = admin_server("public_base_url = \"https://pacs.example.org/\"\n");
    store_ct(&server);
    for url in urls_for_host(&server, "evil.example") {
        assert!(
            url.starts_with("https://pacs.example.org/dicom-web/studies/"),
            "{url}"
        );
    }
    drop(server);
    let server = admin_server("allowed_hosts = [\"pacs.example.org\"]\n");
    store_ct(&server);
    for url in urls_for_host(&server, "pacs.example.org") {
        assert!(
            url.starts_with("http://pacs.example.org/dicom-web/studies/"),
            "{url}"
        );
    }
    // Both are pasted into JSON and URLs: values that could end a string are refused.
    for (key, value) in [
        ("OPENPACS_PUBLIC_BASE_URL", "https://pacs.example.org/\"x"),
        ("OPENPACS_PUBLIC_BASE_URL", "javascript:alert(1)"),
        ("OPENPACS_ALLOWED_HOSTS", "[\"evil.example/x\"]"),
    ] {
        let refused = Command::new(binary())
            .arg("serve")
            .current_dir(&server.work_dir)
            .env(key, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&refused.stderr);
        let name = key.trim_start_matches("OPENPACS_").to_ascii_lowercase();
        assert!(
            !refused.status.success() && err.contains(&name),
            "{key}={value}: {err}"
        );
    }
}
