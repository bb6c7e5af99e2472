//! The association acceptor: listener, per-association reader and handler, dispatch.
//!
//! Shape (after mini-redis): `serve` accepts sockets under a semaphore that caps concurrent
//! associations, and stops on the shutdown signal, waiting a bounded time for associations in
//! flight. Each association runs two futures on one task: a reader that turns PDUs into
//! [`Event`]s (and flags C-CANCEL out of band), and a handler that executes one DIMSE operation
//! at a time and writes the responses.
//!
//! Storage commitment reports are the one message the acceptor initiates: the work behind an
//! N-ACTION runs in the handler's `commitments` set, and when it finishes while the association
//! is open the handler sends the N-EVENT-REPORT between two operations and waits for its answer
//! (setting aside, in `deferred`, whatever the peer sends meanwhile). Reports still pending when
//! the association ends go out on new associations.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::{AccessControl, Negotiation, ServerAssociationOptions};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PresentationContextResultReason, RequestorRoles, UserIdentity,
};
use pacs_model::admission::{RefusalTally, SourceLimit};
use pacs_model::InformationModel;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::client::ScuAssociation;
use crate::command::{failure_reason, field, status, Command, HAS_DATASET, NO_DATASET, PRIORITY_MEDIUM};
use crate::commitment::{self, CommitmentReport};
use crate::pdu::{self, Pdu, PduReader, PduWriter};
use crate::pending::{self, NotRequested};
use crate::sop_classes::{self, STORAGE_SOP_CLASSES};
use crate::{
    AssociationInfo, CommitmentDelivery, CommitmentResult, DimseError, DimseServices, DimseStatus, FindKind,
    NResponse, Refusal, RefusedAssociation, ReportOutcome, RetrieveItem, RetrieveKind, StoreRequest,
};

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Command sets and query identifiers are small; anything beyond these is refused.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
pub const MAX_IDENTIFIER_BYTES: usize = 1024 * 1024;
/// A storage commitment request names each instance in about 150 bytes: 8 MiB is some 50,000
/// instances, more than the largest study.
const MAX_ACTION_BYTES: usize = 8 * 1024 * 1024;
/// Events set aside while waiting for the answer to a report on the same association.
const MAX_DEFERRED_EVENTS: usize = 64;

/// How the acceptor behaves; built by the binary from its configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub ae_title: String,
    /// Largest PDU we announce and accept.
    pub max_pdu: u32,
    pub max_associations: usize,
    /// An association with no activity for this long is aborted.
    pub idle_timeout: Duration,
    /// Time allowed for the A-ASSOCIATE-RQ to arrive after the TCP connection (ARTIM); the
    /// connection holds no association slot meanwhile.
    pub artim_timeout: Duration,
    /// Connections waiting for their A-ASSOCIATE-RQ at once; more are closed at once.
    pub max_pending: usize,
    /// Of those, from one source address.
    pub max_pending_per_source: usize,
    /// Refused connections are audited once per source and reason per period, with a count.
    pub refusal_report_interval: Duration,
    /// When set, only these calling AE titles may associate.
    pub allowed_calling_aes: Option<HashSet<String>>,
    /// Accept storage of SOP classes that are not in the standard registry (private ones).
    pub accept_unknown_sop_classes: bool,
    /// Reject associations whose called AE title is not ours.
    pub check_called_ae_title: bool,
    /// How long shutdown waits for associations in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ae_title: "OPENPACS".into(),
            max_pdu: 128 * 1024,
            max_associations: 64,
            idle_timeout: Duration::from_secs(60),
            artim_timeout: Duration::from_secs(5),
            max_pending: 256,
            max_pending_per_source: 16,
            refusal_report_interval: Duration::from_secs(60),
            allowed_calling_aes: None,
            accept_unknown_sop_classes: true,
            check_called_ae_title: false,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Accepts associations until `shutdown` turns true, then waits (bounded) for those in flight.
///
/// A new connection is *pending* (see [`crate::pending`]) until its A-ASSOCIATE-RQ has arrived;
/// only then does it take one of `max_associations` slots, so idle sockets cannot keep
/// modalities out. Refusals are counted in `openpacs_dimse_associations_refused_total{reason}`
/// and reported to the services in aggregate every `refusal_report_interval`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    services: Arc<dyn DimseServices>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(config.max_associations));
    let pending = Arc::new(Semaphore::new(config.max_pending.max(1)));
    let pending_per_source = SourceLimit::new(config.max_pending_per_source);
    let refusals = Arc::new(RefusalTally::default());
    let mut report = tokio::time::interval_at(
        tokio::time::Instant::now() + config.refusal_report_interval,
        config.refusal_report_interval,
    );
    // Refusing politely takes a task per connection; past this many at once, just close.
    let rejecters = Arc::new(Semaphore::new(16));
    let next_id = AtomicU64::new(1);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "DICOM accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = report.tick() => {
                report_refusals(&refusals, &services, &config);
                continue;
            }
            _ = wait_true(&mut shutdown) => break,
        };
        // Closed at once, before anything is read: the cheapest answer to a flood.
        let Some(source_guard) = pending_per_source.try_hold(peer.ip()) else {
            refuse(&refusals, peer, "pending_per_source");
            continue;
        };
        let Ok(pending_permit) = pending.clone().try_acquire_owned() else {
            refuse(&refusals, peer, "pending_limit");
            continue;
        };
        let _ = socket.set_nodelay(true);
        // A modality that loses power mid-transfer never closes its connection: keepalive
        // probes find out, on top of the idle timeout.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&keepalive);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (config, services, shutdown) = (config.clone(), services.clone(), shutdown.clone());
        let (limit, rejecters, refusals) = (limit.clone(), rejecters.clone(), refusals.clone());
        tokio::spawn(async move {
            let mut socket = socket;
            let deadline = tokio::time::Instant::now() + config.artim_timeout;
            let requested = pending::wait_for_request(&mut socket, deadline, config.max_pdu).await;
            drop((pending_permit, source_guard));
            if let Err(not) = requested {
                tracing::debug!(%peer, reason = not.reason(), "connection closed before an association request");
                if not != NotRequested::Closed {
                    refuse(&refusals, peer, not.reason());
                }
                return;
            }
            let Ok(permit) = limit.try_acquire_owned() else {
                tracing::warn!(%peer, "association refused: too many concurrent associations");
                refuse(&refusals, peer, "limit");
                if let Ok(slot) = rejecters.try_acquire_owned() {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    pending::reject_busy(socket, left.max(Duration::from_secs(1))).await;
                    drop(slot);
                }
                return;
            };
            metrics::gauge!(crate::metrics::ASSOCIATIONS_ACTIVE).increment(1.0);
            metrics::counter!(crate::metrics::ASSOCIATIONS_TOTAL).increment(1);
            handle_connection(socket, peer, id, config, services, shutdown).await;
            metrics::gauge!(crate::metrics::ASSOCIATIONS_ACTIVE).decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    report_refusals(&refusals, &services, &config);
    let all = config.max_associations as u32;
    if tokio::time::timeout(config.shutdown_grace, limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with associations still open");
    }
    Ok(())
}

/// Counts a refused connection; it is audited with the others from its source at the next
/// report.
fn refuse(refusals: &RefusalTally, peer: SocketAddr, reason: &'static str) {
    metrics::counter!(crate::metrics::ASSOCIATIONS_REFUSED, "reason" => reason).increment(1);
    refusals.record(peer.ip(), reason);
}

/// Hands the refusals counted since the last report to the services, off the accept loop.
fn report_refusals(refusals: &RefusalTally, services: &Arc<dyn DimseServices>, config: &ServerConfig) {
    let summaries = refusals.drain();
    if summaries.is_empty() {
        return;
    }
    let (services, period) = (services.clone(), config.refusal_report_interval);
    tokio::spawn(async move {
        for summary in summaries {
            tracing::warn!(source = %summary.source, reason = summary.reason, count = summary.count, period_secs = period.as_secs(), "DICOM connections refused");
            services.connections_refused(&summary, period).await;
        }
    });
}

/// Resolves once the flag is true (or its sender is gone). The `Ref` guard that
/// `wait_for` returns is not `Send`, so it is dropped here rather than held in a `select!`.
async fn wait_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// An association request refused before any DIMSE exchange, kept for the audit trail.
#[derive(Clone, Debug)]
pub(crate) struct RefusedRequest {
    calling_ae: String,
    called_ae: String,
    reason: String,
    /// The `reason` label of `openpacs_dimse_associations_refused_total`.
    label: &'static str,
}

/// Calling-AE allow-list and called-AE check; remembers why it refused so the refusal can be
/// audited.
struct AllowList {
    allowed: Option<HashSet<String>>,
    /// Our AE title, when the called AE title must match it.
    called: Option<String>,
    refusal: Arc<Mutex<Option<RefusedRequest>>>,
    /// Asked last, for what only the application knows (which called AE titles exist).
    services: Option<Arc<dyn DimseServices>>,
}

impl AccessControl for AllowList {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let (calling, called) = (calling_ae_title.trim(), called_ae_title.trim());
        let verdict = if self.called.as_deref().is_some_and(|ours| ours != called) {
            Err(Refusal::CalledAeTitle(format!(
                "called AE title {called_ae_title:?} is not ours"
            )))
        } else if self
            .allowed
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(calling))
        {
            Err(Refusal::CallingAeTitle(format!(
                "calling AE title {calling_ae_title:?} not allowed"
            )))
        } else if let Some(services) = &self.services {
            services.admit(calling, called)
        } else {
            Ok(())
        };
        let refusal = match verdict {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        let (reason, label, answer) = match refusal {
            Refusal::CalledAeTitle(reason) => (
                reason,
                "called_ae",
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            ),
            Refusal::CallingAeTitle(reason) => (
                reason,
                "calling_ae",
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            ),
            Refusal::Other(reason) => (reason, "refused", AssociationRJServiceUserReason::NoReasonGiven),
        };
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(RefusedRequest {
                calling_ae: calling.to_string(),
                called_ae: called.to_string(),
                reason,
                label,
            });
        }
        Err(answer)
    }
}

