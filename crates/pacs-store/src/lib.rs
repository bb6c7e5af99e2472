//! Storage: the content-addressed blob store and the index.
//!
//! `pacs-store` knows files, hashes and rows. It does not parse DICOM: the archive extracts
//! what the index needs and hands it over as plain values.

pub mod blob;
pub mod columns;
pub mod index;

pub use blob::{BlobStore, CommittedBlob, TempBlob};
pub use index::{
    AuditEvent, Condition, Index, IndexOutcome, InstanceLocation, NewInstance, PatientAttrs, QueryRow,
    SeriesAttrs, SqliteIndex, StudyAttrs,
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
}
