//! Administration through the REST API: the DICOM AE table (validation, configuration entries
//! read-only, C-ECHO, kept across a restart, and used by C-MOVE — DCMTK movescu to a storescp
//! known only from the table — and by storage commitment reports sent on a new association to
//! a pynetdicom requester known only from the table), users and roles (validation, the last administrator kept, no
//! password hash ever answered), audit log searches, and refusals for everyone but
//! administrators, every one of them audited.

use std::path::Path;
use std::process::Output;

use base64::Engine;
use pacs_testkit::server::{
    dcmtk, free_port, pynetdicom, valid_fixtures, ServerOptions, StoreScp, TestServer,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

struct Client<'a> {
    server: &'a TestServer,
    auth: String,
}

impl<'a> Client<'a> {
    fn new(server: &'a TestServer, user: &str, password: &str) -> Client<'a> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Client {
            server,
            auth: format!("Basic {encoded}"),
        }
    }

    /// Status and body (as text) of a request with a JSON body when `body` is not empty.
    fn send(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut headers = vec![("Authorization", self.auth.as_str())];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        let (status, _, bytes) = self.server.http_request(method, path, &headers, body.as_bytes());
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.send(method, path, body);
        let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, value)
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, value) = self.json("GET", path, "");
        assert_eq!(status, 200, "{path}: {value}");
        value
    }
}

fn users_and_peer() -> ServerOptions {
    ServerOptions {
        users: vec![
            ("root".into(), "admin".into(), "root-password".into()),
            ("drmartin".into(), "reader".into(), "reader-password".into()),
        ],
        extra_toml: "[[peers]]\nae_title = \"CONFIGURED\"\nhost = \"127.0.0.1\"\nport = 1\n".into(),
        ..ServerOptions::default()
    }
}

#[test]
fn ae_table_is_validated_audited_kept_and_closed_to_non_administrators() {
    let mut server = TestServer::start(binary(), users_and_peer());
    let admin = Client::new(&server, "root", "root-password");
    let reader = Client::new(&server, "drmartin", "reader-password");
    let body = |host: &str, port: i64| format!(r#"{{"host": "{host}", "port": {port}}}"#);

    // Not for readers, whatever the method.
    for (method, path, payload) in [
        ("GET", "/api/aes", String::new()),
        ("GET", "/api/aes/CONFIGURED", String::new()),
        ("PUT", "/api/aes/WS1", body("127.0.0.1", 104)),
        ("DELETE", "/api/aes/WS1", String::new()),
        ("POST", "/api/aes/CONFIGURED/echo", String::new()),
    ] {
        assert_eq!(reader.send(method, path, &payload).0, 403, "{method} {path}");
    }

    // Validation: 400 with a message saying what is wrong.
    for (path, payload, says) in [
        (
            "/api/aes/SEVENTEEN_CHARS_XX",
            body("127.0.0.1", 104),
            "1 to 16 characters",
        ),
        ("/api/aes/BACK%5CSLASH", body("127.0.0.1", 104), "backslash"),
        ("/api/aes/TAB%09X", body("127.0.0.1", 104), "backslash"),
        ("/api/aes/WS1", body("127.0.0.1", 0), "between 1 and 65535"),
        ("/api/aes/WS1", body("127.0.0.1", 65536), "between 1 and 65535"),
        ("/api/aes/WS1", body("a host", 104), "not a host name"),
        ("/api/aes/WS1", body("", 104), "not a host name"),
        ("/api/aes/WS1", "{\"host\": \"x\"}".into(), "invalid JSON body"),
        ("/api/aes/WS1", "not json".into(), "invalid JSON body"),
        (
            "/api/aes/WS1",
            r#"{"host": "x", "port": 1, "extra": 1}"#.into(),
            "unknown field",
        ),
    ] {
        let (status, text) = admin.send("PUT", path, &payload);
        assert_eq!(status, 400, "{path} {payload}: {text}");
        assert!(text.contains(says), "{path} {payload}: {text}");
    }
    assert!(
        admin.get("/api/aes").as_array().unwrap().len() == 1,
        "nothing was added"
    );

    // The configuration file's entry is listed, read-only.
    let listed = admin.get("/api/aes");
    assert_eq!(listed[0]["aeTitle"], "CONFIGURED");
    assert_eq!(listed[0]["readOnly"], true);
    assert_eq!(
        admin.send("PUT", "/api/aes/CONFIGURED", &body("10.0.0.1", 104)).0,
        409
    );
    assert_eq!(admin.send("DELETE", "/api/aes/CONFIGURED", "").0, 409);

    // Create, replace, read, echo (nobody listens on port 1: a clear failure, not an error).
    let (status, created) = admin.json(
        "PUT",
        "/api/aes/WS1",
        r#"{"host": "127.0.0.1", "port": 11113, "description": "reading room 2"}"#,
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        admin.send("PUT", "/api/aes/WS1", &body("localhost", 11114)).0,
        200
    );
    let ws1 = admin.get("/api/aes/WS1");
    assert_eq!(
        (ws1["host"].as_str(), ws1["port"].as_u64()),
        (Some("localhost"), Some(11114))
    );
    assert_eq!(ws1["source"], "table");
    let (status, echo) = admin.json("POST", "/api/aes/CONFIGURED/echo", "");
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["success"], false, "{echo}");
    assert!(echo["error"].as_str().is_some_and(|e| !e.is_empty()), "{echo}");
    assert_eq!(admin.send("POST", "/api/aes/NOBODY/echo", "").0, 404);
    assert_eq!(admin.send("GET", "/api/aes/NOBODY", "").0, 404);
    assert_eq!(admin.send("DELETE", "/api/aes/NOBODY", "").0, 404);

    // Every change and every refusal is in the audit log, under its author.
    let puts = admin.get("/api/audit?event=ae-put&limit=1000");
    let outcomes: Vec<&str> = puts
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "refused").count(), 11, "{puts}");
    assert_eq!(outcomes.iter().filter(|o| **o == "success").count(), 2, "{puts}");
    assert!(puts.as_array().unwrap().iter().all(|r| r["actor"] == "http:root"));
    let forbidden = admin.get("/api/audit?user=drmartin&outcome=forbidden&limit=1000");
    assert_eq!(forbidden.as_array().unwrap().len(), 5, "{forbidden}");
    let echoes = admin.get("/api/audit?event=echo");
    assert_eq!(echoes[0]["outcome"], "failure", "{echoes}");

    // The table is in the index: it survives a restart.
    server.stop();
    server.restart();
    let admin = Client::new(&server, "root", "root-password");
    let ws1 = admin.get("/api/aes/WS1");
    assert_eq!(ws1["port"], 11114, "{ws1}");
    assert_eq!(admin.send("DELETE", "/api/aes/WS1", "").0, 204);
    assert_eq!(admin.send("GET", "/api/aes/WS1", "").0, 404);
}

