//! Denial of service by idle and slow sockets (issue 14 §3), against the real binary on
//! 127.0.0.1: floods of connections that send nothing (or half a request, or a body a few bytes
//! at a time) must neither keep real peers out — DCMTK's echoscu, python-hl7, plain HTTP — nor
//! stay open past their deadline. The flood comes from other loopback addresses (127.0.0.2…,
//! which are this machine too), standing for another host than the real peer's.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pacs_testkit::server::{dcmtk, repo_root, ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn server(extra_toml: &str) -> TestServer {
    TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: extra_toml.into(),
            ..ServerOptions::default()
        },
    )
}

/// A connection to `port` from `source` (any 127/8 address), sending `first` if not empty.
fn connect_from(source: [u8; 4], port: u16, first: &[u8]) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut stream: TcpStream = socket.into();
    if !first.is_empty() {
        stream.write_all(first).unwrap();
    }
    stream
}

/// When each socket was closed by the server (EOF or reset), counted from `since`; `None` for
/// those still open at `since + limit`. What the server sends before closing is ignored.
fn close_times(sockets: &mut [TcpStream], since: Instant, limit: Duration) -> Vec<Option<Duration>> {
    let mut closed = vec![None; sockets.len()];
    for s in sockets.iter() {
        s.set_nonblocking(true).unwrap();
    }
    let mut buf = [0u8; 4096];
    while since.elapsed() < limit && closed.iter().any(Option::is_none) {
        for (i, s) in sockets.iter_mut().enumerate() {
            if closed[i].is_some() {
                continue;
            }
            loop {
                match s.read(&mut buf) {
                    Ok(0) => closed[i] = Some(since.elapsed()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => closed[i] = Some(since.elapsed()),
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    closed
}

fn count_within(times: &[Option<Duration>], range: std::ops::Range<Duration>) -> usize {
    times.iter().flatten().filter(|t| range.contains(t)).count()
}

/// A C-ECHO by DCMTK's echoscu: (success, how long it took).
fn echo(server: &TestServer) -> (bool, Duration) {
    let started = Instant::now();
    let out = dcmtk("echoscu")
        .args(["-aec", &server.ae_title, "-to", "20", "127.0.0.1"])
        .arg(server.dicom_port.to_string())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("echoscu: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), started.elapsed())
}

/// The value of one Prometheus sample (`name{labels}`), 0 when absent.
fn metric(server: &TestServer, sample: &str) -> f64 {
    server
        .http_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Audit rows `event` = refused from `peer`: (reason named in the detail, count in it).
fn refusal_rows(server: &TestServer, event: &str, peer: &str) -> Vec<(String, u64)> {
    let rows: Vec<serde_json::Value> = serde_json::from_str(
        &server.http_get(&format!("/api/audit?event={event}&outcome=refused&limit=500")),
    )
    .unwrap();
    rows.iter()
        .filter(|r| r["peer"] == peer)
        .filter_map(|r| {
            let detail = r["detail"].as_str()?;
            let count = detail.split(' ').next()?.parse().ok()?;
            Some((detail.rsplit(": ").next()?.to_string(), count))
        })
        .collect()
}

fn total(rows: &[(String, u64)], reason: &str) -> (u64, usize) {
    let of: Vec<_> = rows.iter().filter(|(r, _)| r == reason).collect();
    (of.iter().map(|(_, c)| c).sum(), of.len())
}

#[test]
fn idle_dicom_sockets_do_not_keep_a_c_echo_out() {
    let server = server("");
    // One socket from each of 100 addresses: more than the 64 association slots, none over
    // the per-source bound.
    let flood_started = Instant::now();
    let mut idle: Vec<TcpStream> = (1..=100)
        .map(|i| connect_from([127, 0, 1, i], server.dicom_port, &[]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, took) = echo(&server);
    assert!(ok, "C-ECHO refused during a flood of 100 idle sockets");
    assert!(
        took < Duration::from_secs(3),
        "C-ECHO took {took:?} during the flood"
    );
    eprintln!("C-ECHO during 100 idle sockets: {took:?}");
    // Held no longer than the ARTIM time (5 s by default), then closed by the server.
    let closed = close_times(&mut idle, flood_started, Duration::from_secs(9));
    assert_eq!(
        count_within(&closed, Duration::from_secs(4)..Duration::from_secs(8)),
        100,
        "{closed:?}"
    );
    assert_eq!(
        metric(
            &server,
            "openpacs_dimse_associations_refused_total{reason=\"artim\"}"
        ),
        100.0
    );
}

#[test]
fn pending_dicom_sockets_are_bounded_per_source_and_audited_in_aggregate() {
    let server = server("artim_timeout_secs = 2\nrefusal_audit_secs = 1\n");
    let flood_started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..40)
        .map(|_| connect_from([127, 0, 0, 2], server.dicom_port, &[]))
        .collect();
    let closed = close_times(&mut idle, flood_started, Duration::from_secs(5));
    // 16 pending at most from one address; the others are closed at once.
    assert_eq!(
        count_within(&closed, Duration::ZERO..Duration::from_secs(1)),
        24,
        "{closed:?}"
    );
    assert_eq!(
        count_within(&closed, Duration::from_millis(1500)..Duration::from_secs(4)),
        16,
        "{closed:?}"
    );
    assert!(echo(&server).0, "another address is served");
    let refused = |reason: &str| {
        metric(
            &server,
            &format!("openpacs_dimse_associations_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!((refused("pending_per_source"), refused("artim")), (24.0, 16.0));
    std::thread::sleep(Duration::from_millis(2500));
    let rows = refusal_rows(&server, "association", "127.0.0.2");
    // Every refusal counted, in one or two rows per reason (a report may fall mid-flood),
    // not one row per socket.
    let (per_source, per_source_rows) = total(&rows, "pending_per_source");
    let (artim, artim_rows) = total(&rows, "artim");
    assert_eq!((per_source, artim), (24, 16), "{rows:?}");
    assert!(per_source_rows <= 2 && artim_rows <= 2, "{rows:?}");
}

#[test]
fn an_association_request_arriving_in_pieces_is_served_and_a_foreign_first_pdu_aborted() {
    let server = server("");
    // A relay that passes echoscu's bytes to the server 7 at a time, 5 ms apart, so the
    // A-ASSOCIATE-RQ is seen partly arrived many times before it is whole.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let dicom_port = server.dicom_port;
    std::thread::spawn(move || {
        let (mut client, _) = relay.accept().unwrap();
        let mut upstream = TcpStream::connect(("127.0.0.1", dicom_port)).unwrap();
        let (mut client_rd, mut upstream_rd) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        std::thread::spawn(move || std::io::copy(&mut upstream_rd, &mut client));
        let mut buf = [0u8; 7];
        while let Ok(n) = client_rd.read(&mut buf) {
            if n == 0 || upstream.write_all(&buf[..n]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    let out = dcmtk("echoscu")
        .args(["-aec", &server.ae_title, "-to", "20", "127.0.0.1"])
        .arg(relay_port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Not DICOM at all: A-ABORT (type 07) at once, then closed.
    let mut http = TcpStream::connect(("127.0.0.1", server.dicom_port)).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    http.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answer = Vec::new();
    let _ = http.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&0x07), "{answer:?}");
    assert_eq!(
        metric(
            &server,
            "openpacs_dimse_associations_refused_total{reason=\"malformed\"}"
        ),
        1.0
    );
}

#[test]
fn half_sent_http_requests_are_closed_after_the_header_timeout() {
    let server = server("http_header_timeout_secs = 2\n");
    let flood_started = Instant::now();
    let mut half: Vec<TcpStream> = (0..200)
        .map(|i| {
            connect_from(
                [127, 0, 2, (i % 200) as u8 + 1],
                server.http_port,
                b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n",
            )
        })
        .collect();
    let started = Instant::now();
    let (status, _, body) = server.http("/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\nindex: ok\nblob store: ok\n"));
    assert!(started.elapsed() < Duration::from_secs(1));
    let closed = close_times(&mut half, flood_started, Duration::from_secs(6));
    assert_eq!(
        count_within(&closed, Duration::from_millis(1500)..Duration::from_secs(5)),
        200,
        "{closed:?}"
    );
}

#[test]
fn http_connections_beyond_the_cap_are_closed_at_once() {
    let server = server("http_max_connections = 20\nhttp_header_timeout_secs = 3\n");
    let flood_started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..30)
        .map(|_| connect_from([127, 0, 0, 2], server.http_port, &[]))
        .collect();
    let closed = close_times(&mut idle, flood_started, Duration::from_secs(6));
    assert_eq!(
        count_within(&closed, Duration::ZERO..Duration::from_secs(1)),
        10,
        "{closed:?}"
    );
    assert_eq!(
        count_within(&closed, Duration::from_millis(2500)..Duration::from_secs(6)),
        20,
        "{closed:?}"
    );
    assert_eq!(
        metric(
            &server,
            "openpacs_http_connections_refused_total{reason=\"limit\"}"
        ),
        10.0
    );
}

#[test]
fn stow_body_dripped_slowly_is_cut_and_its_temporary_file_removed() {
    let server = server("http_body_window_secs = 2\nhttp_body_min_bytes = 1024\n");
    let tmp = server.data_dir.join("tmp");
    let temp_files = || std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).unwrap();
    s.write_all(
        b"POST /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: multipart/related; type=\"application/dicom\"; boundary=B\r\n\
          Content-Length: 2000000000\r\n\r\n\
          --B\r\nContent-Type: application/dicom\r\n\r\n",
    )
    .unwrap();
    s.write_all(&[0u8; 200]).unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(temp_files(), 1, "the part is being written to a temporary file");
    // 4 bytes a second, far below 1 KiB per 2 s, until the server answers or closes.
    s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(8) {
        if s.write_all(&[0u8; 1]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => continue,
        }
    }
    let took = started.elapsed();
    let head = String::from_utf8_lossy(&response).into_owned();
    assert!(head.starts_with("HTTP/1.1 408"), "after {took:?}: {head:?}");
    assert!(took < Duration::from_secs(5), "cut after {took:?}");
    let mut removed = false;
    for _ in 0..50 {
        removed = temp_files() == 0;
        if removed {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(removed, "temporary file left behind");
    assert_eq!(metric(&server, "openpacs_http_bodies_cut_total"), 1.0);
}

/// Sends one message with python-hl7 (tests/interop/hl7_peer.py); returns its MSA-1 and
/// how long it took.
fn send_adt(server: &TestServer, dir: &Path, control: &str) -> (Option<String>, Duration) {
    let path = dir.join(format!("{control}.hl7"));
    std::fs::write(
        &path,
        format!("MSH|^~\\&|RIS|HOSP|OPENPACS|HOSP|20261128090000||ADT^A01^ADT_A01|{control}|P|2.5\rPID|1||P{control}^^^HOSP||DOE^JOHN\r"),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(repo_root().join("tests/interop/hl7_peer.py"))
        .args(["send", "--raw", "--port", &server.hl7_port.to_string()])
        .arg(&path)
        .output()
        .unwrap();
    let took = started.elapsed();
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let code = answers
        .first()
        .and_then(|a| a["code"].as_str())
        .map(str::to_string);
    (code, took)
}

#[test]
fn idle_mllp_connections_do_not_keep_a_real_adt_out_and_unended_messages_are_dropped() {
    let server = server("hl7_idle_timeout_secs = 3\nhl7_message_timeout_secs = 2\nrefusal_audit_secs = 1\n");
    let dir = tempfile::tempdir().unwrap();
    let flood_started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..70)
        .map(|_| connect_from([127, 0, 0, 2], server.hl7_port, &[]))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (code, took) = send_adt(&server, dir.path(), "REAL1");
    assert_eq!(code.as_deref(), Some("AA"), "real ADT during 70 idle connections");
    assert!(took < Duration::from_secs(3), "real ADT took {took:?}");
    eprintln!("ADT during 70 idle MLLP connections: {took:?}");
    let closed = close_times(&mut idle, flood_started, Duration::from_secs(6));
    // 8 per source at most (the rest closed at once), those at the idle timeout (3 s). The
    // times count from before the 300 ms pause and the real ADT, which a loaded machine slows:
    // "at once" is anything well before the idle timeout.
    assert_eq!(
        count_within(&closed, Duration::ZERO..Duration::from_secs(2)),
        62,
        "{closed:?}"
    );
    assert_eq!(
        count_within(&closed, Duration::from_millis(2500)..Duration::from_secs(6)),
        8,
        "{closed:?}"
    );

    // A message without its end byte, a byte at a time: dropped at the message deadline.
    let mut cut = connect_from(
        [127, 0, 0, 3],
        server.hl7_port,
        b"\x0bMSH|^~\\&|RIS|H|PACS|H|2026||ADT^A01|CUT|P|2.5\rPID|1||",
    );
    cut.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let dropped = loop {
        if started.elapsed() > Duration::from_secs(8) {
            break None;
        }
        let _ = cut.write_all(b"9");
        match cut.read(&mut buf) {
            Ok(0) => break Some(started.elapsed()),
            Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {
                break Some(started.elapsed())
            }
            _ => continue,
        }
    };
    let dropped = dropped.expect("an unended message is dropped");
    assert!(
        dropped >= Duration::from_millis(1500) && dropped < Duration::from_secs(4),
        "dropped after {dropped:?}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let rows = refusal_rows(&server, "hl7-connection", "127.0.0.2");
    assert_eq!(total(&rows, "per_source").0, 62, "{rows:?}");
    assert_eq!(total(&rows, "no_message").0, 8, "{rows:?}");
    let rows = refusal_rows(&server, "hl7-connection", "127.0.0.3");
    assert_eq!(total(&rows, "message_timeout").0, 1, "{rows:?}");
}
