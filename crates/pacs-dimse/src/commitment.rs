//! Storage Commitment Push Model (PS3.4 annex J): reading the N-ACTION's action information,
//! building the N-EVENT-REPORT's event information, and sending a report on a new association.
//!
//! The report on the association that carried the request is sent by the server's handler
//! (`server.rs`), which owns that association's writer; everything else lives here.

use std::time::Duration;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::client::ScuAssociation;
use crate::command::{status, Command, HAS_DATASET};
use crate::sop_classes::{STORAGE_COMMITMENT_INSTANCE, STORAGE_COMMITMENT_PUSH};
use crate::{CommitmentRequest, CommitmentResult, DimseError, DimseStatus, SopRef};

/// Action Type ID of "Request Storage Commitment".
pub const ACTION_REQUEST_COMMITMENT: u16 = 1;
/// Event Type ID of "Storage Commitment Request Successful".
pub const EVENT_SUCCESSFUL: u16 = 1;
/// Event Type ID of "Storage Commitment Request Complete – Failures Exist".
pub const EVENT_FAILURES_EXIST: u16 = 2;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// A storage commitment result ready to be reported to its requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitmentReport {
    pub transaction_uid: String,
    pub result: CommitmentResult,
}

impl CommitmentReport {
    /// Event Type ID: 1 when everything was committed, 2 when failures exist.
    pub fn event_type_id(&self) -> u16 {
        if self.result.failed.is_empty() {
            EVENT_SUCCESSFUL
        } else {
            EVENT_FAILURES_EXIST
        }
    }

    /// The event information (PS3.4 J.3.3.1): Transaction UID, Referenced SOP Sequence of the
    /// committed instances, Failed SOP Sequence with a Failure Reason per failed instance.
    pub fn dataset(&self) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from(self.transaction_uid.as_str()),
        ));
        // Type 1 for event 1, 1C (present when something was committed) for event 2.
        if !self.result.committed.is_empty() || self.result.failed.is_empty() {
            let items: Vec<_> = self.result.committed.iter().map(reference).collect();
            obj.put(DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        if !self.result.failed.is_empty() {
            let items: Vec<_> = self
                .result
                .failed
                .iter()
                .map(|(sop, reason)| {
                    let mut item = reference(sop);
                    item.put(DataElement::new(
                        tags::FAILURE_REASON,
                        VR::US,
                        PrimitiveValue::from(*reason),
                    ));
                    item
                })
                .collect();
            obj.put(DataElement::new(
                tags::FAILED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(items),
            ));
        }
        obj
    }

    /// The N-EVENT-REPORT-RQ command for this report.
    pub fn command(&self, message_id: u16) -> Command {
        Command {
            command_field: crate::command::field::N_EVENT_REPORT_RQ,
            affected_sop_class_uid: Some(STORAGE_COMMITMENT_PUSH.into()),
            affected_sop_instance_uid: Some(STORAGE_COMMITMENT_INSTANCE.into()),
            message_id: Some(message_id),
            event_type_id: Some(self.event_type_id()),
            data_set_type: HAS_DATASET,
            ..Command::default()
        }
    }

    /// The event information encoded in `transfer_syntax_uid`.
    pub fn encode(&self, transfer_syntax_uid: &str) -> Result<Vec<u8>, DimseError> {
        let ts = TransferSyntaxRegistry
            .get(transfer_syntax_uid)
            .ok_or_else(|| DimseError::Encoding(format!("unknown transfer syntax {transfer_syntax_uid}")))?;
        let mut out = Vec::new();
        self.dataset()
            .write_dataset_with_ts(&mut out, ts)
            .map_err(|e| DimseError::Encoding(e.to_string()))?;
        Ok(out)
    }
}

fn reference(sop: &SopRef) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::REFERENCED_SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(sop.sop_class_uid.as_str()),
    ));
    item.put(DataElement::new(
        tags::REFERENCED_SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(sop.sop_instance_uid.as_str()),
    ));
    item
}

