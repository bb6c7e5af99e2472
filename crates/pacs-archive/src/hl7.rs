//! The RIS's HL7 v2 messages applied to the archive: ADT (patient identity), ORM^O01 and
//! OMI^O23 (orders → Modality Worklist), ORU^R01 (reports); and the end-of-exam notice sent
//! back (ORM^O01 with ORC-5 = CM) as a durable job (see `hl7_outbox.rs`).
//!
//! An `AA` is sent only once the change and its audit line are committed. Semantic errors get
//! `AE` with an ERR segment (unknown patient or order, required field missing); message types
//! we do not handle get `AR`. Every message received is audited, refused ones included.
//!
//! Patient identifiers: one identifier domain per tenant (`issuer_of_patient_id`). PID-3.1 is
//! the Patient ID and PID-3.4 its assigning authority, the Issuer of Patient ID; an empty one
//! means the tenant's domain, as in images (see [`Archive::patient_domain`]), so `ID^^^HOSP`
//! from the RIS and images of ID with or without Issuer HOSP are one patient.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pacs_hl7::{ack, AckCode, ErrorCode, ErrorDetail, Message, MessageHandler, ParsedOrRaw};
use pacs_model::fold_person_name;
use pacs_store::{AuditEvent, Demographics, Order, PatientKey, Report, WorkflowWrite};

use crate::metrics;
use crate::Archive;

/// The archive as an HL7 message handler.
pub struct Hl7Archive {
    archive: Arc<Archive>,
}

impl Hl7Archive {
    pub fn new(archive: Arc<Archive>) -> Self {
        Hl7Archive { archive }
    }
}

/// How a message was answered, for the ACK and the audit line.
enum Outcome {
    Applied(String),
    Error(ErrorDetail),
    Unsupported(ErrorDetail),
}

fn missing(path: &str, what: &str) -> Outcome {
    Outcome::Error(
        ErrorDetail::new(
            ErrorCode::REQUIRED_FIELD_MISSING,
            format!("{what} ({path}) is required"),
        )
        .at(path),
    )
}

/// The Study Instance UID a message carries (the first of `paths` present), or an `AE`
/// answer when it is not a UID (`pacs_model::check_uid`): it would reach the worklist, the
/// reports and from there URLs. The ERR segment points at the field it came from.
fn study_uid(msg: &Message, paths: &[&str]) -> Result<Option<String>, Outcome> {
    let Some((path, uid)) = paths.iter().find_map(|p| msg.value(p).map(|v| (*p, v))) else {
        return Ok(None);
    };
    match pacs_model::check_uid(&uid) {
        Ok(()) => Ok(Some(uid)),
        Err(why) => {
            let shown: String = uid.chars().take(pacs_model::uid::MAX_UID_LEN).collect();
            let field = path.split('.').next().unwrap_or(path);
            Err(Outcome::Error(
                ErrorDetail::new(
                    ErrorCode::DATA_TYPE,
                    format!("Study Instance UID ({field}) {why}: {shown:?}"),
                )
                .at(field),
            ))
        }
    }
}

fn unknown(path: &str, what: String) -> Outcome {
    Outcome::Error(ErrorDetail::new(ErrorCode::UNKNOWN_KEY, what).at(path))
}

/// HL7 XPN/XCN name components → DICOM PN (family^given^middle^prefix^suffix).
fn person_name(msg: &Message, path: &str, first_component: usize) -> Option<String> {
    let c = |n: usize| msg.value(&format!("{path}.{n}")).unwrap_or_default();
    let (family, given, middle) = (c(first_component), c(first_component + 1), c(first_component + 2));
    let (suffix, prefix) = (c(first_component + 3), c(first_component + 4));
    let parts = [family, given, middle, prefix, suffix];
    let keep = parts.iter().rposition(|p| !p.is_empty())?;
    Some(parts[..=keep].join("^"))
}

/// The first 8 digits of an HL7 date/time (YYYYMMDD), when it has them. Byte-wise: the
/// value comes from the peer and may hold any character.
fn date(value: Option<String>) -> Option<String> {
    let v = value?;
    let digits = v.as_bytes().get(..8)?;
    digits
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| String::from_utf8_lossy(digits).into_owned())
}

