//! The HL7 messages the archive sends the RIS (the end-of-exam notice: ORM^O01 with ORC-5 CM,
//! or DC), kept as `hl7-outbound` jobs in the index's job table.
//!
//! The notice is a job written in the transaction of the claim that decides it
//! ([`pacs_store::WorkflowWrite::WithJob`]), so a crash can neither lose it nor send it for
//! an exam that was not claimed. Any node's [`RisOutbox`] delivers it ([`pacs_hl7::Outbox`]
//! over [`JobOutbox`]): claimed under a lease that is renewed while sending, completed on
//! AA/CA, set aside (failed) on AR/CR/AE/CE, retried with back-off otherwise. A node that
//! dies mid-attempt leaves the job to another once its lease runs out. Every settled message
//! (delivered, refused, given up) gets an `hl7-send` audit line.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pacs_hl7::{Attempt, Limits, Message, OutboxStore, Outgoing};
use pacs_store::jobs::HL7_OUTBOUND;
use pacs_store::{AuditEvent, JobState, NewJob};
use tokio::sync::Notify;

use crate::workflow::{ExamEvent, ExamListener};
use crate::{Archive, ArchiveError};

/// The queue key of the RIS's messages: one destination, its messages in sequence.
pub const RIS_QUEUE: &str = "ris";

/// Attempts before a message the RIS never answers is given up (set aside, to be retried by
/// an administrator): about a week at the back-off's five-minute cap.
pub const MAX_ATTEMPTS: u32 = 2000;

/// The sender of the RIS's messages.
pub type RisOutbox = pacs_hl7::Outbox<JobOutbox>;

/// The job table as the store of an [`pacs_hl7::Outbox`]: this node claims, renews and
/// settles `hl7-outbound` jobs.
pub struct JobOutbox {
    archive: Arc<Archive>,
    lease: Duration,
    /// What the audit line of the message being sent names.
    current: Mutex<Option<Sending>>,
}

struct Sending {
    id: i64,
    summary: String,
    patient_id: Option<String>,
    study_uid: Option<String>,
}

impl JobOutbox {
    pub fn new(archive: Arc<Archive>, lease: Duration) -> JobOutbox {
        JobOutbox {
            archive,
            lease,
            current: Mutex::new(None),
        }
    }

    fn sending(&self, id: i64) -> Option<Sending> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.take_if(|s| s.id == id)
    }

    async fn audit(&self, id: i64, outcome: &str, detail: String) {
        let sending = self.sending(id);
        let (summary, patient_id, study_uid) = match sending {
            Some(s) => (s.summary, s.patient_id, s.study_uid),
            None => (String::new(), None, None),
        };
        self.archive
            .record(AuditEvent {
                event: "hl7-send".into(),
                actor: "openpacs".into(),
                peer: "ris".into(),
                patient_id,
                study_uid,
                outcome: outcome.into(),
                detail: Some(format!("job {id} {summary}: {detail}")),
                ..AuditEvent::default()
            })
            .await;
    }
}

#[async_trait]
impl OutboxStore for JobOutbox {
    async fn next(&self) -> Result<Option<Outgoing>, String> {
        // Claiming is a write (on SQLite an fsync): an idle queue is only read.
        let open = self
            .archive
            .system()
            .open_jobs(HL7_OUTBOUND)
            .await
            .map_err(|e| e.to_string())?;
        if open == 0 {
            return Ok(None);
        }
        let claimed = self
            .archive
            .system()
            .claim_jobs(self.archive.node(), &[HL7_OUTBOUND], self.lease, 1)
            .await
            .map_err(|e| e.to_string())?;
        let Some(claimed) = claimed.into_iter().next() else {
            return Ok(None);
        };
        let message = Message::parse_with(&claimed.payload, &Limits::default()).ok();
        let value = |path: &str| {
            message
                .as_ref()
                .and_then(|m| m.value(path))
                .filter(|v| !v.is_empty())
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sending {
            id: claimed.job.id,
            summary: claimed.job.summary.clone(),
            patient_id: value("PID-3.1"),
            study_uid: value("ZDS-1.1"),
        });
        Ok(Some(Outgoing {
            id: claimed.job.id,
            message: claimed.payload,
            attempts: claimed.job.attempts,
        }))
    }

    async fn keep(&self, id: i64) -> Result<bool, String> {
        self.archive
            .system()
            .renew_job_lease(id, self.archive.node(), self.lease)
            .await
            .map_err(|e| e.to_string())
    }

