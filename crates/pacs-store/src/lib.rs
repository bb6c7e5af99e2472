//! Storage: the content-addressed blob store and the index.
//!
//! `pacs-store` knows files, hashes and rows. It does not parse DICOM: the archive extracts
//! what the index needs and hands it over as plain values.

pub mod accounts;
pub mod admin;
pub mod ae;
pub mod billing;
pub mod blob;
pub mod blob_lock;
pub mod columns;
pub mod copy;
pub mod index;
mod instance_rows;
pub mod jobs;
pub mod metrics;
mod pg;
pub mod scoped;
pub mod sql;
pub mod tenants;
pub mod workflow;

pub use accounts::{AccountLock, AccountWrite, CredentialKind, Role, TokenInfo, UserAccount};
pub use admin::{DeleteScope, Deleted, ModalityStats, Stats};
pub use ae::{AeRecord, AeWrite};
pub use blob::{
    BlobLocation, BlobStore, CommittedBlob, FileBlobStore, LocalBlob, S3BlobStore, S3Settings, TempBlob,
};
pub use blob_lock::{BlobLock, BlobLockMode};
pub use index::{
    AuditEvent, AuditFilter, AuditRecord, Condition, Index, IndexOptions, IndexOutcome, InstanceLocation,
    NewInstance, PatientAttrs, QueryRow, SeriesAttrs, SortKey, SqlIndex, SqliteIndex, StudyAttrs,
    WorklistFilter,
};
pub use jobs::{ClaimedJob, Job, JobFilter, JobState, Jobs, NewJob};
pub use scoped::{SystemIndex, TenantIndex};
pub use tenants::{TenantFields, TenantOutcome, TenantRecord, TenantWrite};
pub use workflow::{
    Demographics, MergeRecord, MppsRecord, Order, PatientKey, PatientRecord, Report, StudySummary,
    WorkflowWrite, WorklistItem,
};

/// Index failures.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("schema: {0}")]
    Schema(String),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("the index writer has stopped")]
    WriterGone,
    #[error("cannot reach the index at {url}: {error}")]
    Unreachable { url: String, error: sqlx::Error },
    /// The engine does not answer (connection lost, refused, or none free in time): nothing
    /// was written. Transient: the same request succeeds once the engine is back.
    #[error("the index database does not answer: {0}")]
    Unavailable(String),
}

impl IndexError {
    /// Whether the failure is the engine being out of reach rather than the request or the
    /// data: the caller answers "try again later" (A700, HTTP 503), not "failed".
    pub fn is_unavailable(&self) -> bool {
        match self {
            IndexError::Unreachable { .. } | IndexError::Unavailable(_) => true,
            IndexError::Database(e) => engine_unreachable(e),
            _ => false,
        }
    }
}

/// Connection-level sqlx failures (as opposed to a statement the engine refused).
pub(crate) fn engine_unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

impl IndexError {
    /// Whether the failure means the disk (or quota) is full: SQLITE_FULL or ENOSPC/EDQUOT.
    pub fn is_storage_full(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            IndexError::Io(e) => matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded),
            IndexError::Database(sqlx::Error::Io(e)) => {
                matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
            }
            // SQLITE_FULL is result code 13; extended codes keep it in the low byte.
            IndexError::Database(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .and_then(|c| c.parse::<u32>().ok())
                .is_some_and(|c| c & 0xff == 13),
            // The writer reports a failed batch by message: keep the classification.
            IndexError::Schema(m) => m.contains("database or disk is full") || m.contains("No space left"),
            IndexError::WriterGone | IndexError::Unreachable { .. } | IndexError::Unavailable(_) => false,
        }
    }
}