/// HHMMSS from an HL7 date/time (YYYYMMDDHHMM[SS]), when it has a time.
fn time(value: Option<String>) -> Option<String> {
    let v = value?;
    let bytes = v.as_bytes();
    let hhmm = bytes.get(8..12)?;
    if !hhmm.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seconds = bytes
        .get(12..14)
        .filter(|s| s.iter().all(u8::is_ascii_digit))
        .unwrap_or(b"00");
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(hhmm),
        String::from_utf8_lossy(seconds)
    ))
}

/// The patient identifier at `path` (PID-3, MRG-1). Of its repetitions (a RIS may send the
/// local ID and the national one), the one in the tenant's identifier domain, else the first.
/// The domain is the assigning authority (CX.4: its namespace ID, else its universal ID), or
/// the tenant's own when CX.4 is empty — as for images without Issuer of Patient ID.
fn patient_key(archive: &Archive, msg: &Message, path: &str) -> Option<PatientKey> {
    /// More identifiers than any RIS sends for one patient.
    const MAX_REPETITIONS: usize = 16;
    let mut first = None;
    for n in 1..=MAX_REPETITIONS {
        let Some(patient_id) = msg.value(&format!("{path}({n}).1")) else {
            continue;
        };
        let authority = msg
            .value(&format!("{path}({n}).4.1"))
            .or_else(|| msg.value(&format!("{path}({n}).4.2")))
            .unwrap_or_default();
        let key = PatientKey {
            issuer: archive.patient_domain(&authority),
            patient_id,
        };
        if key.issuer == archive.patient_domain("") {
            return Some(key);
        }
        first.get_or_insert(key);
    }
    first
}

fn demographics(msg: &Message) -> Demographics {
    let name = person_name(msg, "PID-5", 1);
    Demographics {
        name_folded: name.as_deref().map(fold_person_name),
        name,
        birth_date: date(msg.value("PID-7")),
        // HL7 table 0001: M, F, O, U, A, N; DICOM has M, F, O.
        sex: msg.value("PID-8").and_then(|s| match s.as_str() {
            "M" | "F" | "O" => Some(s),
            "A" | "N" => Some("O".into()),
            _ => None,
        }),
    }
}

fn first_of(msg: &Message, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| msg.value(p))
}

/// The order an ORM^O01 or OMI^O23 describes (IHE Scheduled Workflow mapping: accession in
/// OBR-18 or IPC-1, requested procedure ID in OBR-19 or IPC-2, step ID in OBR-20 or IPC-4,
/// modality in OBR-24 or IPC-5, station AE title in IPC-9 or OBR-21).
fn order(msg: &Message, placer: String) -> Order {
    let start = first_of(msg, &["TQ1-7", "ORC-7.4", "OBR-27.4", "OBR-36", "OBR-7"]);
    let accession = first_of(msg, &["IPC-1.1", "OBR-18.1", "ORC-3.1", "OBR-3.1"]);
    Order {
        placer_order: placer,
        filler_order: first_of(msg, &["ORC-3.1", "OBR-3.1"]),
        requested_procedure_id: first_of(msg, &["IPC-2.1", "OBR-19.1"]),
        requested_procedure_description: first_of(msg, &["OBR-4.2", "OBR-4.1"]),
        study_uid: first_of(msg, &["IPC-3.1", "ZDS-1.1"]),
        sps_id: first_of(msg, &["IPC-4.1", "OBR-20.1"]),
        sps_description: first_of(msg, &["OBR-4.2"]),
        station_ae: first_of(msg, &["IPC-9.1", "OBR-21.1"]),
        station_name: first_of(msg, &["IPC-7.1"]),
        modality: first_of(msg, &["IPC-5.1", "OBR-24.1"]),
        start_date: date(start.clone()),
        start_time: time(start),
        performing_physician: person_name(msg, "OBR-34", 2),
        referring_physician: person_name(msg, "ORC-12", 2)
            .or_else(|| person_name(msg, "OBR-16", 2))
            .or_else(|| person_name(msg, "PV1-8", 2)),
        accession_number: accession,
        status: "SCHEDULED".into(),
    }
}

/// What [`Hl7Archive`] does with a message of a handled type.
#[derive(Clone, Copy)]
enum Handling {
    Register,
    Update,
    Merge,
    ChangeId,
    Order,
    Report,
}

