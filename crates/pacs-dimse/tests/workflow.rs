//! The modality workflow over DIMSE — Modality Worklist C-FIND, MPPS N-CREATE/N-SET, Storage
//! Commitment N-ACTION → N-EVENT-REPORT — served by `pacs_dimse::serve` in front of an
//! in-memory `DimseServices`, and driven by peers no one here wrote: pynetdicom
//! (`tests/interop/peer.py`) and DCMTK's `findscu`. A raw client built on the crate's own PDU
//! codec sends the malformed command sets real peers refuse to produce.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use pacs_dimse::command::{field, status, Command, HAS_DATASET};
use pacs_dimse::commitment::CommitmentReport;
use pacs_dimse::pdu::{Pdu, PduReader, PduWriter};
use pacs_dimse::{
    AssociationInfo, CommitmentDelivery, CommitmentFuture, CommitmentRequest, CommitmentResult,
    DatasetStream, DimseServices, DimseStatus, FindKind, NResponse, RefusedAssociation, ReportOutcome,
    RetrieveItem, RetrieveKind, ServerConfig, StoreRequest, StoreSink,
};
use pacs_model::InformationModel;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
const COMMITMENT: &str = "1.2.840.10008.1.20.1";
const COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

// ---------------------------------------------------------------------------------------------
// The in-memory services
// ---------------------------------------------------------------------------------------------

/// Worklist items, an MPPS table with the state rules done simply, and a set of "stored"
/// instances to commit.
struct Memory {
    worklist: Vec<InMemDicomObject>,
    mpps: Mutex<HashMap<String, String>>,
    stored: HashSet<String>,
    delivery: CommitmentDelivery,
    /// AE title → "host:port", for reports on a new association.
    peers: Mutex<HashMap<String, String>>,
    reports: Mutex<Vec<(String, ReportOutcome)>>,
    next_uid: AtomicU64,
}

impl Memory {
    fn new(delivery: CommitmentDelivery) -> Memory {
        let item = |patient: &str, name: &str, accession: &str, modality: &str, station: &str| {
            let mut sps = InMemDicomObject::new_empty();
            sps.put(text(tags::MODALITY, VR::CS, modality));
            sps.put(text(tags::SCHEDULED_STATION_AE_TITLE, VR::AE, station));
            sps.put(text(
                tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
                VR::DA,
                "20240611",
            ));
            sps.put(text(tags::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, accession));
            let mut obj = InMemDicomObject::new_empty();
            obj.put(text(tags::PATIENT_ID, VR::LO, patient));
            obj.put(text(tags::PATIENT_NAME, VR::PN, name));
            obj.put(text(tags::ACCESSION_NUMBER, VR::SH, accession));
            obj.put(DataElement::new(
                tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![sps]),
            ));
            obj
        };
        Memory {
            worklist: vec![
                item("P1", "DOE^JANE", "ACC1", "CT", "CT01"),
                item("P2", "ROE^RICHARD", "ACC2", "MR", "MR01"),
                item("P3", "POE^EDGAR", "ACC3", "CT", "CT02"),
            ],
            mpps: Mutex::new(HashMap::new()),
            stored: ["1.2.3.1", "1.2.3.2"].iter().map(|s| s.to_string()).collect(),
            delivery,
            peers: Mutex::new(HashMap::new()),
            reports: Mutex::new(Vec::new()),
            next_uid: AtomicU64::new(1),
        }
    }

    fn reports(&self) -> Vec<(String, ReportOutcome)> {
        self.reports.lock().unwrap().clone()
    }
}

fn text(tag: dicom_core::Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn str_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
}

/// Single-value matching on the keys given with a value, at the top level and in the first
/// Scheduled Procedure Step Sequence item (the real engine lives in pacs-model).
fn worklist_matches(item: &InMemDicomObject, identifier: &InMemDicomObject) -> bool {
    let same = |a: &InMemDicomObject, b: &InMemDicomObject, tag| match str_of(b, tag) {
        Some(want) if !want.is_empty() && want != "*" => str_of(a, tag).as_deref() == Some(want.as_str()),
        _ => true,
    };
    let first = |obj: &InMemDicomObject| {
        obj.get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first().cloned())
    };
    let top = [tags::PATIENT_ID, tags::ACCESSION_NUMBER]
        .into_iter()
        .all(|t| same(item, identifier, t));
    let sps = match (first(item), first(identifier)) {
        (Some(have), Some(want)) => [tags::MODALITY, tags::SCHEDULED_STATION_AE_TITLE]
            .into_iter()
            .all(|t| same(&have, &want, t)),
        _ => true,
    };
    top && sps
}

