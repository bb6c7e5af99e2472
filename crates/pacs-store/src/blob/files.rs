//! The file backend: blobs under `data_dir/blobs/<k0k1>/<k2k3>/<key>`.
//!
//! Writing follows one discipline: write a temporary file under `tmp/`, fsync it, rename it
//! into place, and fsync the directory before anything refers to it. All of it happens in
//! [`FileBlobStore::commit`], on the caller's thread: blobs spread over 65,536 leaf
//! directories, so grouping directory fsyncs of concurrent stores saved almost nothing, while
//! doing them where the blob was written lets concurrent stores sync in parallel and spares a
//! thread hand-over per object.
//!
//! Hand-written rather than `object_store`'s `LocalFileSystem`: that one renames its staging
//! file into place but fsyncs neither the file nor the directory, so an acknowledged object
//! could vanish on power loss (DESIGN §3.1), and it cannot take over the temporary file the
//! receiver already wrote (it would copy every object once more).

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use futures::stream::{self, BoxStream, StreamExt};
use sha2::{Digest, Sha256};

use super::temp::Staging;
use super::{is_key, name_of, BlobReader, BlobStore, CommittedBlob, LocalBlob, TempBlob, READ_PIECE};

/// The blob store rooted at a data directory.
#[derive(Debug)]
pub struct FileBlobStore {
    root: PathBuf,
    blobs: PathBuf,
    staging: Staging,
    /// Held while checking for and creating blob directories, so that nobody uses a directory
    /// whose own entry is not yet durable.
    dir_lock: std::sync::Mutex<()>,
}

impl FileBlobStore {
    /// Opens (creating if needed) `data_dir/blobs` and `data_dir/tmp`.
    pub fn open(data_dir: &Path) -> io::Result<FileBlobStore> {
        let blobs = data_dir.join("blobs");
        fs::create_dir_all(&blobs)?;
        let staging = Staging::open(data_dir)?;
        // The 256 first-level directories exist from the start, so storing a blob creates at
        // most its leaf directory (one extra fsync, once per leaf) on the hot path.
        let mut created = false;
        for i in 0..=255u8 {
            let d = blobs.join(format!("{i:02x}"));
            if !d.exists() {
                fs::create_dir(&d)?;
                created = true;
            }
        }
        if created {
            sync_dir(&blobs)?;
        }
        sync_dir(data_dir)?;
        Ok(FileBlobStore {
            root: data_dir.to_path_buf(),
            blobs,
            staging,
            dir_lock: std::sync::Mutex::new(()),
        })
    }

    /// The only place a key becomes a path.
    fn path_of(&self, key: &str) -> io::Result<PathBuf> {
        Ok(self.blobs.join(name_of(key)?))
    }

    /// The leaf directories of the store (`blobs/ab/cd`), sorted. There are at most 65,536.
    fn leaf_dirs(blobs: &Path) -> io::Result<Vec<PathBuf>> {
        let mut leaves = Vec::new();
        for d1 in fs::read_dir(blobs)? {
            let d1 = d1?;
            if !d1.file_type()?.is_dir() {
                continue;
            }
            for d2 in fs::read_dir(d1.path())? {
                let d2 = d2?;
                if d2.file_type()?.is_dir() {
                    leaves.push(d2.path());
                }
            }
        }
        leaves.sort();
        Ok(leaves)
    }