/// Role selection: a C-GET requestor asks to be SCP for storage classes, and a storage
/// commitment requester may propose both roles; grant what they ask. For every other class the
/// requester keeps the default role (SCU, with us as SCP). Storage commitment reports go on the
/// requesting association under the default roles (the acceptor is the SCP, and the SCP is the
/// one that sends N-EVENT-REPORT), so no role is needed for them.
struct Roles;

impl Negotiation for Roles {
    fn negotiate_roles(&self, sop_class_uid: &str, scu: bool, scp: bool) -> Option<RequestorRoles> {
        (sop_classes::is_storage(sop_class_uid) || sop_class_uid == sop_classes::STORAGE_COMMITMENT_PUSH)
            .then_some(RequestorRoles { scu, scp })
    }
}

/// An accepted presentation context.
#[derive(Clone, Debug)]
struct Context {
    abstract_syntax: String,
    transfer_syntax: String,
}

/// What an association request is negotiated against: our AE title, the calling-AE
/// allow-list (a refusal's reason goes into `refusal`), the SOP classes and roles we accept.
pub(crate) fn association_options(
    config: &ServerConfig,
    refusal: Arc<Mutex<Option<RefusedRequest>>>,
    services: Option<Arc<dyn DimseServices>>,
) -> ServerAssociationOptions<'static, impl AccessControl, impl Negotiation> {
    let access = AllowList {
        allowed: config.allowed_calling_aes.clone(),
        called: config.check_called_ae_title.then(|| config.ae_title.clone()),
        refusal,
        services,
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(access)
        .with_negotiation(Roles)
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        .read_timeout(config.artim_timeout)
        .promiscuous(config.accept_unknown_sop_classes)
        .with_abstract_syntax(sop_classes::VERIFICATION);
    for uid in sop_classes::QUERY_RETRIEVE.iter().chain(sop_classes::WORKFLOW) {
        options = options.with_abstract_syntax(*uid);
    }
    for (uid, _) in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    options
}

async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    id: u64,
    config: Arc<ServerConfig>,
    services: Arc<dyn DimseServices>,
    shutdown: watch::Receiver<bool>,
) {
    let refusal = Arc::new(Mutex::new(None));
    let options = association_options(&config, refusal.clone(), Some(services.clone()));
    let mut assoc = match options.establish_async(socket).await {
        Ok(assoc) => assoc,
        Err(e) => {
            let refusal = refusal.lock().ok().and_then(|slot| slot.clone());
            tracing::info!(%peer, error = %e, "association not established");
            if let Some(refused) = refusal {
                metrics::counter!(crate::metrics::ASSOCIATIONS_REFUSED, "reason" => refused.label)
                    .increment(1);
                services
                    .association_refused(&RefusedAssociation {
                        calling_ae: refused.calling_ae,
                        called_ae: refused.called_ae,
                        peer,
                        reason: refused.reason,
                    })
                    .await;
            }
            return;
        }
    };
    let info = AssociationInfo {
        id,
        calling_ae: dicom_ul::association::Association::peer_ae_title(&assoc)
            .trim()
            .to_string(),
        called_ae: assoc.called_ae_title().trim().to_string(),
        peer,
    };
    let contexts: HashMap<u8, Context> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                Context {
                    abstract_syntax: pc.abstract_syntax.trim_end_matches('\0').to_string(),
                    transfer_syntax: pc.transfer_syntax.trim_end_matches('\0').to_string(),
                },
            )
        })
        .collect();
    tracing::debug!(assoc = id, calling = %info.calling_ae, %peer, contexts = contexts.len(), "association established");
    let peer_max_pdu = assoc.requestor_max_pdu_length();
    let stream = assoc.inner_stream();
    // A second descriptor for the same socket, to re-arm TCP_QUICKACK after every PDU read
    // (see `read_events`).
    let quickack = {
        use std::os::fd::AsFd;
        stream
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(socket2::Socket::from)
    };
    let (mut rd, mut wr) = stream.split();
    let (events_tx, events_rx) = mpsc::channel(8);
    let (cancel_tx, cancel_rx) = watch::channel(CancelRequest::default());
    let (done_tx, done_rx) = watch::channel(false);
    let reader = read_events(
        &mut rd,
        quickack,
        PduReader::new(config.max_pdu),
        events_tx,
        cancel_tx,
        done_rx,
    );
    let mut handler = Handler {
        writer: PduWriter::new(peer_max_pdu).with_timeout(config.idle_timeout),
        events: events_rx,
        cancel: cancel_rx,
        cancels_seen: 0,
        services,
        info,
        contexts,
        config: config.clone(),
        deferred: VecDeque::new(),
        commitments: JoinSet::new(),
        next_message_id: 1,
    };
    let handling = async {
        handler.run(&mut wr, shutdown).await;
        handler.hand_over_commitments();
        let _ = tokio::time::timeout(config.idle_timeout, wr.shutdown()).await;
        // Stops the reader even when it is blocked handing over an event nobody will take.
        let _ = done_tx.send(true);
    };
    tokio::join!(reader, handling);
}

/// Parses a data set received whole in `transfer_syntax` (an identifier, an N-CREATE or N-SET
/// data set, at most `limit` bytes on the wire) once `dataset_check` has bounded its lengths.
pub fn parse_dataset(bytes: &[u8], transfer_syntax: &str, limit: usize) -> Result<InMemDicomObject, String> {
    let Some(ts) = TransferSyntaxRegistry.get(transfer_syntax) else {
        return Err("unknown transfer syntax".into());
    };
    let layout = crate::dataset_check::Layout::of(transfer_syntax);
    // An identifier is held whole in memory: a deflated one may inflate to a few times the
    // size accepted on the wire, no more.
    let limits = crate::dataset_check::Limits {
        max_inflated: (limit as u64).saturating_mul(16),
        max_header: (limit as u64).saturating_mul(16),
    };
    crate::dataset_check::check_bytes(bytes, layout, false, limits).map_err(|e| e.to_string())?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| e.to_string())
}

/// What the reader hands to the handler.
#[derive(Debug)]
enum Event {
    Command { context_id: u8, command: Box<Command> },
    Data { context_id: u8, data: Bytes, last: bool },
    ReleaseRequested,
    Aborted,
    Closed,
    ProtocolError(String),
}

/// The latest C-CANCEL seen: a sequence number (so a repeated message ID is a new request)
/// and the message ID it cancels.
#[derive(Clone, Copy, Debug, Default)]
struct CancelRequest {
    seq: u64,
    message_id: u16,
}

