//! The index's PostgreSQL goes away under a running server and comes back (issue 16 §2): while
//! it is away, stores are refused with A700 (DIMSE) or 503 (STOW-RS) and a reason, queries
//! fail within seconds, `/healthz` says so; nothing refused is indexed; once it is back the
//! same server stores and finds again, without a restart. The outage is a TCP proxy between
//! the server and PostgreSQL that the test cuts (the real server is shared with other tests).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pacs_testkit::postgres::fresh_database;
use pacs_testkit::proxy::TcpProxy;
use pacs_testkit::server::{pynetdicom, ServerOptions, TestServer};
use pacs_testkit::{write_study, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn through(url: &str, port: u16) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("user@host in the test URL");
    let (_, path) = rest.split_once('/').expect("a database in the test URL");
    format!("{scheme_user}@127.0.0.1:{port}/{path}")
}

fn postgres_address(url: &str) -> SocketAddr {
    let rest = url.split_once('@').unwrap().1;
    let host_port = rest.split_once('/').unwrap().0;
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    host_port.replace("localhost", "127.0.0.1").parse().unwrap()
}

/// C-STORE of one file with pynetdicom: its status and error comment.
fn store(port: &str, path: &Path) -> (u64, String) {
    let out = pynetdicom(&["store", "--port", port, &path.display().to_string()]);
    let result = out["results"][0].clone();
    (
        result["status"].as_u64().unwrap_or_else(|| panic!("{out}")),
        result["error_comment"].as_str().unwrap_or_default().to_string(),
    )
}

/// Stores `path` again and again (each refusal an A700) until it is accepted, within `limit`;
/// how long that took.
fn stored_again_within(port: &str, path: &Path, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, comment) = store(port, path);
        if status == 0 {
            return started.elapsed();
        }
        assert_eq!(status, 0xA700, "{comment}");
        assert!(
            started.elapsed() < limit,
            "still refused {limit:?} after PostgreSQL answered again: {comment}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn stores_are_refused_while_postgresql_is_away_and_accepted_again_when_it_is_back() {
    let url = fresh_database("outage");
    let proxy = TcpProxy::start(postgres_address(&url));
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!("index_url = {:?}\n", through(&url, proxy.port)),
            ..ServerOptions::default()
        },
    );
    let source = tempfile::tempdir().unwrap();
    let study = write_study(&StudySpec::ct(5151, 3), source.path()).unwrap();
    let files: Vec<PathBuf> = study.iter().map(|g| g.path.clone()).collect();
    let port = server.dicom_port.to_string();
    let store = |path: &Path| store(&port, path);
    let find = || {
        pynetdicom(&[
            "find",
            "--port",
            &port,
            "--level",
            "IMAGE",
            "-k",
            "SOPInstanceUID=",
        ])
    };
    assert_eq!(store(&files[0]).0, 0);

    proxy.cut();
    let started = Instant::now();
    let (status, comment) = store(&files[1]);
    let refused_after = started.elapsed();
    assert_eq!(status, 0xA700, "{comment}");
    assert!(
        comment.contains("unreachable; nothing stored: retry later"),
        "{comment}"
    );
    assert!(
        !comment.contains("127.0.0.1"),
        "no engine address to the peer: {comment}"
    );
    assert!(refused_after < Duration::from_secs(10), "{refused_after:?}");

    let started = Instant::now();
    let found = find();
    let failed_after = started.elapsed();
    assert_eq!(found["status"].as_u64(), Some(0xA700), "{found}");
    assert!(failed_after < Duration::from_secs(10), "{failed_after:?}");

    let (code, _, body) = server.http_bytes("/healthz", &[]);
    assert_eq!(code, 503);
    assert!(String::from_utf8_lossy(&body).contains("index: unreachable"));
    let (code, head, body) = server.http_bytes("/dicom-web/studies", &[]);
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");

    // STOW-RS: "try again later" (from the access check, which needs the index too).
    let mut body = b"--outage\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&std::fs::read(&files[1]).unwrap());
    body.extend_from_slice(b"\r\n--outage--\r\n");
    let (code, _, answer) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[(
            "Content-Type",
            "multipart/related; type=\"application/dicom\"; boundary=outage",
        )],
        &body,
    );
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(code, 503, "{answer}");
    assert!(answer.contains("try again later"), "{answer}");

    // Back: the same server, no restart.
    proxy.restore();
    let resumed_after = stored_again_within(&port, &files[2], Duration::from_secs(20));
    let found = find();
    let mut uids: Vec<String> = found["matches"]
        .as_array()
        .unwrap_or_else(|| panic!("{found}"))
        .iter()
        .map(|m| m["SOPInstanceUID"].as_str().unwrap().to_string())
        .collect();
    uids.sort();
    let mut expected = vec![
        study[0].sop_instance_uid.clone(),
        study[2].sop_instance_uid.clone(),
    ];
    expected.sort();
    assert_eq!(
        uids, expected,
        "the refused instance is not indexed; the others are"
    );
    let (code, _, _) = server.http_bytes("/healthz", &[]);
    assert_eq!(code, 200);
    eprintln!(
        "postgres outage: store refused after {refused_after:?}, query failed after {failed_after:?}, stores accepted again {resumed_after:?} after the engine came back"
    );
}

/// PostgreSQL stops answering but keeps its connections open (a frozen host, a black-holed
/// route): without a deadline the store would wait for TCP to give up, many minutes. With
/// `index_write_timeout_secs = 3` it is refused with A700 within seconds, and once the engine
/// answers again the same server stores again.
#[test]
fn a_postgresql_that_stops_answering_refuses_stores_within_the_write_deadline() {
    let url = fresh_database("stall");
    let proxy = TcpProxy::start(postgres_address(&url));
    let server = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!(
                "index_url = {:?}\nindex_write_timeout_secs = 3\n",
                through(&url, proxy.port)
            ),
            ..ServerOptions::default()
        },
    );
    let source = tempfile::tempdir().unwrap();
    let study = write_study(&StudySpec::ct(5252, 3), source.path()).unwrap();
    let port = server.dicom_port.to_string();
    let store = |path: &Path| store(&port, path);
    assert_eq!(store(&study[0].path).0, 0);

    proxy.stall();
    let started = Instant::now();
    let (status, comment) = store(&study[1].path);
    let refused_after = started.elapsed();
    assert_eq!(status, 0xA700, "{comment}\n{}", server.log());
    assert!(comment.contains("nothing stored: retry later"), "{comment}");
    assert!(refused_after < Duration::from_secs(20), "{refused_after:?}");

    proxy.restore();
    let resumed_after = stored_again_within(&port, &study[2].path, Duration::from_secs(30));
    eprintln!(
        "postgres stall: store refused after {refused_after:?}, accepted again {resumed_after:?} after the engine answered"
    );
}