/// The message types (MSH-9.1^MSH-9.2) applied, and how; any other is refused (AR). Also the
/// values of the type label of `openpacs_hl7_messages_total`.
const HANDLED: [(&str, Handling); 11] = [
    ("ADT^A01", Handling::Register),
    ("ADT^A04", Handling::Register),
    ("ADT^A05", Handling::Register),
    ("ADT^A28", Handling::Register),
    ("ADT^A08", Handling::Update),
    ("ADT^A31", Handling::Update),
    ("ADT^A40", Handling::Merge),
    ("ADT^A47", Handling::ChangeId),
    ("ORM^O01", Handling::Order),
    ("OMI^O23", Handling::Order),
    ("ORU^R01", Handling::Report),
];

pub const HANDLED_MESSAGE_TYPES: [&str; HANDLED.len()] = {
    let mut types = [""; HANDLED.len()];
    let mut i = 0;
    while i < HANDLED.len() {
        types[i] = HANDLED[i].0;
        i += 1;
    }
    types
};

/// The handled type a message has, as its label and its handling.
fn handled(msg: &Message) -> Option<(&'static str, Handling)> {
    let t = msg.message_type();
    HANDLED
        .into_iter()
        .find(|(name, _)| name.split_once('^') == Some((t.code.as_str(), t.trigger.as_str())))
}

/// The metrics label of a message's type: one of [`HANDLED_MESSAGE_TYPES`], or "other".
fn type_label(msg: &Message) -> &'static str {
    handled(msg).map_or(metrics::OTHER_TYPE, |(name, _)| name)
}

impl Hl7Archive {
    /// Whether the message is addressed to a facility this tenant declares (MSH-6.1,
    /// compared without regard to case), when it declares any. Checked before anything is
    /// applied: a message for another hospital must not touch this one's patients.
    fn serves_facility(&self, msg: &Message) -> Result<(), ErrorDetail> {
        let facilities = &self.archive.hl7_facilities;
        if facilities.is_empty() {
            return Ok(());
        }
        let receiving = msg.value("MSH-6.1").unwrap_or_default();
        if facilities
            .iter()
            .any(|f| f.trim().eq_ignore_ascii_case(receiving.trim()))
        {
            return Ok(());
        }
        Err(ErrorDetail::new(
            ErrorCode::TABLE_VALUE_NOT_FOUND,
            format!("receiving facility {receiving:?} (MSH-6) is not served here"),
        )
        .at("MSH-6"))
    }

    fn audit(&self, msg: &Message, peer: SocketAddr, outcome: &str, detail: String) -> AuditEvent {
        let t = msg.message_type();
        AuditEvent {
            event: "hl7-receive".into(),
            actor: format!("hl7:{}", msg.value("MSH-3").unwrap_or_default()),
            peer: peer.to_string(),
            patient_id: msg.value("PID-3.1"),
            outcome: outcome.into(),
            detail: Some(format!("{}^{} {}: {detail}", t.code, t.trigger, msg.control_id())),
            ..AuditEvent::default()
        }
    }

