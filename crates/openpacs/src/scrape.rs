//! What `/metrics` shows: the recorder every crate's counters go to, and the gauges read at
//! each scrape from the disks, the index and the outbound queue (storage used and free, index
//! size and contents, HL7 messages waiting for the RIS).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics::{describe_gauge, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pacs_archive::hl7_outbox::RisOutbox;
use pacs_archive::Archive;

pub const STORAGE_USED: &str = "openpacs_storage_used_bytes";
pub const STORAGE_FREE: &str = "openpacs_storage_free_bytes";
pub const STORAGE_CAPACITY: &str = "openpacs_storage_capacity_bytes";
pub const INDEX_SIZE: &str = "openpacs_index_size_bytes";
pub const INDEX_OBJECTS: &str = "openpacs_index_objects";
pub const TENANT_USAGE: &str = "openpacs_tenant_usage_bytes";
pub const TENANT_QUOTA: &str = "openpacs_tenant_quota_bytes";

/// Latency buckets, in seconds, for every `*_seconds` histogram.
const SECONDS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process's metrics recorder and creates every metric at zero, so that the
/// first scrape, before any traffic, lists them all.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&SECONDS_BUCKETS)
        .context("metrics buckets")?
        .set_buckets_for_metric(
            Matcher::Full(pacs_store::metrics::INDEX_BATCH_SIZE.into()),
            &pacs_store::metrics::INDEX_BATCH_SIZE_BUCKETS,
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    pacs_dimse::metrics::register();
    pacs_hl7::metrics::register();
    pacs_hl7::metrics::register_queue();
    pacs_archive::metrics::register();
    pacs_store::metrics::register();
    describe_gauge!(
        STORAGE_USED,
        Unit::Bytes,
        "bytes of the objects stored (current versions, as received)"
    );
    describe_gauge!(
        STORAGE_FREE,
        Unit::Bytes,
        "bytes free for openpacs on the file system holding the objects"
    );
    describe_gauge!(
        STORAGE_CAPACITY,
        Unit::Bytes,
        "size of the file system holding the objects"
    );
    describe_gauge!(
        INDEX_SIZE,
        Unit::Bytes,
        "bytes the index occupies in its database"
    );
    describe_gauge!(
        INDEX_OBJECTS,
        "patients, studies, series and instances in the index, by level"
    );
    describe_gauge!(
        TENANT_USAGE,
        Unit::Bytes,
        "bytes of the blobs a tenant's objects hold (what its quota is checked against), by tenant"
    );
    describe_gauge!(
        TENANT_QUOTA,
        Unit::Bytes,
        "a tenant's storage quota, for the tenants that have one"
    );
    Ok(recorder)
}

/// Renders `/metrics` after refreshing the gauges read from the archive.
pub struct Scrape {
    recorder: PrometheusHandle,
    archive: Arc<Archive>,
    queue: Option<Arc<RisOutbox>>,
    /// Counting the archive's contents reads the whole instance table, and scrapes come every
    /// 15 s or so: the counts are taken again at most this often (`metrics_count_secs`) and
    /// shown from the last count in between.
    count_interval: Duration,
    contents_counted: Mutex<Option<Instant>>,
}

impl Scrape {
    pub fn new(
        recorder: PrometheusHandle,
        archive: Arc<Archive>,
        queue: Option<Arc<RisOutbox>>,
        count_interval: Duration,
    ) -> Arc<Scrape> {
        Arc::new(Scrape {
            recorder,
            archive,
            queue,
            count_interval,
            contents_counted: Mutex::new(None),
        })
    }

    /// The exposition text; a gauge that cannot be read keeps its last value (and the reason
    /// goes to the log), so that a scrape never fails for one of them.
    pub async fn render(&self) -> String {
        self.refresh().await;
        self.recorder.render()
    }

    async fn refresh(&self) {
        // Blobs in a bucket: its free space is the object store's to report.
        if let Some(root) = self.archive.blobs().local_root() {
            match rustix::fs::statvfs(root) {
                Ok(fs) => {
                    let block = fs.f_frsize as f64;
                    gauge!(STORAGE_FREE).set(fs.f_bavail as f64 * block);
                    gauge!(STORAGE_CAPACITY).set(fs.f_blocks as f64 * block);
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the free space of the object store"),
            }
        }
        match self.archive.system().footprint_bytes().await {
            Ok(bytes) => gauge!(INDEX_SIZE).set(bytes as f64),
            Err(e) => tracing::warn!(error = %e, "cannot read the size of the index"),
        }
        self.tenant_usage().await;
        if let Some(queue) = &self.queue {
            pacs_hl7::metrics::record_queue(queue.counts().await);
        }
        if self.contents_are_stale() {
            self.count_contents().await;
        }
    }

    /// Whether the contents were last counted longer ago than the count interval (or never);
    /// marks them counted now if so, so that concurrent scrapes count once.
    fn contents_are_stale(&self) -> bool {
        let mut counted = self.contents_counted.lock().unwrap_or_else(|e| e.into_inner());
        let stale = counted.is_none_or(|at| at.elapsed() >= self.count_interval);
        if stale {
            *counted = Some(Instant::now());
        }
        stale
    }

    /// Each tenant's usage and quota: two small reads of the tenant table.
    async fn tenant_usage(&self) {
        let system = self.archive.system();
        let (tenants, usage) = match (system.tenants().await, system.tenant_usage().await) {
            (Ok(tenants), Ok(usage)) => (tenants, usage),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot read the tenants' usage");
                return;
            }
        };
        for tenant in tenants {
            let bytes = usage
                .iter()
                .find(|(pk, _)| *pk == tenant.pk)
                .map_or(0, |(_, b)| *b);
            gauge!(TENANT_USAGE, "tenant" => tenant.name.clone()).set(bytes as f64);
            if let Some(quota) = tenant.quota_bytes {
                gauge!(TENANT_QUOTA, "tenant" => tenant.name.clone()).set(quota as f64);
            }
        }
    }

    async fn count_contents(&self) {
        match self.archive.index().stats().await {
            Ok(stats) => {
                gauge!(STORAGE_USED).set(stats.bytes as f64);
                for (level, count) in [
                    ("patient", stats.patients),
                    ("study", stats.studies),
                    ("series", stats.series),
                    ("instance", stats.instances),
                ] {
                    gauge!(INDEX_OBJECTS, "level" => level).set(count as f64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the archive's contents"),
        }
    }
}
