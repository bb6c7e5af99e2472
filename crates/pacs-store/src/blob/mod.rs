//! Content-addressed blob storage behind one trait, with two backends: files under the data
//! directory (the default, [`FileBlobStore`]) and an S3-compatible bucket ([`S3BlobStore`]).
//!
//! A blob's key is the SHA-256 of its bytes, lower-case hex: the name an object gets in any
//! backend is derived from the key alone (`<k0k1>/<k2k3>/<key>`, under a configured prefix),
//! never from a UID or a name received from a peer. Every blob starts as a temporary file in
//! this node's `tmp/` directory, hashed while written ([`TempBlob`]); [`BlobStore::commit`]
//! makes it durable under its key (rename on disk, upload to the bucket) before anything may
//! refer to it. Readers never see a path: they stream ([`BlobStore::open`]), re-hash
//! ([`BlobStore::hash`]), or ask for a local file for the DICOM parser ([`BlobStore::local`]).

mod files;
mod s3;
mod temp;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use files::{remove_durably, sync_dir, FileBlobStore};
pub use s3::{S3BlobStore, S3Settings, PART as S3_PART_SIZE};
pub use temp::{TempBlob, WRITE_BUFFER};

/// A blob made durable under its content key.
#[derive(Clone, Debug)]
pub struct CommittedBlob {
    pub key: String,
    pub size: u64,
    pub dataset_sha256: String,
}

/// A stored blob read as a stream.
pub type BlobReader = Box<dyn AsyncRead + Send + Unpin>;

/// Blob storage, whatever the backend. Methods taking a key answer `InvalidInput` for a key
/// that is not a SHA-256 in lower-case hex, and `NotFound` for a blob that is not there.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Starts a new blob in this node's temporary directory.
    fn create_temp(&self) -> io::Result<TempBlob>;

    /// Makes a finished temporary blob durable under its content key: when this returns the
    /// index may refer to it. Blocking (a rename and fsyncs, or an upload): call it off the
    /// async threads, from a blocking task inside a tokio runtime.
    fn commit(&self, temp: TempBlob) -> io::Result<CommittedBlob>;

    /// Reads a blob from byte `start` to its end.
    async fn open(&self, key: &str, start: u64) -> io::Result<BlobReader>;

    /// [`BlobStore::open`], with up to `head` bytes already read into memory: most objects
    /// whole, in one hand-over to the blocking pool on the file backend (retrieval).
    async fn open_head(&self, key: &str, start: u64, head: u64) -> io::Result<(Vec<u8>, BlobReader)> {
        let mut reader = self.open(key, start).await?;
        let mut bytes = Vec::with_capacity(head.min(READ_PIECE as u64 * 4) as usize);
        (&mut reader).take(head).read_to_end(&mut bytes).await?;
        Ok((bytes, reader))
    }

    /// A local file with the blob's bytes, for the DICOM parser (which needs a file): the
    /// stored file itself on disk, a downloaded copy (removed when dropped) otherwise.
    async fn local(&self, key: &str) -> io::Result<LocalBlob>;

    /// The blob's size, `None` when it is not stored.
    async fn size(&self, key: &str) -> io::Result<Option<u64>>;

    /// Removes a blob durably; false when there was none.
    async fn delete(&self, key: &str) -> io::Result<bool>;

    /// Moves a blob that cannot be indexed out of the store (to `quarantine/`), for a human.
    async fn quarantine(&self, key: &str) -> io::Result<()>;

    /// Every stored key, in ascending order, holding one directory or one listing page in
    /// memory at a time.
    fn list(&self) -> BoxStream<'_, io::Result<String>>;

    /// SHA-256 and length of a stored blob, re-read from the store (fixity).
    async fn hash(&self, key: &str) -> io::Result<(String, u64)> {
        let mut reader = self.open(key, 0).await?;
        hash_reader(&mut reader).await
    }

    /// Whether the store answers (for `/healthz`).
    async fn check(&self) -> io::Result<()>;

    /// Removes this node's temporary files left by a previous run (never acknowledged).
    fn clean_temp(&self) -> io::Result<usize>;

    /// The local directory whose file system holds the blobs, for free-space gauges; `None`
    /// when they are elsewhere (a bucket).
    fn local_root(&self) -> Option<&Path>;
}

/// Where blobs are kept, from the configuration.
#[derive(Clone, Debug, Default)]
pub enum BlobLocation {
    /// Files under the data directory (`blobs/`).
    #[default]
    DataDir,
    /// An S3-compatible bucket.
    S3(S3Settings),
}

/// Opens the blob store: `data_dir` holds the temporary files (and, by default, the blobs).
pub fn open(data_dir: &Path, location: &BlobLocation) -> io::Result<Arc<dyn BlobStore>> {
    Ok(match location {
        BlobLocation::DataDir => Arc::new(FileBlobStore::open(data_dir)?),
        BlobLocation::S3(settings) => Arc::new(S3BlobStore::open(data_dir, settings)?),
    })
}

/// The error of a blob store that does not answer (an object store unreachable, or failing
/// with a server error): nothing was written, and the same request may succeed later.
pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, e)
}

/// Whether `e` is [`unavailable`]'s: a store out of reach, not a request or data at fault.
pub fn is_unavailable(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotConnected
}

/// Whether `key` can be a blob key (a SHA-256 in lower-case hex), hence safe in a name.
pub fn is_key(key: &str) -> bool {
    key.len() == 64
        && key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The relative name of a blob in any backend, `None` for what is not a key.
pub(crate) fn name_of(key: &str) -> io::Result<String> {
    if !is_key(key) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "blob key is not a SHA-256",
        ));
    }
    Ok(format!("{}/{}/{key}", &key[0..2], &key[2..4]))
}

/// A blob as a local file: see [`BlobStore::local`].
#[derive(Debug)]
pub struct LocalBlob {
    path: PathBuf,
    /// Whether the file is a copy to remove when done.
    copy: bool,
}

impl LocalBlob {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalBlob {
    fn drop(&mut self) {
        if self.copy {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bytes read at a time when streaming a blob.
pub(crate) const READ_PIECE: usize = 256 * 1024;

async fn hash_reader(reader: &mut BlobReader) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_PIECE];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), len))
}
