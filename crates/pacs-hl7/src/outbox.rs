//! The outbound sender: delivers queued messages to one MLLP destination, oldest first, and
//! loses nothing while the peer is unreachable.
//!
//! Where the messages wait is not this crate's business: an [`OutboxStore`] hands them out
//! one at a time (claimed, so that another sender sharing the store does not take the same one)
//! and records each attempt's outcome. openpacs keeps them in its durable job table, shared by
//! every node (`pacs-archive`'s `hl7_outbox`).
//!
//! A message is settled only by an AA or CA whose MSA-2 names its control id. An AR/CR
//! (rejected) or AE/CE (errored) answer, or a message that cannot even be framed, is set aside
//! for a person: sending the same bytes again would get the same answer. Anything else (no
//! connection, no answer, a timeout) is a failed attempt, retried after a back-off that doubles
//! up to a cap; the store keeps later messages waiting meanwhile, because HL7 receivers expect
//! a patient's or an order's messages in sequence. Delivery is at least once: a crash between
//! the ACK and its record sends the message again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use crate::{client, Hl7Error, ParsedAck};

/// Where and how the sender delivers.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// `host:port` of the peer's MLLP listener.
    pub destination: String,
    /// For one delivery attempt, connection to acknowledgement.
    pub send_timeout: Duration,
    /// Wait after the first failed attempt; doubles after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often the store is asked again when it had nothing due (another node may have
    /// queued something, a back-off may have passed).
    pub poll: Duration,
    /// How often, during an attempt, the store is told the message is still being sent.
    pub keep_every: Duration,
}

impl OutboxConfig {
    pub fn new(destination: impl Into<String>) -> OutboxConfig {
        OutboxConfig {
            destination: destination.into(),
            send_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            poll: Duration::from_secs(1),
            keep_every: Duration::from_secs(20),
        }
    }

    /// The wait after the `attempts`-th failed attempt (1 for the first).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A message the store handed out for one attempt.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The store's name for it.
    pub id: i64,
    /// Exactly the bytes to send.
    pub message: Vec<u8>,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// What an attempt came to.
#[derive(Debug)]
pub enum Attempt {
    /// AA or CA naming the message's control id.
    Delivered(ParsedAck),
    /// Refused by the peer (AR/CR/AE/CE) or unsendable: set it aside, do not retry.
    Refused(String),
    /// No connection, no answer, a timeout: try again after `retry_in`.
    Failed { error: String, retry_in: Duration },
}

/// Where outbound messages wait.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// The oldest message due now, claimed for this sender; `None` when nothing is due.
    async fn next(&self) -> Result<Option<Outgoing>, String>;
    /// The message is still being sent: keep it claimed. False when the claim was lost.
    async fn keep(&self, id: i64) -> Result<bool, String>;
    /// Records an attempt's outcome.
    async fn record(&self, id: i64, attempt: &Attempt) -> Result<(), String>;
    /// Messages waiting (not yet settled), for the metrics.
    async fn pending(&self) -> Result<u64, String>;
}

/// A store shared with others (the test's, the archive's) stays a store.
#[async_trait]
impl<S: OutboxStore + ?Sized> OutboxStore for Arc<S> {
    async fn next(&self) -> Result<Option<Outgoing>, String> {
        (**self).next().await
    }
    async fn keep(&self, id: i64) -> Result<bool, String> {
        (**self).keep(id).await
    }
    async fn record(&self, id: i64, attempt: &Attempt) -> Result<(), String> {
        (**self).record(id, attempt).await
    }
    async fn pending(&self) -> Result<u64, String> {
        (**self).pending().await
    }
}

/// A snapshot of the sender, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages waiting in the store (not yet acknowledged).
    pub pending: u64,
    /// Delivery attempts that failed (no connection, no ACK, timeout) since this process
    /// started sending.
    pub failed_attempts: u64,
    pub delivered: u64,
    pub rejected: u64,
}

/// The sender of one destination; clones share it. One [`Outbox::run`] task delivers.
pub struct Outbox<S> {
    store: S,
    config: OutboxConfig,
    failed_attempts: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    wake: Arc<Notify>,
}

