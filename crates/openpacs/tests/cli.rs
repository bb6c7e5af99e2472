//! `openpacs import`, `verify` and `send`, as an operator would run them.

use std::path::Path;
use std::process::Output;

use pacs_testkit::server::{dataset_sha256, free_port, repo_root, ServerOptions, StoreScp, TestServer};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn import_counts_refusals_then_verify_detects_a_corrupted_blob() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    server.stop();
    let fixtures = repo_root().join("tests/fixtures");
    let valid = manifest().iter().filter(|f| f["valid"] == true).count();

    let out = server.cli(&[
        "import",
        fixtures.join("valid").to_str().unwrap(),
        fixtures.join("malformed").to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "refusals give exit code 3: {}",
        describe(&out)
    );
    assert!(
        text.contains(&format!("stored {valid}, duplicates 0")),
        "{}",
        describe(&out)
    );
    // truncated.dcm, bad_vr.dcm and missing_uids.dcm are refused with a reason each; the file
    // without meta header and the text file are not DICOM Part 10 and are skipped.
    assert!(text.contains("refused 3"), "{}", describe(&out));
    assert!(text.contains("skipped 2 (not DICOM files)"), "{}", describe(&out));
    // Each skipped and refused file is named with its reason, on its own line.
    for (file, reason) in [
        ("missing_uids.dcm", "missing required attribute StudyInstanceUID"),
        ("not_dicom.txt", "not a DICOM Part 10 file"),
        ("no_meta_header.dcm", "not a DICOM Part 10 file"),
        ("truncated.dcm", "declares"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(file) && l.contains(reason)),
            "{file} with {reason:?}: {}",
            describe(&out)
        );
    }
    // A whole number of files a second, and no log lines (schema migrations) before the
    // summary of an interactive command.
    let summary = text.lines().next().unwrap_or_default();
    let rate = summary
        .split(" files/s")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .unwrap_or_default();
    assert!(
        !rate.is_empty() && rate.chars().all(|c| c.is_ascii_digit()),
        "rate {rate:?} in {summary:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("INFO") && !stderr.contains("migrated"),
        "{}",
        describe(&out)
    );

    let again = server.cli(&["import", fixtures.join("valid").to_str().unwrap()]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        stdout(&again).contains(&format!("stored 0, duplicates {valid}")),
        "{}",
        describe(&again)
    );

    let verify = server.cli(&["verify"]);
    assert!(verify.status.success(), "{}", describe(&verify));
    assert!(
        stdout(&verify).contains(&format!("verified {valid} objects: 0 problem(s)")),
        "{}",
        describe(&verify)
    );

    // Flip one byte of one blob: verify must name it and fail.
    let blob = walk_files(&server.data_dir.join("blobs"))
        .into_iter()
        .next()
        .expect("a blob");
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let verify = server.cli(&["verify"]);
    assert_eq!(verify.status.code(), Some(1), "{}", describe(&verify));
    assert!(
        stdout(&verify).contains("content changed"),
        "{}",
        describe(&verify)
    );
    assert!(stdout(&verify).contains("1 problem(s)"), "{}", describe(&verify));
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn send_delivers_the_original_bytes_to_storescp() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let scp = StoreScp::start("STORESCP", free_port(), &["+xa"]);
    let port = scp.port;
    let files: Vec<_> = manifest()
        .into_iter()
        .filter(|f| f["valid"] == true)
        .map(|f| {
            repo_root()
                .join("tests/fixtures")
                .join(f["path"].as_str().unwrap())
        })
        .collect();
    let mut args = vec![
        "send".to_string(),
        "--to".into(),
        format!("STORESCP@127.0.0.1:{port}"),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = server.cli(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let mut sent: Vec<String> = files.iter().map(|f| padded_dataset_sha256(f)).collect();
    let mut received: Vec<String> = scp.received().iter().map(|f| dataset_sha256(f)).collect();
    sent.sort();
    received.sort();
    assert_eq!(
        sent, received,
        "storescp (bit-preserving) must receive every data set unchanged"
    );
}

/// SHA-256 of a file's data set as it must travel: an odd-length (deflated) stream gets the one
/// trailing NUL byte PS3.5 §A.5 requires.
fn padded_dataset_sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    let offset = pacs_testkit::server::part10_dataset_offset(&bytes).unwrap();
    let mut dataset = bytes[offset..].to_vec();
    if dataset.len() % 2 == 1 {
        dataset.push(0);
    }
    hex::encode(Sha256::digest(&dataset))
}

#[test]
fn a_bad_configuration_value_names_itself_and_its_source() {
    let server = TestServer::start(binary(), ServerOptions::default());
    std::fs::write(
        server.work_dir.join("bad.toml"),
        "ae_title = \"MUCH_TOO_LONG_AE_TITLE\"\n",
    )
    .unwrap();
    let file = server.cli(&["--config", "bad.toml", "serve"]);
    assert_eq!(file.status.code(), Some(2), "{}", describe(&file));
    let err = String::from_utf8_lossy(&file.stderr);
    assert!(
        err.contains("MUCH_TOO_LONG_AE_TITLE") && err.contains("bad.toml"),
        "{err}"
    );

    // No account exists: HTTP on the network would be open to anyone.
    let http = server.cli(&["serve", "--http-addr", "0.0.0.0"]);
    assert!(!http.status.success(), "{}", describe(&http));
    let err = String::from_utf8_lossy(&http.stderr);
    assert!(
        err.contains("openpacs user add") && err.contains("http_open_without_auth"),
        "{}",
        describe(&http)
    );
    let off = std::process::Command::new(binary())
        .args(["serve", "--http-addr", "0.0.0.0"])
        .current_dir(&server.work_dir)
        .env("OPENPACS_HTTP_AUTH", "off")
        .output()
        .unwrap();
    assert_eq!(off.status.code(), Some(2), "{}", describe(&off));
    assert!(
        String::from_utf8_lossy(&off.stderr).contains("OPENPACS_HTTP_AUTH")
            || String::from_utf8_lossy(&off.stderr).contains("http_auth"),
        "{}",
        describe(&off)
    );
    let open = server.cli(&["serve", "--dicom-addr", "0.0.0.0"]);
    assert_eq!(open.status.code(), Some(2), "{}", describe(&open));
    let err = String::from_utf8_lossy(&open.stderr);
    // Which setting, which value, from where, in words: no Rust type or source location.
    assert!(
        err.contains("allowed_calling_aes")
            && err.contains("0.0.0.0")
            && err.contains("the command line (--dicom-addr)"),
        "{}",
        describe(&open)
    );
    for leak in ["Overrides", "config.rs", "::", "`OPENPACS_`"] {
        assert!(!err.contains(leak), "{leak:?} in {}", describe(&open));
    }
}