    async fn write(&self, write: WorkflowWrite, audit: AuditEvent) -> Result<i64, ErrorDetail> {
        self.archive
            .index
            .write_workflow(write, audit)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "HL7 message could not be applied");
                ErrorDetail::new(ErrorCode::INTERNAL_ERROR, "the message could not be stored")
            })
    }

    /// Applies a message of one of the [`HANDLED`] types; any other is refused.
    async fn apply(&self, msg: &Message, peer: SocketAddr) -> Outcome {
        let t = msg.message_type();
        let audit = self.audit(msg, peer, "success", String::new());
        let result = match handled(msg) {
            Some((_, Handling::Register)) => self.register(msg, audit, false).await,
            Some((_, Handling::Update)) => self.register(msg, audit, true).await,
            Some((_, Handling::Merge)) => self.merge(msg, audit).await,
            Some((_, Handling::ChangeId)) => self.change_id(msg, audit).await,
            Some((_, Handling::Order)) => self.order(msg, audit).await,
            Some((_, Handling::Report)) => self.report(msg, audit).await,
            None if t.code == "ADT" => Ok(Outcome::Unsupported(ErrorDetail::new(
                ErrorCode::UNSUPPORTED_EVENT,
                format!("ADT event {} is not handled", t.trigger),
            ))),
            None => Ok(Outcome::Unsupported(ErrorDetail::new(
                ErrorCode::UNSUPPORTED_MESSAGE_TYPE,
                format!("{}^{} is not handled", t.code, t.trigger),
            ))),
        };
        result.unwrap_or_else(Outcome::Error)
    }

    async fn register(&self, msg: &Message, audit: AuditEvent, update: bool) -> Result<Outcome, ErrorDetail> {
        let Some(key) = patient_key(&self.archive, msg, "PID-3") else {
            return Ok(missing("PID-3", "Patient ID"));
        };
        let demographics = demographics(msg);
        let write = if update {
            WorkflowWrite::UpdatePatient {
                key: key.clone(),
                demographics,
            }
        } else {
            WorkflowWrite::RegisterPatient {
                key: key.clone(),
                demographics,
            }
        };
        Ok(match self.write(write, audit).await? {
            0 => unknown("PID-3", format!("unknown patient {}", key.patient_id)),
            _ => Outcome::Applied(format!("patient {}", key.patient_id)),
        })
    }

    async fn merge(&self, msg: &Message, audit: AuditEvent) -> Result<Outcome, ErrorDetail> {
        let (Some(survivor), Some(merged)) = (
            patient_key(&self.archive, msg, "PID-3"),
            patient_key(&self.archive, msg, "MRG-1"),
        ) else {
            return Ok(missing("MRG-1", "prior Patient ID"));
        };
        let write = WorkflowWrite::MergePatients {
            survivor: survivor.clone(),
            merged: merged.clone(),
        };
        Ok(match self.write(write, audit).await? {
            0 => unknown(
                "MRG-1",
                format!(
                    "cannot merge {} into {}: unknown patient",
                    merged.patient_id, survivor.patient_id
                ),
            ),
            merge => Outcome::Applied(format!(
                "merge {merge}: {} into {}",
                merged.patient_id, survivor.patient_id
            )),
        })
    }

    async fn change_id(&self, msg: &Message, audit: AuditEvent) -> Result<Outcome, ErrorDetail> {
        let (Some(new), Some(old)) = (
            patient_key(&self.archive, msg, "PID-3"),
            patient_key(&self.archive, msg, "MRG-1"),
        ) else {
            return Ok(missing("MRG-1", "prior Patient ID"));
        };
        let write = WorkflowWrite::ChangePatientId {
            old: old.clone(),
            new: new.clone(),
        };
        Ok(match self.write(write, audit).await? {
            0 => unknown(
                "MRG-1",
                format!(
                    "cannot change {} to {}: unknown, or the new identifier is taken",
                    old.patient_id, new.patient_id
                ),
            ),
            _ => Outcome::Applied(format!("identifier {} is now {}", old.patient_id, new.patient_id)),
        })
    }

    async fn order(&self, msg: &Message, audit: AuditEvent) -> Result<Outcome, ErrorDetail> {
        let Some(key) = patient_key(&self.archive, msg, "PID-3") else {
            return Ok(missing("PID-3", "Patient ID"));
        };
        let Some(placer) = first_of(msg, &["ORC-2.1", "OBR-2.1"]) else {
            return Ok(missing("ORC-2", "placer order number"));
        };
        let control = msg.value("ORC-1").unwrap_or_default();
        if let Err(refused) = study_uid(msg, &["IPC-3.1", "ZDS-1.1"]) {
            return Ok(refused);
        }
        match control.as_str() {
            "NW" | "XO" | "SC" => {
                let order = order(msg, placer.clone());
                let write = WorkflowWrite::UpsertOrder {
                    key,
                    demographics: demographics(msg),
                    order: Box::new(order),
                    new_study_uid: crate::workflow::new_uid(),
                };
                self.write(write, audit).await?;
                Ok(Outcome::Applied(format!("order {placer} {control}")))
            }
            "CA" | "DC" | "OC" => {
                let write = WorkflowWrite::SetOrderStatus {
                    placer_order: Some(placer.clone()),
                    accession_number: None,
                    status: "DISCONTINUED".into(),
                };
                Ok(match self.write(write, audit).await? {
                    0 => unknown("ORC-2", format!("unknown order {placer}")),
                    _ => Outcome::Applied(format!("order {placer} cancelled")),
                })
            }
            "" => Ok(missing("ORC-1", "order control")),
            other => Ok(Outcome::Error(
                ErrorDetail::new(
                    ErrorCode::TABLE_VALUE_NOT_FOUND,
                    format!("order control {other} is not handled"),
                )
                .at("ORC-1"),
            )),
        }
    }

    async fn report(&self, msg: &Message, audit: AuditEvent) -> Result<Outcome, ErrorDetail> {
        let mut lines = Vec::new();
        let mut status = msg.value("OBR-25");
        for obx in msg.segments("OBX") {
            if !matches!(
                obx.field(2).and_then(|f| f.value()).as_deref(),
                Some("TX" | "FT" | "ST" | "CE" | "CWE")
            ) {
                continue;
            }
            if let Some(field) = obx.field(5) {
                for repetition in field.repetitions() {
                    lines.push(repetition.value().unwrap_or_default());
                }
            }
            if status.is_none() {
                status = obx.field(11).and_then(|f| f.value());
            }
        }
        if lines.is_empty() {
            return Ok(missing("OBX-5", "report text"));
        }
        let accession = first_of(msg, &["OBR-18.1", "ORC-3.1", "OBR-3.1"]);
        let study_uid = match study_uid(msg, &["ZDS-1.1", "IPC-3.1"]) {
            Ok(uid) => uid,
            Err(refused) => return Ok(refused),
        };
        if accession.is_none() && study_uid.is_none() {
            return Ok(missing("OBR-18", "accession number or Study Instance UID"));
        }
        let status = match status.as_deref() {
            Some("P" | "F" | "C") => status.unwrap_or_default(),
            Some(other) => {
                return Ok(Outcome::Error(
                    ErrorDetail::new(
                        ErrorCode::TABLE_VALUE_NOT_FOUND,
                        format!("result status {other} is not P, F or C"),
                    )
                    .at("OBR-25"),
                ))
            }
            None => "F".into(),
        };
        let report = Report {
            study_uid,
            accession_number: accession.clone(),
            status: status.clone(),
            text: lines.join("\n"),
            author: person_name(msg, "OBR-32", 2),
            observed_at: msg.value("OBR-7"),
            received_at: String::new(),
            control_id: Some(msg.control_id()),
        };
        self.write(WorkflowWrite::AddReport(report), audit).await?;
        Ok(Outcome::Applied(format!(
            "report ({status}) for accession {}",
            accession.unwrap_or_default()
        )))
    }
}

