//! Storage commitment reports that could not be delivered: kept as `commitment-report` jobs in
//! the index and sent again, on a new association to the requester, by whichever node claims
//! them, with a growing delay, until the requester answers or the attempts run out (then the
//! job is `failed` and `openpacs jobs retry ID` sends it again).
//!
//! A modality that asked for commitment and never got the report keeps the images on its disk
//! or raises an alarm; one that was switched off, or whose report listener was down, gets it
//! when it is back, as dcm4chee and commercial archives do.

use std::sync::Arc;
use std::time::Duration;

use pacs_dimse::commitment::{self, CommitmentReport};
use pacs_dimse::{CommitmentResult, SopRef};
use pacs_store::jobs::COMMITMENT_REPORT;
use pacs_store::{AuditEvent, JobState, NewJob};
use tokio::sync::watch;

use crate::{Archive, ArchiveError, Platform};
use pacs_model::TenantId;

/// How the reports are sent again.
#[derive(Clone, Debug)]
pub struct ReportRetry {
    pub max_pdu: u32,
    /// For the association and each response.
    pub timeout: Duration,
    /// A claimed report is another node's again after this (see `job_lease_secs`).
    pub lease: Duration,
    /// How often to look for reports due.
    pub poll: Duration,
}

/// Attempts before a report is set aside: with the delays below, about a day.
const MAX_ATTEMPTS: u32 = 30;
const FIRST_DELAY: Duration = Duration::from_secs(10);
const LONGEST_DELAY: Duration = Duration::from_secs(3600);

/// The delay after `attempts` failed attempts: 10 s, doubling, at most an hour.
fn delay_after(attempts: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(LONGEST_DELAY)
}

/// What a job holds: the report and whom it is for.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    requester: String,
    transaction_uid: String,
    committed: Vec<(String, String)>,
    failed: Vec<(String, String, u16)>,
}

impl Payload {
    fn of(requester: &str, report: &CommitmentReport) -> Payload {
        Payload {
            requester: requester.to_string(),
            transaction_uid: report.transaction_uid.clone(),
            committed: report
                .result
                .committed
                .iter()
                .map(|s| (s.sop_class_uid.clone(), s.sop_instance_uid.clone()))
                .collect(),
            failed: report
                .result
                .failed
                .iter()
                .map(|(s, reason)| (s.sop_class_uid.clone(), s.sop_instance_uid.clone(), *reason))
                .collect(),
        }
    }

    fn report(&self) -> CommitmentReport {
        let sop = |(class, instance): &(String, String)| SopRef {
            sop_class_uid: class.clone(),
            sop_instance_uid: instance.clone(),
        };
        CommitmentReport {
            transaction_uid: self.transaction_uid.clone(),
            result: CommitmentResult {
                committed: self.committed.iter().map(sop).collect(),
                failed: self
                    .failed
                    .iter()
                    .map(|(class, instance, reason)| (sop(&(class.clone(), instance.clone())), *reason))
                    .collect(),
            },
        }
    }
}

