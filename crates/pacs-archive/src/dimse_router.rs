//! The DIMSE edge of tenancy: every association is for the tenant its called AE title names
//! ([`Platform::by_called_ae`]); an unknown called AE title is rejected ("called AE title not
//! recognized"), a disabled tenant's with no reason given. Each DIMSE operation then goes to
//! that tenant's [`DimseArchive`], which sees only the tenant's data.

use std::sync::Arc;

use async_trait::async_trait;
use dicom_object::InMemDicomObject;
use pacs_dimse::{
    status, AssociationInfo, CommitmentDelivery, CommitmentFuture, CommitmentRequest, DatasetStream,
    DimseServices, DimseStatus, FindKind, NResponse, Refusal, RefusedAssociation, ReportOutcome,
    RetrieveItem, RetrieveKind, StoreRequest, StoreSink,
};
use pacs_model::admission::RefusalSummary;
use pacs_model::InformationModel;
use pacs_store::AuditEvent;
use tokio::sync::mpsc;

use crate::dimse::DimseArchive;
use crate::platform::{Platform, Route};
use crate::Archive;

pub struct DimseRouter {
    platform: Arc<Platform>,
    commitment_delivery: CommitmentDelivery,
}

impl DimseRouter {
    pub fn new(platform: Arc<Platform>, commitment_delivery: CommitmentDelivery) -> DimseRouter {
        DimseRouter {
            platform,
            commitment_delivery,
        }
    }

    fn archive(&self, assoc: &AssociationInfo) -> Option<Arc<Archive>> {
        match self.platform.by_called_ae(&assoc.called_ae) {
            Route::Tenant(archive) => Some(archive),
            Route::Disabled(_) | Route::Unknown => None,
        }
    }

    /// The tenant's services for an association, or the status that refuses the operation
    /// when its tenant went away (disabled or its AE title removed) after it was established.
    fn tenant(&self, assoc: &AssociationInfo) -> Result<DimseArchive, DimseStatus> {
        self.archive(assoc)
            .map(|archive| DimseArchive::new(archive).with_commitment_delivery(self.commitment_delivery))
            .ok_or_else(|| {
                DimseStatus::new(
                    status::PROCESSING_FAILURE,
                    format!("called AE title {} no longer serves a tenant", assoc.called_ae),
                )
            })
    }

    /// Where events that belong to no association go: the one tenant of a one-hospital
    /// install (as before tenancy), else the platform's own log.
    async fn record_unrouted(&self, event: AuditEvent) {
        let written = if self.platform.is_shared() {
            self.platform.system().audit_platform(event).await
        } else {
            self.platform.default_archive().record(event).await;
            Ok(())
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }
}

#[async_trait]
impl DimseServices for DimseRouter {
    fn admit(&self, _calling_ae: &str, called_ae: &str) -> Result<(), Refusal> {
        match self.platform.by_called_ae(called_ae) {
            Route::Tenant(archive) => {
                crate::metrics::tenant_association(archive.tenant_name());
                Ok(())
            }
            Route::Disabled(name) => Err(Refusal::Other(format!(
                "called AE title {called_ae:?} is tenant {name}'s, which is disabled"
            ))),
            Route::Unknown => Err(Refusal::CalledAeTitle(format!(
                "called AE title {called_ae:?} names no tenant"
            ))),
        }
    }

    fn own_ae_title(&self, assoc: &AssociationInfo) -> Option<String> {
        self.archive(assoc).map(|archive| archive.ae_title().to_string())
    }

    async fn association_refused(&self, refused: &RefusedAssociation) {
        match self.platform.by_called_ae(&refused.called_ae) {
            Route::Tenant(archive) => {
                DimseArchive::new(archive).association_refused(refused).await;
            }
            Route::Disabled(_) | Route::Unknown => {
                let actor = if refused.calling_ae.is_empty() {
                    "unknown".to_string()
                } else {
                    refused.calling_ae.clone()
                };
                self.record_unrouted(AuditEvent {
                    event: "association".into(),
                    actor,
                    peer: refused.peer.to_string(),
                    outcome: "refused".into(),
                    detail: Some(refused.reason.clone()),
                    ..AuditEvent::default()
                })
                .await;
            }
        }
    }

