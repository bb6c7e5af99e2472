//! Databases on the PostgreSQL server every development and CI machine runs, for tests of the
//! PostgreSQL index.

use std::process::Command;

/// The server tests create their databases on: `PACS_TEST_POSTGRES`, or the machine's
/// own (127.0.0.1:5432, trust authentication).
pub fn server_url() -> String {
    std::env::var("PACS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, empty database for one test; returns its URL. Named `openpacs_test_…`: the test
/// command drops those of earlier runs before it starts.
pub fn fresh_database(label: &str) -> String {
    let name = format!(
        "openpacs_test_{label}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    psql(&format!("CREATE DATABASE {name}"));
    let server = server_url();
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// Runs one statement on the server's administrative database; panics with psql's message
/// (psql comes with the server; the test command installs postgresql-client where it lacks).
pub fn psql(statement: &str) -> String {
    psql_on(&server_url(), statement)
}

/// Runs one statement on the database at `url`; returns the rows, one per line, unaligned.
pub fn psql_on(url: &str, statement: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", statement])
        .output()
        .expect("psql (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {statement:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
