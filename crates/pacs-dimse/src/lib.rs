//! DIMSE: the DICOM message service on top of `dicom-ul`.
//!
//! This crate accepts associations, frames DIMSE messages, dispatches C-ECHO, C-STORE, C-FIND,
//! C-GET and C-MOVE to a [`DimseServices`] implementation, and provides the SCU side used for
//! C-MOVE sub-operations and `openpacs send`. It knows nothing about storage or indexing: every
//! decision about data is the services implementation's.

pub mod client;
pub mod command;
pub mod dataset_check;
pub mod pdu;
pub mod server;
pub mod sop_classes;

use std::net::SocketAddr;

use async_trait::async_trait;
use dicom_object::InMemDicomObject;
use pacs_model::InformationModel;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

pub use command::{field, status, Command};
pub use server::{serve, ServerConfig};

/// Failures of the DIMSE layer itself (peer protocol errors and I/O), never of a service.
#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    #[error("association error: {0}")]
    Association(String),
    #[error("peer aborted the association")]
    Aborted,
    #[error("timed out waiting for the peer")]
    Timeout,
    #[error("data set encoding error: {0}")]
    Encoding(String),
}

/// A DIMSE status with an optional Error Comment, as sent in a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimseStatus {
    pub code: u16,
    pub comment: Option<String>,
}

impl DimseStatus {
    pub const SUCCESS: DimseStatus = DimseStatus {
        code: status::SUCCESS,
        comment: None,
    };

    pub fn new(code: u16, comment: impl Into<String>) -> Self {
        DimseStatus {
            code,
            comment: Some(comment.into()),
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == status::SUCCESS
    }

    /// Warning statuses (0001, Bxxx) still mean the object was stored.
    pub fn is_warning(&self) -> bool {
        self.code == 0x0001 || (self.code & 0xF000) == 0xB000
    }
}

/// Who is on the other end of an association.
#[derive(Clone, Debug)]
pub struct AssociationInfo {
    pub id: u64,
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: SocketAddr,
}

/// A C-STORE about to be received.
#[derive(Clone, Debug)]
pub struct StoreRequest {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Set when the store is a sub-operation of someone's C-MOVE.
    pub move_originator_ae: Option<String>,
}

/// Receives one data set as it arrives, fragment by fragment.
#[async_trait]
pub trait StoreSink: Send {
    /// Appends a fragment. An error stops writing; the remaining fragments are drained and the
    /// status is sent in the C-STORE response.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), DimseStatus>;
    /// The whole data set arrived: make it durable and answer with the status to send.
    async fn finish(self: Box<Self>) -> DimseStatus;
    /// The transfer ended before the data set was complete: discard everything.
    async fn abort(self: Box<Self>);
}

/// What kind of query a C-FIND is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindKind {
    QueryRetrieve(InformationModel),
    ModalityWorklist,
}

/// One instance a C-GET or C-MOVE will send.
#[derive(Clone, Debug)]
pub struct RetrieveItem {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// Opaque handle the services use to open the instance again.
    pub handle: i64,
}

/// A data set ready to be streamed, with its exact length.
pub struct DatasetStream {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub len: u64,
}

/// Why an association request was refused, for the audit trail.
#[derive(Clone, Debug)]
pub struct RefusedAssociation {
    pub calling_ae: String,
    pub called_ae: String,
    pub peer: SocketAddr,
    pub reason: String,
}

/// Kind of retrieval, for auditing and for the services to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetrieveKind {
    Get,
    Move { destination: String },
}

/// The application side of the DIMSE services.
#[async_trait]
pub trait DimseServices: Send + Sync + 'static {
    /// An association was refused before any DIMSE exchange (for the audit trail).
    async fn association_refused(&self, refused: &RefusedAssociation);

    /// Prepares to receive one C-STORE; an `Err` refuses it (the data set is drained and dropped).
    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        request: StoreRequest,
    ) -> Result<Box<dyn StoreSink>, DimseStatus>;

    /// A C-STORE was refused before or while its data set was received (for the audit trail;
    /// refusals after [`StoreSink::finish`] are the sink's to record).
    async fn store_refused(&self, assoc: &AssociationInfo, sop_instance_uid: &str, status: &DimseStatus);

    /// Runs a C-FIND, sending each match into `results` as soon as it is found. When the
    /// receiver is dropped (C-CANCEL, association gone) the search must stop.
    async fn find(
        &self,
        assoc: &AssociationInfo,
        kind: FindKind,
        identifier: InMemDicomObject,
        results: mpsc::Sender<InMemDicomObject>,
    ) -> Result<(), DimseStatus>;

    /// Resolves the instances a C-GET or C-MOVE identifier designates.
    async fn retrieve(
        &self,
        assoc: &AssociationInfo,
        model: InformationModel,
        kind: RetrieveKind,
        identifier: InMemDicomObject,
    ) -> Result<Vec<RetrieveItem>, DimseStatus>;

    /// Whether `item` can be sent in `transfer_syntax_uid` (always true for its stored syntax).
    fn can_send_as(&self, item: &RetrieveItem, transfer_syntax_uid: &str) -> bool;

    /// Opens the data set of `item` encoded in `transfer_syntax_uid`.
    async fn open_dataset(
        &self,
        item: &RetrieveItem,
        transfer_syntax_uid: &str,
    ) -> Result<DatasetStream, DimseStatus>;

    /// Network address ("host:port") of a known AE title, for C-MOVE destinations.
    fn resolve_ae(&self, ae_title: &str) -> Option<String>;
}