    async fn connections_refused(&self, summary: &RefusalSummary, period: std::time::Duration) {
        let event = crate::dimse::refusals_event(0, "association", summary, period);
        self.record_unrouted(event).await;
    }

    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        request: StoreRequest,
    ) -> Result<Box<dyn StoreSink>, DimseStatus> {
        self.tenant(assoc)?.begin_store(assoc, request).await
    }

    async fn store_refused(&self, assoc: &AssociationInfo, sop_instance_uid: &str, status: &DimseStatus) {
        if let Ok(tenant) = self.tenant(assoc) {
            tenant.store_refused(assoc, sop_instance_uid, status).await;
        }
    }

    async fn find(
        &self,
        assoc: &AssociationInfo,
        kind: FindKind,
        identifier: InMemDicomObject,
        results: mpsc::Sender<InMemDicomObject>,
    ) -> Result<(), DimseStatus> {
        self.tenant(assoc)?.find(assoc, kind, identifier, results).await
    }

    async fn retrieve(
        &self,
        assoc: &AssociationInfo,
        model: InformationModel,
        kind: RetrieveKind,
        identifier: InMemDicomObject,
    ) -> Result<Vec<RetrieveItem>, DimseStatus> {
        self.tenant(assoc)?.retrieve(assoc, model, kind, identifier).await
    }

    fn can_send_as(&self, item: &RetrieveItem, transfer_syntax_uid: &str) -> bool {
        Archive::can_send_as(&item.transfer_syntax_uid, transfer_syntax_uid)
    }

    async fn open_dataset(
        &self,
        assoc: &AssociationInfo,
        item: &RetrieveItem,
        transfer_syntax_uid: &str,
    ) -> Result<DatasetStream, DimseStatus> {
        self.tenant(assoc)?
            .open_dataset(assoc, item, transfer_syntax_uid)
            .await
    }

    fn resolve_ae(&self, assoc: &AssociationInfo, ae_title: &str) -> Option<String> {
        self.tenant(assoc).ok()?.resolve_ae(assoc, ae_title)
    }

    async fn mpps_create(
        &self,
        assoc: &AssociationInfo,
        sop_instance_uid: Option<String>,
        dataset: InMemDicomObject,
    ) -> Result<(String, NResponse), DimseStatus> {
        self.tenant(assoc)?
            .mpps_create(assoc, sop_instance_uid, dataset)
            .await
    }

    async fn mpps_set(
        &self,
        assoc: &AssociationInfo,
        sop_instance_uid: String,
        modifications: InMemDicomObject,
    ) -> Result<NResponse, DimseStatus> {
        self.tenant(assoc)?
            .mpps_set(assoc, sop_instance_uid, modifications)
            .await
    }

    async fn storage_commitment(
        &self,
        assoc: &AssociationInfo,
        request: CommitmentRequest,
    ) -> Result<CommitmentFuture, DimseStatus> {
        self.tenant(assoc)?.storage_commitment(assoc, request).await
    }

    fn commitment_delivery(&self) -> CommitmentDelivery {
        self.commitment_delivery
    }

    async fn commitment_reported(
        &self,
        assoc: &AssociationInfo,
        report: &pacs_dimse::commitment::CommitmentReport,
        outcome: &ReportOutcome,
    ) {
        match self.tenant(assoc) {
            Ok(tenant) => tenant.commitment_reported(assoc, report, outcome).await,
            Err(_) => {
                tracing::warn!(called = %assoc.called_ae, "storage commitment report of a tenant that went away")
            }
        }
    }
}
