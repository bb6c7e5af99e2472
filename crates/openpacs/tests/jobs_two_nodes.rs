//! Two `openpacs serve` on one PostgreSQL index share their jobs: a node that dies with an
//! outbound HL7 message in hand leaves it to the other once its lease has run out, and the
//! RIS gets it exactly once.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacs_testkit::postgres::{fresh_database, psql_on};
use pacs_testkit::server::{dcmtk, free_port, repo_root, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// A peer that takes connections and never answers: a node sending to it stays in the middle
/// of its attempt (until its send timeout, 30 s) with the job claimed.
struct Silent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start(port: u16) -> Silent {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Silent {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn until<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn received(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_nodes_outbound_message_is_delivered_once_by_the_other_after_its_lease() {
    let url = fresh_database("two_nodes");
    let ris_port = free_port();
    let options = ServerOptions {
        extra_toml: format!(
            "index_url = {url:?}\nris_address = \"127.0.0.1:{ris_port}\"\nstudy_stable_secs = 1\njob_lease_secs = 8\n"
        ),
        ..ServerOptions::default()
    };
    let job = |column: &str| {
        psql_on(&url, &format!("SELECT {column} FROM job"))
            .trim()
            .to_string()
    };

    // Node A stores a study; quiet for a second, its end is claimed and the notice queued;
    // A takes the job and sends it to a RIS that never answers.
    let silent = Silent::start(ris_port);
    let mut a = TestServer::start(binary(), options.clone());
    let out = dcmtk("storescu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &a.dicom_port.to_string()])
        .arg(repo_root().join("tests/fixtures/valid/ct_series_a_1_explicit_le.dcm"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let owner_a = until("node A's claim", 30, || {
        (job("state") == "running").then(|| job("lease_owner"))
    });
    assert_eq!(job("attempts"), "1");
    assert_eq!(job("kind"), "hl7-outbound");

    // A dies mid-attempt; the peer goes down too. Node B starts on the same index.
    a.kill9();
    let killed_at = Instant::now();
    drop(silent);
    let b = TestServer::start(binary(), options);
    assert!(b.log().contains("openpacs ready"), "{}", b.log());

    // A's lease is still live (it renews every third of its 8 s): B leaves the job alone.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(killed_at.elapsed()));
    let now = "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
    assert_eq!(
        psql_on(&url, &format!("SELECT lease_until > {now} FROM job")).trim(),
        "t",
        "A's lease ran out early"
    );
    let lease_a = job("lease_until");
    assert_eq!(
        (job("state"), job("lease_owner"), job("attempts")),
        ("running".to_string(), owner_a.clone(), "1".to_string()),
        "taken before A's lease ran out"
    );

    // The RIS is back: B takes the job over once the lease has run out, and delivers it.
    let work = tempfile::tempdir().unwrap();
    let mut ris = Command::new("python3")
        .arg(repo_root().join("tests/interop/hl7_peer.py"))
        .args(["listen", "--port", &ris_port.to_string(), "--out"])
        .arg(work.path())
        .args(["--max-seconds", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(ris.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening"), "{line}");
    until("node B's delivery", 60, || (job("state") == "done").then_some(()));
    let claimed_by_b = job("updated_at");
    assert!(
        claimed_by_b >= lease_a,
        "settled at {claimed_by_b}, before A's lease ran out at {lease_a}"
    );
    let owner_b = job("lease_owner");
    assert_ne!(owner_b, owner_a, "done by the other node");
    assert!(job("attempts").parse::<u32>().unwrap() >= 2);
    // Exactly once: nothing else arrives (B's outbox polls every second).
    std::thread::sleep(Duration::from_secs(3));
    let got = received(work.path());
    assert_eq!(got.len(), 1, "{got:?}");
    let message = String::from_utf8_lossy(&std::fs::read(&got[0]).unwrap()).into_owned();
    assert!(
        message.contains("ORM^O01") && message.contains("|CM"),
        "{message}"
    );
    assert_eq!(psql_on(&url, "SELECT count(*) FROM job").trim(), "1");
    let _ = ris.kill();
    let _ = ris.wait();
}
