//! The DICOM listener's Prometheus metrics: their names in one place, and [`register`], which
//! describes each and creates it at zero so that a scrape before the first association already
//! shows every series an operator alerts on (a missing series reads as "no data", not "0").

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};

pub const ASSOCIATIONS_ACTIVE: &str = "openpacs_dimse_associations_active";
pub const ASSOCIATIONS_TOTAL: &str = "openpacs_dimse_associations_total";
pub const ASSOCIATIONS_REFUSED: &str = "openpacs_dimse_associations_refused_total";
pub const PROTOCOL_ERRORS: &str = "openpacs_dimse_protocol_errors_total";
pub const STORES: &str = "openpacs_dimse_stores_total";
pub const STORE_BYTES: &str = "openpacs_dimse_store_bytes_total";
pub const STORE_SECONDS: &str = "openpacs_dimse_store_seconds";
pub const FINDS: &str = "openpacs_dimse_finds_total";
pub const FIND_SECONDS: &str = "openpacs_dimse_find_seconds";
pub const RETRIEVES: &str = "openpacs_dimse_retrieves_total";
pub const RETRIEVE_SECONDS: &str = "openpacs_dimse_retrieve_seconds";
pub const COMMITMENT_REQUESTS: &str = "openpacs_dimse_commitment_requests_total";
pub const COMMITMENT_REPORTS: &str = "openpacs_dimse_commitment_reports_total";
pub const MPPS: &str = "openpacs_dimse_mpps_total";

/// Why an association was refused or dropped before it was accepted: over a bound on pending
/// or open associations, no A-ASSOCIATE-RQ within ARTIM, a malformed request, a closed
/// socket, a calling AE title that is not allowed, a called AE title that names no tenant
/// (`called_ae`), or another refusal of the application (`refused`: a disabled tenant).
pub const REFUSAL_REASONS: [&str; 9] = [
    "pending_per_source",
    "pending_limit",
    "limit",
    "artim",
    "malformed",
    "closed",
    "calling_ae",
    "called_ae",
    "refused",
];
/// A store, a storage commitment request or an MPPS message either succeeded (warnings
/// included) or not.
pub const STORE_OUTCOMES: [&str; 2] = ["success", "failure"];
pub const RETRIEVE_KINDS: [&str; 2] = ["get", "move"];
pub const COMMITMENT_REQUEST_OUTCOMES: [&str; 2] = ["accepted", "refused"];
pub const COMMITMENT_REPORT_OUTCOMES: [&str; 2] = ["delivered", "failed"];
pub const MPPS_OPS: [&str; 2] = ["create", "set"];
pub const MPPS_OUTCOMES: [&str; 2] = ["success", "refused"];

/// Describes every DICOM metric and creates each series at zero. Call once, after the
/// recorder is installed and before the listener accepts.
pub fn register() {
    describe_gauge!(ASSOCIATIONS_ACTIVE, "DICOM associations open now");
    gauge!(ASSOCIATIONS_ACTIVE).increment(0.0);
    describe_counter!(ASSOCIATIONS_TOTAL, "DICOM associations accepted");
    counter!(ASSOCIATIONS_TOTAL).increment(0);
    describe_counter!(
        ASSOCIATIONS_REFUSED,
        "DICOM connections refused or dropped before an association was accepted, by reason"
    );
    for reason in REFUSAL_REASONS {
        counter!(ASSOCIATIONS_REFUSED, "reason" => reason).increment(0);
    }
    describe_counter!(PROTOCOL_ERRORS, "DICOM associations aborted for a protocol error");
    counter!(PROTOCOL_ERRORS).increment(0);

    describe_counter!(STORES, "C-STORE requests, by outcome");
    for outcome in STORE_OUTCOMES {
        counter!(STORES, "outcome" => outcome).increment(0);
    }
    describe_counter!(STORE_BYTES, Unit::Bytes, "bytes received in C-STORE data sets");
    counter!(STORE_BYTES).increment(0);
    describe_histogram!(
        STORE_SECONDS,
        Unit::Seconds,
        "time to receive and store one C-STORE"
    );
    let _ = histogram!(STORE_SECONDS);

    describe_counter!(FINDS, "C-FIND requests");
    counter!(FINDS).increment(0);
    describe_histogram!(FIND_SECONDS, Unit::Seconds, "time to answer one C-FIND");
    let _ = histogram!(FIND_SECONDS);

    describe_counter!(RETRIEVES, "C-GET and C-MOVE requests, by kind");
    for kind in RETRIEVE_KINDS {
        counter!(RETRIEVES, "kind" => kind).increment(0);
    }
    describe_histogram!(
        RETRIEVE_SECONDS,
        Unit::Seconds,
        "time to complete one C-GET or C-MOVE"
    );
    let _ = histogram!(RETRIEVE_SECONDS);

    describe_counter!(COMMITMENT_REQUESTS, "storage commitment requests, by outcome");
    for outcome in COMMITMENT_REQUEST_OUTCOMES {
        counter!(COMMITMENT_REQUESTS, "outcome" => outcome).increment(0);
    }
    describe_counter!(COMMITMENT_REPORTS, "storage commitment reports sent, by outcome");
    for outcome in COMMITMENT_REPORT_OUTCOMES {
        counter!(COMMITMENT_REPORTS, "outcome" => outcome).increment(0);
    }
    describe_counter!(MPPS, "MPPS N-CREATE and N-SET requests, by operation and outcome");
    for op in MPPS_OPS {
        for outcome in MPPS_OUTCOMES {
            counter!(MPPS, "op" => op, "outcome" => outcome).increment(0);
        }
    }
}