#[async_trait]
impl MessageHandler for Hl7Archive {
    async fn connections_refused(
        &self,
        summary: &pacs_model::admission::RefusalSummary,
        period: std::time::Duration,
    ) {
        self.archive
            .record(crate::dimse::refusals_event(
                self.archive.tenant.0,
                "hl7-connection",
                summary,
                period,
            ))
            .await;
    }

    async fn handle(&self, message: ParsedOrRaw, peer: SocketAddr) -> Option<Vec<u8>> {
        let msg = match message {
            ParsedOrRaw::Parsed(msg) => msg,
            ParsedOrRaw::Raw(raw) => {
                let kind = raw.header.as_ref().map_or(metrics::UNREADABLE_TYPE, type_label);
                metrics::hl7_message(kind, "rejected");
                self.archive
                    .record(AuditEvent {
                        event: "hl7-receive".into(),
                        actor: "hl7".into(),
                        peer: peer.to_string(),
                        outcome: "refused".into(),
                        detail: Some(format!("{} bytes: {}", raw.size, raw.error)),
                        ..AuditEvent::default()
                    })
                    .await;
                return raw.nak();
            }
        };
        let kind = type_label(&msg);
        if let Err(error) = self.serves_facility(&msg) {
            metrics::hl7_message(kind, "rejected");
            self.archive
                .record(self.audit(&msg, peer, "refused", error.text.clone()))
                .await;
            return Some(ack(&msg, AckCode::AR, Some(&error)));
        }
        match self.apply(&msg, peer).await {
            // The audit line went in with the change.
            Outcome::Applied(what) => {
                tracing::info!(control = %msg.control_id(), %what, "HL7 message applied");
                metrics::hl7_message(kind, "accepted");
                Some(ack(&msg, AckCode::AA, None))
            }
            Outcome::Error(error) => {
                metrics::hl7_message(kind, "error");
                self.archive
                    .record(self.audit(&msg, peer, "refused", error.text.clone()))
                    .await;
                Some(ack(&msg, AckCode::AE, Some(&error)))
            }
            Outcome::Unsupported(error) => {
                metrics::hl7_message(kind, "rejected");
                self.archive
                    .record(self.audit(&msg, peer, "refused", error.text.clone()))
                    .await;
                Some(ack(&msg, AckCode::AR, Some(&error)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(text.replace('\n', "\r").as_bytes()).unwrap()
    }

    #[test]
    fn orders_map_to_worklist_items() {
        let m = msg("MSH|^~\\&|RIS|H|PACS|H|20240102||OMI^O23^OMI_O23|1|P|2.5.1\n\
             PID|1||P9^^^H^PI||LEFEVRE^ELODIE||19920704|F\n\
             ORC|NW|PO2|FO2||SC|||||||5678^DURAND^PAUL\n\
             TQ1|1||||||202401021100\n\
             OBR|1|PO2|FO2|MRGENOU^IRM genou^L\n\
             IPC|ACC2|RP2|1.2.3.4|SPS2|MR||MR STATION||MR_1");
        let o = order(&m, "PO2".into());
        assert_eq!(o.accession_number.as_deref(), Some("ACC2"));
        assert_eq!(o.requested_procedure_id.as_deref(), Some("RP2"));
        assert_eq!(o.study_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(o.sps_id.as_deref(), Some("SPS2"));
        assert_eq!(o.modality.as_deref(), Some("MR"));
        assert_eq!(o.station_ae.as_deref(), Some("MR_1"));
        assert_eq!(o.start_date.as_deref(), Some("20240102"));
        assert_eq!(o.start_time.as_deref(), Some("110000"));
        assert_eq!(o.referring_physician.as_deref(), Some("DURAND^PAUL"));
        assert_eq!(o.requested_procedure_description.as_deref(), Some("IRM genou"));
        let d = demographics(&m);
        assert_eq!(d.name.as_deref(), Some("LEFEVRE^ELODIE"));
        assert_eq!(d.birth_date.as_deref(), Some("19920704"));
        assert_eq!(d.sex.as_deref(), Some("F"));
    }

    #[test]
    fn a_study_uid_that_is_not_a_uid_is_refused_where_it_was_read() {
        let m = msg("MSH|^~\\&|RIS|H|PACS|H|2024||ORU^R01|1|P|2.5\n\
             OBR|1|PO2|FO2\n\
             ZDS|thumbnail^RIS^Application^DICOM");
        let Err(Outcome::Error(e)) = study_uid(&m, &["ZDS-1.1", "IPC-3.1"]) else {
            panic!("accepted");
        };
        assert_eq!(e.code, ErrorCode::DATA_TYPE);
        assert!(
            e.text.contains("ZDS-1") && e.text.contains("thumbnail"),
            "{}",
            e.text
        );
        let m = msg("MSH|^~\\&|RIS|H|PACS|H|2024||ORU^R01|1|P|2.5\nZDS|1.2.840.99^RIS");
        assert!(matches!(study_uid(&m, &["ZDS-1.1"]), Ok(Some(u)) if u == "1.2.840.99"));
        assert!(matches!(study_uid(&m, &["IPC-3.1"]), Ok(None)));
    }

    #[test]
    fn only_handled_types_get_their_own_metrics_label() {
        let of = |t: &str| type_label(&msg(&format!("MSH|^~\\&|RIS|H|PACS|H|2024||{t}|1|P|2.5")));
        assert_eq!(of("ADT^A08^ADT_A01"), "ADT^A08");
        assert_eq!(of("ORU^R01"), "ORU^R01");
        assert_eq!(of("ADT^A99"), "other");
        assert_eq!(of("ZZZ^Z42"), "other");
        assert_eq!(HANDLED_MESSAGE_TYPES.len(), 11);
        assert!(HANDLED_MESSAGE_TYPES.contains(&"OMI^O23"));
    }

    #[test]
    fn names_dates_and_times_convert() {
        let m = msg("MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\nPID|1||X||DUPONT^JEAN^PIERRE^JR^DR||1985");
        assert_eq!(
            person_name(&m, "PID-5", 1).as_deref(),
            Some("DUPONT^JEAN^PIERRE^DR^JR")
        );
        assert_eq!(date(Some("1985".into())), None);
        assert_eq!(time(Some("20240102".into())), None);
        assert_eq!(time(Some("202401021015".into())).as_deref(), Some("101500"));
        assert_eq!(
            time(Some("20240102101530+0100".into())).as_deref(),
            Some("101530")
        );
        // Peer input with multi-byte characters where digits are expected: no panic.
        assert_eq!(date(Some("1234567é9".into())), None);
        assert_eq!(time(Some("2024010é1015".into())), None);
        assert_eq!(time(Some("20240102101é".into())), None);
    }
}