const FINAL_STATES: [&str; 2] = ["COMPLETED", "DISCONTINUED"];

#[async_trait]
impl DimseServices for Memory {
    async fn association_refused(&self, _refused: &RefusedAssociation) {}

    async fn begin_store(
        &self,
        _assoc: &AssociationInfo,
        _request: StoreRequest,
    ) -> Result<Box<dyn StoreSink>, DimseStatus> {
        Err(DimseStatus::new(status::PROCESSING_FAILURE, "not a store"))
    }

    async fn store_refused(&self, _assoc: &AssociationInfo, _uid: &str, _status: &DimseStatus) {}

    async fn find(
        &self,
        _assoc: &AssociationInfo,
        kind: FindKind,
        identifier: InMemDicomObject,
        results: mpsc::Sender<InMemDicomObject>,
    ) -> Result<(), DimseStatus> {
        if kind != FindKind::ModalityWorklist {
            return Err(DimseStatus::new(status::SOP_CLASS_NOT_SUPPORTED, "worklist only"));
        }
        for item in self.worklist.iter().filter(|i| worklist_matches(i, &identifier)) {
            if results.send(item.clone()).await.is_err() {
                break;
            }
            // Slow enough for a C-CANCEL to arrive between two matches.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Ok(())
    }

    async fn retrieve(
        &self,
        _assoc: &AssociationInfo,
        _model: InformationModel,
        _kind: RetrieveKind,
        _identifier: InMemDicomObject,
    ) -> Result<Vec<RetrieveItem>, DimseStatus> {
        Ok(Vec::new())
    }

    fn can_send_as(&self, _item: &RetrieveItem, _ts: &str) -> bool {
        false
    }

    async fn open_dataset(
        &self,
        _assoc: &AssociationInfo,
        _item: &RetrieveItem,
        _ts: &str,
    ) -> Result<DatasetStream, DimseStatus> {
        Err(DimseStatus::new(status::PROCESSING_FAILURE, "nothing stored"))
    }

    fn resolve_ae(&self, _assoc: &AssociationInfo, ae_title: &str) -> Option<String> {
        self.peers.lock().unwrap().get(ae_title).cloned()
    }

    async fn mpps_create(
        &self,
        _assoc: &AssociationInfo,
        sop_instance_uid: Option<String>,
        dataset: InMemDicomObject,
    ) -> Result<(String, NResponse), DimseStatus> {
        let state = str_of(&dataset, tags::PERFORMED_PROCEDURE_STEP_STATUS).ok_or_else(|| {
            DimseStatus::new(
                status::MISSING_ATTRIBUTE,
                "missing Performed Procedure Step Status",
            )
        })?;
        if state != "IN PROGRESS" {
            return Err(DimseStatus::new(
                status::INVALID_ATTRIBUTE_VALUE,
                "a procedure step is created IN PROGRESS",
            ));
        }
        let uid = sop_instance_uid
            .unwrap_or_else(|| format!("2.25.{}", 1000 + self.next_uid.fetch_add(1, Ordering::Relaxed)));
        let mut table = self.mpps.lock().unwrap();
        if table.contains_key(&uid) {
            return Err(DimseStatus::new(
                status::DUPLICATE_SOP_INSTANCE,
                "procedure step exists",
            ));
        }
        table.insert(uid.clone(), state.clone());
        let mut answer = InMemDicomObject::new_empty();
        answer.put(text(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, &state));
        Ok((uid, NResponse::success(Some(answer))))
    }

    async fn mpps_set(
        &self,
        _assoc: &AssociationInfo,
        sop_instance_uid: String,
        modifications: InMemDicomObject,
    ) -> Result<NResponse, DimseStatus> {
        let mut table = self.mpps.lock().unwrap();
        let current = table
            .get(&sop_instance_uid)
            .cloned()
            .ok_or_else(|| DimseStatus::new(status::NO_SUCH_SOP_INSTANCE, "no such procedure step"))?;
        if FINAL_STATES.contains(&current.as_str()) {
            return Err(DimseStatus::new(
                status::PROCESSING_FAILURE,
                "Performed Procedure Step Object may no longer be updated",
            ));
        }
        let next = match str_of(&modifications, tags::PERFORMED_PROCEDURE_STEP_STATUS) {
            None => current,
            Some(s) if s == "IN PROGRESS" || FINAL_STATES.contains(&s.as_str()) => s,
            Some(s) => {
                return Err(DimseStatus::new(
                    status::INVALID_ATTRIBUTE_VALUE,
                    format!("{s:?} is not a procedure step status"),
                ))
            }
        };
        table.insert(sop_instance_uid, next.clone());
        let mut answer = InMemDicomObject::new_empty();
        answer.put(text(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, &next));
        Ok(NResponse::success(Some(answer)))
    }

    async fn storage_commitment(
        &self,
        _assoc: &AssociationInfo,
        request: CommitmentRequest,
    ) -> Result<CommitmentFuture, DimseStatus> {
        let stored = self.stored.clone();
        Ok(Box::pin(async move {
            // Checking takes a moment: a requester that leaves at once is gone by the end.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut result = CommitmentResult::default();
            for sop in request.instances {
                if stored.contains(&sop.sop_instance_uid) {
                    result.committed.push(sop);
                } else {
                    result
                        .failed
                        .push((sop, pacs_dimse::command::failure_reason::NO_SUCH_OBJECT_INSTANCE));
                }
            }
            result
        }))
    }

    fn commitment_delivery(&self) -> CommitmentDelivery {
        self.delivery
    }

    async fn commitment_reported(
        &self,
        _assoc: &AssociationInfo,
        report: &CommitmentReport,
        outcome: &ReportOutcome,
    ) {
        self.reports
            .lock()
            .unwrap()
            .push((report.transaction_uid.clone(), outcome.clone()));
    }
}

/// Services with only the required methods: the workflow defaults must refuse.
struct Bare;

#[async_trait]
impl DimseServices for Bare {
    async fn association_refused(&self, _refused: &RefusedAssociation) {}
    async fn begin_store(
        &self,
        _assoc: &AssociationInfo,
        _request: StoreRequest,
    ) -> Result<Box<dyn StoreSink>, DimseStatus> {
        Err(DimseStatus::new(status::PROCESSING_FAILURE, "no"))
    }
    async fn store_refused(&self, _assoc: &AssociationInfo, _uid: &str, _status: &DimseStatus) {}
    async fn find(
        &self,
        _assoc: &AssociationInfo,
        _kind: FindKind,
        _identifier: InMemDicomObject,
        _results: mpsc::Sender<InMemDicomObject>,
    ) -> Result<(), DimseStatus> {
        Err(DimseStatus::new(status::SOP_CLASS_NOT_SUPPORTED, "no"))
    }
    async fn retrieve(
        &self,
        _assoc: &AssociationInfo,
        _model: InformationModel,
        _kind: RetrieveKind,
        _identifier: InMemDicomObject,
    ) -> Result<Vec<RetrieveItem>, DimseStatus> {
        Ok(Vec::new())
    }
    fn can_send_as(&self, _item: &RetrieveItem, _ts: &str) -> bool {
        false
    }
    async fn open_dataset(
        &self,
        _assoc: &AssociationInfo,
        _item: &RetrieveItem,
        _ts: &str,
    ) -> Result<DatasetStream, DimseStatus> {
        Err(DimseStatus::new(status::PROCESSING_FAILURE, "no"))
    }
    fn resolve_ae(&self, _assoc: &AssociationInfo, _ae_title: &str) -> Option<String> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct Server {
    port: u16,
    stop: watch::Sender<bool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn start(services: Arc<dyn DimseServices>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let config = ServerConfig {
        idle_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(pacs_dimse::serve(listener, Arc::new(config), services, stopped));
    Server { port, stop }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `tests/interop/peer.py` and parses the JSON object it prints.
async fn peer(args: &[&str]) -> Value {
    let output = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/interop/peer.py"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run python3 peer.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "peer.py printed no JSON ({e}); exit {:?}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits until the services have heard about `n` reports (they are delivered in the background).
async fn wait_reports(memory: &Memory, n: usize) -> Vec<(String, ReportOutcome)> {
    for _ in 0..100 {
        if memory.reports().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    memory.reports()
}

/// One request on a fresh association built from the crate's own PDU codec, for command sets
/// that real peers refuse to send. Returns the response command.
async fn raw_request(
    port: u16,
    abstract_syntax: &str,
    command: Command,
    dataset: Option<&InMemDicomObject>,
) -> Command {
    let mut raw = Raw::connect(port, &[abstract_syntax]).await;
    raw.send(abstract_syntax, &command, dataset).await;
    let (response, _) = raw.recv().await;
    raw.release().await;
    response
}

/// A requester driven message by message, for exchanges no real peer can be made to do.
struct Raw {
    assoc: dicom_ul::association::AsyncClientAssociation<tokio::net::TcpStream>,
    writer: PduWriter,
    reader: PduReader,
}

impl Raw {
    async fn connect(port: u16, abstract_syntaxes: &[&str]) -> Raw {
        let mut options = dicom_ul::association::client::ClientAssociationOptions::new()
            .calling_ae_title("RAWSCU")
            .called_ae_title("OPENPACS");
        for a in abstract_syntaxes {
            options = options.with_presentation_context(*a, vec![EXPLICIT_LE]);
        }
        let assoc = options
            .establish_async(format!("127.0.0.1:{port}").as_str())
            .await
            .expect("associate");
        let writer = PduWriter::new(assoc.acceptor_max_pdu_length());
        Raw {
            assoc,
            writer,
            reader: PduReader::new(1 << 20),
        }
    }

    fn context(&self, abstract_syntax: &str) -> u8 {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance
                    && pc.abstract_syntax.trim_end_matches('\0') == abstract_syntax
            })
            .map(|pc| pc.id)
            .expect("context accepted")
    }

    async fn send(&mut self, abstract_syntax: &str, command: &Command, dataset: Option<&InMemDicomObject>) {
        let context_id = self.context(abstract_syntax);
        let stream = self.assoc.inner_stream();
        self.writer
            .send_command(stream, context_id, command)
            .await
            .expect("send command");
        if let Some(ds) = dataset {
            let ts = TransferSyntaxRegistry
                .get(EXPLICIT_LE)
                .expect("explicit VR little endian");
            let mut bytes = Vec::new();
            ds.write_dataset_with_ts(&mut bytes, ts).expect("encode");
            self.writer
                .send_dataset(stream, context_id, &bytes)
                .await
                .expect("send data set");
        }
    }

    /// The next message: its command and data set.
    async fn recv(&mut self) -> (Command, Option<InMemDicomObject>) {
        let (mut command, mut data) = (Vec::new(), Vec::new());
        let mut decoded: Option<Command> = None;
        loop {
            let pdu = tokio::time::timeout(
                Duration::from_secs(10),
                self.reader.read(self.assoc.inner_stream()),
            )
            .await
            .expect("a message in time")
            .expect("read");
            let Some(Pdu::Data(pdvs)) = pdu else {
                panic!("expected a message, got {pdu:?}")
            };
            for pdv in pdvs {
                if pdv.is_command {
                    command.extend_from_slice(&pdv.data);
                    if pdv.is_last {
                        let c = Command::decode(&command).expect("command decodes");
                        if !c.has_dataset() {
                            return (c, None);
                        }
                        decoded = Some(c);
                    }
                } else {
                    data.extend_from_slice(&pdv.data);
                    if pdv.is_last {
                        let ts = TransferSyntaxRegistry.get(EXPLICIT_LE).expect("ts");
                        let ds = InMemDicomObject::read_dataset_with_ts(&data[..], ts).expect("data set");
                        return (decoded.expect("command before data"), Some(ds));
                    }
                }
            }
        }
    }

    async fn release(mut self) {
        let _ = self.writer.send_release_rq(self.assoc.inner_stream()).await;
    }
}

fn request(command_field: u16, class: Option<&str>, instance: Option<&str>) -> Command {
    let set = command_field == field::N_SET_RQ || command_field == field::N_ACTION_RQ;
    Command {
        command_field,
        affected_sop_class_uid: class.filter(|_| !set).map(str::to_string),
        requested_sop_class_uid: class.filter(|_| set).map(str::to_string),
        affected_sop_instance_uid: instance.filter(|_| !set).map(str::to_string),
        requested_sop_instance_uid: instance.filter(|_| set).map(str::to_string),
        message_id: Some(5),
        data_set_type: HAS_DATASET,
        ..Command::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Modality Worklist
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_find_answers_pynetdicom_and_findscu_and_honours_cancel() {
    let server = start(Arc::new(Memory::new(CommitmentDelivery::SameAssociation))).await;
    let port = server.port.to_string();

    let out = peer(&[
        "mwl-find",
        "--port",
        &port,
        "-k",
        "PatientName=",
        "-k",
        "AccessionNumber=",
        "-k",
        "ScheduledProcedureStepSequence.Modality=CT",
        "-k",
        "ScheduledProcedureStepSequence.ScheduledStationAETitle=",
    ])
    .await;
    assert_eq!(out["status"], 0, "{out}");
    let accessions: Vec<_> = out["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|m| m["AccessionNumber"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(accessions, ["ACC1", "ACC3"], "{out}");
    assert_eq!(
        out["matches"][0]["ScheduledProcedureStepSequence"][0]["ScheduledStationAETitle"],
        "CT01"
    );

    // DCMTK's findscu in worklist mode, responses extracted to files.
    let dir = tempfile::tempdir().expect("tempdir");
    let findscu = tokio::process::Command::new("/usr/bin/findscu")
        .env("TCP_NODELAY", "1")
        .args(["-v", "-W", "-aet", "FINDSCU", "-aec", "OPENPACS", "-X", "-od"])
        .arg(dir.path())
        .args(["-k", "PatientName", "-k", "AccessionNumber=ACC2"])
        .args(["-k", "ScheduledProcedureStepSequence[0].Modality"])
        .args(["127.0.0.1", &port])
        .output()
        .await
        .expect("run findscu");
    let log =
        String::from_utf8_lossy(&findscu.stderr).to_string() + &String::from_utf8_lossy(&findscu.stdout);
    assert!(findscu.status.success(), "{log}");
    assert!(log.contains("Final Find Response (Success)"), "{log}");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "{log}");
    let rsp = dicom_object::open_file(files[0].path()).expect("findscu response file");
    assert_eq!(str_of(&rsp, tags::PATIENT_NAME).as_deref(), Some("ROE^RICHARD"));

    // C-CANCEL after the first match: the search stops with status FE00.
    let out = peer(&[
        "mwl-find",
        "--port",
        &port,
        "--cancel-after",
        "1",
        "-k",
        "PatientID=",
    ])
    .await;
    assert_eq!(out["status"], 0xFE00, "{out}");
    assert_eq!(out["cancel_sent"], true);
    assert!(out["pending"].as_u64().unwrap_or(0) < 3, "{out}");
}

// ---------------------------------------------------------------------------------------------
// MPPS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpps_create_and_set_pass_statuses_and_data_sets_through() {
    let server = start(Arc::new(Memory::new(CommitmentDelivery::SameAssociation))).await;
    let port = server.port.to_string();
    let uid = "1.2.826.0.1.3680043.10.1.77";
    let in_progress = "PerformedProcedureStepStatus=IN PROGRESS";

    let created = peer(&[
        "mpps-create",
        "--port",
        &port,
        "--uid",
        uid,
        "-k",
        in_progress,
        "-k",
        "Modality=CT",
    ])
    .await;
    assert_eq!(created["status"], 0, "{created}");
    assert_eq!(created["affected_sop_instance_uid"], uid, "{created}");
    assert_eq!(created["dataset"]["PerformedProcedureStepStatus"], "IN PROGRESS");

    let again = peer(&["mpps-create", "--port", &port, "--uid", uid, "-k", in_progress]).await;
    assert_eq!(again["status"], status::DUPLICATE_SOP_INSTANCE, "{again}");

    // Without an instance UID the services choose one, and the response carries it.
    let generated = peer(&["mpps-create", "--port", &port, "-k", in_progress]).await;
    assert_eq!(generated["status"], 0, "{generated}");
    assert!(
        generated["affected_sop_instance_uid"]
            .as_str()
            .unwrap_or("")
            .starts_with("2.25."),
        "{generated}"
    );

    let missing = peer(&["mpps-create", "--port", &port, "-k", "Modality=CT"]).await;
    assert_eq!(missing["status"], status::MISSING_ATTRIBUTE, "{missing}");
    let wrong = peer(&[
        "mpps-create",
        "--port",
        &port,
        "-k",
        "PerformedProcedureStepStatus=COMPLETED",
    ])
    .await;
    assert_eq!(wrong["status"], status::INVALID_ATTRIBUTE_VALUE, "{wrong}");

    let bad = peer(&[
        "mpps-set",
        "--port",
        &port,
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=DONE",
    ])
    .await;
    assert_eq!(bad["status"], status::INVALID_ATTRIBUTE_VALUE, "{bad}");
    let done = peer(&[
        "mpps-set",
        "--port",
        &port,
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=COMPLETED",
    ])
    .await;
    assert_eq!(done["status"], 0, "{done}");
    assert_eq!(done["affected_sop_instance_uid"], uid, "{done}");
    assert_eq!(done["dataset"]["PerformedProcedureStepStatus"], "COMPLETED");
    let final_state = peer(&[
        "mpps-set",
        "--port",
        &port,
        "--uid",
        uid,
        "-k",
        "PerformedProcedureStepStatus=DISCONTINUED",
    ])
    .await;
    assert_eq!(final_state["status"], status::PROCESSING_FAILURE, "{final_state}");
    assert_eq!(
        final_state["error_comment"], "Performed Procedure Step Object may no longer be updated",
        "{final_state}"
    );
    let unknown = peer(&[
        "mpps-set",
        "--port",
        &port,
        "--uid",
        "1.2.3.404",
        "-k",
        in_progress,
    ])
    .await;
    assert_eq!(unknown["status"], status::NO_SUCH_SOP_INSTANCE, "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_n_service_command_sets_get_failure_statuses() {
    let server = start(Arc::new(Memory::new(CommitmentDelivery::SameAssociation))).await;
    let mut ds = InMemDicomObject::new_empty();
    ds.put(text(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, "COMPLETED"));

    // N-SET without its Requested SOP Instance UID.
    let rsp = raw_request(
        server.port,
        MPPS,
        request(field::N_SET_RQ, Some(MPPS), None),
        Some(&ds),
    )
    .await;
    assert_eq!(rsp.command_field, field::N_SET_RSP);
    assert_eq!(rsp.message_id_being_responded_to, Some(5));
    assert_eq!(rsp.status, Some(status::MISSING_ATTRIBUTE));
    assert_eq!(rsp.offending_element, Some(0x0000_1001));

    // N-SET naming an instance that is not a UID.
    let rsp = raw_request(
        server.port,
        MPPS,
        request(field::N_SET_RQ, Some(MPPS), Some("1.2.x")),
        Some(&ds),
    )
    .await;
    assert_eq!(rsp.status, Some(status::INVALID_OBJECT_INSTANCE));

    // N-SET without a modification list.
    let mut no_data = request(field::N_SET_RQ, Some(MPPS), Some("1.2.3"));
    no_data.data_set_type = pacs_dimse::command::NO_DATASET;
    let rsp = raw_request(server.port, MPPS, no_data, None).await;
    assert_eq!(rsp.status, Some(status::MISSING_ATTRIBUTE));

    // N-CREATE whose SOP class is not the context's.
    let rsp = raw_request(
        server.port,
        MPPS,
        request(field::N_CREATE_RQ, Some(CT), Some("1.2.3")),
        Some(&ds),
    )
    .await;
    assert_eq!(rsp.command_field, field::N_CREATE_RSP);
    assert_eq!(rsp.status, Some(status::NO_SUCH_SOP_CLASS));

    // N-CREATE on the Storage Commitment context: not an operation of that SOP class.
    let rsp = raw_request(
        server.port,
        COMMITMENT,
        request(field::N_CREATE_RQ, Some(COMMITMENT), None),
        Some(&ds),
    )
    .await;
    assert_eq!(rsp.command_field, field::N_CREATE_RSP);
    assert_eq!(rsp.status, Some(status::UNRECOGNIZED_OPERATION));

    // N-ACTION with an unknown Action Type ID, and on an instance other than the well-known one.
    let mut info = InMemDicomObject::new_empty();
    info.put(text(tags::TRANSACTION_UID, VR::UI, "1.2.3.9"));
    let mut action = request(field::N_ACTION_RQ, Some(COMMITMENT), Some(COMMITMENT_INSTANCE));
    action.action_type_id = Some(2);
    let rsp = raw_request(server.port, COMMITMENT, action.clone(), Some(&info)).await;
    assert_eq!(rsp.command_field, field::N_ACTION_RSP);
    assert_eq!(rsp.status, Some(status::NO_SUCH_ACTION));
    action.action_type_id = Some(1);
    action.requested_sop_instance_uid = Some("1.2.3".into());
    let rsp = raw_request(server.port, COMMITMENT, action.clone(), Some(&info)).await;
    assert_eq!(rsp.status, Some(status::NO_SUCH_SOP_INSTANCE));
    // Right instance, but no Referenced SOP Sequence.
    action.requested_sop_instance_uid = Some(COMMITMENT_INSTANCE.into());
    let rsp = raw_request(server.port, COMMITMENT, action, Some(&info)).await;
    assert_eq!(rsp.status, Some(status::INVALID_ARGUMENT_VALUE));
    assert_eq!(
        rsp.affected_sop_instance_uid.as_deref(),
        Some(COMMITMENT_INSTANCE)
    );
    assert_eq!(rsp.action_type_id, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_workflow_methods_refuse_with_sop_class_not_supported() {
    let server = start(Arc::new(Bare)).await;
    let port = server.port.to_string();
    let out = peer(&[
        "mpps-create",
        "--port",
        &port,
        "-k",
        "PerformedProcedureStepStatus=IN PROGRESS",
    ])
    .await;
    assert_eq!(out["status"], status::SOP_CLASS_NOT_SUPPORTED, "{out}");
    let out = peer(&["mpps-set", "--port", &port, "--uid", "1.2.3", "-k", "Modality=CT"]).await;
    assert_eq!(out["status"], status::SOP_CLASS_NOT_SUPPORTED, "{out}");
    let out = peer(&[
        "commit",
        "--port",
        &port,
        "--instance",
        &format!("{CT},1.2.3.1"),
        "--wait",
        "0",
    ])
    .await;
    assert_eq!(out["action_status"], status::SOP_CLASS_NOT_SUPPORTED, "{out}");
    assert_eq!(out["reports"].as_array().map(Vec::len), Some(0), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Storage Commitment
// ---------------------------------------------------------------------------------------------

fn committed_uids(report: &Value, sequence: &str) -> Vec<String> {
    report["event_information"][sequence]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["ReferencedSOPInstanceUID"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commitment_report_on_the_requesting_association() {
    let memory = Arc::new(Memory::new(CommitmentDelivery::SameAssociation));
    let server = start(memory.clone()).await;
    let port = server.port.to_string();

    // One stored, one unknown: event type 2 with a Failed SOP Sequence.
    let out = peer(&[
        "commit",
        "--port",
        &port,
        "--transaction",
        "1.2.3.500",
        "--instance",
        &format!("{CT},1.2.3.1"),
        "--instance",
        &format!("{CT},1.2.3.404"),
    ])
    .await;
    assert_eq!(out["action_status"], 0, "{out}");
    let reports = out["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 1, "{out}");
    let report = &reports[0];
    assert_eq!(report["received_on"], "same", "{out}");
    assert_eq!(report["event_type_id"], 2);
    assert_eq!(report["affected_sop_class_uid"], COMMITMENT);
    assert_eq!(report["affected_sop_instance_uid"], COMMITMENT_INSTANCE);
    assert_eq!(report["event_information"]["TransactionUID"], "1.2.3.500");
    assert_eq!(committed_uids(report, "ReferencedSOPSequence"), ["1.2.3.1"]);
    assert_eq!(committed_uids(report, "FailedSOPSequence"), ["1.2.3.404"]);
    assert_eq!(
        report["event_information"]["FailedSOPSequence"][0]["FailureReason"],
        "274"
    );

    // All stored, SCP role proposed by the requester too: event type 1, no failures.
    let out = peer(&[
        "commit",
        "--port",
        &port,
        "--propose-scp-role",
        "--transaction",
        "1.2.3.501",
        "--instance",
        &format!("{CT},1.2.3.1"),
        "--instance",
        &format!("{CT},1.2.3.2"),
    ])
    .await;
    assert_eq!(out["action_status"], 0, "{out}");
    let report = &out["reports"][0];
    assert_eq!(report["received_on"], "same", "{out}");
    assert_eq!(report["event_type_id"], 1);
    assert_eq!(
        committed_uids(report, "ReferencedSOPSequence"),
        ["1.2.3.1", "1.2.3.2"]
    );
    assert!(
        report["event_information"].get("FailedSOPSequence").is_none(),
        "{out}"
    );

    let outcomes = wait_reports(&memory, 2).await;
    let same = ReportOutcome::Answered {
        status: 0,
        same_association: true,
    };
    assert_eq!(
        outcomes,
        [
            ("1.2.3.500".to_string(), same.clone()),
            ("1.2.3.501".to_string(), same)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commitment_report_on_a_new_association_when_configured() {
    let memory = Arc::new(Memory::new(CommitmentDelivery::NewAssociation));
    let server = start(memory.clone()).await;
    let listen = free_port();
    memory
        .peers
        .lock()
        .unwrap()
        .insert("PEERPY".into(), format!("127.0.0.1:{listen}"));
    let out = peer(&[
        "commit",
        "--port",
        &server.port.to_string(),
        "--listen-port",
        &listen.to_string(),
        "--transaction",
        "1.2.3.600",
        "--report-status",
        "0x0110",
        "--instance",
        &format!("{CT},1.2.3.2"),
    ])
    .await;
    assert_eq!(out["action_status"], 0, "{out}");
    let reports = out["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 1, "{out}");
    assert_eq!(reports[0]["received_on"], "new", "{out}");
    assert_eq!(reports[0]["calling_ae"], "OPENPACS");
    assert_eq!(reports[0]["event_type_id"], 1);
    assert_eq!(committed_uids(&reports[0], "ReferencedSOPSequence"), ["1.2.3.2"]);
    // The requester's answer (here a failure) reaches the services as it is.
    let outcomes = wait_reports(&memory, 1).await;
    assert_eq!(
        outcomes,
        [(
            "1.2.3.600".to_string(),
            ReportOutcome::Answered {
                status: status::PROCESSING_FAILURE,
                same_association: false
            }
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_closing_after_the_action_response_gets_its_report_on_a_new_association() {
    let memory = Arc::new(Memory::new(CommitmentDelivery::SameAssociation));
    let server = start(memory.clone()).await;
    let listen = free_port();
    memory
        .peers
        .lock()
        .unwrap()
        .insert("PEERPY".into(), format!("127.0.0.1:{listen}"));
    let out = peer(&[
        "commit",
        "--port",
        &server.port.to_string(),
        "--listen-port",
        &listen.to_string(),
        "--release-after-rsp",
        "--transaction",
        "1.2.3.700",
        "--instance",
        &format!("{CT},1.2.3.1"),
        "--instance",
        &format!("{CT},1.2.3.3"),
    ])
    .await;
    assert_eq!(out["action_status"], 0, "{out}");
    let reports = out["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 1, "{out}");
    assert_eq!(reports[0]["received_on"], "new", "{out}");
    assert_eq!(reports[0]["event_type_id"], 2);
    assert_eq!(committed_uids(&reports[0], "FailedSOPSequence"), ["1.2.3.3"]);
    let outcomes = wait_reports(&memory, 1).await;
    assert_eq!(
        outcomes,
        [(
            "1.2.3.700".to_string(),
            ReportOutcome::Answered {
                status: 0,
                same_association: false
            }
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_commitment_report_is_reported_to_the_services() {
    let memory = Arc::new(Memory::new(CommitmentDelivery::NewAssociation));
    let server = start(memory.clone()).await;
    // PEERPY has no known address.
    let out = peer(&[
        "commit",
        "--port",
        &server.port.to_string(),
        "--transaction",
        "1.2.3.800",
        "--wait",
        "1",
        "--instance",
        &format!("{CT},1.2.3.1"),
    ])
    .await;
    assert_eq!(out["action_status"], 0, "{out}");
    assert_eq!(out["reports"].as_array().map(Vec::len), Some(0), "{out}");
    let outcomes = wait_reports(&memory, 1).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].0, "1.2.3.800");
    assert!(
        matches!(&outcomes[0].1, ReportOutcome::Failed { reason } if reason.contains("PEERPY")),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_while_a_report_awaits_its_answer_are_served_afterwards() {
    let memory = Arc::new(Memory::new(CommitmentDelivery::SameAssociation));
    let server = start(memory.clone()).await;
    let verification = "1.2.840.10008.1.1";
    let mut raw = Raw::connect(server.port, &[COMMITMENT, verification]).await;

    let mut item = InMemDicomObject::new_empty();
    item.put(text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, CT));
    item.put(text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, "1.2.3.2"));
    let mut info = InMemDicomObject::new_empty();
    info.put(text(tags::TRANSACTION_UID, VR::UI, "1.2.3.900"));
    info.put(DataElement::new(
        tags::REFERENCED_SOP_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(vec![item]),
    ));
    let mut action = request(field::N_ACTION_RQ, Some(COMMITMENT), Some(COMMITMENT_INSTANCE));
    action.action_type_id = Some(1);
    raw.send(COMMITMENT, &action, Some(&info)).await;
    let (rsp, _) = raw.recv().await;
    assert_eq!(rsp.command_field, field::N_ACTION_RSP);
    assert_eq!(rsp.status, Some(status::SUCCESS));

    let (report, event_info) = raw.recv().await;
    assert_eq!(report.command_field, field::N_EVENT_REPORT_RQ);
    assert_eq!(report.event_type_id, Some(1));
    let event_info = event_info.expect("event information");
    assert_eq!(
        str_of(&event_info, tags::TRANSACTION_UID).as_deref(),
        Some("1.2.3.900")
    );

    // A C-ECHO before answering the report: it waits until the report is answered.
    let echo = Command {
        command_field: field::C_ECHO_RQ,
        affected_sop_class_uid: Some(verification.into()),
        message_id: Some(6),
        data_set_type: pacs_dimse::command::NO_DATASET,
        ..Command::default()
    };
    raw.send(verification, &echo, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answer = report.n_response(field::N_EVENT_REPORT_RSP, status::SUCCESS);
    answer.affected_sop_class_uid = Some(COMMITMENT.into());
    raw.send(COMMITMENT, &answer, None).await;
    let (echoed, _) = raw.recv().await;
    assert_eq!(echoed.command_field, field::C_ECHO_RSP);
    assert_eq!(echoed.message_id_being_responded_to, Some(6));
    raw.release().await;

    let outcomes = wait_reports(&memory, 1).await;
    assert_eq!(
        outcomes,
        [(
            "1.2.3.900".to_string(),
            ReportOutcome::Answered {
                status: 0,
                same_association: true
            }
        )]
    );
}
