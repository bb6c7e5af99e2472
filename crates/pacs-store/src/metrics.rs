//! The index's Prometheus metrics. See [`register`].

use ::metrics::{describe_histogram, histogram};

pub const INDEX_BATCH_SIZE: &str = "openpacs_index_batch_size";
/// Buckets for [`INDEX_BATCH_SIZE`], in writes per transaction (the recorder's default
/// buckets are in seconds).
pub const INDEX_BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Describes the index's metrics and creates them empty.
pub fn register() {
    describe_histogram!(
        INDEX_BATCH_SIZE,
        "writes committed together in one index transaction (group commit)"
    );
    let _ = histogram!(INDEX_BATCH_SIZE);
}
