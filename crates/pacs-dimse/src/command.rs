//! DIMSE command sets (PS3.7 §9.3 and §E): the group-0000 elements that precede every message,
//! always encoded in Implicit VR Little Endian whatever the presentation context says.
//!
//! The command set is tiny and fixed, so it is encoded by hand rather than through a full
//! `InMemDicomObject`: one small struct, one encoder, one decoder that tolerates unknown
//! elements (peers may add retired ones) but never panics on short input.

use crate::DimseError;

/// Command Field values (PS3.7 §E.1-1).
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_GET_RQ: u16 = 0x0110;
    pub const N_GET_RSP: u16 = 0x8110;
    pub const N_SET_RQ: u16 = 0x0120;
    pub const N_SET_RSP: u16 = 0x8120;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const N_CREATE_RQ: u16 = 0x0140;
    pub const N_CREATE_RSP: u16 = 0x8140;
    pub const N_DELETE_RQ: u16 = 0x0150;
    pub const N_DELETE_RSP: u16 = 0x8150;
}

/// Command Data Set Type value meaning "no data set follows".
pub const NO_DATASET: u16 = 0x0101;
/// Command Data Set Type value used when a data set follows (any other value means the same).
pub const HAS_DATASET: u16 = 0x0000;

/// Status codes used by this implementation (PS3.4 annexes B, C, F and J, PS3.7 annex C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const PENDING: u16 = 0xFF00;
    pub const CANCEL: u16 = 0xFE00;
    /// Sub-operations complete, one or more failures or warnings (C-GET/C-MOVE).
    pub const SUBOPS_WARNING: u16 = 0xB000;
    /// Refused: out of resources (C-STORE).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Refused: out of resources, unable to calculate number of matches (C-MOVE/C-GET).
    pub const OUT_OF_RESOURCES_MATCHES: u16 = 0xA701;
    /// Refused: out of resources, unable to perform sub-operations (C-MOVE/C-GET).
    pub const OUT_OF_RESOURCES_SUBOPS: u16 = 0xA702;
    /// Refused: move destination unknown.
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Error: data set does not match SOP class (C-STORE); identifier does not match SOP class (queries).
    pub const DATASET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Failed: unable to process (queries and retrievals).
    pub const UNABLE_TO_PROCESS: u16 = 0xC001;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Failure: unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Failure: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Warning: coercion of data elements (C-STORE).
    pub const COERCION_OF_DATA_ELEMENTS: u16 = 0xB000;

    // DIMSE-N statuses (PS3.7 annex C): the services answer MPPS and commitment requests with
    // these; the DIMSE layer itself uses the ones about the command set.
    /// Failure: no such attribute (N-SET of an attribute the SOP class does not have).
    pub const NO_SUCH_ATTRIBUTE: u16 = 0x0105;
    /// Failure: invalid attribute value.
    pub const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
    /// Warning: attribute list error (some attributes not supported, the rest applied).
    pub const ATTRIBUTE_LIST_ERROR: u16 = 0x0107;
    /// Failure: duplicate SOP instance (N-CREATE of an instance that exists).
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Failure: no such SOP instance.
    pub const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
    /// Failure: no such event type.
    pub const NO_SUCH_EVENT_TYPE: u16 = 0x0113;
    /// Failure: no such argument.
    pub const NO_SUCH_ARGUMENT: u16 = 0x0114;
    /// Failure: invalid argument value (N-ACTION information the SCP cannot use).
    pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
    /// Warning: attribute value out of range.
    pub const ATTRIBUTE_VALUE_OUT_OF_RANGE: u16 = 0x0116;
    /// Failure: invalid object instance (an instance UID that is not a UID).
    pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
    /// Failure: no such SOP class.
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    /// Failure: class-instance conflict.
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
    /// Failure: missing attribute (a required element of the command or data set is absent).
    pub const MISSING_ATTRIBUTE: u16 = 0x0120;
    /// Failure: missing attribute value.
    pub const MISSING_ATTRIBUTE_VALUE: u16 = 0x0121;
    /// Failure: no such action (N-ACTION type ID).
    pub const NO_SUCH_ACTION: u16 = 0x0123;
    /// Refused: not authorised.
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    /// Failure: duplicate invocation (a message ID already in use).
    pub const DUPLICATE_INVOCATION: u16 = 0x0210;
    /// Failure: mistyped argument.
    pub const MISTYPED_ARGUMENT: u16 = 0x0212;
    /// Failure: resource limitation.
    pub const RESOURCE_LIMITATION: u16 = 0x0213;
}

