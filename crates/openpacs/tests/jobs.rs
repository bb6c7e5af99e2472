//! Durable jobs end to end against the real binary: an outbound HL7 queue left as files by an
//! older version is moved into the job table; python-hl7's listener as the RIS refuses, then
//! accepts; `openpacs jobs` and `/api/jobs` show the failed jobs and retry them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pacs_testkit::server::{free_port, repo_root, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// python-hl7's MLLP listener as the RIS: saves each message, answers AA (or AR with `nak`).
struct Listener {
    child: Child,
    out: PathBuf,
}

impl Listener {
    fn start(port: u16, out: &Path, nak: bool) -> Listener {
        let mut c = Command::new("python3");
        c.arg(repo_root().join("tests/interop/hl7_peer.py"))
            .args(["listen", "--port", &port.to_string(), "--out"])
            .arg(out)
            .args(["--max-seconds", "300"]);
        if nak {
            c.arg("--nak");
        }
        let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening"), "{line}");
        Listener {
            child,
            out: out.to_path_buf(),
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn notice(control: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|OPENPACS||RIS||20261201120000||ORM^O01^ORM_O01|{control}|P|2.5\r\
         PID|1||P-{control}\rORC|SC|ACC-{control}||CM\rOBR|1|ACC-{control}"
    )
    .into_bytes()
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[test]
fn an_old_file_queue_is_moved_into_jobs_that_are_listed_and_retried_after_a_refusal() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let queue = data.join("outbox").join("ris");
    std::fs::create_dir_all(queue.join("rejected")).unwrap();
    std::fs::write(queue.join("00000000000000000003.hl7"), notice("OLD3")).unwrap();
    std::fs::write(queue.join("00000000000000000004.hl7"), notice("OLD4")).unwrap();
    std::fs::write(queue.join("rejected/00000000000000000001.hl7"), notice("OLD1")).unwrap();

    // The RIS refuses everything for now.
    let port = free_port();
    let refusing = Listener::start(port, &work.path().join("refused"), true);
    let server = TestServer::start(
        binary(),
        ServerOptions {
            data_dir: Some(data.clone()),
            extra_toml: format!("ris_address = \"127.0.0.1:{port}\"\njob_lease_secs = 5\n"),
            users: vec![
                ("root".into(), "admin".into(), "root-password".into()),
                ("drmartin".into(), "reader".into(), "reader-password".into()),
            ],
        },
    );
    let admin = basic("root", "root-password");
    let reader = basic("drmartin", "reader-password");
    let get = |auth: &str, path: &str| {
        let (status, _, body) = server.http_request("GET", path, &[("Authorization", auth)], b"");
        let text = String::from_utf8_lossy(&body).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    };

    // Moved once, in order; the old directory renamed with what the RIS had refused.
    assert!(!queue.exists());
    let renamed: Vec<PathBuf> = std::fs::read_dir(data.join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(renamed.len(), 1, "{renamed:?}");
    let name = renamed[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("ris.imported-"), "{name}");
    assert!(renamed[0].join("rejected/00000000000000000001.hl7").is_file());
    assert!(
        server.log().contains("moved into the job table"),
        "{}",
        server.log()
    );

    // Both are refused (AR) and set aside: failed, attempted once, the refusal kept.
    let failed = until("two failed jobs", || {
        let (status, jobs) = get(&admin, "/api/jobs?state=failed");
        assert_eq!(status, 200, "{jobs}");
        (jobs.as_array().unwrap().len() == 2).then_some(jobs)
    });
    let ids: Vec<i64> = failed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert!(ids[0] > ids[1], "newest first: {ids:?}");
    for job in failed.as_array().unwrap() {
        assert_eq!(job["kind"], "hl7-outbound");
        assert_eq!(job["queueKey"], "ris");
        assert_eq!(job["attempts"], 1);
        assert!(job["lastError"].as_str().unwrap().starts_with("AR"), "{job}");
        assert!(job["summary"].as_str().unwrap().contains("ORM^O01"), "{job}");
    }
    assert_eq!(refusing.received().len(), 2, "each sent once, not retried");
    let listed = String::from_utf8_lossy(&server.cli(&["jobs"]).stdout).into_owned();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines.iter().all(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f[1] == "failed"
                && f[2] == "hl7-outbound"
                && f[3] == "ris"
                && f[4] == "1/2000"
                && f[6].starts_with("AR")
        }),
        "{listed}"
    );
    assert_eq!(
        String::from_utf8_lossy(&server.cli(&["jobs", "list", "--state", "done"]).stdout),
        ""
    );

    // Administrators only.
    assert_eq!(get(&reader, "/api/jobs").0, 403);
    let post = |auth: &str, path: &str| {
        let (status, _, body) = server.http_request("POST", path, &[("Authorization", auth)], b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(post(&reader, &format!("/api/jobs/{}/retry", ids[1])).0, 403);
    assert_eq!(get(&admin, "/api/jobs?state=lost").0, 400);

    // The RIS accepts now: the older job retried through the API, the other with the CLI;
    // they arrive in order, byte for byte as the files held them.
    drop(refusing);
    let accepting = Listener::start(port, &work.path().join("accepted"), false);
    let (status, body) = post(&admin, &format!("/api/jobs/{}/retry", ids[1]));
    assert_eq!(status, 200, "{body}");
    until("the first delivery", || {
        (accepting.received().len() == 1).then_some(())
    });
    let out = server.cli(&["jobs", "retry", &ids[0].to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until("the second delivery", || {
        (accepting.received().len() == 2).then_some(())
    });
    assert_eq!(accepting.received(), vec![notice("OLD3"), notice("OLD4")]);
    let done = until("two done jobs", || {
        let (_, jobs) = get(&admin, "/api/jobs?state=done");
        (jobs.as_array().unwrap().len() == 2).then_some(jobs)
    });
    assert!(done.as_array().unwrap().iter().all(|j| j["attempts"] == 1));

    // A done job is not retried; an unknown one neither.
    assert_eq!(post(&admin, &format!("/api/jobs/{}/retry", ids[0])).0, 404);
    let again = server.cli(&["jobs", "retry", "999999"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no failed or pending job 999999"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Every retry, refused ones included, and every settled message are audited.
    let audit = String::from_utf8_lossy(&server.cli(&["audit"]).stdout).into_owned();
    let retries: Vec<&str> = audit.lines().filter(|l| l.contains("\tjob-retry\t")).collect();
    assert_eq!(retries.len(), 4, "{retries:?}");
    assert!(retries.iter().any(|l| l.contains("http:root")), "{retries:?}");
    assert!(retries.iter().any(|l| l.contains("cli:")), "{retries:?}");
    let sends = audit.lines().filter(|l| l.contains("\thl7-send\t")).count();
    assert_eq!(sends, 4, "two refusals, two deliveries: {audit}");
}
