//! Content-addressed blob store on the local filesystem.
//!
//! A blob's key is the SHA-256 of its bytes; its path is `blobs/<k0k1>/<k2k3>/<key>`, derived
//! from the key alone (never from a UID or a name received from a peer). Writing follows one
//! discipline: write a temporary file under `tmp/`, fsync it, rename it into place, and fsync
//! the directory before anything refers to it. All of it happens in [`BlobStore::commit`], on
//! the caller's thread: blobs spread over 65,536 leaf directories, so grouping directory
//! fsyncs of concurrent stores saved almost nothing, while doing them where the blob was
//! written lets concurrent stores sync in parallel and spares a thread hand-over per object.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The blob store rooted at a data directory.
#[derive(Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
    /// Held while checking for and creating blob directories, so that nobody uses a directory
    /// whose own entry is not yet durable.
    dir_lock: std::sync::Mutex<()>,
}

/// A blob being written: bytes go to a temporary file and through two hashes, one over the
/// whole file and one over the data set part (from `dataset_offset` on) used to tell identical
/// objects apart whatever file meta header they were wrapped in.
pub struct TempBlob {
    path: PathBuf,
    file: File,
    /// Bytes not yet written to `file`: written in [`WRITE_BUFFER`] pieces (peers send a few
    /// KiB per PDU; storescu 16 KiB). An object that never filled it is still whole here
    /// after [`TempBlob::start_sync`], so that it can be parsed without reading the file back.
    pending: Vec<u8>,
    /// Whether `pending` has been written out; it then holds the whole object only if
    /// `spilled` is false.
    pending_written: bool,
    /// Whether bytes left `pending` before the end (the object is larger than the buffer).
    spilled: bool,
    file_hash: Sha256,
    dataset_hash: Sha256,
    len: u64,
    dataset_offset: Option<u64>,
    /// Set once the file has been renamed into the store; until then, dropping the value
    /// removes the temporary file (whatever failed, a panic included).
    kept: bool,
    /// The fdatasync started by [`TempBlob::start_sync`], running on another thread.
    syncing: Option<std::sync::mpsc::Receiver<io::Result<()>>>,
}

/// Bytes a blob keeps in memory before writing them out, and the largest object that stays
/// whole in memory until it is committed.
pub const WRITE_BUFFER: usize = 256 * 1024;

/// A blob made durable under its content key.
#[derive(Clone, Debug)]
pub struct CommittedBlob {
    pub key: String,
    pub path: PathBuf,
    pub size: u64,
    pub dataset_sha256: String,
}

