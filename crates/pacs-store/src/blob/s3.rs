//! The S3 backend: blobs as objects `<prefix>/<k0k1>/<k2k3>/<key>` in one bucket of an
//! S3-compatible store (Garage, MinIO, AWS), through `object_store`.
//!
//! A blob is staged in this node's `tmp/` like on the file backend, then uploaded by its
//! commit: in one PUT up to [`PART`], by a multipart upload of [`PART`]-sized pieces beyond
//! (one piece in memory at a time). The store acknowledges the PUT (or the completion of the
//! multipart upload) only once the object is durable there (Garage with `data_fsync` and
//! `metadata_fsync`), and only then does the commit return: the index may refer to it.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncWriteExt;

use super::files::read_piece;
use super::temp::Staging;
use super::{is_key, name_of, BlobReader, BlobStore, CommittedBlob, LocalBlob, TempBlob};

/// Objects up to this size go in one PUT; larger ones in multipart pieces of this size (S3's
/// smallest part is 5 MiB).
pub const PART: usize = 8 * 1024 * 1024;

/// Where the bucket is and how to sign requests. The secret is never printed.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), empty for none.
    pub prefix: String,
    /// `http://host:port` or `https://…`; none: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .finish()
    }
}

/// The blob store in a bucket.
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    bucket: String,
    staging: Staging,
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3BlobStore(s3://{}/{})", self.bucket, self.prefix)
    }
}

/// A missing object stays `NotFound`; a request the store did not answer, or answered with
/// a server error, is [`super::unavailable`] (the caller says "try again later").
fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. } => super::unavailable(e),
        e => io::Error::from(e),
    }
}

impl S3BlobStore {
    /// Connects lazily: nothing is sent before the first request. `data_dir` holds this
    /// node's temporary files.
    pub fn open(data_dir: &Path, settings: &S3Settings) -> io::Result<S3BlobStore> {
        let staging = Staging::open(data_dir)?;
        // Unreachable store: fail within seconds (a store is then refused, a retrieval fails)
        // rather than after object_store's default of ten retries over three minutes. The
        // whole-request timeout bounds a retrieval streamed to a slow peer too: generous.
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        };
        let plain_http = settings
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        // Set last: client options given to the builder replace what its `with_allow_http`
        // would have set.
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(600))
            .with_allow_http(plain_http);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_retry(retry);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .with_client_options(client)
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(S3BlobStore {
            store: Arc::new(store),
            prefix: settings.prefix.trim_matches('/').to_string(),
            bucket: settings.bucket.clone(),
            staging,
        })
    }

    /// The object name of a key: built from the key alone.
    fn location(&self, key: &str) -> io::Result<ObjectPath> {
        let name = name_of(key)?;
        Ok(self.under_prefix(&name))
    }

    fn under_prefix(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    async fn upload(&self, mut temp: TempBlob) -> io::Result<CommittedBlob> {
        let finished = temp.finish()?;
        let location = self.location(&finished.key)?;
        let len = temp.len();
        if let Some(bytes) = temp.contents() {
            let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
            self.store.put(&location, payload).await.map_err(io_error)?;
        } else if len <= PART as u64 {
            let bytes = std::fs::read(temp.path())?;
            self.store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(io_error)?;
        } else if self.stored_size(&location).await? != Some(len) {
            // Large and not already there (the key is the content hash: same name, same
            // bytes): uploaded piece by piece, at most two pieces in flight.
            let mut file = File::open(temp.path())?;
            let upload = self.store.put_multipart(&location).await.map_err(io_error)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut piece = vec![0u8; PART];
            let sent = async {
                loop {
                    writer.wait_for_capacity(2).await?;
                    let n = read_piece(&mut file, &mut piece).map_err(|e| object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    })?;
                    if n == 0 {
                        return Ok::<(), object_store::Error>(());
                    }
                    writer.write(&piece[..n]);
                }
            }
            .await;
            match sent {
                Ok(()) => {
                    writer.finish().await.map_err(io_error)?;
                }
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io_error(e));
                }
            }
        }
        Ok(CommittedBlob {
            key: finished.key,
            size: len,
            dataset_sha256: finished.dataset_sha256,
        })
    }

    async fn stored_size(&self, location: &ObjectPath) -> io::Result<Option<u64>> {
        match self.store.head(location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    fn create_temp(&self) -> io::Result<TempBlob> {
        // The staged file is uploaded, not renamed: its own fsync would buy nothing.
        self.staging.create(false)
    }

    fn commit(&self, temp: TempBlob) -> io::Result<CommittedBlob> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("committing to S3 needs a tokio runtime"))?;
        runtime.block_on(self.upload(temp))
    }

    async fn open(&self, key: &str, start: u64) -> io::Result<BlobReader> {
        let location = self.location(key)?;
        let options = GetOptions {
            range: (start > 0).then_some(GetRange::Offset(start)),
            ..GetOptions::default()
        };
        let got = self.store.get_opts(&location, options).await.map_err(io_error)?;
        let stream = got.into_stream().map_err(io_error);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn local(&self, key: &str) -> io::Result<LocalBlob> {
        let location = self.location(key)?;
        let got = self.store.get(&location).await.map_err(io_error)?;
        let copy = LocalBlob {
            path: self.staging.scratch_path(),
            copy: true,
        };
        let mut file = tokio::fs::File::create_new(copy.path()).await?;
        let mut stream = got.into_stream();
        while let Some(piece) = stream.next().await {
            file.write_all(&piece.map_err(io_error)?).await?;
        }
        file.flush().await?;
        Ok(copy)
    }

    async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        self.stored_size(&self.location(key)?).await
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        let location = self.location(key)?;
        // S3 answers a DELETE of a missing object with success: ask first.
        if self.stored_size(&location).await?.is_none() {
            return Ok(false);
        }
        self.store.delete(&location).await.map_err(io_error)?;
        Ok(true)
    }

    async fn quarantine(&self, key: &str) -> io::Result<()> {
        let location = self.location(key)?;
        let target = self.under_prefix(&format!("quarantine/{key}"));
        self.store.rename(&location, &target).await.map_err(io_error)
    }

    fn list(&self) -> BoxStream<'_, io::Result<String>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.store
            .list(prefix.as_ref())
            .map_err(io_error)
            .try_filter_map(move |meta| {
                // Only names a key makes (not `quarantine/…` nor anything put there by hand).
                let key = meta.location.filename().filter(|k| is_key(k)).map(str::to_string);
                let ours = key.filter(|k| self.location(k).is_ok_and(|l| l == meta.location));
                futures::future::ready(Ok(ours))
            })
            .boxed()
    }

    async fn check(&self) -> io::Result<()> {
        // A HEAD of a name no blob has: "not found" proves the bucket answers and our
        // credentials are accepted; a refusal or a network error does not.
        match self.store.head(&self.under_prefix("health-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn clean_temp(&self) -> io::Result<usize> {
        self.staging.clean()
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }
}