fn movescu(server: &TestServer, destination: &str, study: &str) -> Output {
    dcmtk("movescu")
        .args(["-S", "-v", "-aec", "OPENPACS", "-aem", destination])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k"])
        .arg(format!("StudyInstanceUID={study}"))
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn c_move_reaches_an_ae_added_to_the_table_and_not_one_removed() {
    let server = TestServer::start(binary(), users_and_peer());
    let admin = Client::new(&server, "root", "root-password");
    let manifest = valid_fixtures();
    let series: Vec<&serde_json::Value> = manifest
        .iter()
        .filter(|e| {
            e["path"] == "valid/ct_series_a_1_explicit_le.dcm"
                || e["path"] == "valid/ct_series_a_2_explicit_le.dcm"
        })
        .collect();
    assert_eq!(series.len(), 2);
    server.store_fixtures(series.iter().copied());
    let study = series[0]["study_instance_uid"].as_str().unwrap();
    let mut expected: Vec<String> = series
        .iter()
        .map(|e| e["sop_instance_uid"].as_str().unwrap().to_string())
        .collect();
    expected.sort();

    let port = free_port();
    let scp = StoreScp::start("TABLEDEST", port, &["+xa"]);
    // Unknown until an administrator adds it.
    let out = movescu(&server, "TABLEDEST", study);
    assert!(
        text(&out).contains("Refused: MoveDestinationUnknown"),
        "{}",
        text(&out)
    );
    assert!(scp.received().is_empty());

    let (status, added) = admin.json(
        "PUT",
        "/api/aes/TABLEDEST",
        &format!(r#"{{"host": "127.0.0.1", "port": {port}}}"#),
    );
    assert_eq!(status, 201, "{added}");
    let (_, echo) = admin.json("POST", "/api/aes/TABLEDEST/echo", "");
    assert_eq!(echo["success"], true, "{echo}");
    assert_eq!(echo["status"], 0, "{echo}");
    assert!(echo["milliseconds"].as_f64().is_some(), "{echo}");

    let out = movescu(&server, "TABLEDEST", study);
    assert!(out.status.success(), "{}", text(&out));
    let mut received: Vec<String> = scp
        .received()
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.split_once('.')
                .map(|(_, uid)| uid.to_string())
                .unwrap_or(name)
        })
        .collect();
    received.sort();
    assert_eq!(received, expected, "{}", text(&out));
    // The retrieval is audited as any C-MOVE.
    let moves = admin.get("/api/audit?event=retrieve-move&order=desc");
    assert!(moves.as_array().is_some_and(|m| !m.is_empty()), "{moves}");

    // Removed: unknown again.
    assert_eq!(admin.send("DELETE", "/api/aes/TABLEDEST", "").0, 204);
    let out = movescu(&server, "TABLEDEST", study);
    assert!(
        text(&out).contains("Refused: MoveDestinationUnknown"),
        "{}",
        text(&out)
    );
    assert_eq!(scp.received().len(), 2);
}