/// Turns PDUs into events for the handler until the peer stops, breaks the protocol, or the
/// handler is done (`done`). The reader never times out by itself: the handler knows whether
/// the association is idle or waiting in the middle of an operation, and decides.
async fn read_events<R: AsyncRead + Unpin>(
    rd: &mut R,
    quickack: Option<socket2::Socket>,
    mut reader: PduReader,
    events: mpsc::Sender<Event>,
    cancel: watch::Sender<CancelRequest>,
    mut done: watch::Receiver<bool>,
) {
    let mut command = Vec::new();
    // Hands an event over unless the handler has finished; false means stop reading.
    let deliver = async |event: Event, done: &mut watch::Receiver<bool>| -> bool {
        tokio::select! {
            sent = events.send(event) => sent.is_ok(),
            _ = wait_true(done) => false,
        }
    };
    loop {
        let next = tokio::select! {
            next = reader.read(rd) => next,
            _ = wait_true(&mut done) => return,
        };
        let pdu = match next {
            Ok(Some(pdu)) => {
                // Acknowledge what arrives next at once instead of after the delayed-ACK
                // timer: a requestor with Nagle's algorithm on (Debian's DCMTK) holds the
                // small tail of each PDU until its earlier segments are acknowledged, and
                // Linux leaves quick-ack mode by itself, so it is re-armed after every PDU.
                if let Some(s) = &quickack {
                    let _ = s.set_tcp_quickack(true);
                }
                pdu
            }
            Ok(None) | Err(DimseError::Io(_)) => {
                deliver(Event::Closed, &mut done).await;
                return;
            }
            Err(e) => {
                deliver(Event::ProtocolError(e.to_string()), &mut done).await;
                return;
            }
        };
        let event = match pdu {
            Pdu::Data(pdvs) => {
                for pdv in pdvs {
                    let event = if pdv.is_command {
                        command.extend_from_slice(&pdv.data);
                        if command.len() > MAX_COMMAND_BYTES {
                            Some(Event::ProtocolError("command set too large".into()))
                        } else if pdv.is_last {
                            let decoded = Command::decode(&command);
                            command.clear();
                            match decoded {
                                Ok(c) if c.command_field == field::C_CANCEL_RQ => {
                                    cancel.send_modify(|last| {
                                        last.seq += 1;
                                        last.message_id = c.message_id_being_responded_to.unwrap_or(0);
                                    });
                                    None
                                }
                                Ok(c) => Some(Event::Command {
                                    context_id: pdv.context_id,
                                    command: Box::new(c),
                                }),
                                Err(e) => Some(Event::ProtocolError(e.to_string())),
                            }
                        } else {
                            None
                        }
                    } else {
                        Some(Event::Data {
                            context_id: pdv.context_id,
                            data: pdv.data,
                            last: pdv.is_last,
                        })
                    };
                    if let Some(event) = event {
                        let fatal = matches!(event, Event::ProtocolError(_));
                        if !deliver(event, &mut done).await || fatal {
                            return;
                        }
                    }
                }
                continue;
            }
            Pdu::ReleaseRq => Event::ReleaseRequested,
            Pdu::Abort { .. } => Event::Aborted,
            Pdu::ReleaseRp => Event::ProtocolError("unexpected A-RELEASE-RP".into()),
        };
        let last = !matches!(event, Event::Command { .. } | Event::Data { .. });
        if !deliver(event, &mut done).await || last {
            return;
        }
    }
}

/// Why an operation could not go on with this association.
enum Fatal {
    /// The peer broke the protocol: abort with this message logged.
    Protocol(String),
    /// The peer is gone (closed, aborted, network error): just stop.
    Gone,
}

impl From<DimseError> for Fatal {
    fn from(e: DimseError) -> Self {
        match e {
            DimseError::Protocol(m) => Fatal::Protocol(m),
            _ => Fatal::Gone,
        }
    }
}

struct Handler {
    writer: PduWriter,
    events: mpsc::Receiver<Event>,
    cancel: watch::Receiver<CancelRequest>,
    /// Sequence number of the last C-CANCEL already dealt with.
    cancels_seen: u64,
    services: Arc<dyn DimseServices>,
    info: AssociationInfo,
    contexts: HashMap<u8, Context>,
    config: Arc<ServerConfig>,
    /// Events received while waiting for the answer to a storage commitment report, handled
    /// before anything newer.
    deferred: VecDeque<Event>,
    /// Storage commitments in progress, to be reported on this association.
    commitments: JoinSet<CommitmentReport>,
    /// Message IDs of the requests we send on this association (storage commitment reports).
    next_message_id: u16,
}

/// What the handler's main loop woke up for.
enum Wake {
    Event(Option<Event>),
    Report(CommitmentReport),
}