impl Archive {
    /// Queues a report that could not be delivered to `requester`; returns the job's id.
    pub async fn queue_commitment_report(
        &self,
        requester: &str,
        report: &CommitmentReport,
    ) -> Result<i64, ArchiveError> {
        let payload = serde_json::to_vec(&Payload::of(requester, report))
            .map_err(|e| ArchiveError::Internal(e.to_string()))?;
        let job = NewJob {
            tenant: self.tenant.0,
            kind: COMMITMENT_REPORT.into(),
            // One requester's reports in the order they were decided.
            queue_key: format!("commitment:{requester}"),
            payload,
            summary: format!(
                "N-EVENT-REPORT to {requester} transaction={} committed={} failed={}",
                report.transaction_uid,
                report.result.committed.len(),
                report.result.failed.len()
            ),
            max_attempts: MAX_ATTEMPTS,
        };
        let ids = self.index.enqueue_jobs(vec![job]).await?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// One claimed report (`attempts`: its claims so far, this one included).
    async fn retry_one(&self, retry: &ReportRetry, id: i64, attempts: u32, payload: &[u8]) {
        let node = &self.node;
        let payload: Payload = match serde_json::from_slice(payload) {
            Ok(p) => p,
            Err(e) => {
                let _ = self
                    .system
                    .fail_job(id, node, &format!("unreadable job: {e}"), None)
                    .await;
                return;
            }
        };
        let report = payload.report();
        let sent = match self.peer(&payload.requester) {
            None => Err(format!("no address known for AE title {:?}", payload.requester)),
            Some(peer) => {
                let addr = format!("{}:{}", peer.host, peer.port);
                commitment::send_report(
                    &addr,
                    &self.ae_title,
                    &payload.requester,
                    &report,
                    retry.max_pdu,
                    retry.timeout,
                )
                .await
                .map_err(|e| format!("{addr}: {e}"))
            }
        };
        let audit = |outcome: &str, detail: String| AuditEvent {
            event: "commitment-report".into(),
            actor: payload.requester.clone(),
            peer: "job".into(),
            outcome: outcome.into(),
            detail: Some(detail),
            ..AuditEvent::default()
        };
        match sent {
            Ok(status) => {
                let _ = self.system.complete_job(id, node).await;
                self.record(audit(
                    if status == 0 { "success" } else { "failure" },
                    format!(
                        "transaction={} committed={} failed={}; answered {status:04X} on a new association (job {id})",
                        report.transaction_uid,
                        report.result.committed.len(),
                        report.result.failed.len()
                    ),
                ))
                .await;
            }
            Err(reason) => {
                let state = self
                    .system
                    .fail_job(id, node, &reason, Some(delay_after(attempts)))
                    .await;
                tracing::warn!(requester = %payload.requester, %reason, job = id, "storage commitment report not delivered; retried later");
                if let Ok(Some(JobState::Failed)) = state {
                    self.record(audit(
                        "failure",
                        format!(
                            "transaction={}: not delivered after {attempts} attempts ({reason}); set aside (job {id})",
                            report.transaction_uid
                        ),
                    ))
                    .await;
                }
            }
        }
    }
}

impl Platform {
    /// Sends queued reports until `stop` turns true.
    /// Claiming is a write (a transaction, on SQLite an fsync), so an idle server only reads
    /// whether any report is queued.
    pub async fn retry_commitment_reports(
        self: Arc<Self>,
        retry: ReportRetry,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let queued = match self.system().open_jobs(COMMITMENT_REPORT).await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for storage commitment reports to send again");
                    false
                }
            };
            let claimed = if queued {
                self.system()
                    .claim_jobs(self.node(), &[COMMITMENT_REPORT], retry.lease, 8)
                    .await
            } else {
                Ok(Vec::new())
            };
            match claimed {
                Ok(claimed) => {
                    // Each report is sent by its tenant, as the AE title it was requested of.
                    for job in claimed {
                        match self.archive(TenantId(job.job.tenant)) {
                            Some(archive) => {
                                archive
                                    .retry_one(&retry, job.job.id, job.job.attempts, &job.payload)
                                    .await
                            }
                            None => {
                                let _ = self
                                    .system()
                                    .fail_job(job.job.id, self.node(), "its tenant no longer exists", None)
                                    .await;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim storage commitment reports"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry.poll) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_ten_seconds_up_to_an_hour() {
        assert_eq!(delay_after(1), Duration::from_secs(10));
        assert_eq!(delay_after(2), Duration::from_secs(20));
        assert_eq!(delay_after(5), Duration::from_secs(160));
        assert_eq!(delay_after(30), Duration::from_secs(3600));
        assert_eq!(delay_after(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn a_report_survives_its_payload() {
        let report = CommitmentReport {
            transaction_uid: "1.2.3".into(),
            result: CommitmentResult {
                committed: vec![SopRef {
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                    sop_instance_uid: "1.2.3.4".into(),
                }],
                failed: vec![(
                    SopRef {
                        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                        sop_instance_uid: "1.2.3.5".into(),
                    },
                    0x0112,
                )],
            },
        };
        let bytes = serde_json::to_vec(&Payload::of("MODALITY", &report)).unwrap();
        let back: Payload = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.requester, "MODALITY");
        assert_eq!(back.report(), report);
    }
}
