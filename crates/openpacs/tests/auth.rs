//! Authentication and authorization over HTTP: accounts made with `openpacs user`, Basic for
//! the dicomweb-client CLI, bearer tokens, browser sessions, roles, audit of refusals, CORS
//! and TLS (with curl as the client).

use std::path::Path;
use std::process::Command;

use base64::Engine;
use pacs_testkit::server::{dicomweb_client, pynetdicom, repo_root, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

const CT: &str = "tests/fixtures/valid/ct_explicit_le.dcm";
const STUDY: &str = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";
const SERIES: &str = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322";
const SOP: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

fn users() -> Vec<(String, String, String)> {
    ["admin", "reader", "referrer", "uploader"]
        .iter()
        .map(|r| (format!("{r}1"), r.to_string(), format!("{r}-secret-pw")))
        .collect()
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn store_ct(server: &TestServer) {
    let port = server.dicom_port.to_string();
    let ct = repo_root().join(CT).display().to_string();
    let stored = pynetdicom(&["store", "--port", &port, &ct]);
    assert_eq!(stored["results"][0]["status"], 0, "{stored}");
}

fn token(server: &TestServer, user: &str) -> String {
    let out = server.cli(&["user", "token", user, "--name", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("opk_") && token.len() > 40, "{token}");
    token
}

fn audit_lines(server: &TestServer) -> Vec<String> {
    let out = server.cli(&["audit"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn roles_decide_what_each_credential_reaches_and_refusals_are_audited() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users: users(),
            ..ServerOptions::default()
        },
    );
    store_ct(&server);
    let instance = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");

    // No credentials: 401 with a challenge, and nothing about the patient in the body.
    let (status, head, body) = server.http("/dicom-web/studies");
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("WWW-Authenticate: Basic") || head.contains("www-authenticate: Basic"),
        "{head}"
    );
    assert!(!body.contains("1CT1"), "{body}");
    for path in [instance.as_str(), "/api/me", "/wado?requestType=WADO"] {
        assert_eq!(server.http(path).0, 401, "{path}");
    }
    // Health and metrics stay public.
    assert_eq!(server.http("/healthz").0, 200);

    // The dicomweb-client CLI with Basic credentials.
    let url = server.dicomweb_url();
    let studies = dicomweb_client(
        &url,
        &["-u", "reader1", "-p", "reader-secret-pw", "search", "studies"],
    );
    assert_eq!(studies[0]["0020000D"]["Value"][0], STUDY, "{studies}");
    let wrong = server.http_bytes(
        "/dicom-web/studies",
        &[("Authorization", &basic("reader1", "nope-nope"))],
    );
    assert_eq!(wrong.0, 401);
    let unknown = server.http_bytes(
        "/dicom-web/studies",
        &[("Authorization", &basic("ghost", "nope-nope"))],
    );
    assert_eq!(unknown.0, 401);

    // Bearer tokens, one per role.
    let reader = format!("Bearer {}", token(&server, "reader1"));
    let referrer = format!("Bearer {}", token(&server, "referrer1"));
    let uploader = format!("Bearer {}", token(&server, "uploader1"));
    let status = |path: &str, auth: &str| server.http_bytes(path, &[("Authorization", auth)]).0;
    let wado_dicom = format!(
        "/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}&contentType=application/dicom"
    );
    let wado_escaped = wado_dicom.replace("application/dicom", "application%2Fdicom");
    let originals = [
        instance.clone(),
        format!("{instance}/metadata"),
        format!("{instance}/frames/1"),
        format!("/dicom-web/studies/{STUDY}"),
        wado_dicom.clone(),
        wado_escaped.clone(),
    ];
    for path in &originals {
        assert_eq!(status(path, &reader), 200, "reader {path}");
        assert_eq!(status(path, &referrer), 403, "referrer {path}");
        assert_eq!(status(path, &uploader), 403, "uploader {path}");
    }
    assert_eq!(status("/dicom-web/studies", &referrer), 200);
    assert_eq!(status("/dicom-web/studies", &uploader), 403);
    assert_eq!(status("/dicom-web/studies", "Bearer opk_not-a-token"), 401);

    // The uploader stores with STOW-RS through the real client, and may not search.
    let mr = repo_root()
        .join("tests/fixtures/valid/mr_explicit_le.dcm")
        .display()
        .to_string();
    let up_token = uploader.trim_start_matches("Bearer ").to_string();
    let stow = Command::new("dicomweb_client")
        .args([
            "--url",
            &url,
            "--bearer-token",
            &up_token,
            "store",
            "instances",
            &mr,
        ])
        .output()
        .unwrap();
    assert!(stow.status.success(), "{}", String::from_utf8_lossy(&stow.stderr));
    let mr_studies = dicomweb_client(
        &url,
        &[
            "--bearer-token",
            reader.trim_start_matches("Bearer "),
            "search",
            "studies",
            "--filter",
            "ModalitiesInStudy=MR",
        ],
    );
    assert_eq!(mr_studies.as_array().map(Vec::len), Some(1), "{mr_studies}");

    // Administration is admin-only: the REST API refuses others before anything happens.
    let admin = basic("admin1", "admin-secret-pw");
    assert_eq!(status("/api/users", &reader), 403);
    assert_eq!(status("/api/users", &admin), 200);

    // Refusals and accesses name the user in the audit log.
    let audit = audit_lines(&server);
    let has = |needle: &[&str]| audit.iter().any(|l| needle.iter().all(|n| l.contains(n)));
    assert!(
        has(&["http-access", "http:referrer1", "forbidden", "/metadata"]),
        "{audit:#?}"
    );
    assert!(
        has(&[
            "http-access",
            "http:anonymous",
            "unauthenticated",
            "/dicom-web/studies"
        ]),
        "{audit:#?}"
    );
    assert!(
        has(&[
            "http-access",
            "http:uploader1",
            "forbidden",
            "application%2Fdicom"
        ]),
        "{audit:#?}"
    );
    assert!(
        has(&["http:reader1", "success", SOP]) || has(&["http:reader1", "success", STUDY]),
        "{audit:#?}"
    );

    // Removing a user ends their token at once.
    let removed = server.cli(&["user", "remove", "referrer1"]);
    assert!(removed.status.success());
    assert_eq!(status("/dicom-web/studies", &referrer), 401);
    let listed = String::from_utf8_lossy(&server.cli(&["user", "list"]).stdout).into_owned();
    assert!(
        listed.contains("reader1\treader") && !listed.contains("referrer1"),
        "{listed}"
    );
}

#[test]
fn browser_sessions_log_in_and_out() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            users: users(),
            ..ServerOptions::default()
        },
    );
    let login = |body: &str, content_type: &str| {
        server.http_request(
            "POST",
            "/api/login",
            &[("Content-Type", content_type)],
            body.as_bytes(),
        )
    };
    let (status, _, _) = login(
        r#"{"username":"reader1","password":"wrong-password"}"#,
        "application/json",
    );
    assert_eq!(status, 401);
    let (status, head, body) = login(
        r#"{"username":"reader1","password":"reader-secret-pw"}"#,
        "application/json",
    );
    assert_eq!(status, 200, "{head}");
    let me: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(me["role"], "reader");
    let set_cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = set_cookie
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let with_cookie = |path: &str| server.http_bytes(path, &[("Cookie", &cookie)]);
    let (status, _, body) = with_cookie("/api/me");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("reader1"));
    // Nothing stored: QIDO answers 204, past the authentication.
    assert_eq!(with_cookie("/dicom-web/studies").0, 204);

    // A form log-in is refused: another site's HTML form could otherwise log the browser in
    // as an account of its choosing (login CSRF). The UI and scripts send JSON.
    let (status, _, _) = login(
        "username=referrer1&password=referrer-secret-pw",
        "application/x-www-form-urlencoded",
    );
    assert_eq!(status, 415);

    // Changing the password closes the sessions.
    let changed = server.cli_stdin(&["user", "passwd", "reader1"], "another-password");
    assert!(
        changed.status.success(),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert_eq!(with_cookie("/api/me").0, 401);
    let (status, head, _) = login(
        r#"{"username":"reader1","password":"another-password"}"#,
        "application/json",
    );
    assert_eq!(status, 200);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split(';').next().unwrap().trim().to_string())
        .unwrap();
    let (status, head, _) = server.http_request("POST", "/api/logout", &[("Cookie", &cookie)], b"");
    assert_eq!(status, 204);
    assert!(head.contains("Max-Age=0"), "{head}");
    assert_eq!(server.http_bytes("/api/me", &[("Cookie", &cookie)]).0, 401);

    // Weak passwords and unknown roles are refused by the CLI.
    let weak = server.cli_stdin(&["user", "add", "weak", "--role", "reader"], "short");
    assert!(!weak.status.success());
    let role = server.cli_stdin(&["user", "add", "odd", "--role", "superuser"], "long-enough-pw");
    assert!(!role.status.success());
    assert!(String::from_utf8_lossy(&role.stderr).contains("unknown role"));

    let audit = audit_lines(&server);
    assert!(audit
        .iter()
        .any(|l| l.contains("login") && l.contains("http:reader1") && l.contains("failure")));
    assert!(audit
        .iter()
        .any(|l| l.contains("user-passwd") && l.contains("reader1")));
}