impl Handler {
    async fn run<W: AsyncWrite + Unpin>(&mut self, wr: &mut W, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wake = match self.deferred.pop_front() {
                Some(event) => Wake::Event(Some(event)),
                None => tokio::select! {
                    biased;
                    event = tokio::time::timeout(self.config.idle_timeout, self.events.recv()) => match event {
                        Ok(event) => Wake::Event(event),
                        // A peer waiting for a storage commitment report is silent, not idle.
                        Err(_) if !self.commitments.is_empty() => continue,
                        Err(_) => {
                            tracing::info!(assoc = self.info.id, "idle timeout, aborting association");
                            let _ = self.writer.send_abort(wr, 0).await;
                            return;
                        }
                    },
                    Some(done) = self.commitments.join_next(), if !self.commitments.is_empty() => match done {
                        Ok(report) => Wake::Report(report),
                        // The task wraps the services' work and does not panic itself.
                        Err(e) => {
                            tracing::error!(error = %e, "storage commitment task failed");
                            continue;
                        }
                    },
                    _ = wait_true(&mut shutdown) => {
                        tracing::info!(assoc = self.info.id, "aborting idle association for shutdown");
                        let _ = self.writer.send_abort(wr, 0).await;
                        return;
                    }
                },
            };
            let event = match wake {
                Wake::Event(event) => event,
                Wake::Report(report) => match self.report_here(wr, report).await {
                    Ok(()) => continue,
                    Err(Fatal::Gone) => return,
                    Err(Fatal::Protocol(m)) => Some(Event::ProtocolError(m)),
                },
            };
            let outcome = match event {
                None | Some(Event::Closed) | Some(Event::Aborted) => return,
                Some(Event::ReleaseRequested) => {
                    let _ = self.writer.send_release_rp(wr).await;
                    let _ = wr.flush().await;
                    return;
                }
                Some(Event::ProtocolError(m)) => Err(Fatal::Protocol(m)),
                Some(Event::Data { .. }) => Err(Fatal::Protocol("data set without a command".into())),
                Some(Event::Command { context_id, command }) => {
                    let r = self.dispatch(wr, context_id, *command).await;
                    // A C-CANCEL applies to the operation in progress only.
                    self.cancels_seen = self.cancel.borrow().seq;
                    r
                }
            };
            match outcome {
                Ok(()) => {}
                Err(Fatal::Gone) => return,
                Err(Fatal::Protocol(m)) => {
                    tracing::warn!(assoc = self.info.id, peer = %self.info.peer, error = %m, "protocol error, aborting association");
                    metrics::counter!(crate::metrics::PROTOCOL_ERRORS).increment(1);
                    let _ = self.writer.send_abort(wr, pdu::ABORT_REASON_UNEXPECTED_PDU).await;
                    return;
                }
            }
        }
    }

    fn context(&self, id: u8) -> Result<Context, Fatal> {
        self.contexts
            .get(&id)
            .cloned()
            .ok_or_else(|| Fatal::Protocol(format!("presentation context {id} was not accepted")))
    }

    async fn dispatch<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        command: Command,
    ) -> Result<(), Fatal> {
        let context = self.context(context_id)?;
        match command.command_field {
            field::C_ECHO_RQ => {
                let rsp = command.response(field::C_ECHO_RSP, status::SUCCESS);
                self.writer.send_command(wr, context_id, &rsp).await?;
                Ok(())
            }
            field::C_STORE_RQ => self.c_store(wr, context_id, &context, command).await,
            field::C_FIND_RQ => self.c_find(wr, context_id, &context, command).await,
            field::C_GET_RQ | field::C_MOVE_RQ => self.c_retrieve(wr, context_id, &context, command).await,
            field::N_CREATE_RQ | field::N_SET_RQ if context.abstract_syntax == sop_classes::MPPS => {
                self.mpps(wr, context_id, &context, command).await
            }
            field::N_ACTION_RQ if context.abstract_syntax == sop_classes::STORAGE_COMMITMENT_PUSH => {
                self.n_action(wr, context_id, &context, command).await
            }
            other if other & 0x8000 != 0 => {
                // A response nobody asked for: nothing to answer; skip it and carry on.
                tracing::warn!(
                    assoc = self.info.id,
                    command = format!("0x{other:04X}"),
                    "unsolicited response ignored"
                );
                if command.has_dataset() {
                    self.drain_dataset(context_id).await?;
                }
                Ok(())
            }
            other => {
                // Drain any data set, then say we do not know this operation.
                if command.has_dataset() {
                    self.drain_dataset(context_id).await?;
                }
                let mut rsp = if (field::N_EVENT_REPORT_RQ..=field::N_DELETE_RQ).contains(&other) {
                    command.n_response(other | 0x8000, status::UNRECOGNIZED_OPERATION)
                } else {
                    command.response(other | 0x8000, status::UNRECOGNIZED_OPERATION)
                };
                rsp.error_comment = Some(format!(
                    "operation 0x{other:04X} not supported for {}",
                    context.abstract_syntax
                ));
                self.writer.send_command(wr, context_id, &rsp).await?;
                Ok(())
            }
        }
    }

    /// The next event in the middle of an operation; a peer silent for the idle timeout is gone.
    async fn next_event(&mut self) -> Result<Option<Event>, Fatal> {
        if let Some(event) = self.deferred.pop_front() {
            return Ok(Some(event));
        }
        tokio::time::timeout(self.config.idle_timeout, self.events.recv())
            .await
            .map_err(|_| Fatal::Protocol("peer silent in the middle of an operation".into()))
    }

    /// Next data fragment of the current message.
    async fn next_data(&mut self, context_id: u8) -> Result<(Bytes, bool), Fatal> {
        match self.next_event().await? {
            Some(Event::Data {
                context_id: id,
                data,
                last,
            }) if id == context_id => Ok((data, last)),
            Some(Event::Data { context_id: id, .. }) => Err(Fatal::Protocol(format!(
                "data fragment on context {id} while receiving on {context_id}"
            ))),
            Some(Event::Command { .. }) => Err(Fatal::Protocol(
                "new command before the data set was complete".into(),
            )),
            Some(Event::ProtocolError(m)) => Err(Fatal::Protocol(m)),
            _ => Err(Fatal::Gone),
        }
    }

    async fn drain_dataset(&mut self, context_id: u8) -> Result<(), Fatal> {
        loop {
            let (_, last) = self.next_data(context_id).await?;
            if last {
                return Ok(());
            }
        }
    }

    /// Reads a (small) identifier data set; an unreadable one is a failure status, not fatal.
    async fn read_identifier(
        &mut self,
        context: &Context,
        context_id: u8,
    ) -> Result<Result<InMemDicomObject, DimseStatus>, Fatal> {
        Ok(self
            .read_dataset(context, context_id, MAX_IDENTIFIER_BYTES)
            .await?
            .map_err(|bad| match bad {
                BadDataset::TooLarge => DimseStatus::new(status::CANNOT_UNDERSTAND, "identifier too large"),
                BadDataset::Unreadable(e) => {
                    DimseStatus::new(status::CANNOT_UNDERSTAND, format!("unreadable identifier: {e}"))
                }
            }))
    }

    /// Reads a data set of at most `limit` bytes (the rest is drained) and parses it once
    /// `dataset_check` has bounded its lengths.
    async fn read_dataset(
        &mut self,
        context: &Context,
        context_id: u8,
        limit: usize,
    ) -> Result<Result<InMemDicomObject, BadDataset>, Fatal> {
        let mut bytes = Vec::new();
        let mut too_large = false;
        loop {
            let (data, last) = self.next_data(context_id).await?;
            if bytes.len() + data.len() > limit {
                too_large = true;
            } else {
                bytes.extend_from_slice(&data);
            }
            if last {
                break;
            }
        }
        if too_large {
            return Ok(Err(BadDataset::TooLarge));
        }
        Ok(parse_dataset(&bytes, &context.transfer_syntax, limit).map_err(BadDataset::Unreadable))
    }

    /// The identifier of a query or retrieve request on a context whose SOP class maps to
    /// `service` (`None`: not a SOP class for this operation). The data set is always read,
    /// so the association stays in step even when the answer is a refusal.
    async fn identifier_for<T>(
        &mut self,
        context: &Context,
        context_id: u8,
        command: &Command,
        service: Option<T>,
    ) -> Result<Result<(T, InMemDicomObject), DimseStatus>, Fatal> {
        let identifier = if command.has_dataset() {
            self.read_identifier(context, context_id).await?
        } else {
            Err(DimseStatus::new(
                status::CANNOT_UNDERSTAND,
                "request without identifier",
            ))
        };
        Ok(match (service, identifier) {
            (None, _) => Err(DimseStatus::new(
                status::SOP_CLASS_NOT_SUPPORTED,
                format!(
                    "{} is not a SOP class for this operation",
                    context.abstract_syntax
                ),
            )),
            (Some(service), identifier) => identifier.map(|i| (service, i)),
        })
    }

    fn is_cancelled(&self, message_id: Option<u16>) -> bool {
        let last = *self.cancel.borrow();
        last.seq > self.cancels_seen && Some(last.message_id) == message_id
    }

    async fn send_response<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        mut rsp: Command,
        dataset: Option<&[u8]>,
        st: &DimseStatus,
    ) -> Result<(), Fatal> {
        rsp.status = Some(st.code);
        rsp.error_comment.clone_from(&st.comment);
        rsp.data_set_type = if dataset.is_some() {
            HAS_DATASET
        } else {
            NO_DATASET
        };
        self.writer.send_command(wr, context_id, &rsp).await?;
        if let Some(data) = dataset {
            self.writer.send_dataset(wr, context_id, data).await?;
        }
        Ok(())
    }

    async fn c_store<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        context: &Context,
        command: Command,
    ) -> Result<(), Fatal> {
        let started = Instant::now();
        let sop_class = command
            .affected_sop_class_uid
            .clone()
            .unwrap_or_else(|| context.abstract_syntax.clone());
        let sop_instance = command.affected_sop_instance_uid.clone().unwrap_or_default();
        let mut rsp = command.response(field::C_STORE_RSP, status::SUCCESS);
        rsp.affected_sop_instance_uid = command.affected_sop_instance_uid.clone();
        if !command.has_dataset() {
            let st = DimseStatus::new(status::CANNOT_UNDERSTAND, "C-STORE without a data set");
            return self.send_response(wr, context_id, rsp, None, &st).await;
        }
        let mut refusal = None;
        let mut sink = if sop_instance.is_empty() {
            refusal = Some(DimseStatus::new(
                status::CANNOT_UNDERSTAND,
                "missing Affected SOP Instance UID",
            ));
            None
        } else if sop_class != context.abstract_syntax {
            refusal = Some(DimseStatus::new(
                status::DATASET_MISMATCH,
                "SOP class differs from the presentation context",
            ));
            None
        } else {
            let request = StoreRequest {
                sop_class_uid: sop_class,
                sop_instance_uid: sop_instance.clone(),
                transfer_syntax_uid: context.transfer_syntax.clone(),
                move_originator_ae: command.move_originator_ae.clone(),
            };
            match self.services.begin_store(&self.info, request).await {
                Ok(sink) => Some(sink),
                Err(st) => {
                    refusal = Some(st);
                    None
                }
            }
        };
        let mut received = 0u64;
        loop {
            let (data, last) = match self.next_data(context_id).await {
                Ok(fragment) => fragment,
                Err(fatal) => {
                    if let Some(sink) = sink.take() {
                        sink.abort().await;
                    }
                    return Err(fatal);
                }
            };
            received += data.len() as u64;
            if let Some(s) = sink.as_mut() {
                if let Err(st) = s.write(&data).await {
                    refusal = Some(st);
                    if let Some(s) = sink.take() {
                        s.abort().await;
                    }
                }
            }
            if last {
                break;
            }
        }
        let st = match sink {
            // The services record what happens from here on themselves.
            Some(sink) => sink.finish().await,
            None => {
                let st =
                    refusal.unwrap_or_else(|| DimseStatus::new(status::PROCESSING_FAILURE, "not stored"));
                self.services.store_refused(&self.info, &sop_instance, &st).await;
                st
            }
        };
        let outcome = if st.is_success() || st.is_warning() {
            "success"
        } else {
            "failure"
        };
        metrics::counter!(crate::metrics::STORES, "outcome" => outcome).increment(1);
        metrics::counter!(crate::metrics::STORE_BYTES).increment(received);
        metrics::histogram!(crate::metrics::STORE_SECONDS).record(started.elapsed().as_secs_f64());
        self.send_response(wr, context_id, rsp, None, &st).await
    }

    async fn c_find<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        context: &Context,
        command: Command,
    ) -> Result<(), Fatal> {
        let started = Instant::now();
        let rsp = command.response(field::C_FIND_RSP, status::SUCCESS);
        let kind = match context.abstract_syntax.as_str() {
            sop_classes::PATIENT_ROOT_FIND => Some(FindKind::QueryRetrieve(InformationModel::PatientRoot)),
            sop_classes::STUDY_ROOT_FIND => Some(FindKind::QueryRetrieve(InformationModel::StudyRoot)),
            sop_classes::MODALITY_WORKLIST_FIND => Some(FindKind::ModalityWorklist),
            _ => None,
        };
        let (kind, identifier) = match self.identifier_for(context, context_id, &command, kind).await? {
            Ok(pair) => pair,
            Err(st) => return self.send_response(wr, context_id, rsp, None, &st).await,
        };
        let Some(ts) = TransferSyntaxRegistry.get(&context.transfer_syntax) else {
            let st = DimseStatus::new(status::UNABLE_TO_PROCESS, "unknown transfer syntax");
            return self.send_response(wr, context_id, rsp, None, &st).await;
        };
        let (tx, mut rx) = mpsc::channel(32);
        let services = self.services.clone();
        let info = self.info.clone();
        let search = tokio::spawn(async move { services.find(&info, kind, identifier, tx).await });
        let mut cancelled = self.is_cancelled(command.message_id);
        let mut peer_gone = false;
        let mut matches = 0u64;
        let mut encoded = Vec::new();
        let mut failure = None;
        while !cancelled {
            let next = tokio::select! {
                next = rx.recv() => next,
                changed = self.cancel.changed() => {
                    // An error means the reader stopped: the peer is gone.
                    peer_gone = changed.is_err();
                    cancelled = peer_gone || self.is_cancelled(command.message_id);
                    continue;
                }
            };
            let Some(found) = next else { break };
            encoded.clear();
            if let Err(e) = found.write_dataset_with_ts(&mut encoded, ts) {
                tracing::warn!(error = %e, "could not encode a C-FIND match; skipped");
                continue;
            }
            matches += 1;
            let pending = DimseStatus {
                code: status::PENDING,
                comment: None,
            };
            let data = std::mem::take(&mut encoded);
            let r = self
                .send_response(wr, context_id, rsp.clone(), Some(&data), &pending)
                .await;
            encoded = data;
            if let Err(fatal) = r {
                failure = Some(fatal);
                break;
            }
        }
        // Dropping the receiver stops the search at its next match; waiting for it (rather
        // than aborting the task) lets it write its audit record.
        drop(rx);
        let searched = search.await;
        if let Some(fatal) = failure {
            return Err(fatal);
        }
        if peer_gone {
            return Err(Fatal::Gone);
        }
        let st = if cancelled {
            DimseStatus {
                code: status::CANCEL,
                comment: None,
            }
        } else {
            match searched {
                Ok(Ok(())) => DimseStatus::SUCCESS,
                Ok(Err(st)) => st,
                Err(e) => {
                    tracing::error!(error = %e, "C-FIND task failed");
                    DimseStatus::new(status::UNABLE_TO_PROCESS, "internal error")
                }
            }
        };
        metrics::counter!(crate::metrics::FINDS).increment(1);
        metrics::histogram!(crate::metrics::FIND_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::debug!(assoc = self.info.id, matches, "C-FIND done");
        self.send_response(wr, context_id, rsp, None, &st).await
    }

    async fn c_retrieve<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        context: &Context,
        command: Command,
    ) -> Result<(), Fatal> {
        let started = Instant::now();
        let is_get = command.command_field == field::C_GET_RQ;
        let rsp_field = if is_get {
            field::C_GET_RSP
        } else {
            field::C_MOVE_RSP
        };
        let rsp = command.response(rsp_field, status::SUCCESS);
        let model = match context.abstract_syntax.as_str() {
            sop_classes::PATIENT_ROOT_GET | sop_classes::PATIENT_ROOT_MOVE => {
                Some(InformationModel::PatientRoot)
            }
            sop_classes::STUDY_ROOT_GET | sop_classes::STUDY_ROOT_MOVE => Some(InformationModel::StudyRoot),
            _ => None,
        };
        let (model, identifier) = match self.identifier_for(context, context_id, &command, model).await? {
            Ok(pair) => pair,
            Err(st) => return self.send_response(wr, context_id, rsp, None, &st).await,
        };
        let kind = if is_get {
            RetrieveKind::Get
        } else {
            let destination = command.move_destination.clone().unwrap_or_default();
            RetrieveKind::Move { destination }
        };
        // Resolve the destination before touching the index: an unknown one is refused at once.
        let destination_addr = match &kind {
            RetrieveKind::Move { destination } => match self.services.resolve_ae(&self.info, destination) {
                Some(addr) => Some((destination.clone(), addr)),
                None => {
                    let st = DimseStatus::new(
                        status::MOVE_DESTINATION_UNKNOWN,
                        format!("unknown move destination {destination:?}"),
                    );
                    return self.send_response(wr, context_id, rsp, None, &st).await;
                }
            },
            RetrieveKind::Get => None,
        };
        let items = match self.services.retrieve(&self.info, model, kind, identifier).await {
            Ok(items) => items,
            Err(st) => return self.send_response(wr, context_id, rsp, None, &st).await,
        };
        let mut progress = Progress::new(items.len());
        let mut destination = match destination_addr {
            None => None,
            Some((ae, addr)) if !items.is_empty() => {
                let own_ae = self
                    .services
                    .own_ae_title(&self.info)
                    .unwrap_or_else(|| self.config.ae_title.clone());
                match ScuAssociation::connect(
                    &addr,
                    &own_ae,
                    &ae,
                    &sub_operation_proposals(&items),
                    self.config.max_pdu,
                    self.config.idle_timeout,
                )
                .await
                {
                    Ok(scu) => Some(scu),
                    Err(e) => {
                        tracing::warn!(destination = %ae, %addr, error = %e, "cannot associate with move destination");
                        let mut st = DimseStatus::new(
                            status::OUT_OF_RESOURCES_SUBOPS,
                            format!("cannot reach {ae}: {e}"),
                        );
                        st.comment = st.comment.map(|c| c.chars().take(64).collect());
                        let mut final_rsp = rsp.clone();
                        final_rsp.failed = Some(clamp(items.len()));
                        final_rsp.completed = Some(0);
                        final_rsp.warning = Some(0);
                        return self.send_response(wr, context_id, final_rsp, None, &st).await;
                    }
                }
            }
            Some(_) => None,
        };
        let mut next_message_id: u16 = 1;
        let mut cancelled = false;
        for item in &items {
            if self.is_cancelled(command.message_id) {
                cancelled = true;
                break;
            }
            let outcome = match destination.as_mut() {
                Some(scu) => self.move_one(scu, item, &command).await,
                None => {
                    let id = next_message_id;
                    next_message_id = next_message_id.wrapping_add(1).max(1);
                    self.get_one(wr, item, id).await?
                }
            };
            progress.record(outcome, &item.sop_instance_uid);
            let mut pending = rsp.clone();
            progress.fill(&mut pending, true);
            let st = DimseStatus {
                code: status::PENDING,
                comment: None,
            };
            self.send_response(wr, context_id, pending, None, &st).await?;
        }
        if let Some(scu) = destination {
            scu.release().await;
        }
        let mut final_rsp = rsp;
        progress.fill(&mut final_rsp, cancelled);
        let st = if cancelled {
            DimseStatus {
                code: status::CANCEL,
                comment: None,
            }
        } else if progress.failed > 0 || progress.warning > 0 {
            DimseStatus {
                code: status::SUBOPS_WARNING,
                comment: None,
            }
        } else {
            DimseStatus::SUCCESS
        };
        let identifier = progress.failed_identifier(ts_of(context));
        metrics::counter!(crate::metrics::RETRIEVES, "kind" => if is_get { "get" } else { "move" })
            .increment(1);
        metrics::histogram!(crate::metrics::RETRIEVE_SECONDS).record(started.elapsed().as_secs_f64());
        self.send_response(wr, context_id, final_rsp, identifier.as_deref(), &st)
            .await
    }

    /// One C-GET sub-operation: C-STORE on this association to the requestor.
    async fn get_one<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        item: &RetrieveItem,
        message_id: u16,
    ) -> Result<SubOutcome, Fatal> {
        let Some((ctx_id, ts)) = choose_context(
            self.contexts
                .iter()
                .map(|(id, c)| (*id, c.abstract_syntax.as_str(), c.transfer_syntax.as_str())),
            item,
            self.services.as_ref(),
        ) else {
            tracing::info!(sop = %item.sop_instance_uid, class = %item.sop_class_uid, "no presentation context to send instance");
            return Ok(SubOutcome::Failed);
        };
        let mut dataset = match self.services.open_dataset(&self.info, item, &ts).await {
            Ok(d) => d,
            Err(st) => {
                tracing::warn!(sop = %item.sop_instance_uid, status = ?st, "cannot open instance for C-GET");
                return Ok(SubOutcome::Failed);
            }
        };
        let rq = store_request(item, message_id, None);
        self.writer.send_command(wr, ctx_id, &rq).await?;
        self.writer
            .send_dataset_stream(wr, ctx_id, &mut dataset.reader, dataset.len)
            .await?;
        // Wait for the matching C-STORE-RSP; anything else here breaks the protocol.
        match self.next_event().await? {
            Some(Event::Command { command, .. })
                if command.command_field == field::C_STORE_RSP
                    && command.message_id_being_responded_to == Some(message_id) =>
            {
                Ok(SubOutcome::from_status(
                    command.status.unwrap_or(status::PROCESSING_FAILURE),
                ))
            }
            Some(Event::Command { command, .. }) => Err(Fatal::Protocol(format!(
                "expected C-STORE-RSP during C-GET, got command 0x{:04X}",
                command.command_field
            ))),
            Some(Event::ProtocolError(m)) => Err(Fatal::Protocol(m)),
            Some(Event::Data { .. }) => Err(Fatal::Protocol("unexpected data set during C-GET".into())),
            _ => Err(Fatal::Gone),
        }
    }

    /// One C-MOVE sub-operation: C-STORE on the association to the destination.
    async fn move_one(
        &mut self,
        scu: &mut ScuAssociation,
        item: &RetrieveItem,
        command: &Command,
    ) -> SubOutcome {
        let Some((ctx_id, ts)) = choose_context(scu.accepted_contexts(), item, self.services.as_ref()) else {
            return SubOutcome::Failed;
        };
        let mut dataset = match self.services.open_dataset(&self.info, item, &ts).await {
            Ok(d) => d,
            Err(_) => return SubOutcome::Failed,
        };
        let originator = command.message_id.map(|id| (self.info.calling_ae.as_str(), id));
        match scu.store(ctx_id, item, originator, &mut dataset).await {
            Ok(code) => SubOutcome::from_status(code),
            Err(e) => {
                tracing::warn!(error = %e, "C-STORE sub-operation to move destination failed");
                SubOutcome::Failed
            }
        }
    }
}

