//! Attacks on password authentication (issue 14, sections 1 and 7), reproduced against the
//! real binary on 127.0.0.1, bounded in count and time: a flood of wrong passwords must not
//! exhaust memory, guessing is throttled and locks the account, and a password change ends the
//! old password's cached Basic credentials at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;
use pacs_testkit::server::{ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// One HTTP/1.0 exchange with a deadline: status, header block, body (status 0 when the
/// server did not answer in time).
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new(), String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new(), String::new());
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get_as(server: &TestServer, auth: &str) -> u16 {
    exchange(server.http_port, "GET", "/api/me", &[("Authorization", auth)], "").0
}

fn login(server: &TestServer, user: &str, password: &str) -> (u16, String, String) {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    exchange(
        server.http_port,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        &body,
    )
}

fn admin_options(extra_toml: &str) -> ServerOptions {
    ServerOptions {
        users: vec![
            ("admin1".into(), "admin".into(), "admin-secret-pw".into()),
            ("reader1".into(), "reader".into(), "reader-secret-pw".into()),
        ],
        extra_toml: extra_toml.into(),
        ..ServerOptions::default()
    }
}

const MIB: u64 = 1024;

#[test]
fn parallel_wrong_passwords_do_not_exhaust_memory() {
    // Per-address delays off: this test is about the hashing bound, and every request comes
    // from 127.0.0.1 (the throttling tests below cover the delays).
    let server = TestServer::start(binary(), admin_options("login_failure_delay_ms = 0\n"));
    assert_eq!(get_as(&server, &basic("admin1", "admin-secret-pw")), 200);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = server.rss_kib();

    // 200 clients at once, half with Basic on a DICOMweb route, half on the log-in form, each
    // with a different unknown user name (so that no per-account lock-out shortens the attack).
    const CLIENTS: usize = 200;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let port = server.http_port;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let user = format!("ghost{i}");
                if i % 2 == 0 {
                    let auth = basic(&user, "wrong-password");
                    exchange(port, "GET", "/dicom-web/studies", &[("Authorization", &auth)], "").0
                } else {
                    let body = serde_json::json!({ "username": user, "password": "wrong" }).to_string();
                    let json = [("Content-Type", "application/json")];
                    exchange(port, "POST", "/api/login", &json, &body).0
                }
            })
        })
        .collect();
    let mut peak = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        peak = peak.max(server.rss_kib());
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood took over 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let elapsed = started.elapsed();
    peak = peak.max(server.peak_rss_kib());
    std::thread::sleep(Duration::from_secs(2));
    let after = server.rss_kib();
    let count = |s: u16| statuses.iter().filter(|&&x| x == s).count();
    eprintln!(
        "wrong-password flood: baseline {} MiB, peak {} MiB, after {} MiB, {:.1} s; 401: {}, 429: {}, 503: {}, other: {}",
        baseline / MIB,
        peak / MIB,
        after / MIB,
        elapsed.as_secs_f64(),
        count(401),
        count(429),
        count(503),
        CLIENTS - count(401) - count(429) - count(503),
    );
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "every attempt is refused, as wrong or as busy: {statuses:?}"
    );
    assert!(peak < 200 * MIB, "peak RSS {} MiB", peak / MIB);
    // What may stay: the Argon2 memory of the pool's slots (one per core, at most 4, 19 MiB
    // each, kept for reuse), and some slack for threads and buffers.
    let slots = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4) as u64;
    let kept = slots * 19 * MIB + 32 * MIB;
    assert!(
        after < baseline + kept,
        "RSS after the flood {} MiB, baseline {} MiB, {slots} slot(s)",
        after / MIB,
        baseline / MIB
    );
    // The server still serves its users, and refusals of the busy kind say when to come back.
    assert_eq!(get_as(&server, &basic("admin1", "admin-secret-pw")), 200);
    assert_eq!(login(&server, "reader1", "reader-secret-pw").0, 200);
}

