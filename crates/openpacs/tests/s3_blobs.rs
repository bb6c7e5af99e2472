//! openpacs with its blobs in an S3 bucket of a real Garage (`garage` 2.5.0 on PATH, installed
//! by scripts/test.sh; without it these tests fail and say how to get it), driven the way a
//! user would: DCMTK stores, C-GET, C-MOVE and WADO-RS retrieve, `openpacs verify` checks,
//! the REST API deletes; the bucket is looked at with a client of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use pacs_testkit::garage::Garage;
use pacs_testkit::server::{
    dataset_sha256, dcmtk, free_port, getscu_study, multipart_parts, ServerOptions, StoreScp, TestServer,
};
use pacs_testkit::{write_study, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The bucket, seen through `object_store` directly (not through openpacs).
struct Bucket {
    store: object_store::aws::AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    fn of(garage: &Garage) -> Bucket {
        let store = AmazonS3Builder::new()
            .with_endpoint(&garage.endpoint)
            .with_allow_http(true)
            .with_region(&garage.region)
            .with_bucket_name(&garage.bucket)
            .with_access_key_id(&garage.access_key_id)
            .with_secret_access_key(&garage.secret_access_key)
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bucket { store, runtime }
    }

    /// Object names and sizes.
    fn objects(&self) -> BTreeMap<String, u64> {
        use futures::TryStreamExt;
        self.runtime.block_on(async {
            self.store
                .list(None)
                .map_ok(|m| (m.location.to_string(), m.size))
                .try_collect()
                .await
                .unwrap()
        })
    }

    fn put(&self, name: &str, bytes: Vec<u8>) {
        self.runtime
            .block_on(self.store.put(&ObjectPath::from(name), PutPayload::from(bytes)))
            .unwrap();
    }

    fn get(&self, name: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let got = self.store.get(&ObjectPath::from(name)).await.unwrap();
            got.bytes().await.unwrap().to_vec()
        })
    }
}

fn storescu(server: &TestServer, files: &[PathBuf]) {
    let out = dcmtk("storescu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &server.dicom_port.to_string()])
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success(), "storescu: {}", text(&out));
}

fn start_on(garage: &Garage, extra: &str) -> (TestServer, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        extra_toml: format!("{extra}\n{}", garage.openpacs_toml(secrets.path(), "archive")),
        ..ServerOptions::default()
    };
    (TestServer::start(binary(), options), secrets)
}

/// Data set SHA-256 of every part of a WADO-RS study retrieval in the stored syntaxes.
fn wado_study(server: &TestServer, study: &str) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let (status, head, body) = server.http_bytes(
        &format!("/dicom-web/studies/{study}"),
        &[(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        )],
    );
    assert_eq!(status, 200, "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("content type");
    let mut shas: Vec<String> = multipart_parts(&content_type, &body)
        .into_iter()
        .map(|(_, part)| {
            let offset = pacs_testkit::server::part10_dataset_offset(&part).expect("a Part 10 file");
            hex::encode(Sha256::digest(&part[offset..]))
        })
        .collect();
    shas.sort();
    shas
}

fn sorted_shas(files: &[PathBuf]) -> Vec<String> {
    let mut shas: Vec<String> = files.iter().map(|f| dataset_sha256(f)).collect();
    shas.sort();
    shas
}