#[test]
fn users_are_managed_by_administrators_only_and_the_last_one_stays() {
    let server = TestServer::start(binary(), users_and_peer());
    let admin = Client::new(&server, "root", "root-password");
    let reader = Client::new(&server, "drmartin", "reader-password");
    let new_user = |name: &str, password: &str, role: &str| {
        format!(r#"{{"username": "{name}", "password": "{password}", "role": "{role}"}}"#)
    };

    for (method, path, payload) in [
        ("GET", "/api/users", String::new()),
        ("POST", "/api/users", new_user("eve", "long-enough", "admin")),
        ("PUT", "/api/users/drmartin/role", r#"{"role": "admin"}"#.into()),
        (
            "PUT",
            "/api/users/root/password",
            r#"{"password": "taken-over!"}"#.into(),
        ),
        ("DELETE", "/api/users/root", String::new()),
        ("GET", "/api/audit", String::new()),
    ] {
        assert_eq!(reader.send(method, path, &payload).0, 403, "{method} {path}");
    }

    for (payload, says) in [
        (new_user("ana", "short", "reader"), "at least 8 characters"),
        (new_user("ana", "long-enough", "boss"), "unknown role"),
        (new_user("a:b", "long-enough", "reader"), "user name"),
        (new_user("", "long-enough", "reader"), "user name"),
        (r#"{"username": "ana"}"#.to_string(), "invalid JSON body"),
    ] {
        let (status, text) = admin.send("POST", "/api/users", &payload);
        assert_eq!(status, 400, "{payload}: {text}");
        assert!(text.contains(says), "{payload}: {text}");
    }
    let (status, created) = admin.json("POST", "/api/users", &new_user("ana", "long-enough", "referrer"));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["role"], "referrer");
    assert_eq!(
        admin
            .send("POST", "/api/users", &new_user("ana", "other-password", "reader"))
            .0,
        409
    );
    let ana = Client::new(&server, "ana", "long-enough");
    assert_eq!(ana.send("GET", "/api/studies", "").0, 200);
    assert_eq!(ana.send("GET", "/api/aes", "").0, 403);

    // Role and password changes.
    assert_eq!(
        admin
            .send("PUT", "/api/users/ana/role", r#"{"role": "uploader"}"#)
            .0,
        200
    );
    assert_eq!(
        admin
            .send("PUT", "/api/users/nobody/role", r#"{"role": "reader"}"#)
            .0,
        404
    );
    assert_eq!(
        admin
            .send("PUT", "/api/users/ana/password", r#"{"password": "short"}"#)
            .0,
        400
    );
    assert_eq!(
        admin
            .send(
                "PUT",
                "/api/users/ana/password",
                r#"{"password": "a-new-password"}"#
            )
            .0,
        204
    );
    let ana = Client::new(&server, "ana", "a-new-password");
    // An uploader now: no searching.
    assert_eq!(ana.send("GET", "/api/studies", "").0, 403);
    let users = admin.get("/api/users");
    let listed: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [("ana", "uploader"), ("drmartin", "reader"), ("root", "admin")]
    );
    assert!(!users.to_string().contains("argon2") && !users.to_string().contains("password"));

    // The last administrator can neither be demoted nor removed.
    let (status, text) = admin.send("PUT", "/api/users/root/role", r#"{"role": "reader"}"#);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("last administrator"), "{text}");
    assert_eq!(admin.send("DELETE", "/api/users/root", "").0, 409);
    assert_eq!(admin.send("DELETE", "/api/users/ana", "").0, 204);
    assert_eq!(admin.send("DELETE", "/api/users/ana", "").0, 404);
    assert!(!admin.get("/api/users").to_string().contains("\"ana\""));

    // Audit: the account changes under the administrator's name, filters, bad parameters.
    let changes = admin.get("/api/audit?user=root&outcome=success&limit=1000");
    let events: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    for event in ["user-add", "user-role", "user-passwd", "user-remove"] {
        assert!(events.contains(&event), "{event} in {events:?}");
    }
    assert!(changes
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["actor"] == "http:root"));
    let newest = admin.get("/api/audit?order=desc&limit=3");
    let ids: Vec<i64> = newest
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let older = admin.get(&format!("/api/audit?order=desc&limit=2&before={}", ids[2]));
    assert!(older[0]["id"].as_i64().unwrap() < ids[2]);
    let future = admin.get("/api/audit?from=2999-01-01");
    assert_eq!(future, serde_json::json!([]));
    let today = admin.get("/api/audit?from=2000-01-01&to=2999-01-01&limit=1");
    assert_eq!(today.as_array().unwrap().len(), 1);
    for bad in [
        "from=yesterday",
        "to=2024-01-01%27%20OR%201=1",
        "order=sideways",
        "limit=many",
        "colour=blue",
    ] {
        let (status, text) = admin.send("GET", &format!("/api/audit?{bad}"), "");
        assert_eq!(status, 400, "{bad}: {text}");
    }
    // The OpenAPI document describes these routes and methods.
    let (status, _, body) = server.http_bytes("/api/openapi.json", &[]);
    assert_eq!(status, 200);
    let openapi: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for (path, methods) in [
        ("/api/users", &["get", "post"][..]),
        ("/api/users/{username}", &["delete"][..]),
        ("/api/users/{username}/role", &["put"][..]),
        ("/api/users/{username}/password", &["put"][..]),
        ("/api/users/{username}/unlock", &["post"][..]),
        ("/api/aes", &["get"][..]),
        ("/api/aes/{aet}", &["get", "put", "delete"][..]),
        ("/api/aes/{aet}/echo", &["post"][..]),
        ("/api/audit", &["get"][..]),
    ] {
        for method in methods {
            assert!(
                openapi["paths"][path][method].is_object(),
                "{method} {path} missing"
            );
        }
    }
    let audit_parameters: Vec<&str> = openapi["paths"]["/api/audit"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "user", "patient", "from", "to", "outcome", "before", "order", "limit",
    ] {
        assert!(audit_parameters.contains(&name), "{name} in {audit_parameters:?}");
    }

    // Stores name their patient: the patient filter finds exactly those.
    server.store_fixtures(
        valid_fixtures()
            .iter()
            .filter(|e| e["path"] == "valid/mr_explicit_le.dcm"),
    );
    let patient = valid_fixtures()
        .into_iter()
        .find(|e| e["path"] == "valid/mr_explicit_le.dcm")
        .unwrap()["patient_id"]
        .as_str()
        .unwrap()
        .to_string();
    let lines = admin.get(&format!("/api/audit?patient={patient}"));
    assert!(!lines.as_array().unwrap().is_empty(), "{lines}");
    assert!(lines
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["patientId"] == patient.as_str()));
}

#[test]
fn storage_commitment_reports_reach_a_requester_known_only_from_the_table() {
    let listen = free_port();
    let mut options = users_and_peer();
    // A top-level key: before the [[peers]] table.
    options.extra_toml = format!("commitment_on_new_association = true\n{}", options.extra_toml);
    let server = TestServer::start(binary(), options);
    let admin = Client::new(&server, "root", "root-password");
    // pynetdicom's peer calls as PEERPY and listens for the report on `listen`.
    let (status, added) = admin.json(
        "PUT",
        "/api/aes/PEERPY",
        &format!(r#"{{"host": "127.0.0.1", "port": {listen}}}"#),
    );
    assert_eq!(status, 201, "{added}");
    let ct = valid_fixtures()
        .into_iter()
        .find(|f| f["path"] == "valid/ct_explicit_le.dcm")
        .unwrap();
    server.store_fixtures([&ct]);
    let instance = format!(
        "{},{}",
        ct["sop_class_uid"].as_str().unwrap(),
        ct["sop_instance_uid"].as_str().unwrap()
    );
    let out = pynetdicom(&[
        "commit",
        "--port",
        &server.dicom_port.to_string(),
        "--listen-port",
        &listen.to_string(),
        "--instance",
        &instance,
    ]);
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["reports"][0];
    assert_eq!(report["received_on"], "new", "{out}");
    assert_eq!(report["event_type_id"], 1, "{out}");
}