/// Why a data set could not be read.
enum BadDataset {
    TooLarge,
    Unreadable(String),
}

/// Encodes a response data set in the context's transfer syntax.
fn encode_dataset(obj: &InMemDicomObject, transfer_syntax_uid: &str) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| format!("unknown transfer syntax {transfer_syntax_uid}"))?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Runs the services' commitment work; a panic in it reports every instance failed rather than
/// leaving the requester without an answer.
async fn commit(work: crate::CommitmentFuture, request: crate::CommitmentRequest) -> CommitmentReport {
    let result = match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, transaction = %request.transaction_uid, "storage commitment work failed");
            CommitmentResult {
                committed: Vec::new(),
                failed: request
                    .instances
                    .into_iter()
                    .map(|sop| (sop, failure_reason::PROCESSING_FAILURE))
                    .collect(),
            }
        }
    };
    CommitmentReport {
        transaction_uid: request.transaction_uid,
        result,
    }
}

/// Sends a storage commitment report on a new association to the requester, in the background.
fn report_elsewhere(
    config: Arc<ServerConfig>,
    services: Arc<dyn DimseServices>,
    info: AssociationInfo,
    report: CommitmentReport,
) {
    tokio::spawn(async move {
        let outcome = match services.resolve_ae(&info, &info.calling_ae) {
            None => ReportOutcome::Failed {
                reason: format!("no address known for AE title {:?}", info.calling_ae),
            },
            Some(addr) => match commitment::send_report(
                &addr,
                &services
                    .own_ae_title(&info)
                    .unwrap_or_else(|| config.ae_title.clone()),
                &info.calling_ae,
                &report,
                config.max_pdu,
                config.idle_timeout,
            )
            .await
            {
                Ok(status) => ReportOutcome::Answered {
                    status,
                    same_association: false,
                },
                Err(e) => ReportOutcome::Failed {
                    reason: format!("{addr}: {e}"),
                },
            },
        };
        log_report(&info, &report, &outcome);
        services.commitment_reported(&info, &report, &outcome).await;
    });
}