/// Failure Reason (0008,1197) values of a storage commitment report (PS3.4 annex J, and the
/// Failure Reason attribute of PS3.3 C.12.1.1.2).
pub mod failure_reason {
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
    pub const RESOURCE_LIMITATION: u16 = 0x0213;
    pub const REFERENCED_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
    pub const DUPLICATE_TRANSACTION_UID: u16 = 0x0131;
}

/// Priority values (PS3.7 §E.1-1): medium is what every SCU sends by default.
pub const PRIORITY_MEDIUM: u16 = 0x0000;

/// A decoded DIMSE command set. Only the elements some service uses are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    pub affected_sop_class_uid: Option<String>,
    pub requested_sop_class_uid: Option<String>,
    pub message_id: Option<u16>,
    pub message_id_being_responded_to: Option<u16>,
    pub move_destination: Option<String>,
    pub priority: Option<u16>,
    pub data_set_type: u16,
    pub status: Option<u16>,
    pub offending_element: Option<u32>,
    pub error_comment: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub requested_sop_instance_uid: Option<String>,
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
    pub move_originator_ae: Option<String>,
    pub move_originator_message_id: Option<u16>,
    /// Error ID (0000,0903): a service-specific failure detail.
    pub error_id: Option<u16>,
    /// Event Type ID (0000,1002) of an N-EVENT-REPORT.
    pub event_type_id: Option<u16>,
    /// Attribute Identifier List (0000,1005): N-GET's wanted attributes, or the attributes an
    /// N-service status is about; tags as (group << 16 | element).
    pub attribute_identifier_list: Vec<u32>,
    /// Action Type ID (0000,1008) of an N-ACTION.
    pub action_type_id: Option<u16>,
}

impl Command {
    /// Whether a data set follows this command.
    pub fn has_dataset(&self) -> bool {
        self.data_set_type != NO_DATASET
    }

    /// The SOP class a request is about: Affected for C-STORE/C-FIND/C-GET/C-MOVE/C-ECHO.
    pub fn sop_class(&self) -> Option<&str> {
        self.affected_sop_class_uid
            .as_deref()
            .or(self.requested_sop_class_uid.as_deref())
    }

    /// Builds the response skeleton of a request: same SOP class, answering its message ID.
    pub fn response(&self, command_field: u16, status: u16) -> Command {
        Command {
            command_field,
            affected_sop_class_uid: self.affected_sop_class_uid.clone(),
            message_id_being_responded_to: self.message_id,
            data_set_type: NO_DATASET,
            status: Some(status),
            ..Command::default()
        }
    }

    /// Builds the response skeleton of a DIMSE-N request: the SOP class and instance it is about
    /// (Requested in N-GET/N-SET/N-ACTION requests, Affected in responses), its message ID,
    /// and its event or action type.
    pub fn n_response(&self, command_field: u16, status: u16) -> Command {
        Command {
            command_field,
            affected_sop_class_uid: self.sop_class().map(str::to_string),
            affected_sop_instance_uid: self
                .affected_sop_instance_uid
                .clone()
                .or_else(|| self.requested_sop_instance_uid.clone()),
            message_id_being_responded_to: self.message_id,
            data_set_type: NO_DATASET,
            status: Some(status),
            event_type_id: self.event_type_id,
            action_type_id: self.action_type_id,
            ..Command::default()
        }
    }

