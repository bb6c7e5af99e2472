//! The archive as a DIMSE service provider: maps archive results to DIMSE statuses and writes
//! the audit trail of queries, retrievals and refusals.

use std::sync::Arc;

use async_trait::async_trait;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_dimse::status;
use pacs_dimse::{
    AssociationInfo, CommitmentFuture, CommitmentRequest, CommitmentResult, DatasetStream, DimseServices,
    DimseStatus, FindKind, NResponse, RefusedAssociation, ReportOutcome, RetrieveItem, RetrieveKind, SopRef,
    StoreRequest, StoreSink,
};
use pacs_model::admission::RefusalSummary;
use pacs_model::InformationModel;
use pacs_store::AuditEvent;
use tokio::sync::mpsc;

use crate::ingest::{Incoming, Source};
use crate::query::FindQuery;
use crate::{Archive, ArchiveError};

/// Adapter from the DIMSE traits to the archive.
pub struct DimseArchive {
    archive: Arc<Archive>,
    commitment_delivery: pacs_dimse::CommitmentDelivery,
}

impl DimseArchive {
    pub fn new(archive: Arc<Archive>) -> Self {
        DimseArchive {
            archive,
            commitment_delivery: pacs_dimse::CommitmentDelivery::default(),
        }
    }

    /// Where storage commitment reports go (default: the requesting association).
    pub fn with_commitment_delivery(mut self, delivery: pacs_dimse::CommitmentDelivery) -> Self {
        self.commitment_delivery = delivery;
        self
    }

    async fn audit(&self, event: AuditEvent) {
        self.archive.record(event).await;
    }

    fn event(&self, assoc: &AssociationInfo, event: &str, outcome: &str) -> AuditEvent {
        AuditEvent {
            event: event.into(),
            actor: assoc.calling_ae.clone(),
            peer: assoc.peer.to_string(),
            outcome: outcome.into(),
            ..AuditEvent::default()
        }
    }
}

/// The DIMSE status for an archive failure. Error comments are for the operator at the other
/// end: say what is wrong with the data, never internals.
pub fn status_of(error: &ArchiveError) -> DimseStatus {
    match error {
        ArchiveError::OutOfResources(_) => {
            DimseStatus::new(status::OUT_OF_RESOURCES, "out of resources: storage full")
        }
        ArchiveError::QuotaExceeded(_) => {
            DimseStatus::new(status::OUT_OF_RESOURCES, "tenant storage quota exceeded")
        }
        ArchiveError::MissingAttribute(a) => {
            DimseStatus::new(status::DATASET_MISMATCH, format!("missing {a}"))
        }
        ArchiveError::Mismatch(m) => DimseStatus::new(status::DATASET_MISMATCH, m.clone()),
        ArchiveError::Invalid(m) | ArchiveError::NotPart10(m) => {
            DimseStatus::new(status::CANNOT_UNDERSTAND, m.clone())
        }
        ArchiveError::LimitExceeded(m) => DimseStatus::new(status::OUT_OF_RESOURCES, m.clone()),
        // The engine's address and its error go to the log; the peer learns what to do.
        ArchiveError::Unavailable(m) => {
            tracing::error!(error = %m, "storage engine unavailable");
            // An Error Comment holds 64 characters.
            DimseStatus::new(
                status::OUT_OF_RESOURCES,
                "index or object store unreachable; nothing stored: retry later",
            )
        }
        ArchiveError::Index(_) | ArchiveError::Io(_) | ArchiveError::Internal(_) => {
            tracing::error!(error = %error, "storage failure");
            DimseStatus::new(status::PROCESSING_FAILURE, "processing failure")
        }
    }
}

/// The audit record of connections refused from one source over `period` (DICOM or HL7):
/// one record per source and reason with the count, not one per socket, so that a flood of
/// connections cannot fill the audit log.
pub(crate) fn refusals_event(
    tenant: i64,
    event: &str,
    summary: &RefusalSummary,
    period: std::time::Duration,
) -> AuditEvent {
    AuditEvent {
        tenant,
        event: event.into(),
        actor: "unknown".into(),
        peer: summary.source.to_string(),
        outcome: "refused".into(),
        detail: Some(format!(
            "{} connection(s) refused in the last {} s: {}",
            summary.count,
            period.as_secs(),
            summary.reason
        )),
        ..AuditEvent::default()
    }
}