fn log_report(info: &AssociationInfo, report: &CommitmentReport, outcome: &ReportOutcome) {
    let transaction = &report.transaction_uid;
    let committed = report.result.committed.len();
    let failed = report.result.failed.len();
    match outcome {
        ReportOutcome::Answered {
            status,
            same_association,
        } => {
            tracing::info!(
                requester = %info.calling_ae, %transaction, committed, failed, same_association,
                status = format!("0x{status:04X}"), "storage commitment report delivered"
            );
            metrics::counter!(crate::metrics::COMMITMENT_REPORTS, "outcome" => "delivered").increment(1);
        }
        ReportOutcome::Failed { reason } => {
            tracing::warn!(
                requester = %info.calling_ae, %transaction, committed, failed, %reason,
                "storage commitment report not delivered"
            );
            metrics::counter!(crate::metrics::COMMITMENT_REPORTS, "outcome" => "failed").increment(1);
        }
    }
}

impl Handler {
    fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// The association is over: reports still being worked out go on new associations.
    fn hand_over_commitments(&mut self) {
        if self.commitments.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.commitments);
        let (config, services, info) = (self.config.clone(), self.services.clone(), self.info.clone());
        tokio::spawn(async move {
            while let Some(done) = pending.join_next().await {
                match done {
                    Ok(report) => report_elsewhere(config.clone(), services.clone(), info.clone(), report),
                    Err(e) => tracing::error!(error = %e, "storage commitment task failed"),
                }
            }
        });
    }

    /// MPPS N-CREATE and N-SET: checks the command set, reads the data set, and passes both to
    /// the services, whose status (success, warning or failure) goes back as it is.
    async fn mpps<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        context: &Context,
        command: Command,
    ) -> Result<(), Fatal> {
        let create = command.command_field == field::N_CREATE_RQ;
        let op = if create { "create" } else { "set" };
        let mut rsp = command.n_response(
            if create {
                field::N_CREATE_RSP
            } else {
                field::N_SET_RSP
            },
            status::SUCCESS,
        );
        // Read the data set first, so that the association stays in step whatever the answer.
        let dataset = if command.has_dataset() {
            Some(
                self.read_dataset(context, context_id, MAX_IDENTIFIER_BYTES)
                    .await?,
            )
        } else {
            None
        };
        let (class, class_tag) = if create {
            (command.affected_sop_class_uid.as_deref(), 0x0000_0002)
        } else {
            (command.requested_sop_class_uid.as_deref(), 0x0000_0003)
        };
        let (instance, instance_tag) = if create {
            (command.affected_sop_instance_uid.clone(), 0x0000_1000)
        } else {
            (command.requested_sop_instance_uid.clone(), 0x0000_1001)
        };
        let instance = instance.filter(|uid| !uid.is_empty());
        let checked = match (class, &instance, dataset) {
            (None, _, _) => Err((
                DimseStatus::new(status::MISSING_ATTRIBUTE, "missing SOP Class UID"),
                Some(class_tag),
            )),
            (Some(class), _, _) if class != context.abstract_syntax => Err((
                DimseStatus::new(
                    status::NO_SUCH_SOP_CLASS,
                    format!("{class} differs from the presentation context"),
                ),
                Some(class_tag),
            )),
            (_, None, _) if !create => Err((
                DimseStatus::new(status::MISSING_ATTRIBUTE, "missing Requested SOP Instance UID"),
                Some(instance_tag),
            )),
            (_, Some(uid), _) if !commitment::is_valid_uid(uid) => Err((
                DimseStatus::new(status::INVALID_OBJECT_INSTANCE, "SOP Instance UID is not a UID"),
                Some(instance_tag),
            )),
            (_, _, None) if !create => Err((
                DimseStatus::new(status::MISSING_ATTRIBUTE, "N-SET without a modification list"),
                None,
            )),
            // The services say which attributes N-CREATE needs: an absent data set is empty.
            (_, _, None) => Ok(InMemDicomObject::new_empty()),
            (_, _, Some(Err(BadDataset::TooLarge))) => Err((
                DimseStatus::new(status::RESOURCE_LIMITATION, "data set too large"),
                None,
            )),
            (_, _, Some(Err(BadDataset::Unreadable(e)))) => Err((
                DimseStatus::new(status::PROCESSING_FAILURE, format!("unreadable data set: {e}")),
                None,
            )),
            (_, _, Some(Ok(dataset))) => Ok(dataset),
        };
        let dataset = match checked {
            Ok(dataset) => dataset,
            Err((st, offending)) => {
                rsp.offending_element = offending;
                metrics::counter!(crate::metrics::MPPS, "op" => op, "outcome" => "refused").increment(1);
                return self.send_response(wr, context_id, rsp, None, &st).await;
            }
        };
        let answer = if create {
            self.services
                .mpps_create(&self.info, instance, dataset)
                .await
                .map(|(uid, answer)| {
                    rsp.affected_sop_instance_uid = Some(uid);
                    answer
                })
        } else {
            let uid = instance.unwrap_or_default();
            self.services.mpps_set(&self.info, uid, dataset).await
        };
        let NResponse {
            status: st,
            attributes,
            dataset,
        } = match answer {
            Ok(answer) => answer,
            Err(st) => {
                tracing::info!(assoc = self.info.id, op, status = format!("0x{:04X}", st.code), comment = ?st.comment, "MPPS refused");
                metrics::counter!(crate::metrics::MPPS, "op" => op, "outcome" => "refused").increment(1);
                return self.send_response(wr, context_id, rsp, None, &st).await;
            }
        };
        metrics::counter!(crate::metrics::MPPS, "op" => op, "outcome" => "success").increment(1);
        rsp.attribute_identifier_list = attributes
            .iter()
            .map(|t| (t.0 as u32) << 16 | t.1 as u32)
            .collect();
        let encoded = dataset.map(|d| encode_dataset(&d, &context.transfer_syntax));
        let data = match encoded {
            Some(Ok(data)) => Some(data),
            Some(Err(e)) => {
                // The operation happened: say so, without the data set we cannot send.
                tracing::warn!(assoc = self.info.id, error = %e, "cannot encode MPPS response data set");
                None
            }
            None => None,
        };
        self.send_response(wr, context_id, rsp, data.as_deref(), &st)
            .await
    }

    /// Storage commitment N-ACTION: checks the request, asks the services to take it, answers,
    /// and schedules the report.
    async fn n_action<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        context_id: u8,
        context: &Context,
        command: Command,
    ) -> Result<(), Fatal> {
        let mut rsp = command.n_response(field::N_ACTION_RSP, status::SUCCESS);
        let dataset = if command.has_dataset() {
            Some(self.read_dataset(context, context_id, MAX_ACTION_BYTES).await?)
        } else {
            None
        };
        let checked = match (
            command.requested_sop_class_uid.as_deref(),
            command.requested_sop_instance_uid.as_deref(),
            command.action_type_id,
            dataset,
        ) {
            (None, ..) => Err((
                DimseStatus::new(status::MISSING_ATTRIBUTE, "missing Requested SOP Class UID"),
                Some(0x0000_0003),
            )),
            (Some(class), ..) if class != context.abstract_syntax => Err((
                DimseStatus::new(
                    status::NO_SUCH_SOP_CLASS,
                    format!("{class} differs from the presentation context"),
                ),
                Some(0x0000_0003),
            )),
            (_, None, ..) => Err((
                DimseStatus::new(status::MISSING_ATTRIBUTE, "missing Requested SOP Instance UID"),
                Some(0x0000_1001),
            )),
            (_, Some(instance), ..) if instance != sop_classes::STORAGE_COMMITMENT_INSTANCE => Err((
                DimseStatus::new(
                    status::NO_SUCH_SOP_INSTANCE,
                    format!(
                        "expected the well-known instance {}",
                        sop_classes::STORAGE_COMMITMENT_INSTANCE
                    ),
                ),
                Some(0x0000_1001),
            )),
            (_, _, action, _) if action != Some(commitment::ACTION_REQUEST_COMMITMENT) => Err((
                DimseStatus::new(
                    status::NO_SUCH_ACTION,
                    "Action Type ID must be 1 (Request Storage Commitment)",
                ),
                Some(0x0000_1008),
            )),
            (.., None) => Err((
                DimseStatus::new(
                    status::INVALID_ARGUMENT_VALUE,
                    "N-ACTION without action information",
                ),
                None,
            )),
            (.., Some(Err(BadDataset::TooLarge))) => Err((
                DimseStatus::new(status::RESOURCE_LIMITATION, "too many instances in one request"),
                None,
            )),
            (.., Some(Err(BadDataset::Unreadable(e)))) => Err((
                DimseStatus::new(
                    status::INVALID_ARGUMENT_VALUE,
                    format!("unreadable action information: {e}"),
                ),
                None,
            )),
            (.., Some(Ok(info))) => commitment::parse_request(&info).map_err(|st| (st, None)),
        };
        let request = match checked {
            Ok(request) => request,
            Err((st, offending)) => {
                rsp.offending_element = offending;
                metrics::counter!(crate::metrics::COMMITMENT_REQUESTS, "outcome" => "refused").increment(1);
                return self.send_response(wr, context_id, rsp, None, &st).await;
            }
        };
        let transaction = request.transaction_uid.clone();
        let instances = request.instances.len();
        let work = match self
            .services
            .storage_commitment(&self.info, request.clone())
            .await
        {
            Ok(work) => work,
            Err(st) => {
                metrics::counter!(crate::metrics::COMMITMENT_REQUESTS, "outcome" => "refused").increment(1);
                return self.send_response(wr, context_id, rsp, None, &st).await;
            }
        };
        metrics::counter!(crate::metrics::COMMITMENT_REQUESTS, "outcome" => "accepted").increment(1);
        tracing::info!(assoc = self.info.id, requester = %self.info.calling_ae, %transaction, instances, "storage commitment requested");
        // The work starts before the answer goes out, so that a requester closing the
        // association at once does not delay it.
        match self.services.commitment_delivery() {
            CommitmentDelivery::SameAssociation => {
                self.commitments.spawn(commit(work, request));
            }
            CommitmentDelivery::NewAssociation => {
                let (config, services, info) =
                    (self.config.clone(), self.services.clone(), self.info.clone());
                tokio::spawn(async move {
                    let report = commit(work, request).await;
                    report_elsewhere(config, services, info, report);
                });
            }
        }
        self.send_response(wr, context_id, rsp, None, &DimseStatus::SUCCESS)
            .await
    }

    /// Sends a storage commitment report on this association and waits for its answer. When
    /// the association cannot carry it (no context, the peer leaves or does not answer), the
    /// report goes on a new association instead; the requester may then see it twice, which a
    /// transaction UID makes harmless.
    async fn report_here<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        report: CommitmentReport,
    ) -> Result<(), Fatal> {
        let context = self
            .contexts
            .iter()
            .find(|(_, c)| c.abstract_syntax == sop_classes::STORAGE_COMMITMENT_PUSH)
            .map(|(id, c)| (*id, c.transfer_syntax.clone()));
        let encoded = context.map(|(id, ts)| (id, report.encode(&ts)));
        let (context_id, data) = match encoded {
            Some((id, Ok(data))) => (id, data),
            _ => {
                report_elsewhere(
                    self.config.clone(),
                    self.services.clone(),
                    self.info.clone(),
                    report,
                );
                return Ok(());
            }
        };
        let message_id = self.next_message_id();
        let rq = report.command(message_id);
        let sent = async {
            self.writer.send_command(wr, context_id, &rq).await?;
            self.writer.send_dataset(wr, context_id, &data).await
        }
        .await;
        if let Err(e) = sent {
            report_elsewhere(
                self.config.clone(),
                self.services.clone(),
                self.info.clone(),
                report,
            );
            return Err(e.into());
        }
        // Wait for the answer; what else the peer sends meanwhile is handled afterwards.
        let answered = loop {
            let event = match tokio::time::timeout(self.config.idle_timeout, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => break Err(Fatal::Gone),
                Err(_) => break Err(Fatal::Protocol("peer did not answer the N-EVENT-REPORT".into())),
            };
            match event {
                Event::Command { command, .. }
                    if command.command_field == field::N_EVENT_REPORT_RSP
                        && command.message_id_being_responded_to == Some(message_id) =>
                {
                    if command.has_dataset() {
                        // Nothing in a report's answer matters to us; skip it.
                        loop {
                            match tokio::time::timeout(self.config.idle_timeout, self.events.recv()).await {
                                Ok(Some(Event::Data { last: true, .. })) => break,
                                Ok(Some(Event::Data { .. })) => continue,
                                Ok(Some(other)) => {
                                    self.deferred.push_back(other);
                                    break;
                                }
                                _ => break,
                            }
                        }
                    }
                    break Ok(command.status.unwrap_or(status::PROCESSING_FAILURE));
                }
                Event::Command { .. } | Event::Data { .. } if self.deferred.len() < MAX_DEFERRED_EVENTS => {
                    self.deferred.push_back(event);
                }
                other => {
                    // Release, abort, close, a protocol error, or too much traffic: the report
                    // was not answered here.
                    self.deferred.push_back(other);
                    break Err(Fatal::Protocol(
                        "the peer went on without answering the N-EVENT-REPORT".into(),
                    ));
                }
            }
        };
        match answered {
            Ok(code) => {
                let outcome = ReportOutcome::Answered {
                    status: code,
                    same_association: true,
                };
                log_report(&self.info, &report, &outcome);
                self.services
                    .commitment_reported(&self.info, &report, &outcome)
                    .await;
                Ok(())
            }
            Err(fatal) => {
                tracing::info!(assoc = self.info.id, transaction = %report.transaction_uid, "report unanswered on the requesting association; sending it on a new one");
                report_elsewhere(
                    self.config.clone(),
                    self.services.clone(),
                    self.info.clone(),
                    report,
                );
                match fatal {
                    // The event that ended the wait is in `deferred` and decides what follows.
                    Fatal::Protocol(_) if !self.deferred.is_empty() => Ok(()),
                    other => Err(other),
                }
            }
        }
    }
}

