//! The persisted outbound queue: an unreachable peer loses nothing.
//!
//! Layout of the queue directory:
//! - `<20-digit sequence>.hl7`: one pending message each, exactly the bytes to send, written
//!   to `.<sequence>.tmp` first, fsynced, renamed, and the directory fsynced, before
//!   [`RetryQueue::enqueue`] returns. Names sort in the order messages were queued, and are
//!   sent in that order: a message is retried until it is answered before the next one goes,
//!   because HL7 receivers expect a patient's or an order's messages in sequence.
//! - `rejected/<sequence>.hl7`: messages the peer answered with AR/CR (rejected) or AE/CE
//!   (errored): sending the same bytes again would get the same answer, so they are set aside
//!   for a person, and logged.
//! - leftover `.*.tmp` files (a crash while enqueuing, never acknowledged to the caller) are
//!   removed on open.
//!
//! A message is removed only after an AA or CA whose MSA-2 names its control id. Delivery is
//! at least once: a crash between the ACK and the removal sends the message again on restart.
//! File names come from the queue's own counter, never from message content.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::{client, Hl7Error, Limits, Message};

/// Where and how the queue delivers.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// `host:port` of the peer's MLLP listener.
    pub destination: String,
    /// For one delivery attempt, connection to acknowledgement.
    pub send_timeout: Duration,
    /// Wait after the first failed attempt; doubles after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl QueueConfig {
    pub fn new(destination: impl Into<String>) -> QueueConfig {
        QueueConfig {
            destination: destination.into(),
            send_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// A snapshot of the queue, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages waiting (on disk, not yet acknowledged).
    pub pending: u64,
    /// Delivery attempts that failed (no connection, no ACK, timeout) since this process
    /// opened the queue.
    pub failed_attempts: u64,
    pub delivered: u64,
    pub rejected: u64,
}

struct Inner {
    dir: PathBuf,
    config: QueueConfig,
    next_sequence: AtomicU64,
    pending: AtomicU64,
    failed_attempts: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    wake: Notify,
}

/// The queue; clones share it. One [`RetryQueue::run`] task delivers.
#[derive(Clone)]
pub struct RetryQueue {
    inner: Arc<Inner>,
}

const REJECTED: &str = "rejected";

/// The sequence number of a queue file name, if it is one.
fn sequence_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".hl7")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn file_name(sequence: u64) -> String {
    format!("{sequence:020}.hl7")
}

