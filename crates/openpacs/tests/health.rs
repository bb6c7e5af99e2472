//! `/healthz` as a load balancer uses it: 200 while the node can serve, 503 with the failing
//! check named while its blob store cannot be read, 200 again once it can, without a restart.
//! (An unreachable index is exercised with PostgreSQL, which can be stopped; an open SQLite
//! file cannot be taken away from a running process.)

use std::path::Path;

use pacs_testkit::server::{ServerOptions, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

#[test]
fn healthz_reports_each_backend_and_recovers_by_itself() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let (status, head, body) = server.http("/healthz");
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(body, "ok\nindex: ok\nblob store: ok\n");
    assert!(
        head.to_ascii_lowercase().contains("cache-control: no-store"),
        "{head}"
    );

    // The blob store goes away (an unmounted volume, say).
    let blobs = server.data_dir.join("blobs");
    let moved = server.data_dir.join("blobs-away");
    std::fs::rename(&blobs, &moved).unwrap();
    let (status, _, body) = server.http("/healthz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "unavailable\nindex: ok\nblob store: unreachable\n");
    assert!(
        server.log().contains("the blob store cannot be read"),
        "{}",
        server.log()
    );

    std::fs::rename(&moved, &blobs).unwrap();
    let (status, _, body) = server.http("/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "ok\nindex: ok\nblob store: ok\n");
}