#[test]
fn start_up_errors_say_the_setting_the_value_and_the_source_in_words() {
    let server = TestServer::start(binary(), ServerOptions::default());
    let env = std::process::Command::new(binary())
        .arg("serve")
        .current_dir(&server.work_dir)
        .env("OPENPACS_DICOM_PORT", "eleven")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&env.stderr);
    assert!(
        err.contains("dicom_port: the text \"eleven\" is not a whole number from 0 to 65535")
            && err.contains("the environment variable OPENPACS_DICOM_PORT"),
        "{}",
        describe(&env)
    );
    assert!(
        !err.contains("u16") && !err.contains("`OPENPACS_`"),
        "{}",
        describe(&env)
    );

    let path = server.work_dir.join("typo.toml");
    std::fs::write(&path, "max_pdu = 10\n").unwrap();
    let file = server.cli(&["--config", path.to_str().unwrap(), "serve"]);
    assert_eq!(file.status.code(), Some(2), "{}", describe(&file));
    let err = String::from_utf8_lossy(&file.stderr);
    assert!(
        err.contains("max_pdu 10") && err.contains(&format!("the configuration file {}", path.display())),
        "{}",
        describe(&file)
    );
    std::fs::write(&path, "dicom_prot = 104\n").unwrap();
    let unknown = server.cli(&["--config", path.to_str().unwrap(), "serve"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", describe(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("\"dicom_prot\" is not a setting"),
        "{}",
        describe(&unknown)
    );
}

#[test]
fn each_subcommand_offers_only_the_flags_that_apply_to_it() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(binary()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        stdout(&out)
    };
    let import = help(&["import", "--help"]);
    for flag in ["--dicom-port", "--http-port", "--hl7-addr", "--ae-title"] {
        assert!(!import.contains(flag), "{flag} in import --help:\n{import}");
    }
    assert!(
        import.contains("--report") && import.contains("--data-dir"),
        "{import}"
    );
    let serve = help(&["serve", "--help"]);
    for flag in [
        "--dicom-port",
        "--http-port",
        "--hl7-addr",
        "--ae-title",
        "--data-dir",
    ] {
        assert!(serve.contains(flag), "{flag} missing from serve --help:\n{serve}");
    }
}

#[test]
fn import_writes_a_report_when_too_many_files_are_skipped_to_print() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    server.stop();
    let folder = server.work_dir.join("not-dicom");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..25 {
        std::fs::write(folder.join(format!("note-{i:02}.txt")), "not an image").unwrap();
    }
    let out = server.cli(&["import", folder.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "skipped files are not refusals: {}",
        describe(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("skipped 25 (not DICOM files)"),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("… and 5 more (see the report)"),
        "{}",
        describe(&out)
    );
    let report_name = text
        .lines()
        .find_map(|l| l.strip_prefix("every skipped and refused file, with its reason: "))
        .expect("the report is named");
    let report = std::fs::read_to_string(server.work_dir.join(report_name)).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 25, "{report}");
    assert!(
        lines.iter().all(|l| l.starts_with("skipped\t")
            && l.contains("note-")
            && l.contains("not a DICOM Part 10 file")),
        "{report}"
    );
}

#[test]
fn recovery_reindexes_orphan_blobs_and_quarantines_unreadable_ones() {
    use sha2::{Digest, Sha256};
    let mut server = TestServer::start(binary(), ServerOptions::default());
    server.stop();
    // An orphan: a complete object in the blob store without its index row, as a crash between
    // the rename and the commit leaves it; and an unreadable one.
    let orphan = std::fs::read(repo_root().join("tests/fixtures/valid/mr_explicit_le.dcm")).unwrap();
    let garbage = b"not a dicom file at all".to_vec();
    for bytes in [&orphan, &garbage] {
        let key = hex::encode(Sha256::digest(bytes));
        let dir = server.data_dir.join("blobs").join(&key[0..2]).join(&key[2..4]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&key), bytes).unwrap();
    }
    std::fs::write(server.data_dir.join("tmp/left-by-a-crash.part"), b"partial").unwrap();
    server.restart();
    let log = server.log();
    assert!(log.contains("orphans_reindexed=1"), "{log}");
    assert!(log.contains("orphans_quarantined=1"), "{log}");
    assert!(log.contains("temp_removed=1"), "{log}");
    let found = pacs_testkit::server::pynetdicom(&[
        "find",
        "--port",
        &server.dicom_port.to_string(),
        "--level",
        "IMAGE",
        "-k",
        "SOPInstanceUID=",
    ]);
    assert_eq!(found["matches"].as_array().map(Vec::len), Some(1), "{found}");
    assert!(server.stop().success());
    let verify = server.cli(&["verify"]);
    assert!(verify.status.success(), "{}", describe(&verify));
}