impl<S: OutboxStore> Outbox<S> {
    pub fn new(store: S, config: OutboxConfig) -> Outbox<S> {
        Outbox {
            store,
            config,
            failed_attempts: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// What wakes [`Outbox::run`] at once when a message was queued in this process (others
    /// are found at the next poll).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The counters, and what the store says is waiting (`pending` stays 0 if it cannot).
    pub async fn counts(&self) -> QueueCounts {
        let pending = match self.store.pending().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the outbound HL7 messages waiting");
                0
            }
        };
        QueueCounts {
            pending,
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }

    /// Delivers what the store hands out until `shutdown` turns true. An attempt in progress
    /// when it does is finished (at most `send_timeout`).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.store.next().await {
                Ok(Some(outgoing)) => {
                    self.attempt(outgoing).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, destination = %self.config.destination, "cannot read the outbound HL7 queue")
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One delivery attempt, its claim kept alive meanwhile, and its outcome recorded.
    async fn attempt(&self, outgoing: Outgoing) {
        let config = &self.config;
        let send = client::send(
            config.destination.as_str(),
            &outgoing.message,
            config.send_timeout,
        );
        tokio::pin!(send);
        let mut keep = tokio::time::interval(config.keep_every);
        keep.tick().await; // the first tick is immediate: the claim is fresh
        let result = loop {
            tokio::select! {
                result = &mut send => break result,
                _ = keep.tick() => match self.store.keep(outgoing.id).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(message = outgoing.id, "lost the claim on an outbound HL7 message while sending it (taken over elsewhere?)"),
                    Err(e) => tracing::warn!(error = %e, message = outgoing.id, "cannot extend the claim on an outbound HL7 message"),
                },
            }
        };
        let attempt = match result {
            Ok(ack) if ack.code.is_accept() => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(control_id = %ack.control_id, message = outgoing.id, "HL7 message delivered");
                Attempt::Delivered(ack)
            }
            Ok(ack) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    code = ack.code.as_str(),
                    control_id = %ack.control_id,
                    text = %ack.text,
                    errors = ?ack.errors,
                    message = outgoing.id,
                    "HL7 message refused by the peer: set aside (job failed, not retried)"
                );
                let mut why = format!("{} {}", ack.code.as_str(), ack.text);
                for e in &ack.errors {
                    why.push_str("; ");
                    why.push_str(e);
                }
                Attempt::Refused(why.trim().to_string())
            }
            // A message we cannot even frame or parse would fail forever: set it aside.
            Err(
                e @ (Hl7Error::Framing(_)
                | Hl7Error::MissingMsh
                | Hl7Error::MissingField(_)
                | Hl7Error::BadDelimiters(_)
                | Hl7Error::TooLarge { .. }),
            ) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, message = outgoing.id, "unsendable HL7 message: set aside (job failed, not retried)");
                Attempt::Refused(format!("unsendable: {e}"))
            }
            Err(e) => {
                self.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let retry_in = config.backoff(outgoing.attempts);
                tracing::warn!(
                    error = %e,
                    destination = %config.destination,
                    message = outgoing.id,
                    attempts = outgoing.attempts,
                    retry_in = ?retry_in,
                    "HL7 delivery failed"
                );
                Attempt::Failed {
                    error: e.to_string(),
                    retry_in,
                }
            }
        };
        if let Err(e) = self.store.record(outgoing.id, &attempt).await {
            // The claim runs out and the message is attempted again: at least once.
            tracing::error!(error = %e, message = outgoing.id, "cannot record the outcome of an outbound HL7 message");
        }
    }
}

/// The messages still pending in a queue directory of openpacs before 0.x kept them as files
/// (`<20-digit sequence>.hl7`, sent in sequence order; `rejected/` and temporary files are
/// not pending), in the order they were to be sent.
pub fn pending_in_file_queue(dir: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut pending = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(".hl7")) else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) && entry.file_type()?.is_file() {
            pending.push((digits.to_string(), entry.path()));
        }
    }
    // Fixed-width numbers: text order is sequence order.
    pending.sort();
    pending.into_iter().map(|(_, path)| std::fs::read(path)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let c = OutboxConfig::new("x:1");
        let waits: Vec<u64> = (1..=11).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn a_file_queue_left_by_an_older_version_is_read_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("00000000000000000010.hl7"), b"ten").unwrap();
        std::fs::write(d.join("00000000000000000002.hl7"), b"two").unwrap();
        std::fs::write(d.join(".00000000000000000011.tmp"), b"half").unwrap();
        std::fs::write(d.join("notes.hl7"), b"not ours").unwrap();
        std::fs::create_dir(d.join("rejected")).unwrap();
        std::fs::write(d.join("rejected/00000000000000000001.hl7"), b"refused").unwrap();
        assert_eq!(
            pending_in_file_queue(d).unwrap(),
            vec![b"two".to_vec(), b"ten".to_vec()]
        );
    }
}
