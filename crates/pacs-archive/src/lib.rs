//! The archive: ingest, query, retrieve and maintenance on top of `pacs-store`, and the
//! implementation of the DIMSE service traits.
//!
//! Every operation is scoped to the archive's tenant (one default tenant until tenancy is
//! managed); nothing here reads configuration files or the environment.

pub mod admin;
pub mod commitment_retry;
pub mod dimse;
pub mod dimse_router;
pub mod duplicates;
pub mod hl7;
pub mod hl7_outbox;
pub mod hl7_router;
pub mod ingest;
pub mod maintenance;
pub mod metrics;
mod patch;
pub mod peers;
pub mod platform;
pub mod query;
pub mod retrieve;
pub mod workflow;
pub mod worklist;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pacs_model::TenantId;
use pacs_store::{BlobStore, IndexError, SystemIndex, TenantIndex};

pub use ingest::{read_part10_meta, Incoming, Refused, Source, StoreResult, StoredInstance};
pub use peers::{AeChange, AeEntry, AeSource, EchoOutcome};
pub use platform::{Platform, Route};
pub use retrieve::Frames;

/// Archive failures, named after what went wrong; front ends map them to protocol statuses.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("out of storage space: {0}")]
    OutOfResources(String),
    /// The object would take the tenant past its storage quota: nothing was kept (A700).
    #[error("tenant storage quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Invalid(String),
    /// Not a DICOM object at all (no Part 10 preamble and meta group): skipped by import,
    /// refused with its own reason by STOW-RS.
    #[error("{0}")]
    NotPart10(String),
    /// Past a configured bound on what one object may cost (inflated size, header held in
    /// memory): refused as out of resources, audited as a security event.
    #[error("{0}")]
    LimitExceeded(String),
    #[error("missing required attribute {0}")]
    MissingAttribute(String),
    #[error("{0}")]
    Mismatch(String),
    /// The index database or the blob store does not answer: nothing was saved, and the
    /// same request may succeed later (A700, HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    #[error("index: {0}")]
    Index(IndexError),
    #[error("I/O: {0}")]
    Io(std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ArchiveError {
    /// I/O errors meaning "no space left" (disk full or quota) are out-of-resources.
    pub fn from_io(e: std::io::Error) -> ArchiveError {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => ArchiveError::OutOfResources(e.to_string()),
            _ if pacs_store::blob::is_unavailable(&e) => {
                ArchiveError::Unavailable(format!("the blob store does not answer: {e}"))
            }
            _ => ArchiveError::Io(e),
        }
    }
}

impl From<pacs_dimse::dataset_check::CheckError> for ArchiveError {
    fn from(e: pacs_dimse::dataset_check::CheckError) -> Self {
        use pacs_dimse::dataset_check::CheckError;
        match e {
            CheckError::Invalid(m) => ArchiveError::Invalid(m),
            CheckError::TooLarge(m) => ArchiveError::LimitExceeded(m),
            CheckError::Io(e) => ArchiveError::from_io(e),
        }
    }
}

/// Reads a stored object whole into memory (conversions, renderings, frames, bulk data) once
/// its inflated size, when it is deflated, is known to be within `limits`: objects stored
/// before the limit existed, or under a larger one, cannot make a retrieval hold gigabytes.
pub fn open_stored_object(
    path: &Path,
    limits: pacs_dimse::dataset_check::Limits,
) -> Result<dicom_object::DefaultDicomObject, ArchiveError> {
    let (meta, offset) = ingest::read_part10_meta(path)?;
    if pacs_dimse::dataset_check::Layout::of(meta.transfer_syntax()).deflated {
        pacs_dimse::dataset_check::check_inflated_file(path, offset, limits)?;
    }
    dicom_object::OpenFileOptions::new().open_file(path).map_err(|e| {
        ArchiveError::Invalid(format!(
            "cannot read stored object: {}",
            pacs_model::error_chain(&e)
        ))
    })
}

impl From<IndexError> for ArchiveError {
    fn from(e: IndexError) -> Self {
        if e.is_storage_full() {
            ArchiveError::OutOfResources(e.to_string())
        } else if e.is_unavailable() {
            ArchiveError::Unavailable(e.to_string())
        } else {
            ArchiveError::Index(e)
        }
    }
}

/// A DICOM application entity we may open associations to (C-MOVE destinations, storage
/// commitment requesters); see `peers.rs` for the AE table.
#[derive(Clone, Debug)]
pub struct Peer {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

/// Archive settings the binary passes in.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub data_dir: PathBuf,
    /// The index: `None` for the embedded SQLite file in `data_dir`, or an engine URL
    /// (`postgres://…`, shared by every node of an installation).
    pub index_url: Option<String>,
    pub ae_title: String,
    pub peers: Vec<Peer>,
    /// Images whose accession number names another patient's order: move them under the
    /// order's patient (true) or flag the study for review (false).
    pub correct_from_orders: bool,
    /// Bounds on what checking, parsing and converting one object may hold in memory.
    pub limits: pacs_dimse::dataset_check::Limits,
    /// The tenant's patient identifier domain: the Issuer of Patient ID of its local IDs
    /// (IPP). Images and HL7 messages that name no issuer are in this domain.
    pub issuer_of_patient_id: String,
    /// The receiving facilities (MSH-6.1) the tenant declares; empty means any. HL7 messages
    /// for another facility are refused (AR) and nothing of them is stored.
    pub hl7_facilities: Vec<String>,
    /// What a re-send with a known SOP Instance UID and another content does.
    pub duplicate_policy: duplicates::DuplicatePolicy,
    /// Where blobs are kept (the data directory by default).
    pub blobs: pacs_store::BlobLocation,
    /// Settings of an index on PostgreSQL (the write deadline).
    pub index_options: pacs_store::IndexOptions,
}