/// Whether `s` is a syntactically valid UID: 1 to 64 characters, numeric components separated
/// by single dots.
pub(crate) fn is_valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads the action information of a "Request Storage Commitment" N-ACTION. Anything the
/// request lacks or gets wrong is 0115 (invalid argument value) with an explanation.
pub fn parse_request(info: &InMemDicomObject) -> Result<CommitmentRequest, DimseStatus> {
    let invalid = |m: String| DimseStatus::new(status::INVALID_ARGUMENT_VALUE, m);
    let text = |obj: &InMemDicomObject, tag| {
        obj.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_string())
            .filter(|s| !s.is_empty())
    };
    let transaction_uid =
        text(info, tags::TRANSACTION_UID).ok_or_else(|| invalid("missing Transaction UID".into()))?;
    if !is_valid_uid(&transaction_uid) {
        return Err(invalid(format!(
            "Transaction UID {transaction_uid:?} is not a UID"
        )));
    }
    let items = info
        .get(tags::REFERENCED_SOP_SEQUENCE)
        .and_then(|e| e.items())
        .ok_or_else(|| invalid("missing Referenced SOP Sequence".into()))?;
    if items.is_empty() {
        return Err(invalid("empty Referenced SOP Sequence".into()));
    }
    let mut instances = Vec::with_capacity(items.len());
    for (n, item) in items.iter().enumerate() {
        let class = text(item, tags::REFERENCED_SOP_CLASS_UID);
        let instance = text(item, tags::REFERENCED_SOP_INSTANCE_UID);
        match (class, instance) {
            (Some(c), Some(i)) if is_valid_uid(&c) && is_valid_uid(&i) => instances.push(SopRef {
                sop_class_uid: c,
                sop_instance_uid: i,
            }),
            _ => {
                return Err(invalid(format!(
                    "Referenced SOP Sequence item {} lacks valid SOP class and instance UIDs",
                    n + 1
                )))
            }
        }
    }
    Ok(CommitmentRequest {
        transaction_uid,
        instances,
    })
}

/// Sends `report` on a new association to `addr` ("host:port"), proposing the SCP role for
/// Storage Commitment as PS3.4 J.3.3 requires of an SCP that initiates the association, and
/// returns the status of the N-EVENT-REPORT-RSP. Public so that an implementation can retry a
/// report that could not be delivered.
pub async fn send_report(
    addr: &str,
    calling_ae: &str,
    called_ae: &str,
    report: &CommitmentReport,
    max_pdu: u32,
    timeout: Duration,
) -> Result<u16, DimseError> {
    let proposals = [(
        STORAGE_COMMITMENT_PUSH.to_string(),
        vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()],
    )];
    let roles = [(STORAGE_COMMITMENT_PUSH.to_string(), false, true)];
    let mut scu =
        ScuAssociation::connect_with_roles(addr, calling_ae, called_ae, &proposals, &roles, max_pdu, timeout)
            .await?;
    let context = scu
        .accepted_contexts()
        .find(|(_, a, _)| *a == STORAGE_COMMITMENT_PUSH)
        .map(|(id, _, ts)| (id, ts.to_string()));
    let Some((context_id, ts)) = context else {
        scu.release().await;
        return Err(DimseError::Association(
            "Storage Commitment Push Model not accepted".into(),
        ));
    };
    let sent = async {
        let data = report.encode(&ts)?;
        scu.n_event_report(context_id, report, &data).await
    }
    .await;
    scu.release().await;
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sop(i: &str) -> SopRef {
        SopRef {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: i.into(),
        }
    }

    #[test]
    fn report_round_trips_through_request_parser_and_event_types() {
        let request = CommitmentReport {
            transaction_uid: "1.2.3.99".into(),
            result: CommitmentResult {
                committed: vec![sop("1.2.3.1"), sop("1.2.3.2")],
                failed: vec![],
            },
        };
        assert_eq!(request.event_type_id(), EVENT_SUCCESSFUL);
        // A successful report has the same shape as a request: the parser reads it back.
        let parsed = parse_request(&request.dataset()).expect("parses");
        assert_eq!(parsed.transaction_uid, "1.2.3.99");
        assert_eq!(parsed.instances, request.result.committed);

        let failing = CommitmentReport {
            transaction_uid: "1.2.3.99".into(),
            result: CommitmentResult {
                committed: vec![],
                failed: vec![(
                    sop("1.2.3.3"),
                    crate::command::failure_reason::NO_SUCH_OBJECT_INSTANCE,
                )],
            },
        };
        assert_eq!(failing.event_type_id(), EVENT_FAILURES_EXIST);
        let ds = failing.dataset();
        assert!(ds.get(tags::REFERENCED_SOP_SEQUENCE).is_none());
        let failed = ds
            .get(tags::FAILED_SOP_SEQUENCE)
            .and_then(|e| e.items())
            .expect("failed items");
        let reason = failed[0]
            .get(tags::FAILURE_REASON)
            .expect("reason")
            .to_int::<u16>();
        assert_eq!(reason.ok(), Some(0x0112));
        assert!(failing.encode(IMPLICIT_VR_LE).is_ok());
    }

    #[test]
    fn bad_requests_are_invalid_argument_values() {
        let empty = InMemDicomObject::new_empty();
        assert_eq!(
            parse_request(&empty).unwrap_err().code,
            status::INVALID_ARGUMENT_VALUE
        );
        let mut no_items = InMemDicomObject::new_empty();
        no_items.put(DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from("1.2"),
        ));
        assert!(parse_request(&no_items).is_err());
        let mut bad_uid = no_items.clone();
        bad_uid.put(DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from("1..2"),
        ));
        assert!(parse_request(&bad_uid).is_err());
        assert!(is_valid_uid("1.2.840.10008.1.20.1.1"));
        assert!(!is_valid_uid("1.2.a"));
        assert!(!is_valid_uid(&"1.".repeat(40)));
    }
}