/// Sequence numbers of the queue files in `dir`, unsorted.
fn sequences(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(seq) = entry?.file_name().to_str().and_then(sequence_of) {
            out.push(seq);
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl RetryQueue {
    /// Opens (creating it if needed) the queue in `dir`: whatever is pending there from a
    /// previous run will be delivered by [`RetryQueue::run`].
    pub fn open(dir: impl Into<PathBuf>, config: QueueConfig) -> Result<RetryQueue, Hl7Error> {
        let dir = dir.into();
        fs::create_dir_all(dir.join(REJECTED))?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
            }
        }
        let pending = sequences(&dir)?;
        let rejected = sequences(&dir.join(REJECTED))?;
        let next = pending.iter().chain(&rejected).max().map_or(1, |m| m + 1);
        Ok(RetryQueue {
            inner: Arc::new(Inner {
                dir,
                config,
                next_sequence: AtomicU64::new(next),
                pending: AtomicU64::new(pending.len() as u64),
                failed_attempts: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                wake: Notify::new(),
            }),
        })
    }

    /// The queue directory (`rejected/` is inside it).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stores `message` durably for delivery and returns its file name. The message must
    /// have a readable MSH with a control id, which its ACK will be matched against.
    pub async fn enqueue(&self, message: Vec<u8>) -> Result<String, Hl7Error> {
        let header = Message::parse_header(&message, &Limits::default())?;
        if header.control_id().is_empty() {
            return Err(Hl7Error::MissingField("MSH-10"));
        }
        let inner = self.inner.clone();
        let name = tokio::task::spawn_blocking(move || -> Result<String, Hl7Error> {
            let sequence = inner.next_sequence.fetch_add(1, Ordering::Relaxed);
            let name = file_name(sequence);
            let tmp = inner.dir.join(format!(".{sequence:020}.tmp"));
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&message)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, inner.dir.join(&name))?;
            sync_dir(&inner.dir)?;
            Ok(name)
        })
        .await
        .map_err(|e| Hl7Error::Io(std::io::Error::other(e)))??;
        self.inner.pending.fetch_add(1, Ordering::Relaxed);
        self.inner.wake.notify_one();
        Ok(name)
    }

    pub fn counts(&self) -> QueueCounts {
        let i = &self.inner;
        QueueCounts {
            pending: i.pending.load(Ordering::Relaxed),
            failed_attempts: i.failed_attempts.load(Ordering::Relaxed),
            delivered: i.delivered.load(Ordering::Relaxed),
            rejected: i.rejected.load(Ordering::Relaxed),
        }
    }

    /// Delivers pending messages, oldest first, until `shutdown` turns true; after a failed
    /// attempt waits (initial backoff, doubling, capped) before trying the same message again.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let config = &self.inner.config;
        let mut backoff = config.initial_backoff;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let dir = self.inner.dir.clone();
            let oldest = tokio::task::spawn_blocking(move || oldest_pending(&dir)).await;
            let path = match oldest {
                Ok(Ok(Some(path))) => path,
                Ok(Ok(None)) => {
                    tokio::select! {
                        _ = self.inner.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, dir = %self.inner.dir.display(), "cannot read the HL7 queue");
                    self.pause(&mut shutdown, backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
                Err(_) => return,
            };
            match self.attempt(&path).await {
                Ok(()) => backoff = config.initial_backoff,
                Err(e) => {
                    self.inner.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        destination = %config.destination,
                        retry_in = ?backoff,
                        "HL7 delivery failed"
                    );
                    self.pause(&mut shutdown, backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        }
    }

    async fn pause(&self, shutdown: &mut watch::Receiver<bool>, wait: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// One delivery attempt: Ok when the message left the queue (delivered or rejected).
    async fn attempt(&self, path: &Path) -> Result<(), Hl7Error> {
        let inner = &self.inner;
        let message = tokio::fs::read(path).await?;
        let result = client::send(
            inner.config.destination.as_str(),
            &message,
            inner.config.send_timeout,
        )
        .await;
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let dir = inner.dir.clone();
        match result {
            Ok(ack) if ack.code.is_accept() => {
                let path = path.to_owned();
                tokio::task::spawn_blocking(move || {
                    fs::remove_file(&path)?;
                    sync_dir(&dir)
                })
                .await
                .map_err(std::io::Error::other)??;
                inner.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(control_id = %ack.control_id, "HL7 message delivered");
            }
            Ok(ack) => {
                tracing::warn!(
                    code = ack.code.as_str(),
                    control_id = %ack.control_id,
                    text = %ack.text,
                    errors = ?ack.errors,
                    file = ?name,
                    "HL7 message refused by the peer: moved to rejected/"
                );
                self.reject(path).await?;
            }
            // A message we cannot even frame or parse would fail forever: set it aside.
            Err(
                e @ (Hl7Error::Framing(_)
                | Hl7Error::MissingMsh
                | Hl7Error::BadDelimiters(_)
                | Hl7Error::TooLarge { .. }),
            ) => {
                tracing::error!(error = %e, file = ?name, "unsendable HL7 message: moved to rejected/");
                self.reject(path).await?;
            }
            Err(e) => return Err(e),
        }
        inner.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    async fn reject(&self, path: &Path) -> Result<(), Hl7Error> {
        let dir = self.inner.dir.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let rejected = dir.join(REJECTED);
            if let Some(name) = path.file_name() {
                fs::rename(&path, rejected.join(name))?;
            }
            sync_dir(&rejected)?;
            sync_dir(&dir)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn oldest_pending(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    Ok(sequences(dir)?
        .into_iter()
        .min()
        .map(|seq| dir.join(file_name(seq))))
}
