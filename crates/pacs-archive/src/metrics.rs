//! The archive's Prometheus metrics: HL7 messages received, by type and outcome; per tenant,
//! stores, bytes stored and DICOM associations (the platform operator's view of each
//! establishment's traffic; tenant names only, never patient data). See [`register`].

use ::metrics::{counter, describe_counter};

use crate::hl7::HANDLED_MESSAGE_TYPES;

pub const HL7_MESSAGES: &str = "openpacs_hl7_messages_total";
pub const TENANT_STORES: &str = "openpacs_tenant_stores_total";
pub const TENANT_STORED_BYTES: &str = "openpacs_tenant_stored_bytes_total";
pub const TENANT_ASSOCIATIONS: &str = "openpacs_tenant_associations_total";
/// What became of an object a tenant was sent (C-STORE, STOW-RS, import): indexed (new or
/// replacing), a duplicate of one held (nothing added), or refused.
pub const TENANT_STORE_OUTCOMES: [&str; 3] = ["stored", "duplicate", "refused"];

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
    describe_counter!(
        TENANT_STORES,
        "Objects sent to a tenant (C-STORE, STOW-RS, import), by tenant and outcome (stored, duplicate, refused)"
    );
    describe_counter!(
        TENANT_STORED_BYTES,
        "Bytes of the objects a tenant stored, by tenant"
    );
    describe_counter!(
        TENANT_ASSOCIATIONS,
        "DICOM associations admitted for a tenant (by its called AE title)"
    );
}

/// Creates a tenant's series at zero, so that a tenant with no traffic yet is listed.
pub(crate) fn register_tenant(tenant: &str) {
    for outcome in TENANT_STORE_OUTCOMES {
        counter!(TENANT_STORES, "tenant" => tenant.to_string(), "outcome" => outcome).increment(0);
    }
    counter!(TENANT_STORED_BYTES, "tenant" => tenant.to_string()).increment(0);
    counter!(TENANT_ASSOCIATIONS, "tenant" => tenant.to_string()).increment(0);
}

/// One object sent to `tenant`: stored (with its bytes), a duplicate, or refused (`None`).
pub(crate) fn tenant_store(tenant: &str, stored: Option<&crate::StoredInstance>) {
    use crate::StoreResult;
    let outcome = match stored.map(|s| &s.result) {
        Some(StoreResult::Stored | StoreResult::Replaced) => "stored",
        Some(StoreResult::Duplicate | StoreResult::KeptFirst) => "duplicate",
        None => "refused",
    };
    counter!(TENANT_STORES, "tenant" => tenant.to_string(), "outcome" => outcome).increment(1);
    if outcome == "stored" {
        let bytes = stored.map_or(0, |s| s.bytes);
        counter!(TENANT_STORED_BYTES, "tenant" => tenant.to_string()).increment(bytes);
    }
}

pub(crate) fn tenant_association(tenant: &str) {
    counter!(TENANT_ASSOCIATIONS, "tenant" => tenant.to_string()).increment(1);
}

pub(crate) fn hl7_message(kind: &'static str, outcome: &'static str) {
    counter!(HL7_MESSAGES, "type" => kind, "outcome" => outcome).increment(1);
}