#[test]
fn cors_is_off_by_default_and_limited_to_configured_origins() {
    let plain = TestServer::start(binary(), ServerOptions::default());
    let preflight = [
        ("Origin", "http://viewer.example"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let (_, head, _) = plain.http_request("OPTIONS", "/dicom-web/studies", &preflight, b"");
    assert!(
        !head.to_ascii_lowercase().contains("access-control-allow-origin"),
        "{head}"
    );

    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: "cors_allowed_origins = [\"http://viewer.example\"]\n".into(),
            ..ServerOptions::default()
        },
    );
    let (_, head, _) = server.http_request("OPTIONS", "/dicom-web/studies", &preflight, b"");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("access-control-allow-origin: http://viewer.example"),
        "{head}"
    );
    assert!(lower.contains("access-control-allow-credentials: true"), "{head}");
    let (_, head, _) = server.http_bytes("/dicom-web/studies", &[("Origin", "http://evil.example")]);
    assert!(
        !head.to_ascii_lowercase().contains("access-control-allow-origin"),
        "{head}"
    );
}

#[test]
fn https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!(
                "tls_cert = {:?}\ntls_key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
            users: users(),
            ..ServerOptions::default()
        },
    );
    let base = format!("https://127.0.0.1:{}", server.http_port);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-S", "-i", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = curl(&[&format!("{base}/healthz")]);
    assert!(ok && out.contains("200"), "{out}{err}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "HSTS over TLS: {out}"
    );
    let (ok, out, err) = curl(&[
        "-u",
        "reader1:reader-secret-pw",
        &format!("{base}/dicom-web/studies"),
    ]);
    assert!(
        ok && out.starts_with("HTTP/") && (out.contains(" 200") || out.contains(" 204")),
        "{out}{err}"
    );
    let (ok, out, _) = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"username":"reader1","password":"reader-secret-pw"}"#,
        &format!("{base}/api/login"),
    ]);
    assert!(ok);
    let cookie = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(cookie.contains("; Secure"), "{out}");
    // Plain HTTP on the TLS port gets nowhere.
    let (status, _, _) = server.http("/healthz");
    assert_ne!(status, 200);
    // Without the CA, curl refuses the self-signed certificate: the server really speaks TLS.
    let out = Command::new("curl")
        .args(["-s", &format!("{base}/healthz")])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn basic_credentials_can_be_turned_off() {
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: "http_basic_auth = false\n".into(),
            users: users().into_iter().filter(|u| u.1 == "reader").collect(),
            ..ServerOptions::default()
        },
    );
    let (status, head, _) = server.http_bytes(
        "/dicom-web/studies",
        &[("Authorization", &basic("reader1", "reader-secret-pw"))],
    );
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let bearer = format!("Bearer {}", token(&server, "reader1"));
    assert_eq!(
        server
            .http_bytes("/dicom-web/studies", &[("Authorization", &bearer)])
            .0,
        204
    );
}

#[test]
fn the_first_account_closes_a_server_started_open() {
    let server = TestServer::start(binary(), ServerOptions::default());
    assert_eq!(server.http("/dicom-web/studies").0, 204, "open: no account yet");
    let added = server.cli_stdin(&["user", "add", "first", "--role", "admin"], "first-admin-pw");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(
        server.http("/dicom-web/studies").0,
        401,
        "closed once an account exists"
    );
    let (status, _, _) = server.http_bytes(
        "/dicom-web/studies",
        &[("Authorization", &basic("first", "first-admin-pw"))],
    );
    assert_eq!(status, 204);
}