    /// Blob keys stored in one leaf directory, sorted.
    fn keys_in(leaf: &Path) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(leaf)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                if is_key(name) {
                    keys.push(name.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blob task failed: {e}")))?
}

#[async_trait::async_trait]
impl BlobStore for FileBlobStore {
    fn create_temp(&self) -> io::Result<TempBlob> {
        self.staging.create(true)
    }

    fn commit(&self, mut temp: TempBlob) -> io::Result<CommittedBlob> {
        let finished = temp.finish()?;
        let path = self.path_of(&finished.key)?;
        let dir = path
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?
            .to_path_buf();
        {
            let _creating = self
                .dir_lock
                .lock()
                .map_err(|_| io::Error::other("blob directory lock poisoned"))?;
            if !dir.exists() {
                // New directories must be durable too: fsync each parent we create an entry in.
                let parent = dir.parent().unwrap_or(&self.blobs).to_path_buf();
                let parent_existed = parent.exists();
                fs::create_dir_all(&dir)?;
                sync_dir(&parent)?;
                if !parent_existed {
                    sync_dir(&self.blobs)?;
                }
            }
        }
        // fdatasync (the data and what is needed to read it back, the size) before the rename:
        // a crash must never leave an incomplete file under a content name. Started earlier by
        // `start_sync` when the caller had other work to do meanwhile; the name is made durable
        // by the directory fsync below.
        match temp.syncing.take() {
            Some(syncing) => syncing
                .recv()
                .map_err(|_| io::Error::other("the fdatasync thread ended without an answer"))??,
            None => temp.file.sync_data()?,
        }
        if path.exists() {
            // Same content already stored (the key is its hash): keep the existing file; the
            // temporary one goes when `temp` is dropped.
        } else {
            fs::rename(temp.path(), &path)?;
            temp.kept = true;
        }
        // Also when the file existed: whoever renamed it may not have synced the directory yet.
        sync_dir(&dir)?;
        Ok(CommittedBlob {
            key: finished.key,
            size: temp.len(),
            dataset_sha256: finished.dataset_sha256,
        })
    }

    async fn open(&self, key: &str, start: u64) -> io::Result<BlobReader> {
        let path = self.path_of(key)?;
        let file = blocking(move || {
            let mut file = File::open(path)?;
            file.seek(io::SeekFrom::Start(start))?;
            Ok(file)
        })
        .await?;
        // In 256 KiB pieces: every read of a tokio file is a hop to the blocking pool.
        Ok(Box::new(tokio::io::BufReader::with_capacity(
            READ_PIECE,
            tokio::fs::File::from_std(file),
        )))
    }

    async fn open_head(&self, key: &str, start: u64, head: u64) -> io::Result<(Vec<u8>, BlobReader)> {
        let path = self.path_of(key)?;
        // Open, seek and the first read in one blocking task: one hand-over for most objects.
        let (bytes, file) = blocking(move || {
            let mut file = File::open(path)?;
            file.seek(io::SeekFrom::Start(start))?;
            let mut bytes = Vec::with_capacity(head.min(1 << 20) as usize);
            (&mut file).take(head).read_to_end(&mut bytes)?;
            Ok((bytes, file))
        })
        .await?;
        let rest: BlobReader = Box::new(tokio::io::BufReader::with_capacity(
            READ_PIECE,
            tokio::fs::File::from_std(file),
        ));
        Ok((bytes, rest))
    }

    async fn local(&self, key: &str) -> io::Result<LocalBlob> {
        let path = self.path_of(key)?;
        let probe = path.clone();
        blocking(move || fs::metadata(probe)).await?;
        Ok(LocalBlob { path, copy: false })
    }

    async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        let path = self.path_of(key)?;
        blocking(move || match fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn delete(&self, key: &str) -> io::Result<bool> {
        let path = self.path_of(key)?;
        blocking(move || remove_durably(&path)).await
    }

    async fn quarantine(&self, key: &str) -> io::Result<()> {
        let path = self.path_of(key)?;
        let quarantine = self.root.join("quarantine");
        let target = quarantine.join(key);
        blocking(move || {
            fs::create_dir_all(&quarantine)?;
            fs::rename(&path, target)
        })
        .await
    }

    fn list(&self) -> BoxStream<'_, io::Result<String>> {
        let blobs = self.blobs.clone();
        // One leaf directory at a time: memory stays bounded however large the store.
        stream::once(blocking(move || Self::leaf_dirs(&blobs)))
            .map(|leaves| match leaves {
                Ok(leaves) => stream::iter(leaves)
                    .then(|leaf| blocking(move || Self::keys_in(&leaf)))
                    .map(|keys| match keys {
                        Ok(keys) => stream::iter(keys.into_iter().map(Ok)).left_stream(),
                        Err(e) => stream::iter([Err(e)]).right_stream(),
                    })
                    .flatten()
                    .left_stream(),
                Err(e) => stream::iter([Err(e)]).right_stream(),
            })
            .flatten()
            .boxed()
    }

    async fn hash(&self, key: &str) -> io::Result<(String, u64)> {
        let path = self.path_of(key)?;
        blocking(move || {
            let mut file = File::open(path)?;
            let mut hasher = Sha256::new();
            let n = io::copy(&mut file, &mut hasher)?;
            Ok((hex::encode(hasher.finalize()), n))
        })
        .await
    }

    async fn check(&self) -> io::Result<()> {
        let blobs = self.blobs.clone();
        let tmp = self.staging.dir.clone();
        blocking(move || {
            fs::read_dir(&blobs)?.next().transpose()?;
            if !fs::metadata(&tmp)?.is_dir() {
                return Err(io::Error::other("the temporary directory is not a directory"));
            }
            Ok(())
        })
        .await
    }

    fn clean_temp(&self) -> io::Result<usize> {
        self.staging.clean()
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Fills `buf` from `file` as far as the file goes (a multipart piece); 0 at its end.
pub(crate) fn read_piece(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Removes a file (a blob whose last index row was deleted) and fsyncs its directory; false
/// when there was no such file.
pub fn remove_durably(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(true)
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
