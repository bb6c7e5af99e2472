//! The MLLP listener's Prometheus metrics (the messages themselves are counted by the
//! application, which knows their types and outcomes). See [`register`].

use ::metrics::{counter, describe_counter, describe_gauge, gauge};

use crate::QueueCounts;

pub const CONNECTIONS_REFUSED: &str = "openpacs_hl7_connections_refused_total";

/// Over the bound per source, over the total bound, a connection that sent nothing, a message
/// not finished in time.
pub const REFUSAL_REASONS: [&str; 4] = ["per_source", "limit", "no_message", "message_timeout"];

/// Describes the listener's metrics and creates each series at zero, so that a scrape before
/// the first connection shows them.
pub fn register() {
    describe_counter!(
        CONNECTIONS_REFUSED,
        "MLLP connections refused (over a bound) or cut (nothing sent, message not finished in time), by reason"
    );
    for reason in REFUSAL_REASONS {
        counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(0);
    }
}

pub const OUTBOUND_QUEUE_DEPTH: &str = "openpacs_hl7_outbound_queue_depth";
pub const OUTBOUND_DELIVERED: &str = "openpacs_hl7_outbound_delivered_total";
pub const OUTBOUND_REJECTED: &str = "openpacs_hl7_outbound_rejected_total";
pub const OUTBOUND_FAILED_ATTEMPTS: &str = "openpacs_hl7_outbound_failed_attempts_total";

/// Describes the outbound queue's metrics and shows an empty queue until [`record_queue`]
/// says otherwise (no RIS configured means nothing ever waits).
pub fn register_queue() {
    describe_gauge!(
        OUTBOUND_QUEUE_DEPTH,
        "outbound HL7 messages waiting in the job table for the RIS to acknowledge them (every node's)"
    );
    describe_counter!(OUTBOUND_DELIVERED, "outbound HL7 messages the RIS accepted");
    describe_counter!(
        OUTBOUND_REJECTED,
        "outbound HL7 messages the RIS rejected (set aside as failed jobs, not retried)"
    );
    describe_counter!(
        OUTBOUND_FAILED_ATTEMPTS,
        "outbound HL7 delivery attempts that failed (no connection, no ACK, timeout)"
    );
    record_queue(QueueCounts::default());
}

/// Publishes a snapshot of the outbound queue.
pub fn record_queue(counts: QueueCounts) {
    gauge!(OUTBOUND_QUEUE_DEPTH).set(counts.pending as f64);
    counter!(OUTBOUND_DELIVERED).absolute(counts.delivered);
    counter!(OUTBOUND_REJECTED).absolute(counts.rejected);
    counter!(OUTBOUND_FAILED_ATTEMPTS).absolute(counts.failed_attempts);
}
