//! A tenant's storage quota (issue 17 §3), through the real peers: DCMTK storescu and
//! pynetdicom (A700 "tenant storage quota exceeded"), STOW-RS (FailureReason A700) and
//! `openpacs import` (counted refused). Nothing of a refused object is kept, the other tenant
//! stores on, usage is exact (the bytes of the blobs on disk) and survives a restart, and
//! storing resumes without a restart once the quota is raised or space is freed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pacs_testkit::server::{dcmtk, describe, pynetdicom, ServerOptions, TestServer};
use pacs_testkit::{write_study, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// `usageBytes` and `quotaBytes` of a tenant, as `openpacs tenant list` reports them.
fn usage(server: &TestServer, tenant: &str) -> (u64, Option<u64>) {
    let listed: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["tenant", "list", "--format", "json"])).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tenant)
        .unwrap_or_else(|| panic!("no {tenant} in {listed}"))
        .clone();
    (
        entry["usageBytes"].as_u64().unwrap(),
        entry["quotaBytes"].as_u64(),
    )
}

/// Bytes of every blob file in the data directory, and how many there are.
fn blobs_on_disk(server: &TestServer) -> (u64, usize) {
    let mut total = (0, 0);
    let mut dirs = vec![server.data_dir.join("blobs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                total = (total.0 + meta.len(), total.1 + 1);
            }
        }
    }
    total
}

fn store_status(server: &TestServer, called: &str, file: &Path) -> serde_json::Value {
    let port = server.dicom_port.to_string();
    let out = pynetdicom(&[
        "store",
        "--port",
        &port,
        "--aec",
        called,
        &file.display().to_string(),
    ]);
    out["results"][0].clone()
}