#[test]
fn an_archive_on_garage_stores_retrieves_verifies_deletes_and_survives_a_restart() {
    let garage = Garage::start();
    let bucket = Bucket::of(&garage);
    let move_port = free_port();
    let peer = format!("[[peers]]\nae_title = \"STORESCP\"\nhost = \"127.0.0.1\"\nport = {move_port}\n");
    let (mut server, _secrets) = start_on(&garage, &peer);
    let source = tempfile::tempdir().unwrap();
    let study = write_study(&StudySpec::ct(1616, 6), source.path()).unwrap();
    let files: Vec<PathBuf> = study.iter().map(|g| g.path.clone()).collect();
    let study_uid = study[0].study_instance_uid.clone();
    let sent = sorted_shas(&files);
    storescu(&server, &files);

    // Every object is in the bucket under its content hash, nothing on the local disk.
    let objects = bucket.objects();
    assert_eq!(objects.len(), files.len(), "{objects:?}");
    for name in objects.keys() {
        let key = name.rsplit('/').next().unwrap();
        assert!(
            name.starts_with("archive/") && name.ends_with(&format!("{}/{}/{key}", &key[..2], &key[2..4])),
            "{name}"
        );
        use sha2::{Digest, Sha256};
        assert_eq!(
            hex::encode(Sha256::digest(bucket.get(name))),
            key,
            "{name} is named by its hash"
        );
    }
    assert!(
        !server.data_dir.join("blobs").exists(),
        "no blob directory when blobs are in S3"
    );

    // C-GET, C-MOVE and WADO-RS give back the data sets sent.
    let got = tempfile::tempdir().unwrap();
    assert_eq!(
        sorted_shas(&getscu_study(server.dicom_port, &study_uid, got.path())),
        sent
    );
    let scp = StoreScp::start("STORESCP", move_port, &["+xa"]);
    let out = dcmtk("movescu")
        .args([
            "-S",
            "-aec",
            "OPENPACS",
            "-aem",
            "STORESCP",
            "-k",
            "QueryRetrieveLevel=STUDY",
        ])
        .args(["-k", &format!("StudyInstanceUID={study_uid}")])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "movescu: {}", text(&out));
    assert_eq!(sorted_shas(&scp.received()), sent);
    drop(scp);
    assert_eq!(wado_study(&server, &study_uid), sent);

    // Fixity from the bucket.
    let verify = server.cli(&["verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains(&format!("verified {} objects: 0 problem(s)", files.len())),
        "{}",
        text(&verify)
    );

    // A restart keeps everything.
    assert!(server.stop().success());
    server.restart();
    let again = tempfile::tempdir().unwrap();
    assert_eq!(
        sorted_shas(&getscu_study(server.dicom_port, &study_uid, again.path())),
        sent
    );
    assert!(server.log().contains("orphans_reindexed=0"), "{}", server.log());

    // One object altered in the bucket behind openpacs's back: verify names it and fails.
    let altered = objects.keys().next().unwrap().clone();
    let mut bytes = bucket.get(&altered);
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    bucket.put(&altered, bytes);
    let verify = server.cli(&["verify"]);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    assert!(text(&verify).contains("content changed"), "{}", text(&verify));
    assert!(text(&verify).contains("1 problem(s)"), "{}", text(&verify));

    // Deleting the study removes its objects from the bucket.
    let (status, head, body) = server.http_request("DELETE", &format!("/api/studies/{study_uid}"), &[], &[]);
    assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    assert_eq!(bucket.objects(), BTreeMap::new());
    assert!(server.stop().success());
}

#[test]
fn a_large_object_goes_through_the_bucket_without_being_held_in_memory() {
    let garage = Garage::start();
    let bucket = Bucket::of(&garage);
    let (server, _secrets) = start_on(&garage, "");
    let source = tempfile::tempdir().unwrap();
    // 7000 × 7000 16-bit pixels: a 98 MB object, uploaded in parts, streamed back.
    let spec = StudySpec {
        rows: 7000,
        columns: 7000,
        ..StudySpec::ct(77, 1)
    };
    let study = write_study(&spec, source.path()).unwrap();
    let size = study[0].size;
    assert!(size > 90_000_000, "{size}");
    let files = vec![study[0].path.clone()];
    let baseline = server.rss_kib();
    storescu(&server, &files);
    // storescu writes its own file meta group: the object is what it sent, not the file.
    let objects: Vec<u64> = bucket.objects().values().copied().collect();
    assert!(
        objects.len() == 1 && objects[0].abs_diff(size) < 1024,
        "{objects:?} for {size}"
    );
    let got = tempfile::tempdir().unwrap();
    let sent = sorted_shas(&files);
    assert_eq!(
        sorted_shas(&getscu_study(
            server.dicom_port,
            &study[0].study_instance_uid,
            got.path()
        )),
        sent
    );
    assert_eq!(wado_study(&server, &study[0].study_instance_uid), sent);
    let verify = server.cli(&["verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    // Upload pieces (8 MiB, two in flight) and read buffers: far less than the object.
    let grown = server.peak_rss_kib().saturating_sub(baseline);
    println!(
        "peak RSS grew by {grown} kB over {baseline} kB for a {} kB object",
        size / 1024
    );
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} kB for a {} kB object",
        size / 1024
    );
}