struct Sink {
    incoming: Option<Incoming>,
}

#[async_trait]
impl StoreSink for Sink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), DimseStatus> {
        match self.incoming.as_mut() {
            Some(incoming) => incoming.write(chunk).map_err(|e| status_of(&e)),
            None => Err(DimseStatus::new(
                status::PROCESSING_FAILURE,
                "store already ended",
            )),
        }
    }

    async fn finish(mut self: Box<Self>) -> DimseStatus {
        let Some(incoming) = self.incoming.take() else {
            return DimseStatus::new(status::PROCESSING_FAILURE, "store already ended");
        };
        match incoming.finish().await {
            Ok(_) => DimseStatus::SUCCESS,
            Err(e) => {
                tracing::info!(error = %e, "C-STORE refused");
                status_of(&e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(incoming) = self.incoming.take() {
            incoming.abort();
        }
    }
}

#[async_trait]
impl DimseServices for DimseArchive {
    async fn association_refused(&self, refused: &RefusedAssociation) {
        let mut event = AuditEvent {
            event: "association".into(),
            actor: refused.calling_ae.clone(),
            peer: refused.peer.to_string(),
            outcome: "refused".into(),
            detail: Some(refused.reason.clone()),
            ..AuditEvent::default()
        };
        if event.actor.is_empty() {
            event.actor = "unknown".into();
        }
        self.audit(event).await;
    }

    async fn connections_refused(&self, summary: &RefusalSummary, period: std::time::Duration) {
        self.audit(refusals_event(
            self.archive.tenant.0,
            "association",
            summary,
            period,
        ))
        .await;
    }

    async fn store_refused(&self, assoc: &AssociationInfo, sop_instance_uid: &str, status: &DimseStatus) {
        let mut event = self.event(assoc, "store", "refused");
        event.detail = Some(format!(
            "{sop_instance_uid}: 0x{:04X} {}",
            status.code,
            status.comment.as_deref().unwrap_or("")
        ));
        self.audit(event).await;
    }

    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        request: StoreRequest,
    ) -> Result<Box<dyn StoreSink>, DimseStatus> {
        let source = Source {
            actor: assoc.calling_ae.clone(),
            peer: assoc.peer.to_string(),
            ..Source::default()
        };
        let incoming = self
            .archive
            .begin_store(
                source,
                &request.sop_class_uid,
                &request.sop_instance_uid,
                &request.transfer_syntax_uid,
            )
            .map_err(|e| status_of(&e))?;
        Ok(Box::new(Sink {
            incoming: Some(incoming),
        }))
    }

    async fn find(
        &self,
        assoc: &AssociationInfo,
        kind: FindKind,
        identifier: InMemDicomObject,
        results: mpsc::Sender<InMemDicomObject>,
    ) -> Result<(), DimseStatus> {
        let FindKind::QueryRetrieve(model) = kind else {
            return self.worklist_find(assoc, identifier, results).await;
        };
        let query = match FindQuery::parse(model, &identifier) {
            Ok(q) => q,
            Err(e) => {
                let mut event = self.event(assoc, "query", "refused");
                event.detail = Some(e.to_string());
                self.audit(event).await;
                return Err(DimseStatus::new(status::DATASET_MISMATCH, e.to_string()));
            }
        };
        let mut event = self.event(assoc, "query", "success");
        event.patient_id = query.single_value(tags::PATIENT_ID).map(str::to_string);
        event.study_uid = query.single_value(tags::STUDY_INSTANCE_UID).map(str::to_string);
        let outcome = self.archive.find(&query, &results).await;
        match &outcome {
            Ok(n) => event.detail = Some(format!("level={} matches={n}", query.level().as_str())),
            Err(e) => {
                event.outcome = "failure".into();
                event.detail = Some(e.to_string());
            }
        }
        self.audit(event).await;
        outcome.map(|_| ()).map_err(|e| match e {
            ArchiveError::Unavailable(_) => status_of(&e),
            e => {
                tracing::error!(error = %e, "C-FIND failed");
                DimseStatus::new(status::UNABLE_TO_PROCESS, "query failed")
            }
        })
    }

    async fn retrieve(
        &self,
        assoc: &AssociationInfo,
        model: InformationModel,
        kind: RetrieveKind,
        identifier: InMemDicomObject,
    ) -> Result<Vec<RetrieveItem>, DimseStatus> {
        let name = match &kind {
            RetrieveKind::Get => "retrieve-get".to_string(),
            RetrieveKind::Move { .. } => "retrieve-move".to_string(),
        };
        let mut event = self.event(assoc, &name, "success");
        event.patient_id = crate::ingest::text(&identifier, tags::PATIENT_ID);
        event.study_uid = crate::ingest::text(&identifier, tags::STUDY_INSTANCE_UID);
        event.patient_id = crate::ingest::text(&identifier, tags::PATIENT_ID);
        let resolved = self.archive.resolve_retrieve(model, &identifier).await;
        let destination = match &kind {
            RetrieveKind::Move { destination } => format!(" destination={destination}"),
            RetrieveKind::Get => String::new(),
        };
        match resolved {
            Ok(locations) => {
                event.detail = Some(format!("instances={}{destination}", locations.len()));
                self.audit(event).await;
                Ok(locations
                    .into_iter()
                    .map(|l| RetrieveItem {
                        sop_class_uid: l.sop_class,
                        sop_instance_uid: l.sop_uid,
                        transfer_syntax_uid: l.transfer_syntax,
                        handle: l.pk,
                    })
                    .collect())
            }
            Err(e) => {
                event.outcome = "refused".into();
                event.detail = Some(format!("{e}{destination}"));
                self.audit(event).await;
                Err(match e {
                    ArchiveError::Unavailable(_) => DimseStatus {
                        code: status::OUT_OF_RESOURCES_MATCHES,
                        ..status_of(&e)
                    },
                    ArchiveError::Index(_) | ArchiveError::Io(_) | ArchiveError::Internal(_) => {
                        tracing::error!(error = %e, "retrieve failed");
                        DimseStatus::new(status::UNABLE_TO_PROCESS, "retrieve failed")
                    }
                    other => DimseStatus::new(status::DATASET_MISMATCH, other.to_string()),
                })
            }
        }
    }

    fn can_send_as(&self, item: &RetrieveItem, transfer_syntax_uid: &str) -> bool {
        Archive::can_send_as(&item.transfer_syntax_uid, transfer_syntax_uid)
    }

    async fn open_dataset(
        &self,
        _assoc: &AssociationInfo,
        item: &RetrieveItem,
        transfer_syntax_uid: &str,
    ) -> Result<DatasetStream, DimseStatus> {
        let opened = self
            .archive
            .open_dataset(item.handle, transfer_syntax_uid)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(DatasetStream {
            reader: opened.reader,
            len: opened.len,
        })
    }

    fn resolve_ae(&self, _assoc: &AssociationInfo, ae_title: &str) -> Option<String> {
        self.archive.peer(ae_title).map(|p| p.address())
    }

    async fn mpps_create(
        &self,
        assoc: &AssociationInfo,
        sop_instance_uid: Option<String>,
        dataset: InMemDicomObject,
    ) -> Result<(String, NResponse), DimseStatus> {
        let audit = self.event(assoc, "mpps-create", "success");
        match self.archive.mpps_create(sop_instance_uid, dataset, audit).await {
            Ok(Ok((uid, _))) => Ok((uid, NResponse::success(None))),
            Ok(Err(refusal)) => self.mpps_refused(assoc, "mpps-create", refusal).await,
            Err(e) => Err(self.mpps_failed(e)),
        }
    }

    async fn mpps_set(
        &self,
        assoc: &AssociationInfo,
        sop_instance_uid: String,
        modifications: InMemDicomObject,
    ) -> Result<NResponse, DimseStatus> {
        let audit = self.event(assoc, "mpps-set", "success");
        match self
            .archive
            .mpps_set(&sop_instance_uid, modifications, audit)
            .await
        {
            Ok(Ok(_)) => Ok(NResponse::success(None)),
            Ok(Err(refusal)) => self.mpps_refused(assoc, "mpps-set", refusal).await,
            Err(e) => Err(self.mpps_failed(e)),
        }
    }

    async fn storage_commitment(
        &self,
        assoc: &AssociationInfo,
        request: CommitmentRequest,
    ) -> Result<CommitmentFuture, DimseStatus> {
        let archive = self.archive.clone();
        let mut event = self.event(assoc, "commitment-request", "success");
        event.detail = Some(format!(
            "transaction={} instances={}",
            request.transaction_uid,
            request.instances.len()
        ));
        self.audit(event).await;
        Ok(Box::pin(async move {
            let asked = request
                .instances
                .into_iter()
                .map(|r| (r.sop_class_uid, r.sop_instance_uid))
                .collect();
            let (committed, failed) = archive.commit(asked).await;
            let sop = |(sop_class_uid, sop_instance_uid)| SopRef {
                sop_class_uid,
                sop_instance_uid,
            };
            CommitmentResult {
                committed: committed.into_iter().map(sop).collect(),
                failed: failed.into_iter().map(|(c, i, r)| (sop((c, i)), r)).collect(),
            }
        }))
    }

    fn commitment_delivery(&self) -> pacs_dimse::CommitmentDelivery {
        self.commitment_delivery
    }

    async fn commitment_reported(
        &self,
        assoc: &AssociationInfo,
        report: &pacs_dimse::commitment::CommitmentReport,
        outcome: &ReportOutcome,
    ) {
        let (result, how) = match outcome {
            ReportOutcome::Answered {
                status,
                same_association,
            } => (
                if *status == 0 { "success" } else { "failure" },
                format!(
                    "answered {status:04X} on {} association",
                    if *same_association { "the same" } else { "a new" }
                ),
            ),
            // Not delivered: kept as a job that any node sends again (`commitment_retry`).
            ReportOutcome::Failed { reason } => match self
                .archive
                .queue_commitment_report(&assoc.calling_ae, report)
                .await
            {
                Ok(job) => (
                    "failure",
                    format!("not delivered: {reason}; to be sent again (job {job})"),
                ),
                Err(e) => (
                    "failure",
                    format!("not delivered: {reason}; cannot be queued again: {e}"),
                ),
            },
        };
        let mut event = self.event(assoc, "commitment-report", result);
        event.detail = Some(format!(
            "transaction={} committed={} failed={}; {how}",
            report.transaction_uid,
            report.result.committed.len(),
            report.result.failed.len()
        ));
        self.audit(event).await;
    }
}

impl DimseArchive {
    async fn worklist_find(
        &self,
        assoc: &AssociationInfo,
        identifier: InMemDicomObject,
        results: mpsc::Sender<InMemDicomObject>,
    ) -> Result<(), DimseStatus> {
        let mut event = self.event(assoc, "worklist-query", "success");
        match self.archive.worklist_find(&identifier).await {
            Ok(items) => {
                event.detail = Some(format!("matches={}", items.len()));
                self.audit(event).await;
                for item in items {
                    if results.send(item).await.is_err() {
                        break; // cancelled
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "worklist query failed");
                event.outcome = "failure".into();
                event.detail = Some(e.to_string());
                self.audit(event).await;
                Err(DimseStatus::new(
                    status::UNABLE_TO_PROCESS,
                    "worklist query failed",
                ))
            }
        }
    }

    async fn mpps_refused<T>(
        &self,
        assoc: &AssociationInfo,
        what: &str,
        refusal: crate::workflow::MppsRefusal,
    ) -> Result<T, DimseStatus> {
        let mut event = self.event(assoc, what, "refused");
        event.detail = Some(format!("{:04X} {}", refusal.status, refusal.comment));
        self.audit(event).await;
        Err(DimseStatus::new(refusal.status, refusal.comment))
    }

    fn mpps_failed(&self, e: ArchiveError) -> DimseStatus {
        tracing::error!(error = %e, "MPPS failed");
        DimseStatus::new(
            status::PROCESSING_FAILURE,
            "the performed procedure step could not be recorded",
        )
    }
}
