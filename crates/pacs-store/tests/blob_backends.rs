//! One suite for every blob backend: the file backend, and the S3 backend on a real Garage
//! (`garage` 2.5.0 on PATH; the test fails, saying how to install it, when it is missing).

use std::sync::Arc;

use pacs_store::blob::{self, BlobLocation, BlobStore, S3Settings, WRITE_BUFFER};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Stores `bytes` written in pieces of `piece`, the way ingest does (blocking commit).
async fn store(
    blobs: &Arc<dyn BlobStore>,
    bytes: &[u8],
    piece: usize,
    dataset_at: u64,
) -> blob::CommittedBlob {
    let blobs = blobs.clone();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut t = blobs.create_temp().unwrap();
        t.set_dataset_offset(dataset_at);
        for chunk in bytes.chunks(piece) {
            t.write(chunk).unwrap();
        }
        t.start_sync().unwrap();
        assert!(
            t.write(b"late").is_err(),
            "writes after the sync started are refused"
        );
        if bytes.len() <= WRITE_BUFFER {
            assert_eq!(t.contents(), Some(&bytes[..]));
        } else {
            assert_eq!(t.contents(), None);
        }
        blobs.commit(t).unwrap()
    })
    .await
    .unwrap()
}

async fn read_from(blobs: &dyn BlobStore, key: &str, start: u64) -> Vec<u8> {
    let mut out = Vec::new();
    blobs
        .open(key, start)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

async fn keys(blobs: &dyn BlobStore) -> Vec<String> {
    use futures::TryStreamExt;
    blobs.list().try_collect().await.unwrap()
}

/// What every backend must do, asserted the way the archive uses it.
async fn conformance(blobs: Arc<dyn BlobStore>, data_dir: &std::path::Path) {
    blobs.check().await.expect("a fresh store answers");
    assert!(keys(&*blobs).await.is_empty());

    // Content addressing, the data set hash, and deduplication.
    let a = store(&blobs, b"HEADERdataset bytes", 7, 6).await;
    assert_eq!(a.key, sha(b"HEADERdataset bytes"));
    assert_eq!(a.dataset_sha256, sha(b"dataset bytes"));
    assert_eq!(a.size, 19);
    let again = store(&blobs, b"HEADERdataset bytes", 19, 0).await;
    assert_eq!(again.key, a.key);
    assert_eq!(
        keys(&*blobs).await,
        vec![a.key.clone()],
        "one object for the same bytes"
    );
    assert_eq!(blobs.clean_temp().unwrap(), 0, "no temporary file left behind");

    // Sizes around the in-memory buffer and (for S3) the multipart threshold, read back
    // whole, from an offset, as a local file and re-hashed.
    let mut stored = vec![a.key.clone()];
    for (size, piece) in [
        (WRITE_BUFFER, 7_000),
        (WRITE_BUFFER + 1, 16 * 1024),
        (blob::S3_PART_SIZE * 2 + 12_345, WRITE_BUFFER + 3),
    ] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let c = store(&blobs, &bytes, piece, 0).await;
        assert_eq!(c.key, sha(&bytes), "size {size}");
        assert_eq!(c.size, size as u64);
        assert_eq!(read_from(&*blobs, &c.key, 0).await, bytes, "size {size}");
        assert_eq!(
            read_from(&*blobs, &c.key, 1000).await,
            &bytes[1000..],
            "size {size}"
        );
        let (head, mut rest) = blobs.open_head(&c.key, 10, 5000).await.unwrap();
        assert_eq!(head, &bytes[10..5010]);
        let mut tail = Vec::new();
        rest.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, &bytes[5010..]);
        let local = blobs.local(&c.key).await.unwrap();
        assert_eq!(std::fs::read(local.path()).unwrap(), bytes);
        assert_eq!(blobs.hash(&c.key).await.unwrap(), (c.key.clone(), size as u64));
        assert_eq!(blobs.size(&c.key).await.unwrap(), Some(size as u64));
        stored.push(c.key);
    }
    stored.sort();
    assert_eq!(keys(&*blobs).await, stored, "listed in key order");
    assert_eq!(
        std::fs::read_dir(data_dir.join("tmp")).unwrap().count(),
        0,
        "downloaded copies are removed when dropped"
    );

    // Keys that are not hashes never reach the store.
    for bad in ["../../etc/passwd", &"A".repeat(64), "", &"a".repeat(63)] {
        let e = blobs.open(bad, 0).await.err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        assert_eq!(
            blobs.delete(bad).await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }

    // Missing blobs.
    let absent = sha(b"never stored");
    assert_eq!(blobs.size(&absent).await.unwrap(), None);
    assert_eq!(
        blobs.hash(&absent).await.unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert!(!blobs.delete(&absent).await.unwrap());

    // Deletion and quarantine take objects out of the listing.
    assert!(blobs.delete(&stored[0]).await.unwrap());
    assert_eq!(blobs.size(&stored[0]).await.unwrap(), None);
    blobs.quarantine(&stored[1]).await.unwrap();
    assert_eq!(blobs.size(&stored[1]).await.unwrap(), None);
    assert_eq!(keys(&*blobs).await, stored[2..].to_vec());

    // A temporary file left by a crash is removed by recovery's clean-up.
    let t = blobs.create_temp().unwrap();
    std::mem::forget(t);
    assert_eq!(blobs.clean_temp().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_passes_the_blob_suite() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = blob::open(dir.path(), &BlobLocation::DataDir).unwrap();
    conformance(blobs.clone(), dir.path()).await;
    assert!(dir.path().join("quarantine").read_dir().unwrap().count() == 1);
    assert_eq!(blobs.local_root(), Some(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_on_garage_passes_the_blob_suite() {
    let garage = tokio::task::spawn_blocking(pacs_testkit::garage::Garage::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = S3Settings {
        bucket: garage.bucket.clone(),
        prefix: "suite".into(),
        endpoint: Some(garage.endpoint.clone()),
        region: garage.region.clone(),
        access_key_id: garage.access_key_id.clone(),
        secret_access_key: garage.secret_access_key.clone(),
    };
    assert!(
        !format!("{settings:?}").contains(&garage.secret_access_key),
        "the secret is never printed"
    );
    let blobs = blob::open(dir.path(), &BlobLocation::S3(settings.clone())).unwrap();
    conformance(blobs.clone(), dir.path()).await;
    assert_eq!(blobs.local_root(), None);

    // Wrong credentials: the health check says so.
    let wrong = S3Settings {
        secret_access_key: "0".repeat(64),
        ..settings
    };
    let wrong = blob::open(dir.path(), &BlobLocation::S3(wrong)).unwrap();
    assert!(wrong.check().await.is_err(), "a refused signature is not healthy");
    drop(garage);
    // Store gone: the check fails within seconds, not minutes.
    let started = std::time::Instant::now();
    assert!(blobs.check().await.is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