impl BlobStore {
    /// Opens (creating if needed) `data_dir/blobs` and `data_dir/tmp`.
    pub fn open(data_dir: &Path) -> io::Result<BlobStore> {
        let blobs = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&blobs)?;
        fs::create_dir_all(&tmp)?;
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
        Ok(BlobStore {
            blobs,
            tmp,
            counter: AtomicU64::new(0),
            dir_lock: std::sync::Mutex::new(()),
        })
    }

    /// Whether the store can be read: its blob and temporary directories are there and
    /// listable (for `/healthz`; blocking, call off the async threads).
    pub fn check(&self) -> io::Result<()> {
        fs::read_dir(&self.blobs)?.next().transpose()?;
        if !fs::metadata(&self.tmp)?.is_dir() {
            return Err(io::Error::other("the temporary directory is not a directory"));
        }
        Ok(())
    }

    /// The data directory this store lives in.
    pub fn root(&self) -> &Path {
        self.blobs.parent().unwrap_or(&self.blobs)
    }

    /// Starts a new temporary blob.
    pub fn create_temp(&self) -> io::Result<TempBlob> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp
            .join(format!("{}-{}-{n}.part", std::process::id(), nanos()));
        let file = File::create_new(&path)?;
        Ok(TempBlob {
            path,
            file,
            pending: Vec::with_capacity(WRITE_BUFFER),
            pending_written: false,
            spilled: false,
            file_hash: Sha256::new(),
            dataset_hash: Sha256::new(),
            len: 0,
            dataset_offset: None,
            kept: false,
            syncing: None,
        })
    }

    /// Path of a blob from its key; `None` if the key is not a SHA-256 hex string.
    pub fn path_of(&self, key: &str) -> Option<PathBuf> {
        if key.len() != 64
            || !key
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        Some(self.blobs.join(&key[0..2]).join(&key[2..4]).join(key))
    }

    /// Removes temporary files left by a previous run (never acknowledged, so never promised).
    pub fn clean_temp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The leaf directories of the store (`blobs/ab/cd`), sorted. There are at most 65,536.
    pub fn leaf_dirs(&self) -> io::Result<Vec<PathBuf>> {
        let mut leaves = Vec::new();
        for d1 in fs::read_dir(&self.blobs)? {
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

    /// Blob keys stored in one leaf directory.
    pub fn keys_in(&self, leaf: &Path) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        for entry in fs::read_dir(leaf)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                if self.path_of(name).is_some() {
                    keys.push(name.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Moves a finished temporary blob to its content path, durably: when this returns, the
    /// file's data and its name have reached the disk and the index may refer to it.
    pub fn commit(&self, mut temp: TempBlob) -> io::Result<CommittedBlob> {
        temp.write_out()?;
        let key = hex::encode(std::mem::take(&mut temp.file_hash).finalize());
        let dataset_sha256 = hex::encode(std::mem::take(&mut temp.dataset_hash).finalize());
        let path = self
            .path_of(&key)
            .ok_or_else(|| io::Error::other("hash is not hex"))?;
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
            fs::rename(&temp.path, &path)?;
            temp.kept = true;
        }
        // Also when the file existed: whoever renamed it may not have synced the directory yet.
        sync_dir(&dir)?;
        Ok(CommittedBlob {
            key,
            path,
            size: temp.len,
            dataset_sha256,
        })
    }

    /// SHA-256 of a stored blob, streaming from disk.
    pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let n = io::copy(&mut file, &mut hasher)?;
        Ok((hex::encode(hasher.finalize()), n))
    }
}

impl TempBlob {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks the current length as the start of the data set (after the file meta header).
    pub fn mark_dataset_start(&mut self) {
        self.dataset_offset = Some(self.len);
    }

    /// Sets the data set offset when it is known only after the bytes were written (imports).
    pub fn set_dataset_offset(&mut self, offset: u64) {
        self.dataset_offset = Some(offset);
    }

    pub fn dataset_offset(&self) -> u64 {
        self.dataset_offset.unwrap_or(0)
    }

    /// Appends bytes; those past the data set start also feed the data set hash.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.pending_written {
            return Err(io::Error::other("blob written after its sync started"));
        }
        if self.pending.len() + buf.len() > WRITE_BUFFER {
            self.spilled = true;
            self.file.write_all(&self.pending)?;
            self.pending.clear();
            if buf.len() >= WRITE_BUFFER {
                self.file.write_all(buf)?;
            } else {
                self.pending.extend_from_slice(buf);
            }
        } else {
            self.pending.extend_from_slice(buf);
        }
        self.file_hash.update(buf);
        if let Some(offset) = self.dataset_offset {
            let start = offset.saturating_sub(self.len) as usize;
            if start < buf.len() {
                self.dataset_hash.update(&buf[start..]);
            }
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Writes out what is buffered and starts the fdatasync on another thread (the blocking
    /// pool inside a tokio runtime), so that the caller can parse the object and
    /// [`BlobStore::commit`] prepare its directory while the disk works: both take about as
    /// long as the sync. Nothing may be written after this; `commit` waits for the sync before
    /// the rename.
    pub fn start_sync(&mut self) -> io::Result<()> {
        self.write_out()?;
        let file = self.file.try_clone()?;
        let (done, syncing) = std::sync::mpsc::sync_channel(1);
        let sync = move || {
            let _ = done.send(file.sync_data());
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(sync);
            }
            Err(_) => {
                std::thread::Builder::new().name("blob-sync".into()).spawn(sync)?;
            }
        }
        self.syncing = Some(syncing);
        Ok(())
    }

    /// Writes what is still buffered to the file; nothing may be written afterwards. An object
    /// that fit in the buffer stays there, readable with [`TempBlob::contents`].
    fn write_out(&mut self) -> io::Result<()> {
        if !self.pending_written {
            self.file.write_all(&self.pending)?;
            self.pending_written = true;
            if self.spilled {
                self.pending = Vec::new();
            }
        }
        Ok(())
    }

    /// The whole object, once [`TempBlob::start_sync`] has written it out, when it was small
    /// enough ([`WRITE_BUFFER`]) to stay in memory; `None` otherwise (read the file).
    pub fn contents(&self) -> Option<&[u8]> {
        (self.pending_written && !self.spilled).then_some(&self.pending[..])
    }

    /// Gives up on this blob: the temporary file is removed.
    pub fn discard(self) {
        drop(self);
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
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

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_blob_is_addressed_by_its_hash_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut a = store.create_temp().unwrap();
        a.write(b"HEADER").unwrap();
        a.mark_dataset_start();
        a.write(b"dataset bytes").unwrap();
        let a = store.commit(a).unwrap();
        assert_eq!(a.key, hex::encode(Sha256::digest(b"HEADERdataset bytes")));
        assert_eq!(a.dataset_sha256, hex::encode(Sha256::digest(b"dataset bytes")));
        assert_eq!(std::fs::read(&a.path).unwrap(), b"HEADERdataset bytes");
        let mut b = store.create_temp().unwrap();
        b.write(b"HEADERdataset bytes").unwrap();
        let b = store.commit(b).unwrap();
        assert_eq!(a.path, b.path);
        assert_eq!(
            store.clean_temp().unwrap(),
            0,
            "temp file of the duplicate was removed"
        );
        let leaves = store.leaf_dirs().unwrap();
        assert_eq!(leaves.len(), 1);
        assert_eq!(store.keys_in(&leaves[0]).unwrap(), vec![a.key.clone()]);
    }

    #[test]
    fn keys_that_are_not_hashes_have_no_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.path_of("../../etc/passwd").is_none());
        assert!(store.path_of(&"A".repeat(64)).is_none());
        assert!(store.path_of(&"a".repeat(64)).is_some());
    }

    #[test]
    fn dataset_hash_starts_at_offset_even_inside_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut t = store.create_temp().unwrap();
        t.set_dataset_offset(3);
        t.write(b"abcdef").unwrap();
        let c = store.commit(t).unwrap();
        assert_eq!(c.dataset_sha256, hex::encode(Sha256::digest(b"def")));
    }

    /// An object up to WRITE_BUFFER stays readable in memory once written out; a larger one
    /// does not; both reach the file whole, whatever the sizes of the writes.
    #[test]
    fn small_objects_stay_in_memory_and_every_object_reaches_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        for (size, piece) in [
            (10_000, 16 * 1024),
            (WRITE_BUFFER, 7_000),
            (WRITE_BUFFER + 1, 16 * 1024),
            (3 * WRITE_BUFFER + 5, WRITE_BUFFER + 3),
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut t = store.create_temp().unwrap();
            for chunk in bytes.chunks(piece) {
                t.write(chunk).unwrap();
            }
            assert_eq!(t.contents(), None, "nothing to read before the sync starts");
            t.start_sync().unwrap();
            assert!(
                t.write(b"late").is_err(),
                "writes after the sync started are refused"
            );
            if size <= WRITE_BUFFER {
                assert_eq!(t.contents(), Some(&bytes[..]), "size {size}");
            } else {
                assert_eq!(t.contents(), None, "size {size}");
            }
            assert_eq!(std::fs::read(t.path()).unwrap(), bytes, "size {size}");
            let c = store.commit(t).unwrap();
            assert_eq!(std::fs::read(&c.path).unwrap(), bytes, "size {size}");
            assert_eq!(c.size, size as u64);
        }
    }
}
