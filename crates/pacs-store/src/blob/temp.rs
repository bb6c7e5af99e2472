//! Staging of a blob being received: a temporary file in this node's `tmp/` directory, hashed
//! while it is written, whatever backend it is committed to afterwards.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Bytes a blob keeps in memory before writing them out, and the largest object that stays
/// whole in memory until it is committed.
pub const WRITE_BUFFER: usize = 256 * 1024;

/// This node's temporary directory, where every blob starts.
#[derive(Debug)]
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
    counter: AtomicU64,
}

impl Staging {
    pub(crate) fn open(data_dir: &Path) -> io::Result<Staging> {
        let dir = data_dir.join("tmp");
        fs::create_dir_all(&dir)?;
        Ok(Staging {
            dir,
            counter: AtomicU64::new(0),
        })
    }

    /// A new temporary file. `durable`: its data is fsynced before the commit (the file
    /// backend renames this very file into the store; others upload a copy and need no sync).
    pub(crate) fn create(&self, durable: bool) -> io::Result<TempBlob> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
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
            durable,
            syncing: None,
        })
    }

    /// Removes temporary files left by a previous run (never acknowledged, so never promised).
    pub(crate) fn clean(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A path for a file that is not a blob being received (a downloaded copy); same naming,
    /// so that [`Staging::clean`] removes it after a crash.
    pub(crate) fn scratch_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{}-{}-{n}.copy", std::process::id(), nanos()))
    }
}

/// A blob being written: bytes go to a temporary file and through two hashes, one over the
/// whole file and one over the data set part (from `dataset_offset` on) used to tell identical
/// objects apart whatever file meta header they were wrapped in.
pub struct TempBlob {
    path: PathBuf,
    pub(crate) file: File,
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
    pub(crate) kept: bool,
    durable: bool,
    /// The fdatasync started by [`TempBlob::start_sync`], running on another thread.
    pub(crate) syncing: Option<std::sync::mpsc::Receiver<io::Result<()>>>,
}

/// What [`TempBlob::finish`] hands to a backend's commit: the hashes and the length.
pub(crate) struct Finished {
    pub(crate) key: String,
    pub(crate) dataset_sha256: String,
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

    /// Writes out what is buffered and, when the backend renames this file into place, starts
    /// its fdatasync on another thread (the blocking pool inside a tokio runtime), so that the
    /// caller can parse the object and the commit prepare its directory while the disk works:
    /// both take about as long as the sync. Nothing may be written after this; the commit
    /// waits for the sync before the rename.
    pub fn start_sync(&mut self) -> io::Result<()> {
        self.write_out()?;
        if !self.durable {
            return Ok(());
        }
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

    /// The content key (SHA-256 of everything written so far: the whole object once
    /// [`TempBlob::start_sync`] has run), without ending the hash.
    pub fn content_key(&self) -> String {
        hex::encode(self.file_hash.clone().finalize())
    }

    /// Ends writing and gives the content key (SHA-256 of the whole) and the data set hash.
    pub(crate) fn finish(&mut self) -> io::Result<Finished> {
        self.write_out()?;
        Ok(Finished {
            key: hex::encode(std::mem::take(&mut self.file_hash).finalize()),
            dataset_sha256: hex::encode(std::mem::take(&mut self.dataset_hash).finalize()),
        })
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

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