fn audit_text(server: &TestServer) -> String {
    let out = server.cli(&["audit"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn admin_token(server: &TestServer) -> String {
    let out = server.cli(&["user", "token", "admin1", "--name", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn guessed_passwords_lock_the_account_until_it_runs_out_or_an_administrator_unlocks_it() {
    // Delays off so that ten guesses take a second, not a minute; the lock-out is the default.
    let mut server = TestServer::start(binary(), admin_options("login_failure_delay_ms = 0\n"));
    let admin = admin_token(&server);
    let right = basic("reader1", "reader-secret-pw");
    for i in 0..30 {
        let status = get_as(&server, &basic("reader1", &format!("guess-{i}")));
        assert!(status == 401 || (i >= 10 && status == 429), "guess {i}: {status}");
    }
    // Locked: the right password is refused with the same answer as a wrong one, over Basic
    // and on the log-in form.
    let (status, head, body) = exchange(
        server.http_port,
        "GET",
        "/api/me",
        &[("Authorization", &right)],
        "",
    );
    assert_eq!(status, 429, "{head}\n{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after: "), "{head}");
    assert!(body.contains("too many failed log-ins"), "{body}");
    let wrong = exchange(
        server.http_port,
        "GET",
        "/api/me",
        &[("Authorization", &basic("reader1", "x"))],
        "",
    );
    assert_eq!((wrong.0, &wrong.2), (status, &body));
    assert_eq!(login(&server, "reader1", "reader-secret-pw").0, 429);
    // An unknown name guessed as often answers alike (nothing tells it from an account).
    for i in 0..10 {
        assert_eq!(get_as(&server, &basic("ghost", &format!("guess-{i}"))), 401);
    }
    let ghost = exchange(
        server.http_port,
        "GET",
        "/api/me",
        &[("Authorization", &basic("ghost", "x"))],
        "",
    );
    assert_eq!((ghost.0, &ghost.2), (status, &body));
    // Other accounts and other credentials of the locked one are not affected.
    assert_eq!(get_as(&server, &basic("admin1", "admin-secret-pw")), 200);
    assert_eq!(get_as(&server, &admin), 200);

    // The lock-out is audited, listed, and survives a restart (it is kept in the index).
    let audit = audit_text(&server);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("account-lockout") && l.contains("reader1") && l.contains("locked")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("account-lockout") && l.contains("ghost")),
        "{audit}"
    );
    let users = exchange(
        server.http_port,
        "GET",
        "/api/users",
        &[("Authorization", &admin)],
        "",
    )
    .2;
    let users: serde_json::Value = serde_json::from_str(&users).unwrap();
    let reader = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "reader1")
        .unwrap();
    assert!(reader["lockedUntil"].is_string(), "{users}");
    server.stop();
    server.restart();
    assert_eq!(get_as(&server, &right), 429, "still locked after a restart");

    // An administrator unlocks it (REST API), and the right password works again.
    let unlock = |auth: &str| {
        exchange(
            server.http_port,
            "POST",
            "/api/users/reader1/unlock",
            &[("Authorization", auth)],
            "",
        )
        .0
    };
    assert_eq!(unlock(&right), 429, "not by the locked user's own password");
    assert_eq!(unlock(&admin), 204);
    assert_eq!(get_as(&server, &right), 200);
    assert!(audit_text(&server)
        .lines()
        .any(|l| l.contains("user-unlock") && l.contains("reader1")));

    // Locked again, and unlocked by `openpacs user unlock` in another process.
    for i in 0..10 {
        assert_eq!(
            login(&server, "reader1", &format!("again-{i}")).0,
            401,
            "guess {i}"
        );
    }
    assert_eq!(login(&server, "reader1", "reader-secret-pw").0, 429);
    let out = server.cli(&["user", "unlock", "reader1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(login(&server, "reader1", "reader-secret-pw").0, 200);
}

#[test]
fn repeated_failures_from_one_address_are_delayed_more_and_more() {
    // The default settings: three free failures, then a second's wait, doubling.
    let server = TestServer::start(binary(), admin_options(""));
    for i in 0..4 {
        let (status, _, body) = login(&server, &format!("ghost{i}"), "wrong");
        assert_eq!(status, 401, "failure {i}: {body}");
    }
    // Too early: refused without a check, whatever the name or password, saying when to retry.
    let (status, head, _) = login(&server, "admin1", "admin-secret-pw");
    assert_eq!(status, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert_eq!(get_as(&server, &basic("admin1", "admin-secret-pw")), 429);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(login(&server, "ghost9", "wrong").0, 401);
    let (status, head, _) = login(&server, "admin1", "admin-secret-pw");
    assert_eq!(status, 429);
    assert!(head.to_ascii_lowercase().contains("retry-after: 2"), "{head}");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(login(&server, "admin1", "admin-secret-pw").0, 200);
}

#[test]
fn a_password_change_ends_the_old_password_over_basic_at_once() {
    let server = TestServer::start(binary(), admin_options(""));
    let admin = admin_token(&server);
    let old = basic("reader1", "reader-secret-pw");
    let reader_token = {
        let out = server.cli(&["user", "token", "reader1"]);
        format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim())
    };
    // Verified once, then served from the cache of verified credentials.
    assert_eq!(get_as(&server, &old), 200);
    assert_eq!(get_as(&server, &old), 200);

    // Changed by the command line, in another process than the server.
    let out = server.cli_stdin(&["user", "passwd", "reader1"], "second-secret-pw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get_as(&server, &old), 401, "old password refused at once");
    let second = basic("reader1", "second-secret-pw");
    assert_eq!(get_as(&server, &second), 200);
    assert_eq!(get_as(&server, &reader_token), 200, "tokens stay unless asked");

    // Changed by the REST API, with the tokens revoked.
    let body = serde_json::json!({ "password": "third-secret-pw", "revokeTokens": true }).to_string();
    let headers = [
        ("Authorization", admin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let changed = exchange(
        server.http_port,
        "PUT",
        "/api/users/reader1/password",
        &headers,
        &body,
    );
    assert_eq!(changed.0, 204, "{}", changed.2);
    assert_eq!(get_as(&server, &second), 401, "old password refused at once");
    assert_eq!(get_as(&server, &reader_token), 401, "tokens revoked");
    let third = basic("reader1", "third-secret-pw");
    assert_eq!(get_as(&server, &third), 200);

    // The command line revokes tokens too when asked.
    let token = {
        let out = server.cli(&["user", "token", "reader1"]);
        format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim())
    };
    assert_eq!(get_as(&server, &token), 200);
    let out = server.cli_stdin(
        &["user", "passwd", "reader1", "--revoke-tokens"],
        "fourth-secret-pw",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get_as(&server, &token), 401);
    assert_eq!(get_as(&server, &third), 401);

    // A removed account's cached credentials end at once too.
    let fourth = basic("reader1", "fourth-secret-pw");
    assert_eq!(get_as(&server, &fourth), 200);
    let removed = exchange(
        server.http_port,
        "DELETE",
        "/api/users/reader1",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(removed.0, 204);
    assert_eq!(get_as(&server, &fourth), 401);
}

#[test]
fn parallel_guesses_from_one_address_are_refused_before_hashing() {
    // The 200 parallel guesses ran at 73 per second. With the default settings, the
    // first few let through count at once, and the rest wait (429) without being checked.
    let server = TestServer::start(binary(), admin_options(""));
    const GUESSES: usize = 100;
    let barrier = Arc::new(Barrier::new(GUESSES));
    let port = server.http_port;
    let guesses: Vec<_> = (0..GUESSES)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let auth = basic("admin1", &format!("guess-{i}"));
                exchange(port, "GET", "/api/me", &[("Authorization", &auth)], "").0
            })
        })
        .collect();
    let statuses: Vec<u16> = guesses.into_iter().map(|g| g.join().unwrap()).collect();
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let waited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(checked + waited, GUESSES, "{statuses:?}");
    assert!(checked <= 4, "{checked} guesses checked: {statuses:?}");
}
