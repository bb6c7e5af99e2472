//! The archive's Prometheus metrics: HL7 messages received, by type and outcome. See
//! [`register`].

use ::metrics::{counter, describe_counter};

use crate::hl7::HANDLED_MESSAGE_TYPES;

pub const HL7_MESSAGES: &str = "openpacs_hl7_messages_total";

/// The type label of a message whose type is not one openpacs handles (kept to one value so
/// that a sender cannot create series at will), and of a frame whose MSH could not be read.
pub const OTHER_TYPE: &str = "other";
pub const UNREADABLE_TYPE: &str = "unreadable";

/// The acknowledgement sent: AA, AE (the message is valid but could not be applied: unknown
/// patient, missing field, storage error), AR (not handled or not readable).
pub const HL7_OUTCOMES: [&str; 3] = ["accepted", "error", "rejected"];

/// Describes the HL7 message counter and creates each type and outcome at zero.
pub fn register() {
    describe_counter!(
        HL7_MESSAGES,
        "HL7 messages received, by type (MSH-9, or other/unreadable) and acknowledgement (accepted AA, error AE, rejected AR)"
    );
    for kind in HANDLED_MESSAGE_TYPES.into_iter().chain([OTHER_TYPE]) {
        for outcome in HL7_OUTCOMES {
            counter!(HL7_MESSAGES, "type" => kind, "outcome" => outcome).increment(0);
        }
    }
    counter!(HL7_MESSAGES, "type" => UNREADABLE_TYPE, "outcome" => "rejected").increment(0);
}

pub(crate) fn hl7_message(kind: &'static str, outcome: &'static str) {
    counter!(HL7_MESSAGES, "type" => kind, "outcome" => outcome).increment(1);
}