/// The archive of one tenant.
pub struct Archive {
    pub(crate) tenant: TenantId,
    /// The tenant's name (`default` for a one-hospital install), for logs and metrics labels.
    pub(crate) name: String,
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// The index as this archive's tenant sees it; every tenant-data access goes through it.
    pub(crate) index: TenantIndex,
    /// The operations across tenants (recovery, fixity, blob garbage collection).
    pub(crate) system: SystemIndex,
    pub(crate) ae_title: String,
    /// The configuration file's peers (read-only).
    pub(crate) config_peers: HashMap<String, Peer>,
    /// The index's AE table, mirrored for the synchronous DIMSE lookups (see `peers.rs`).
    pub(crate) table_peers: std::sync::RwLock<HashMap<String, Peer>>,
    /// Held from an AE table change to the reload of the mirror, so that a reload can never
    /// overwrite a newer one with what it read before another change committed.
    pub(crate) ae_changes: tokio::sync::Mutex<()>,
    pub(crate) correct_from_orders: bool,
    pub(crate) limits: pacs_dimse::dataset_check::Limits,
    /// See [`ArchiveConfig::issuer_of_patient_id`].
    pub(crate) issuer_of_patient_id: String,
    /// See [`ArchiveConfig::hl7_facilities`].
    pub(crate) hl7_facilities: Vec<String>,
    pub(crate) duplicate_policy: duplicates::DuplicatePolicy,
    /// The tenant's storage quota, if it has one (checked by the index at each store).
    pub(crate) quota_bytes: Option<u64>,
    /// This process's name among the nodes sharing the index: the owner of the job leases it
    /// holds (host name, process id and a random part, so that a restarted process never takes
    /// its predecessor's leases for its own).
    pub(crate) node: String,
    /// Told when an exam ends (MPPS COMPLETED/DISCONTINUED, or a study stayed quiet).
    pub(crate) exam_listener: std::sync::RwLock<Option<Arc<dyn workflow::ExamListener>>>,
}

impl Archive {
    /// Opens the data directory (blob store under `blobs/`) and the index (the SQLite file
    /// `index.sqlite` there, or the engine `index_url` names), and returns the default
    /// tenant's archive: for the commands and tests that serve one tenant. A server opens the
    /// [`Platform`].
    pub async fn open(config: &ArchiveConfig) -> Result<Arc<Archive>, ArchiveError> {
        Ok(Platform::open(config).await?.default_archive())
    }

    /// The index scoped to this archive's tenant.
    pub fn index(&self) -> &TenantIndex {
        &self.index
    }

    /// The index across every tenant, for the operations that span them by nature.
    pub fn system(&self) -> &SystemIndex {
        &self.system
    }

    pub fn blobs(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The tenant's name (`default` for a one-hospital install).
    pub fn tenant_name(&self) -> &str {
        &self.name
    }

    /// The AE title this tenant answers as and calls others with.
    pub fn ae_title(&self) -> &str {
        &self.ae_title
    }

    /// This process's name among the nodes (see the job table's leases).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The identifier domain a patient ID belongs to: the one it names, or the tenant's own
    /// when it names none. DICOM and HL7 both go through here, so that `ID^^^HOSP` from the
    /// RIS and images of ID without an issuer are one patient when HOSP is the tenant's domain.
    pub fn patient_domain(&self, issuer: &str) -> String {
        let issuer = issuer.trim();
        if issuer.is_empty() {
            self.issuer_of_patient_id.clone()
        } else {
            issuer.to_string()
        }
    }

    /// Patients indexed without an issuer (before the domain was configured) join the
    /// tenant's domain; a patient split in two by that is merged back (undoably, audited).
    async fn adopt_patient_domain(&self) -> Result<(), ArchiveError> {
        if self.issuer_of_patient_id.is_empty() {
            return Ok(());
        }
        let audit = pacs_store::AuditEvent {
            event: "patient-domain".into(),
            actor: "system".into(),
            outcome: "success".into(),
            detail: Some(format!(
                "patients without Issuer of Patient ID taken into {}",
                self.issuer_of_patient_id
            )),
            ..pacs_store::AuditEvent::default()
        };
        let write = pacs_store::WorkflowWrite::AdoptIssuer {
            issuer: self.issuer_of_patient_id.clone(),
        };
        let adopted = self.index.write_workflow(write, audit).await?;
        if adopted > 0 {
            tracing::info!(patients = adopted, issuer = %self.issuer_of_patient_id, "patients without issuer taken into the tenant's identifier domain");
        }
        Ok(())
    }

    /// Bounds on what one object may cost to check, parse or convert.
    pub fn limits(&self) -> pacs_dimse::dataset_check::Limits {
        self.limits
    }

    /// Appends to the audit log; a failure to write it is logged, never hidden. An access to a
    /// study names its patient, whoever the caller is (WADO-RS, rendered images, frames, ZIP,
    /// C-GET, C-MOVE…): "who saw this patient" is answered by filtering on the Patient ID.
    pub async fn record(&self, mut event: pacs_store::AuditEvent) {
        if event.patient_id.is_none() {
            if let Some(study) = event.study_uid.as_deref() {
                match self.index.study_patient_id(study).await {
                    Ok(patient) => event.patient_id = patient,
                    Err(e) => tracing::warn!(error = %e, "cannot name the patient of an audited access"),
                }
            }
        }
        if let Err(e) = self.index.audit(event).await {
            tracing::error!(error = %e, "cannot write audit record");
        }
    }
}

pub(crate) fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "openpacs".into());
    format!("{host}:{}:{:04x}", std::process::id(), rand::random::<u16>())
}

/// Where the SQLite index lives inside a data directory.
pub fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("index.sqlite")
}
