//! `openpacs migrate` (issue 16 §4): an embedded installation (SQLite and files) moves to
//! PostgreSQL and a Garage bucket, resumably, with every blob read back and re-hashed; a
//! server on the new engines then serves byte for byte what the old one served, with the
//! same accounts, and the source is left as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use pacs_testkit::garage::Garage;
use pacs_testkit::postgres::{fresh_database, psql_on};
use pacs_testkit::server::{dataset_sha256, describe, getscu_study, repo_root, ServerOptions, TestServer};
use sha2::{Digest, Sha256};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn root() -> (&'static str, String) {
    let encoded = base64::engine::general_purpose::STANDARD.encode("root:root-password");
    ("Authorization", format!("Basic {encoded}"))
}

/// Every study's data sets as C-GET returns them (SHA-256 of each, sorted), by study UID.
fn served(node: &TestServer) -> BTreeMap<String, Vec<String>> {
    let (name, value) = root();
    let (status, _, body) = node.http_request("GET", "/dicom-web/studies", &[(name, value.as_str())], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let studies: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut all = BTreeMap::new();
    for study in studies.as_array().unwrap() {
        let uid = study["0020000D"]["Value"][0].as_str().unwrap().to_string();
        let into = tempfile::tempdir().unwrap();
        let mut shas: Vec<String> = getscu_study(node.dicom_port, &uid, into.path())
            .iter()
            .map(|p| dataset_sha256(p))
            .collect();
        shas.sort();
        all.insert(uid, shas);
    }
    all
}

/// Every file under `dir` with the SHA-256 of its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let sha = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                found.insert(path, sha);
            }
        }
    }
    found
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line {start:?} in:\n{out}"))
}

#[test]
fn an_embedded_install_moves_to_postgresql_and_garage_and_serves_the_same_objects() {
    // The one-machine install, with an account and images.
    let mut old = TestServer::start(
        binary(),
        ServerOptions {
            users: vec![("root".into(), "admin".into(), "root-password".into())],
            ..ServerOptions::default()
        },
    );
    let import = old.cli(&[
        "import",
        repo_root().join("tests/fixtures/valid").to_str().unwrap(),
    ]);
    assert!(import.status.success(), "{}", describe(&import));
    let before = served(&old);
    assert!(before.len() >= 5, "{before:?}");
    old.stop();
    let blobs_dir = old.data_dir.join("blobs");
    let blob_count = files(&blobs_dir).len();
    let source_blobs = files(&blobs_dir);

    let url = fresh_database("migrate");
    let garage = Garage::start();
    let secrets = tempfile::tempdir().unwrap();
    let new_blobs = garage.openpacs_toml(secrets.path(), "moved");
    let credentials = secrets.path().join("s3-credentials.toml");
    let to_blobs = format!("s3://{}/moved", garage.bucket);
    let blob_args = [
        "--to-blobs",
        to_blobs.as_str(),
        "--to-blobs-endpoint",
        garage.endpoint.as_str(),
        "--to-blobs-region",
        garage.region.as_str(),
        "--to-blobs-credentials-file",
        credentials.to_str().unwrap(),
    ];

    // The blobs alone first (as a run interrupted before the index would have left it)…
    let mut args = vec!["migrate"];
    args.extend(blob_args);
    let first = old.cli(&args);
    assert!(first.status.success(), "{}", describe(&first));
    let out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        line(&out, "blobs: ").starts_with(&format!("blobs: {blob_count} copied"))
            && line(&out, "blobs: ").contains("0 already there, 0 problems"),
        "{out}"
    );
    // …then everything: nothing copied twice, and the index.
    args.extend(["--to-index", url.as_str()]);
    let second = old.cli(&args);
    assert!(second.status.success(), "{}", describe(&second));
    let out = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(
        line(&out, "blobs: ").starts_with("blobs: 0 copied")
            && line(&out, "blobs: ").contains(&format!("{blob_count} already there, 0 problems")),
        "{out}"
    );
    assert!(line(&out, "index: ").contains("rows in"), "{out}");
    // A third run finds the index there and leaves it.
    let third = old.cli(&args);
    assert!(third.status.success(), "{}", describe(&third));
    let out = String::from_utf8_lossy(&third.stdout).into_owned();
    assert!(
        line(&out, "index: ").starts_with("index: already in PostgreSQL"),
        "{out}"
    );

    // The source is as it was.
    assert_eq!(files(&blobs_dir), source_blobs, "source blobs changed");

    // A server on the new engines (a new data directory: nothing local carried over) serves
    // the same objects, byte for byte, to the same account.
    let mut new = TestServer::start(
        binary(),
        ServerOptions {
            extra_toml: format!("index_url = {url:?}\n{new_blobs}"),
            ..ServerOptions::default()
        },
    );
    assert_eq!(served(&new), before, "what the migrated server serves");
    let verify = new.cli(&["verify"]);
    assert!(verify.status.success(), "{}", describe(&verify));
    new.stop();

    // A damaged source blob is reported, and the index is then not copied.
    let (damaged, _) = source_blobs.iter().next().unwrap();
    std::fs::write(damaged, b"not what was stored").unwrap();
    let other_db = fresh_database("migrate_damaged");
    let to_other = format!("s3://{}/damaged", garage.bucket);
    let mut args = vec!["migrate", "--to-index", other_db.as_str()];
    args.extend(blob_args);
    args[4] = to_other.as_str();
    let refused = old.cli(&args);
    assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
    let out = String::from_utf8_lossy(&refused.stdout).into_owned();
    let key = damaged.file_name().unwrap().to_str().unwrap();
    assert!(
        out.contains(&format!(
            "{key}: its bytes in data_dir no longer hash to its name"
        )),
        "{out}"
    );
    assert!(
        line(&out, "blobs: ").contains(&format!("{} copied", blob_count - 1)),
        "{out}"
    );
    assert!(line(&out, "index: ").starts_with("index: not copied"), "{out}");
    let tables = psql_on(
        &other_db,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'instance'",
    );
    assert_eq!(tables.trim(), "0", "the index was copied anyway");
}

/// Bad destinations are refused before anything is read or written, each with its reason.
#[test]
fn migrate_refuses_what_it_cannot_do_and_says_why() {
    let mut server = TestServer::start(binary(), ServerOptions::default());
    server.stop();
    let cases: [(&[&str], &str); 3] = [
        (&["migrate"], "name a destination"),
        (
            &["migrate", "--to-index", "mysql://db/pacs"],
            "must be a PostgreSQL URL",
        ),
        (
            &["migrate", "--to-blobs", "ftp://bucket"],
            "is not an s3://bucket[/prefix] URL",
        ),
    ];
    for (args, reason) in cases {
        let out = server.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{args:?}: {}",
            describe(&out)
        );
    }
}
