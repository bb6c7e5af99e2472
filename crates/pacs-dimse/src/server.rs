//! The association acceptor: listener, per-association reader and handler, dispatch.
//!
//! Shape (after mini-redis): `serve` accepts sockets under a semaphore that caps concurrent
//! associations, and stops on the shutdown signal, waiting a bounded time for associations in
//! flight. Each association runs two futures on one task: a reader that turns PDUs into
//! [`Event`]s (and flags C-CANCEL out of band), and a handler that executes one DIMSE operation
//! at a time and writes the responses.

use std::collections::{HashMap, HashSet};
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
use pacs_model::InformationModel;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::client::ScuAssociation;
use crate::command::{field, status, Command, HAS_DATASET, NO_DATASET, PRIORITY_MEDIUM};
use crate::pdu::{self, Pdu, PduReader, PduWriter};
use crate::sop_classes::{self, STORAGE_SOP_CLASSES};
use crate::{
    AssociationInfo, DimseError, DimseServices, DimseStatus, FindKind, RefusedAssociation, RetrieveItem,
    RetrieveKind, StoreRequest,
};

const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Command sets and query identifiers are small; anything beyond these is refused.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
const MAX_IDENTIFIER_BYTES: usize = 1024 * 1024;

/// How the acceptor behaves; built by the binary from its configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub ae_title: String,
    /// Largest PDU we announce and accept.
    pub max_pdu: u32,
    pub max_associations: usize,
    /// An association with no activity for this long is aborted.
    pub idle_timeout: Duration,
    /// Time allowed for the A-ASSOCIATE-RQ to arrive after the TCP connection (ARTIM).
    pub artim_timeout: Duration,
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
            artim_timeout: Duration::from_secs(30),
            allowed_calling_aes: None,
            accept_unknown_sop_classes: true,
            check_called_ae_title: false,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Accepts associations until `shutdown` turns true, then waits (bounded) for those in flight.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    services: Arc<dyn DimseServices>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(config.max_associations));
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
            _ = wait_true(&mut shutdown) => break,
        };
        let _ = socket.set_nodelay(true);
        // A modality that loses power mid-transfer never closes its connection: keepalive
        // probes find out, on top of the idle timeout.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&keepalive);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "association refused: too many concurrent associations");
            metrics::counter!("openpacs_dimse_associations_refused_total", "reason" => "limit").increment(1);
            if let Ok(slot) = rejecters.clone().try_acquire_owned() {
                let artim = config.artim_timeout;
                tokio::spawn(async move {
                    reject_busy(socket, artim).await;
                    drop(slot);
                });
            }
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let config = config.clone();
        let services = services.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            metrics::gauge!("openpacs_dimse_associations_active").increment(1.0);
            metrics::counter!("openpacs_dimse_associations_total").increment(1);
            handle_connection(socket, peer, id, config, services, shutdown).await;
            metrics::gauge!("openpacs_dimse_associations_active").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let all = config.max_associations as u32;
    if tokio::time::timeout(config.shutdown_grace, limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over with associations still open");
    }
    Ok(())
}

/// Resolves once the flag is true (or its sender is gone). The `Ref` guard that
/// `wait_for` returns is not `Send`, so it is dropped here rather than held in a `select!`.
async fn wait_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Answers an association request with A-ASSOCIATE-RJ (transient, service provider
/// presentation, local limit exceeded) without negotiating anything.
async fn reject_busy(mut socket: TcpStream, artim: Duration) {
    let mut header = [0u8; 6];
    let read = async {
        socket.read_exact(&mut header).await?;
        let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        if header[0] != 0x01 || len > 1 << 20 {
            return Ok(());
        }
        let mut rest = (&mut socket).take(len as u64);
        tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
        socket.write_all(&[0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2]).await?;
        socket.flush().await
    };
    let _ = tokio::time::timeout(artim, read).await;
}

/// Calling-AE allow-list; remembers why it refused so the refusal can be audited.
struct AllowList {
    allowed: Option<HashSet<String>>,
    /// Our AE title, when the called AE title must match it.
    called: Option<String>,
    /// (calling AE title, reason) of a refusal.
    refusal: Arc<Mutex<Option<(String, String)>>>,
}

impl AccessControl for AllowList {
    fn check_access(
        &self,
        _this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if let Some(ours) = &self.called {
            if ours != called_ae_title.trim() {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some((
                        calling_ae_title.trim().to_string(),
                        format!("called AE title {called_ae_title:?} is not ours"),
                    ));
                }
                return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
            }
        }
        match &self.allowed {
            Some(allowed) if !allowed.contains(calling_ae_title.trim()) => {
                if let Ok(mut slot) = self.refusal.lock() {
                    *slot = Some((
                        calling_ae_title.trim().to_string(),
                        format!("calling AE title {calling_ae_title:?} not allowed"),
                    ));
                }
                Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
            }
            _ => Ok(()),
        }
    }
}

/// Role selection: a C-GET requestor asks to be SCP for storage classes; grant what it asks.
struct StorageRoles;

impl Negotiation for StorageRoles {
    fn negotiate_roles(&self, sop_class_uid: &str, scu: bool, scp: bool) -> Option<RequestorRoles> {
        sop_classes::is_storage(sop_class_uid).then_some(RequestorRoles { scu, scp })
    }
}