/// Waits until the server uses the tenant table as just changed (it reads it every 2 s): a
/// store of `probe` through `called` answers `status`.
fn wait_for_store(server: &TestServer, called: &str, probe: &Path, status: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let result = store_status(server, called, probe);
        if result["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "still {result} through {called}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_tenant_past_its_quota_is_refused_over_every_way_in_and_the_other_stores_on() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let files: Vec<PathBuf> = write_study(
        &StudySpec {
            rows: 64,
            columns: 64,
            ..StudySpec::ct(4242, 5)
        },
        &server.work_dir.join("study"),
    )
    .unwrap()
    .into_iter()
    .map(|i| i.path)
    .collect();
    let file_size = std::fs::metadata(&files[0]).unwrap().len();
    // Room for two objects and a half.
    let quota = file_size * 5 / 2;
    server.cli_ok(&[
        "tenant",
        "add",
        "clinique",
        "--ae",
        "CLINIQUE",
        "--quota-bytes",
        &quota.to_string(),
    ]);
    server.cli_ok(&["tenant", "add", "voisin", "--ae", "VOISIN"]);
    let user = server.add_user("ana", "clinique", "admin", "a-long-secret-pw");
    assert!(user.status.success(), "{}", describe(&user));
    server.wait_for_tenants();

    // DCMTK: the first two fit, the third is refused with A700.
    let out = dcmtk("storescu")
        .args([
            "-d",
            "-aec",
            "CLINIQUE",
            "127.0.0.1",
            &server.dicom_port.to_string(),
        ])
        .args(&files[..3])
        .output()
        .unwrap();
    let text = describe(&out);
    assert!(text.contains("0xa700") || text.contains("0xA700"), "{text}");
    assert!(text.contains("tenant storage quota exceeded"), "{text}");
    let (used, _) = usage(&server, "clinique");
    let (on_disk, blobs) = blobs_on_disk(&server);
    assert_eq!(blobs, 2, "the refused object left nothing behind");
    assert_eq!(used, on_disk, "usage is the bytes of the tenant's blobs");
    assert!(used <= quota && used + file_size > quota, "{used} of {quota}");
    // pynetdicom says the same, with the comment.
    let refused = store_status(&server, "CLINIQUE", &files[3]);
    assert_eq!(refused["status"], 0xA700, "{refused}");
    assert_eq!(
        refused["error_comment"], "tenant storage quota exceeded",
        "{refused}"
    );

    // STOW-RS: a failed part, FailureReason A700.
    let token = format!(
        "Bearer {}",
        server
            .cli_ok(&["user", "token", "ana", "--tenant", "clinique"])
            .trim()
    );
    let mut body = b"--Q\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend(std::fs::read(&files[3]).unwrap());
    body.extend_from_slice(b"\r\n--Q--\r\n");
    let (status, _, answer) = server.http_request(
        "POST",
        "/dicom-web/studies",
        &[
            ("Authorization", &token),
            (
                "Content-Type",
                "multipart/related; type=\"application/dicom\"; boundary=Q",
            ),
        ],
        &body,
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA700,
        "{answer}"
    );

    // The operator's metrics say the same, per tenant (the server's own counts: import runs
    // in its own process).
    let metric = |name: &str, tenant: &str, outcome: Option<&str>| -> f64 {
        let text = server.http_get("/metrics");
        let labels = [
            Some(format!("tenant=\"{tenant}\"")),
            outcome.map(|o| format!("outcome=\"{o}\"")),
        ];
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && labels.iter().flatten().all(|label| l.contains(label.as_str()))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {tenant} in\n{text}"))
    };
    assert_eq!(
        metric("openpacs_tenant_stores_total", "clinique", Some("stored")),
        2.0
    );
    assert_eq!(
        metric("openpacs_tenant_stores_total", "clinique", Some("refused")),
        3.0
    );
    assert_eq!(
        metric("openpacs_tenant_stored_bytes_total", "clinique", None),
        used as f64
    );
    assert_eq!(
        metric("openpacs_tenant_usage_bytes", "clinique", None),
        used as f64
    );
    assert_eq!(
        metric("openpacs_tenant_quota_bytes", "clinique", None),
        quota as f64
    );
    assert!(metric("openpacs_tenant_associations_total", "clinique", None) >= 2.0);
    assert_eq!(
        metric("openpacs_tenant_stores_total", "voisin", Some("stored")),
        0.0
    );

    // import: counted refused, with the reason.
    let imported = server.cli(&["import", "--tenant", "clinique", &files[4].display().to_string()]);
    let text = describe(&imported);
    assert!(!imported.status.success(), "{text}");
    assert!(
        text.contains("refused 1") && text.contains("tenant storage quota exceeded"),
        "{text}"
    );
    assert_eq!(blobs_on_disk(&server).1, 2, "refusals left nothing behind");

    // The other tenant is not held back by the first one's quota (a study of its own: the
    // same bytes in two tenants still share one blob, see the README).
    let theirs: Vec<PathBuf> = write_study(
        &StudySpec {
            rows: 64,
            columns: 64,
            ..StudySpec::ct(777, 5)
        },
        &server.work_dir.join("voisin"),
    )
    .unwrap()
    .into_iter()
    .map(|i| i.path)
    .collect();
    let out = dcmtk("storescu")
        .args(["-aec", "VOISIN", "127.0.0.1", &server.dicom_port.to_string()])
        .args(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let (on_disk, blobs) = blobs_on_disk(&server);
    assert_eq!(blobs, 7);
    assert_eq!(usage(&server, "voisin").0, on_disk - used);

    // Usage survives a restart, exactly.
    let mut server = server;
    assert!(server.stop().success());
    server.restart();
    assert_eq!(usage(&server, "clinique"), (used, Some(quota)));

    // Raised: storing resumes within seconds, without a restart.
    server.cli_ok(&[
        "tenant",
        "set",
        "clinique",
        "--quota-bytes",
        &(quota * 2).to_string(),
    ]);
    wait_for_store(&server, "CLINIQUE", &files[2], 0);
    // Freed: deleting the study gives the space back; removed: no limit at all.
    server.cli_ok(&[
        "tenant",
        "set",
        "clinique",
        "--quota-bytes",
        &(file_size / 2).to_string(),
    ]);
    wait_for_store(&server, "CLINIQUE", &files[3], 0xA700);
    let study = StudySpec::ct(4242, 5).study_instance_uid();
    let (status, _, _) = server.http_request(
        "DELETE",
        &format!("/api/studies/{study}"),
        &[("Authorization", &token)],
        &[],
    );
    assert!(status == 200 || status == 204, "delete answered {status}");
    assert_eq!(usage(&server, "clinique").0, 0);
    server.cli_ok(&["tenant", "set", "clinique", "--no-quota"]);
    wait_for_store(&server, "CLINIQUE", &files[3], 0);
    assert_eq!(usage(&server, "clinique").1, None);
}