/// Proposals for a C-MOVE destination: each SOP class in its stored syntaxes, then in the
/// uncompressed little-endian syntaxes we can fall back to.
pub(crate) fn sub_operation_proposals(items: &[RetrieveItem]) -> Vec<(String, Vec<String>)> {
    let mut classes: Vec<(String, Vec<String>)> = Vec::new();
    for item in items {
        match classes.iter_mut().find(|(c, _)| *c == item.sop_class_uid) {
            Some((_, syntaxes)) => {
                if !syntaxes.contains(&item.transfer_syntax_uid) {
                    syntaxes.push(item.transfer_syntax_uid.clone());
                }
            }
            None => classes.push((item.sop_class_uid.clone(), vec![item.transfer_syntax_uid.clone()])),
        }
    }
    let mut proposals = Vec::new();
    for (class, stored) in classes {
        // Each stored syntax alone first, so the destination can take the original bytes;
        // then the uncompressed little-endian syntaxes we can convert native ones to.
        let fallback: Vec<String> = [EXPLICIT_VR_LE, IMPLICIT_VR_LE]
            .iter()
            .filter(|ts| !stored.iter().any(|s| s == *ts))
            .map(|ts| ts.to_string())
            .collect();
        for ts in stored {
            proposals.push((class.clone(), vec![ts]));
        }
        if !fallback.is_empty() {
            proposals.push((class, fallback));
        }
    }
    // An association carries at most 128 presentation contexts (odd IDs 1..255).
    proposals.truncate(128);
    proposals
}