    /// Encodes the command set with its leading CommandGroupLength element.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        let put_uid = |tag: u16, v: &Option<String>, pad: u8, body: &mut Vec<u8>| {
            if let Some(v) = v {
                put_text(body, tag, v, pad);
            }
        };
        put_uid(0x0002, &self.affected_sop_class_uid, 0, &mut body);
        put_uid(0x0003, &self.requested_sop_class_uid, 0, &mut body);
        put_us(&mut body, 0x0100, self.command_field);
        if let Some(v) = self.message_id {
            put_us(&mut body, 0x0110, v);
        }
        if let Some(v) = self.message_id_being_responded_to {
            put_us(&mut body, 0x0120, v);
        }
        put_uid(0x0600, &self.move_destination, b' ', &mut body);
        if let Some(v) = self.priority {
            put_us(&mut body, 0x0700, v);
        }
        put_us(&mut body, 0x0800, self.data_set_type);
        if let Some(v) = self.status {
            put_us(&mut body, 0x0900, v);
        }
        if let Some(v) = self.offending_element {
            put_header(&mut body, 0x0901, 4);
            body.extend_from_slice(&((v >> 16) as u16).to_le_bytes());
            body.extend_from_slice(&(v as u16).to_le_bytes());
        }
        put_uid(
            0x0902,
            &self.error_comment.as_ref().map(|c| truncate_lo(c)),
            b' ',
            &mut body,
        );
        if let Some(v) = self.error_id {
            put_us(&mut body, 0x0903, v);
        }
        put_uid(0x1000, &self.affected_sop_instance_uid, 0, &mut body);
        put_uid(0x1001, &self.requested_sop_instance_uid, 0, &mut body);
        if let Some(v) = self.event_type_id {
            put_us(&mut body, 0x1002, v);
        }
        if !self.attribute_identifier_list.is_empty() {
            put_header(&mut body, 0x1005, 4 * self.attribute_identifier_list.len() as u32);
            for tag in &self.attribute_identifier_list {
                body.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
                body.extend_from_slice(&(*tag as u16).to_le_bytes());
            }
        }
        if let Some(v) = self.action_type_id {
            put_us(&mut body, 0x1008, v);
        }
        for (tag, v) in [
            (0x1020, self.remaining),
            (0x1021, self.completed),
            (0x1022, self.failed),
            (0x1023, self.warning),
        ] {
            if let Some(v) = v {
                put_us(&mut body, tag, v);
            }
        }
        put_uid(0x1030, &self.move_originator_ae, b' ', &mut body);
        if let Some(v) = self.move_originator_message_id {
            put_us(&mut body, 0x1031, v);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put_header(&mut out, 0x0000, 4);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a command set. Unknown elements are skipped; a truncated element is an error.
    pub fn decode(mut bytes: &[u8]) -> Result<Command, DimseError> {
        let mut cmd = Command {
            data_set_type: NO_DATASET,
            ..Command::default()
        };
        let mut saw_field = false;
        while !bytes.is_empty() {
            if bytes.len() < 8 {
                return Err(DimseError::Protocol("truncated command element header".into()));
            }
            let group = u16::from_le_bytes([bytes[0], bytes[1]]);
            let element = u16::from_le_bytes([bytes[2], bytes[3]]);
            let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
            if group != 0x0000 {
                return Err(DimseError::Protocol(format!(
                    "command set contains element ({group:04X},{element:04X}) outside group 0000"
                )));
            }
            let value = bytes
                .get(8..8 + len)
                .ok_or_else(|| DimseError::Protocol("truncated command element value".into()))?;
            bytes = &bytes[8 + len..];
            let us = || -> Result<u16, DimseError> {
                value
                    .get(..2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .ok_or_else(|| {
                        DimseError::Protocol(format!("command element (0000,{element:04X}) too short"))
                    })
            };
            let text = || Some(trim_text(value));
            match element {
                0x0002 => cmd.affected_sop_class_uid = text(),
                0x0003 => cmd.requested_sop_class_uid = text(),
                0x0100 => {
                    cmd.command_field = us()?;
                    saw_field = true;
                }
                0x0110 => cmd.message_id = Some(us()?),
                0x0120 => cmd.message_id_being_responded_to = Some(us()?),
                0x0600 => cmd.move_destination = text(),
                0x0700 => cmd.priority = Some(us()?),
                0x0800 => cmd.data_set_type = us()?,
                0x0900 => cmd.status = Some(us()?),
                0x0901 if value.len() >= 4 => {
                    let g = u16::from_le_bytes([value[0], value[1]]) as u32;
                    let e = u16::from_le_bytes([value[2], value[3]]) as u32;
                    cmd.offending_element = Some(g << 16 | e);
                }
                0x0902 => cmd.error_comment = text(),
                0x0903 => cmd.error_id = Some(us()?),
                0x1000 => cmd.affected_sop_instance_uid = text(),
                0x1001 => cmd.requested_sop_instance_uid = text(),
                0x1002 => cmd.event_type_id = Some(us()?),
                0x1005 => {
                    cmd.attribute_identifier_list = value
                        .chunks_exact(4)
                        .map(|b| {
                            (u16::from_le_bytes([b[0], b[1]]) as u32) << 16
                                | u16::from_le_bytes([b[2], b[3]]) as u32
                        })
                        .collect()
                }
                0x1008 => cmd.action_type_id = Some(us()?),
                0x1020 => cmd.remaining = Some(us()?),
                0x1021 => cmd.completed = Some(us()?),
                0x1022 => cmd.failed = Some(us()?),
                0x1023 => cmd.warning = Some(us()?),
                0x1030 => cmd.move_originator_ae = text(),
                0x1031 => cmd.move_originator_message_id = Some(us()?),
                _ => {}
            }
        }
        if !saw_field {
            return Err(DimseError::Protocol("command set has no Command Field".into()));
        }
        Ok(cmd)
    }
}

fn put_header(out: &mut Vec<u8>, element: u16, len: u32) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_us(out: &mut Vec<u8>, element: u16, v: u16) {
    put_header(out, element, 2);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Text values are padded to even length: UIDs with NUL, other strings with a space.
fn put_text(out: &mut Vec<u8>, element: u16, v: &str, pad: u8) {
    let bytes = v.as_bytes();
    let padded = bytes.len() + (bytes.len() & 1);
    put_header(out, element, padded as u32);
    out.extend_from_slice(bytes);
    if bytes.len() & 1 == 1 {
        out.push(pad);
    }
}

/// Error Comment is LO: one value (a backslash would split it) of at most 64 characters;
/// longer explanations are cut on a character boundary.
fn truncate_lo(s: &str) -> String {
    s.chars()
        .map(|c| if c == '\\' { '/' } else { c })
        .take(64)
        .collect()
}

fn trim_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips() {
        let cmd = Command {
            command_field: field::C_STORE_RQ,
            affected_sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            message_id: Some(7),
            priority: Some(PRIORITY_MEDIUM),
            data_set_type: HAS_DATASET,
            affected_sop_instance_uid: Some("1.2.3.4.5".into()),
            move_originator_ae: Some("MOVER".into()),
            move_originator_message_id: Some(3),
            ..Command::default()
        };
        let bytes = cmd.encode();
        // Group length must equal the bytes that follow it.
        let declared = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!(declared, bytes.len() - 12);
        // Every value has even length.
        assert_eq!(bytes.len() % 2, 0);
        let decoded = Command::decode(&bytes).expect("decodes");
        assert_eq!(decoded, cmd);
        assert!(decoded.has_dataset());
    }

    #[test]
    fn response_counts_and_comment_round_trip() {
        let rq = Command {
            command_field: field::C_GET_RQ,
            affected_sop_class_uid: Some("1.2.840.10008.5.1.4.1.2.2.3".into()),
            message_id: Some(42),
            data_set_type: HAS_DATASET,
            ..Command::default()
        };
        let mut rsp = rq.response(field::C_GET_RSP, status::PENDING);
        rsp.remaining = Some(10);
        rsp.completed = Some(2);
        rsp.failed = Some(1);
        rsp.warning = Some(0);
        rsp.error_comment = Some(format!("a\\b{}", "x".repeat(100)));
        let decoded = Command::decode(&rsp.encode()).expect("decodes");
        assert_eq!(decoded.message_id_being_responded_to, Some(42));
        assert_eq!(decoded.remaining, Some(10));
        assert_eq!(decoded.failed, Some(1));
        assert_eq!(decoded.error_comment.as_deref().map(str::len), Some(64));
        assert!(
            decoded.error_comment.as_deref().unwrap_or("").starts_with("a/b"),
            "no value separator in the comment"
        );
        assert!(!decoded.has_dataset());
    }

    #[test]
    fn truncated_command_is_an_error_not_a_panic() {
        let bytes = Command {
            command_field: field::C_ECHO_RQ,
            message_id: Some(1),
            affected_sop_class_uid: Some("1.2.840.10008.1.1".into()),
            ..Command::default()
        }
        .encode();
        for cut in 0..bytes.len() {
            // Every prefix either decodes (cut at an element boundary after the field) or errors.
            let _ = Command::decode(&bytes[..cut]);
        }
        assert!(Command::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Command::decode(&[]).is_err());
    }

    #[test]
    fn n_service_commands_round_trip() {
        let rq = Command {
            command_field: field::N_ACTION_RQ,
            requested_sop_class_uid: Some("1.2.840.10008.1.20.1".into()),
            requested_sop_instance_uid: Some("1.2.840.10008.1.20.1.1".into()),
            message_id: Some(9),
            action_type_id: Some(1),
            data_set_type: HAS_DATASET,
            ..Command::default()
        };
        let decoded = Command::decode(&rq.encode()).expect("decodes");
        assert_eq!(decoded, rq);
        let rsp = decoded.n_response(field::N_ACTION_RSP, status::SUCCESS);
        assert_eq!(
            rsp.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.1.20.1")
        );
        assert_eq!(
            rsp.affected_sop_instance_uid.as_deref(),
            Some("1.2.840.10008.1.20.1.1")
        );
        assert_eq!(rsp.action_type_id, Some(1));
        assert_eq!(rsp.message_id_being_responded_to, Some(9));

        let get = Command {
            command_field: field::N_GET_RQ,
            requested_sop_class_uid: Some("1.2.840.10008.3.1.2.3.3".into()),
            requested_sop_instance_uid: Some("1.2.3".into()),
            message_id: Some(2),
            attribute_identifier_list: vec![0x0040_0252, 0x0010_0010],
            ..Command::default()
        };
        assert_eq!(Command::decode(&get.encode()).expect("decodes"), get);

        let report = Command {
            command_field: field::N_EVENT_REPORT_RSP,
            affected_sop_class_uid: Some("1.2.840.10008.1.20.1".into()),
            affected_sop_instance_uid: Some("1.2.840.10008.1.20.1.1".into()),
            message_id_being_responded_to: Some(3),
            event_type_id: Some(2),
            status: Some(status::PROCESSING_FAILURE),
            error_id: Some(0xA710),
            ..Command::default()
        };
        let bytes = report.encode();
        assert_eq!(bytes.len() % 2, 0);
        assert_eq!(Command::decode(&bytes).expect("decodes"), report);
    }

    #[test]
    fn element_outside_group_zero_is_refused() {
        let mut bytes = vec![0x08, 0x00, 0x18, 0x00, 0x02, 0x00, 0x00, 0x00, b'1', 0];
        bytes.extend(Command::default().encode());
        assert!(Command::decode(&bytes).is_err());
    }
}