/// An accepted presentation context.
#[derive(Clone, Debug)]
struct Context {
    abstract_syntax: String,
    transfer_syntax: String,
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
    let access = AllowList {
        allowed: config.allowed_calling_aes.clone(),
        called: config.check_called_ae_title.then(|| config.ae_title.clone()),
        refusal: refusal.clone(),
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(access)
        .with_negotiation(StorageRoles)
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        .read_timeout(config.artim_timeout)
        .promiscuous(config.accept_unknown_sop_classes)
        .with_abstract_syntax(sop_classes::VERIFICATION);
    for uid in sop_classes::QUERY_RETRIEVE {
        options = options.with_abstract_syntax(*uid);
    }
    for (uid, _) in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    let mut assoc = match options.establish_async(socket).await {
        Ok(assoc) => assoc,
        Err(e) => {
            let refusal = refusal.lock().ok().and_then(|slot| slot.clone());
            tracing::info!(%peer, error = %e, "association not established");
            if let Some((calling_ae, reason)) = refusal {
                metrics::counter!("openpacs_dimse_associations_refused_total", "reason" => "calling_ae")
                    .increment(1);
                services
                    .association_refused(&RefusedAssociation {
                        calling_ae,
                        called_ae: config.ae_title.clone(),
                        peer,
                        reason,
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
    let (mut rd, mut wr) = stream.split();
    let (events_tx, events_rx) = mpsc::channel(8);
    let (cancel_tx, cancel_rx) = watch::channel(CancelRequest::default());
    let (done_tx, done_rx) = watch::channel(false);
    let reader = read_events(
        &mut rd,
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
    };
    let handling = async {
        handler.run(&mut wr, shutdown).await;
        let _ = tokio::time::timeout(config.idle_timeout, wr.shutdown()).await;
        // Stops the reader even when it is blocked handing over an event nobody will take.
        let _ = done_tx.send(true);
    };
    tokio::join!(reader, handling);
}

/// What the reader hands to the handler.
#[derive(Debug)]
enum Event {
    Command { context_id: u8, command: Command },
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
            Ok(Some(pdu)) => pdu,
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
                                    command: c,
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
}

impl Handler {
    async fn run<W: AsyncWrite + Unpin>(&mut self, wr: &mut W, mut shutdown: watch::Receiver<bool>) {
        loop {
            let event = tokio::select! {
                biased;
                event = tokio::time::timeout(self.config.idle_timeout, self.events.recv()) => match event {
                    Ok(event) => event,
                    Err(_) => {
                        tracing::info!(assoc = self.info.id, "idle timeout, aborting association");
                        let _ = self.writer.send_abort(wr, 0).await;
                        return;
                    }
                },
                _ = wait_true(&mut shutdown) => {
                    tracing::info!(assoc = self.info.id, "aborting idle association for shutdown");
                    let _ = self.writer.send_abort(wr, 0).await;
                    return;
                }
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
                    let r = self.dispatch(wr, context_id, command).await;
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
                    metrics::counter!("openpacs_dimse_protocol_errors_total").increment(1);
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
                let mut rsp = command.response(other | 0x8000, status::UNRECOGNIZED_OPERATION);
                rsp.error_comment = Some(format!("operation 0x{other:04X} not supported"));
                self.writer.send_command(wr, context_id, &rsp).await?;
                Ok(())
            }
        }
    }

    /// The next event in the middle of an operation; a peer silent for the idle timeout is gone.
    async fn next_event(&mut self) -> Result<Option<Event>, Fatal> {
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
        let mut bytes = Vec::new();
        let mut too_large = false;
        loop {
            let (data, last) = self.next_data(context_id).await?;
            if bytes.len() + data.len() > MAX_IDENTIFIER_BYTES {
                too_large = true;
            } else {
                bytes.extend_from_slice(&data);
            }
            if last {
                break;
            }
        }
        if too_large {
            return Ok(Err(DimseStatus::new(
                status::CANNOT_UNDERSTAND,
                "identifier too large",
            )));
        }
        let Some(ts) = TransferSyntaxRegistry.get(&context.transfer_syntax) else {
            return Ok(Err(DimseStatus::new(
                status::CANNOT_UNDERSTAND,
                "unknown transfer syntax",
            )));
        };
        let layout = crate::dataset_check::Layout::of(&context.transfer_syntax);
        if let Err(e) = crate::dataset_check::check_bytes(&bytes, layout, false) {
            return Ok(Err(DimseStatus::new(
                status::CANNOT_UNDERSTAND,
                format!("unreadable identifier: {e}"),
            )));
        }
        Ok(InMemDicomObject::read_dataset_with_ts(&bytes[..], ts)
            .map_err(|e| DimseStatus::new(status::CANNOT_UNDERSTAND, format!("unreadable identifier: {e}"))))
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
        metrics::counter!("openpacs_dimse_stores_total", "outcome" => outcome).increment(1);
        metrics::counter!("openpacs_dimse_store_bytes_total").increment(received);
        metrics::histogram!("openpacs_dimse_store_seconds").record(started.elapsed().as_secs_f64());
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
            MODALITY_WORKLIST_FIND => Some(FindKind::ModalityWorklist),
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
        metrics::counter!("openpacs_dimse_finds_total").increment(1);
        metrics::histogram!("openpacs_dimse_find_seconds").record(started.elapsed().as_secs_f64());
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
            RetrieveKind::Move { destination } => match self.services.resolve_ae(destination) {
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
                match ScuAssociation::connect(
                    &addr,
                    &self.config.ae_title,
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
        metrics::counter!("openpacs_dimse_retrieves_total", "kind" => if is_get { "get" } else { "move" })
            .increment(1);
        metrics::histogram!("openpacs_dimse_retrieve_seconds").record(started.elapsed().as_secs_f64());
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
        let mut dataset = match self.services.open_dataset(item, &ts).await {
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
        let mut dataset = match self.services.open_dataset(item, &ts).await {
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