/// Picks the context to send `item` on: its stored syntax if accepted, else a syntax the
/// services can convert it to (explicit before implicit little endian).
pub(crate) fn choose_context<'c>(
    contexts: impl Iterator<Item = (u8, &'c str, &'c str)>,
    item: &RetrieveItem,
    services: &dyn DimseServices,
) -> Option<(u8, String)> {
    let candidates: Vec<_> = contexts
        .filter(|(_, abs, _)| *abs == item.sop_class_uid)
        .collect();
    if let Some((id, _, ts)) = candidates
        .iter()
        .find(|(_, _, ts)| *ts == item.transfer_syntax_uid)
    {
        return Some((*id, ts.to_string()));
    }
    for preferred in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
        if let Some((id, _, ts)) = candidates.iter().find(|(_, _, ts)| *ts == preferred) {
            if services.can_send_as(item, ts) {
                return Some((*id, ts.to_string()));
            }
        }
    }
    candidates
        .iter()
        .find(|(_, _, ts)| services.can_send_as(item, ts))
        .map(|(id, _, ts)| (*id, ts.to_string()))
}

pub(crate) fn store_request(
    item: &RetrieveItem,
    message_id: u16,
    originator: Option<(&str, u16)>,
) -> Command {
    Command {
        command_field: field::C_STORE_RQ,
        affected_sop_class_uid: Some(item.sop_class_uid.clone()),
        affected_sop_instance_uid: Some(item.sop_instance_uid.clone()),
        message_id: Some(message_id),
        priority: Some(PRIORITY_MEDIUM),
        data_set_type: HAS_DATASET,
        move_originator_ae: originator.map(|(ae, _)| ae.to_string()),
        move_originator_message_id: originator.map(|(_, id)| id),
        ..Command::default()
    }
}

fn ts_of(context: &Context) -> &str {
    &context.transfer_syntax
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubOutcome {
    Completed,
    Warning,
    Failed,
}

impl SubOutcome {
    fn from_status(code: u16) -> SubOutcome {
        let st = DimseStatus { code, comment: None };
        if st.is_success() {
            SubOutcome::Completed
        } else if st.is_warning() {
            SubOutcome::Warning
        } else {
            SubOutcome::Failed
        }
    }
}

/// Sub-operation counters of a C-GET or C-MOVE.
struct Progress {
    total: usize,
    completed: usize,
    failed: usize,
    warning: usize,
    failed_uids: Vec<String>,
}

fn clamp(n: usize) -> u16 {
    n.min(u16::MAX as usize) as u16
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total,
            completed: 0,
            failed: 0,
            warning: 0,
            failed_uids: Vec::new(),
        }
    }

    fn record(&mut self, outcome: SubOutcome, uid: &str) {
        match outcome {
            SubOutcome::Completed => self.completed += 1,
            SubOutcome::Warning => self.warning += 1,
            SubOutcome::Failed => {
                self.failed += 1;
                self.failed_uids.push(uid.to_string());
            }
        }
    }

    fn fill(&self, rsp: &mut Command, with_remaining: bool) {
        let done = self.completed + self.failed + self.warning;
        rsp.remaining = with_remaining.then(|| clamp(self.total - done));
        rsp.completed = Some(clamp(self.completed));
        rsp.failed = Some(clamp(self.failed));
        rsp.warning = Some(clamp(self.warning));
    }

    /// Final response identifier listing failed instances (Failed SOP Instance UID List).
    fn failed_identifier(&self, ts_uid: &str) -> Option<Vec<u8>> {
        if self.failed_uids.is_empty() {
            return None;
        }
        let ts = TransferSyntaxRegistry.get(ts_uid)?;
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::FAILED_SOP_INSTANCE_UID_LIST,
            VR::UI,
            dicom_core::PrimitiveValue::Strs(self.failed_uids.iter().cloned().collect()),
        ));
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, ts).ok()?;
        Some(out)
    }
}