/// `openpacs verify` in a directory whose `openpacs.toml` ends with `blobs`, without the
/// AWS variables of the caller's environment unless given.
fn run_with_blobs(dir: &Path, blobs: &str, env: &[(&str, &str)]) -> Output {
    std::fs::write(
        dir.join("openpacs.toml"),
        format!("data_dir = {:?}\n{blobs}", dir.join("data").display().to_string()),
    )
    .unwrap();
    std::process::Command::new(binary())
        .arg("verify")
        .current_dir(dir)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn bad_blob_settings_stop_start_up_with_a_reason_and_never_show_the_secret() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let out = run_with_blobs(dir, "[blobs]\nurl = \"ftp://bucket\"\n", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("blobs.url") && text(&out).contains("s3://bucket[/prefix]"),
        "{}",
        text(&out)
    );

    let out = run_with_blobs(
        dir,
        "[blobs]\nurl = \"s3://bucket\"\n",
        &[("AWS_ACCESS_KEY_ID", "GK1")],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("AWS_SECRET_ACCESS_KEY"), "{}", text(&out));

    let secret = "do-not-print-this-secret";
    let credentials = dir.join("s3.toml");
    std::fs::write(
        &credentials,
        format!("access_key_id = \"GK1\"\nsecret_access_key = \"{secret}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o644)).unwrap();
    let blobs = format!(
        "[blobs]\nurl = \"s3://bucket\"\ncredentials_file = {:?}\n",
        credentials.display().to_string()
    );
    let out = run_with_blobs(dir, &blobs, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
    assert!(!text(&out).contains(secret), "{}", text(&out));

    std::fs::write(
        &credentials,
        format!("access_key_id = \"GK1\"\nsecret_key = \"{secret}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_with_blobs(dir, &blobs, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown key secret_key"), "{}", text(&out));
    assert!(!text(&out).contains(secret), "{}", text(&out));
}

#[test]
fn stores_fail_while_the_bucket_is_unreachable_and_succeed_again_without_a_restart() {
    let mut garage = Garage::start();
    let (server, _secrets) = start_on(&garage, "");
    let source = tempfile::tempdir().unwrap();
    let study = write_study(&StudySpec::ct(4242, 2), source.path()).unwrap();
    let port = server.dicom_port.to_string();
    let store = |path: &Path| {
        let out = pacs_testkit::server::pynetdicom(&["store", "--port", &port, &path.display().to_string()]);
        out["results"][0]["status"]
            .as_u64()
            .unwrap_or_else(|| panic!("{out}"))
    };

    garage.stop();
    let started = std::time::Instant::now();
    let status = store(&study[0].path);
    assert_eq!(
        status, 0xA700,
        "a store the bucket never acknowledged is refused, out of resources"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "refused after {:?}",
        started.elapsed()
    );
    // STOW-RS: the whole request is "try again later", the part's reason A700.
    let mut body = b"--outage\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend_from_slice(&std::fs::read(&study[0].path).unwrap());
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
    // FailureReason (0008,1197) 0xA700 = 42752.
    assert!(answer.contains("42752"), "{answer}");
    let (code, _, body) = server.http_bytes("/healthz", &[]);
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("blob store: unreachable"));
    let found = pacs_testkit::server::pynetdicom(&[
        "find",
        "--port",
        &port,
        "--level",
        "IMAGE",
        "-k",
        "SOPInstanceUID=",
    ]);
    assert_eq!(
        found["matches"].as_array().map(Vec::len),
        Some(0),
        "nothing refused is indexed: {found}"
    );
    assert_eq!(
        std::fs::read_dir(server.data_dir.join("tmp")).unwrap().count(),
        0,
        "the staged copy of the refused object is gone"
    );

    // The store is back: the same server stores and serves again.
    garage.start_again();
    assert_eq!(store(&study[0].path), 0);
    assert_eq!(store(&study[1].path), 0);
    let (code, _, _) = server.http_bytes("/healthz", &[]);
    assert_eq!(code, 200);
    let got = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = study.iter().map(|g| g.path.clone()).collect();
    assert_eq!(
        sorted_shas(&getscu_study(
            server.dicom_port,
            &study[0].study_instance_uid,
            got.path()
        )),
        sorted_shas(&files)
    );
}
