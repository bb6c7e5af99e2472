//! DIMSE: the DICOM message service on top of `dicom-ul`.
//!
//! This crate accepts associations, frames DIMSE messages, dispatches C-ECHO, C-STORE, C-FIND
//! (query/retrieve and Modality Worklist), C-GET, C-MOVE, MPPS N-CREATE/N-SET and Storage
//! Commitment N-ACTION to a [`DimseServices`] implementation, delivers storage commitment
//! reports (N-EVENT-REPORT), and provides the SCU side used for C-MOVE sub-operations and
//! `openpacs send`. It knows nothing about storage or indexing: every decision about data is
//! the services implementation's.

pub mod client;
pub mod command;
pub mod commitment;
pub mod dataset_check;
pub mod fuzzing;
pub mod metrics;
pub mod pdu;
mod pending;
pub mod server;
pub mod sop_classes;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use async_trait::async_trait;
use dicom_core::Tag;
use dicom_object::InMemDicomObject;
pub use pacs_model::admission::RefusalSummary;
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

/// Why [`DimseServices::admit`] refuses an association (A-ASSOCIATE-RJ, rejected-permanent,
/// service-user), with the reason for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// "called AE title not recognized".
    CalledAeTitle(String),
    /// "calling AE title not recognized".
    CallingAeTitle(String),
    /// "no reason given".
    Other(String),
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

/// A SOP instance as a storage commitment request or report names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SopRef {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// A Storage Commitment Push Model request (the N-ACTION's action information).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitmentRequest {
    pub transaction_uid: String,
    /// The Referenced SOP Sequence, in the requester's order.
    pub instances: Vec<SopRef>,
}

/// The answer to a storage commitment request: every requested instance is in exactly one list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitmentResult {
    pub committed: Vec<SopRef>,
    /// Each failed instance with its Failure Reason ([`command::failure_reason`]).
    pub failed: Vec<(SopRef, u16)>,
}

/// The work behind a storage commitment, run after the N-ACTION-RSP has gone out.
pub type CommitmentFuture = Pin<Box<dyn Future<Output = CommitmentResult> + Send + 'static>>;

/// Where storage commitment reports (N-EVENT-REPORT) go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitmentDelivery {
    /// On the association that carried the request while it is open (PS3.4 J.3.3: the
    /// acceptor is SCP and may send N-EVENT-REPORT there), else on a new one.
    #[default]
    SameAssociation,
    /// Always on a new association to the requester (its calling AE title, resolved with
    /// [`DimseServices::resolve_ae`]), on which we propose the SCP role.
    NewAssociation,
}

/// What became of a storage commitment report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The requester answered the N-EVENT-REPORT with this status (0000 is success).
    Answered { status: u16, same_association: bool },
    /// The report could not be delivered (unknown address, connection refused, no answer…).
    Failed { reason: String },
}

/// A successful (or warning) answer to an MPPS N-CREATE or N-SET.
#[derive(Clone, Debug)]
pub struct NResponse {
    /// Success, or a warning such as 0107 (attribute list error) or 0116 (value out of range).
    pub status: DimseStatus,
    /// The attributes a warning is about (Attribute Identifier List).
    pub attributes: Vec<Tag>,
    /// The response data set (the attributes as created or set), if any.
    pub dataset: Option<InMemDicomObject>,
}

impl NResponse {
    pub fn success(dataset: Option<InMemDicomObject>) -> Self {
        NResponse {
            status: DimseStatus::SUCCESS,
            attributes: Vec::new(),
            dataset,
        }
    }
}