    async fn record(&self, id: i64, attempt: &Attempt) -> Result<(), String> {
        let system = self.archive.system();
        let node = self.archive.node();
        match attempt {
            Attempt::Delivered(ack) => {
                if system.complete_job(id, node).await.map_err(|e| e.to_string())? {
                    self.audit(id, "success", format!("accepted ({})", ack.code.as_str()))
                        .await;
                }
            }
            Attempt::Refused(why) => {
                if system
                    .fail_job(id, node, why, None)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    self.audit(id, "failure", format!("refused, set aside: {why}"))
                        .await;
                }
            }
            Attempt::Failed { error, retry_in } => {
                let state = system
                    .fail_job(id, node, error, Some(*retry_in))
                    .await
                    .map_err(|e| e.to_string())?;
                if state == Some(JobState::Failed) {
                    tracing::error!(job = id, error = %error, "outbound HL7 message given up after its last attempt: set aside (`openpacs jobs retry {id}` sends it again)");
                    self.audit(
                        id,
                        "failure",
                        format!("given up after {MAX_ATTEMPTS} attempts: {error}"),
                    )
                    .await;
                } else {
                    // Attempted again later, from the claim: what it names is read again then.
                    self.sending(id);
                }
            }
        }
        Ok(())
    }

    async fn pending(&self) -> Result<u64, String> {
        self.archive
            .system()
            .open_jobs(HL7_OUTBOUND)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Writes the end-of-exam notice and wakes the sender once it is committed.
pub struct RisNotifier {
    wake: Arc<Notify>,
    sending_application: String,
}

impl RisNotifier {
    pub fn new(wake: Arc<Notify>, sending_application: String) -> Self {
        RisNotifier {
            wake,
            sending_application,
        }
    }

    fn message(&self, event: &ExamEvent) -> (Vec<u8>, String) {
        let mut b = pacs_hl7::MessageBuilder::message("ORM", "O01", "ORM_O01", "2.5");
        let set = |b: &mut pacs_hl7::MessageBuilder, path: &str, value: &str| {
            if let Err(e) = b.set(path, value) {
                tracing::warn!(error = %e, path, "RIS notification: value left out");
            }
        };
        set(&mut b, "MSH-3", &self.sending_application);
        let accession = event.accession_number.clone().unwrap_or_default();
        b.append("PID");
        set(&mut b, "PID-1", "1");
        set(&mut b, "PID-3.1", event.patient_id.as_deref().unwrap_or_default());
        b.append("ORC");
        set(&mut b, "ORC-1", "SC");
        set(&mut b, "ORC-3.1", &accession);
        set(&mut b, "ORC-5", if event.discontinued { "DC" } else { "CM" });
        b.append("OBR");
        set(&mut b, "OBR-1", "1");
        set(&mut b, "OBR-3.1", &accession);
        set(&mut b, "OBR-18", &accession);
        if let Some(study) = &event.study_uid {
            b.append("ZDS");
            set(&mut b, "ZDS-1.1", study);
            set(&mut b, "ZDS-1.2", "");
            set(&mut b, "ZDS-1.3", "Application");
            set(&mut b, "ZDS-1.4", "DICOM");
        }
        let control_id = b.control_id().to_owned();
        (b.to_bytes_lossy(), control_id)
    }
}

impl ExamListener for RisNotifier {
    fn notice(&self, event: &ExamEvent) -> NewJob {
        let (payload, control_id) = self.message(event);
        NewJob {
            tenant: 0, // the write's
            kind: HL7_OUTBOUND.into(),
            queue_key: RIS_QUEUE.into(),
            payload,
            summary: format!(
                "ORM^O01 {} accession={} control={control_id}",
                if event.discontinued { "DC" } else { "CM" },
                event.accession_number.as_deref().unwrap_or("")
            ),
            max_attempts: MAX_ATTEMPTS,
        }
    }

    fn queued(&self) {
        self.wake.notify_one();
    }
}

/// Moves what an older openpacs left pending in its file queue (`outbox/ris/*.hl7`) into the
/// job table, in order, in one transaction, then renames the directory (its `rejected/`
/// messages stay there for a person). Returns how many were moved and the new name; `None`
/// when there is no such directory. A crash between the commit and the rename imports them
/// again at the next start: delivery is at least once, as it was.
pub async fn import_file_queue(
    archive: &Archive,
    dir: &Path,
) -> Result<Option<(usize, PathBuf)>, ArchiveError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let messages = pacs_hl7::pending_in_file_queue(dir).map_err(ArchiveError::from_io)?;
    let count = messages.len();
    let jobs: Vec<NewJob> = messages
        .into_iter()
        .map(|payload| {
            let summary = match Message::parse_header(&payload, &Limits::default()) {
                Ok(m) => format!(
                    "{} control={} (from the file queue)",
                    m.message_type(),
                    m.control_id()
                ),
                Err(_) => "unreadable message (from the file queue)".into(),
            };
            NewJob {
                tenant: 0,
                kind: HL7_OUTBOUND.into(),
                queue_key: RIS_QUEUE.into(),
                payload,
                summary,
                max_attempts: MAX_ATTEMPTS,
            }
        })
        .collect();
    if !jobs.is_empty() {
        archive.index().enqueue_jobs(jobs).await?;
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = dir
        .file_name()
        .map_or_else(|| "queue".into(), |n| n.to_string_lossy().into_owned());
    let renamed = dir.with_file_name(format!("{name}.imported-{stamp}"));
    std::fs::rename(dir, &renamed).map_err(ArchiveError::from_io)?;
    Ok(Some((count, renamed)))
}