/// The application side of the DIMSE services.
///
/// The modality workflow methods have default implementations that refuse, so that an
/// implementation without them still compiles and answers with a proper status. The Modality
/// Worklist goes through [`DimseServices::find`] with [`FindKind::ModalityWorklist`].
#[async_trait]
pub trait DimseServices: Send + Sync + 'static {
    /// An association was refused before any DIMSE exchange (for the audit trail).
    async fn association_refused(&self, refused: &RefusedAssociation);

    /// Connections refused before or instead of an association request (too many pending, no
    /// request within the ARTIM time, malformed, no slot left), counted per source address and
    /// reason over the last `period`: one call per source and reason, for the audit trail.
    async fn connections_refused(&self, _summary: &RefusalSummary, _period: std::time::Duration) {}

    /// Prepares to receive one C-STORE; an `Err` refuses it (the data set is drained and dropped).
    async fn begin_store(
        &self,
        assoc: &AssociationInfo,
        request: StoreRequest,
    ) -> Result<Box<dyn StoreSink>, DimseStatus>;

    /// A C-STORE was refused before or while its data set was received (for the audit trail;
    /// refusals after [`StoreSink::finish`] are the sink's to record).
    async fn store_refused(&self, assoc: &AssociationInfo, sop_instance_uid: &str, status: &DimseStatus);

    /// Runs a C-FIND (query/retrieve or Modality Worklist), sending each match into `results`
    /// as soon as it is found. When the receiver is dropped (C-CANCEL, association gone) the
    /// search must stop.
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

    /// Opens the data set of `item` (found by [`DimseServices::retrieve`] on `assoc`) encoded
    /// in `transfer_syntax_uid`.
    async fn open_dataset(
        &self,
        assoc: &AssociationInfo,
        item: &RetrieveItem,
        transfer_syntax_uid: &str,
    ) -> Result<DatasetStream, DimseStatus>;

    /// Network address ("host:port") of an AE title known to the party `assoc` reached (its
    /// C-MOVE destinations, storage commitment requesters).
    fn resolve_ae(&self, assoc: &AssociationInfo, ae_title: &str) -> Option<String>;

    /// Whether an association from `calling_ae` to `called_ae` may be established, asked once
    /// its request has passed the server's own checks. The default admits it.
    fn admit(&self, _calling_ae: &str, _called_ae: &str) -> Result<(), Refusal> {
        Ok(())
    }

    /// The AE title we call others with on behalf of `assoc` (C-MOVE sub-operations, storage
    /// commitment reports on a new association); `None`: the server's configured one.
    fn own_ae_title(&self, _assoc: &AssociationInfo) -> Option<String> {
        None
    }

    /// MPPS N-CREATE: creates the performed procedure step `sop_instance_uid` (generated by the
    /// implementation when the requester left it out) from `dataset`, and returns its instance
    /// UID. The state rules and their statuses (0106, 0111, 0120…) are the implementation's.
    async fn mpps_create(
        &self,
        _assoc: &AssociationInfo,
        _sop_instance_uid: Option<String>,
        _dataset: InMemDicomObject,
    ) -> Result<(String, NResponse), DimseStatus> {
        Err(DimseStatus::new(
            status::SOP_CLASS_NOT_SUPPORTED,
            "MPPS is not available",
        ))
    }

    /// MPPS N-SET: applies `modifications` to the performed procedure step `sop_instance_uid`
    /// (0112 when it does not exist, 0110 when it may no longer be updated…).
    async fn mpps_set(
        &self,
        _assoc: &AssociationInfo,
        _sop_instance_uid: String,
        _modifications: InMemDicomObject,
    ) -> Result<NResponse, DimseStatus> {
        Err(DimseStatus::new(
            status::SOP_CLASS_NOT_SUPPORTED,
            "MPPS is not available",
        ))
    }

    /// Storage commitment N-ACTION: an `Err` refuses the request in the N-ACTION-RSP; `Ok`
    /// gives the work that decides, instance by instance, what is committed. That work runs
    /// after the N-ACTION-RSP has gone out and its result is reported with an N-EVENT-REPORT
    /// (if it panics, every instance is reported failed). Commit only what is durable and
    /// intact: the report is a promise.
    async fn storage_commitment(
        &self,
        _assoc: &AssociationInfo,
        _request: CommitmentRequest,
    ) -> Result<CommitmentFuture, DimseStatus> {
        Err(DimseStatus::new(
            status::SOP_CLASS_NOT_SUPPORTED,
            "storage commitment is not available",
        ))
    }

    /// Where storage commitment reports go.
    fn commitment_delivery(&self) -> CommitmentDelivery {
        CommitmentDelivery::SameAssociation
    }

    /// A storage commitment report was answered or could not be delivered (for the audit
    /// trail, and for retrying with [`commitment::send_report`]). The DIMSE layer has logged it.
    async fn commitment_reported(
        &self,
        _assoc: &AssociationInfo,
        _report: &commitment::CommitmentReport,
        _outcome: &ReportOutcome,
    ) {
    }
}
