//! The index: SQLite through sqlx, behind the [`Index`] trait a PostgreSQL backend can
//! implement later.
//!
//! Reads go through a small pool. All writes go through one writer task that groups whatever
//! requests are waiting into a single transaction (group commit): with several associations
//! storing at once, one fsync of the WAL covers many instances. Instances reach the writer
//! only once their blob is durable ([`crate::BlobStore::commit`]), so an index row never
//! becomes visible before the blob it points to.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use pacs_model::{like_pattern, Matcher, QueryLevel, TenantId};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::accounts::{self, AccountOutcome, AccountWrite, CredentialKind, TokenInfo, UserAccount};
use crate::admin::{self, DeleteScope, Deleted, Stats};
use crate::ae::{self, AeRecord, AeWrite};
use crate::columns::{self, Column};
use crate::instance_rows::{self, RowCache};
use crate::jobs::{self, JobOutcome, JobWrite, Jobs};
use crate::sql::{self, Conn, Dialect};
use crate::tenants::{self, TenantOutcome, TenantRecord, TenantWrite};
use crate::workflow::{
    self, MergeRecord, MppsRecord, PatientKey, PatientRecord, Report, StudySummary, WorkflowWrite,
    WorklistItem,
};
use crate::IndexError;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
pub(crate) const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_accounts_deletion.sql"),
    include_str!("../migrations/sqlite/0003_workflow.sql"),
    include_str!("../migrations/sqlite/0004_ae_table.sql"),
    include_str!("../migrations/sqlite/0005_identity_fields.sql"),
    include_str!("../migrations/sqlite/0006_account_lockout.sql"),
    include_str!("../migrations/sqlite/0007_jobs.sql"),
    include_str!("../migrations/sqlite/0008_tenants.sql"),
];

/// Patient-level attributes of an instance being indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientAttrs {
    pub issuer: String,
    pub patient_id: String,
    /// Study UID when the object has no Patient ID (see the `patient` table), else empty.
    pub unidentified_study: String,
    pub name: Option<String>,
    pub name_folded: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StudyAttrs {
    pub study_uid: String,
    pub date: Option<String>,
    pub time: Option<String>,
    pub accession_number: Option<String>,
    pub study_id: Option<String>,
    pub description: Option<String>,
    pub referring: Option<String>,
    pub referring_folded: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesAttrs {
    pub series_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<String>,
    pub description: Option<String>,
    pub body_part: Option<String>,
}

/// Everything the index records about a newly stored instance.
#[derive(Clone, Debug, Default)]
pub struct NewInstance {
    pub tenant: i64,
    pub patient: PatientAttrs,
    pub study: StudyAttrs,
    pub series: SeriesAttrs,
    pub sop_uid: String,
    pub sop_class: String,
    pub instance_number: Option<String>,
    pub rows: Option<String>,
    pub columns: Option<String>,
    pub bits_allocated: Option<String>,
    pub number_of_frames: Option<String>,
    pub transfer_syntax: String,
    pub size: u64,
    /// Blob key: SHA-256 of the stored file.
    pub sha256: String,
    /// SHA-256 of the data set part, to recognise a re-sent identical object.
    pub dataset_sha256: String,
    pub dataset_offset: u64,
    pub source_ae: Option<String>,
    /// Non-pixel header as DICOM JSON.
    pub header_json: String,
    /// Audit line committed in the same transaction as the index rows.
    pub audit: Option<AuditEvent>,
    /// Reconciliation policy: when the study's accession number matches an order of another
    /// patient, move the study under the order's patient (true) or flag it for review (false).
    pub correct_from_orders: bool,
    /// When the current object with this SOP Instance UID has another data set: make this one
    /// current, the other kept superseded (true), or write nothing and say so
    /// ([`IndexOutcome::Differs`]) for the archive to decide (false).
    pub replace_current: bool,
    /// The tenant has a storage quota: check it (with the quota and usage as committed) and
    /// write nothing past it ([`IndexOutcome::QuotaExceeded`]).
    pub check_quota: bool,
}

/// What indexing an instance did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexOutcome {
    Stored {
        pk: i64,
    },
    /// Same SOP Instance UID and same data set as the current object: nothing changed.
    Duplicate {
        pk: i64,
    },
    /// Same SOP Instance UID, different bytes: the new object is current, the old one kept.
    Replaced {
        pk: i64,
        superseded_pk: i64,
    },
    /// Same SOP Instance UID, different bytes, and `replace_current` was not set: nothing
    /// written (no audit line either); `dataset_sha256` is the current object's.
    Differs {
        pk: i64,
        dataset_sha256: String,
    },
    /// The object would take the tenant past its storage quota: nothing written.
    QuotaExceeded {
        quota: u64,
        stored: u64,
    },
}

/// One line of the append-only audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    pub tenant: i64,
    pub event: String,
    pub actor: String,
    pub peer: String,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// A filter on an indexed column.
#[derive(Clone, Debug)]
pub struct Condition {
    pub column: &'static Column,
    pub matcher: Matcher,
}

/// One key of a sorted query: an indexed attribute with a filterable column (names sort
/// case- and accent-folded), ascending or descending. Ties are broken by the row's key.
#[derive(Clone, Copy, Debug)]
pub struct SortKey {
    pub column: &'static Column,
    pub descending: bool,
    /// Compare as numbers (IS, DS, US… values, kept as text in the index).
    pub numeric: bool,
}

/// How a query pages through its rows.
#[derive(Clone, Copy)]
enum Page<'a> {
    /// By key, after this one (streams a whole result set without skipping or repeating).
    AfterKey(i64),
    /// In this order, after skipping this many rows.
    Sorted(&'a [SortKey], u64),
}

/// Where an instance's bytes are.
#[derive(Clone, Debug)]
pub struct InstanceLocation {
    pub pk: i64,
    pub sop_uid: String,
    pub sop_class: String,
    pub transfer_syntax: String,
    pub size: u64,
    pub blob_key: String,
    pub dataset_offset: u64,
    pub dataset_sha256: String,
    pub superseded: bool,
}

/// A query result row: the key of the level's entity and the values of
/// `columns::columns_for(level)` in order.
#[derive(Clone, Debug)]
pub struct QueryRow {
    pub pk: i64,
    pub values: Vec<Option<String>>,
    /// Filled for image-level queries.
    pub instance: Option<InstanceLocation>,
}

/// The index operations the archive needs (the job queue's among them: see [`Jobs`]).
#[async_trait]
pub trait Index: Jobs + Send + Sync + 'static {
    /// Records a stored instance; resolves once the index transaction is durable.
    async fn add_instance(&self, instance: NewInstance) -> Result<IndexOutcome, IndexError>;
    /// Appends to the audit log; resolves once durable.
    async fn audit(&self, event: AuditEvent) -> Result<(), IndexError>;
    /// The Patient ID of the patient a study is filed under (audit lines name it).
    async fn study_patient_id(&self, tenant: TenantId, study_uid: &str)
        -> Result<Option<String>, IndexError>;
    /// The current instance with this SOP Instance UID.
    async fn current_instance(
        &self,
        tenant: TenantId,
        sop_uid: &str,
    ) -> Result<Option<InstanceLocation>, IndexError>;
    /// Rows of `level` matching `conditions`, ordered by key, after `after_pk`, at most `limit`.
    async fn query(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        conditions: &[Condition],
        after_pk: i64,
        limit: u32,
    ) -> Result<Vec<QueryRow>, IndexError>;
    /// Rows of `level` matching `conditions` in the order of `sort`, skipping `offset` rows,
    /// at most `limit`. Empty values come first in ascending order, last in descending.
    async fn query_sorted(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        conditions: &[Condition],
        sort: &[SortKey],
        offset: u64,
        limit: u32,
    ) -> Result<Vec<QueryRow>, IndexError>;
    /// An instance by key, current or superseded.
    async fn instance(&self, tenant: TenantId, pk: i64) -> Result<Option<InstanceLocation>, IndexError>;
    /// An instance's location and, when its patient's identity changed since it was stored,
    /// the patient's current record (see [`Index::patient_patches`]), in one query.
    async fn instance_for_retrieval(
        &self,
        tenant: TenantId,
        pk: i64,
    ) -> Result<Option<(InstanceLocation, Option<PatientRecord>)>, IndexError>;
    /// Stored header (DICOM JSON) of an instance, or of one current instance of a
    /// series/study/patient given that level's key.
    async fn header(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        pk: i64,
    ) -> Result<Option<String>, IndexError>;
    /// Stored headers of these instances (DICOM JSON), in key order.
    async fn instance_headers(&self, tenant: TenantId, pks: &[i64])
        -> Result<Vec<(i64, String)>, IndexError>;
    /// The current instances of a study, or of one of its series, or one instance, in key order
    /// (what WADO-RS, metadata and the study archive send): one query through the unique UID
    /// indexes, without the attribute columns a C-FIND row carries.
    async fn instances_in(
        &self,
        tenant: TenantId,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> Result<Vec<InstanceLocation>, IndexError>;
    /// Every instance (current and superseded), by key, for fixity checks.
    async fn instances_page(&self, after_pk: i64, limit: u32) -> Result<Vec<InstanceLocation>, IndexError>;
    /// Whether any index row refers to this blob.
    async fn blob_referenced(&self, blob_key: &str) -> Result<bool, IndexError>;
    /// Locks one blob key: shared by a store from before its blob commit to its index commit,
    /// exclusively by a removal from its reference check to the blob's deletion (see
    /// [`crate::blob_lock`]). Released when the returned lock is dropped.
    async fn lock_blob(
        &self,
        blob_key: &str,
        mode: crate::BlobLockMode,
    ) -> Result<crate::BlobLock, IndexError>;
    /// Referenced blob keys starting with `prefix` (one blob directory's worth), sorted.
    async fn blob_keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, IndexError>;
    /// Audit records in order, after `after_pk`, at most `limit`.
    async fn audit_page(&self, after_pk: i64, limit: u32) -> Result<Vec<AuditRecord>, IndexError>;
    /// The tenant's audit records matching `filter`, at most `filter.limit`.
    async fn audit_search(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, IndexError>;
    /// Changes the AE table, with `audit` in the same transaction (see [`AeWrite`]).
    async fn write_ae(&self, tenant: TenantId, write: AeWrite, audit: AuditEvent) -> Result<u64, IndexError>;
    /// The tenant's AE table.
    async fn aes(&self, tenant: TenantId) -> Result<Vec<AeRecord>, IndexError>;
    /// Adds or changes a tenant, with `audit` in the same transaction (stamped with the
    /// tenant's key when it was written).
    async fn write_tenant(&self, write: TenantWrite, audit: AuditEvent) -> Result<TenantOutcome, IndexError>;
    /// Every tenant with its AE titles and facilities.
    async fn tenants(&self) -> Result<Vec<TenantRecord>, IndexError>;
    /// What `tenant` is billed for in `month` (see [`crate::billing`]).
    async fn billing_month(
        &self,
        tenant: TenantId,
        month: crate::billing::Month,
        grace_secs: u64,
    ) -> Result<crate::billing::MonthUsage, IndexError>;
    /// When the platform operator `operator`'s live break-glass grant on `tenant` ends.
    async fn access_grant(&self, tenant: TenantId, operator: &str) -> Result<Option<String>, IndexError>;
    /// Bytes of blobs each tenant holds, by tenant key (exact: kept in the transaction of
    /// each change).
    async fn tenant_usage(&self) -> Result<Vec<(i64, u64)>, IndexError>;
    /// Applies a change to the tenant's user accounts; returns the rows it affected.
    async fn write_accounts(
        &self,
        tenant: TenantId,
        write: AccountWrite,
    ) -> Result<AccountOutcome, IndexError>;
    async fn user(&self, tenant: TenantId, username: &str) -> Result<Option<UserAccount>, IndexError>;
    async fn users(&self, tenant: TenantId) -> Result<Vec<UserAccount>, IndexError>;
    /// Whether any account exists, in any tenant (HTTP then requires logging in).
    async fn any_user(&self) -> Result<bool, IndexError>;
    /// The owner of a live session or token, by the SHA-256 of its secret.
    async fn credential_user(
        &self,
        kind: CredentialKind,
        secret_sha256: &str,
    ) -> Result<Option<UserAccount>, IndexError>;
    async fn tokens(&self, tenant: TenantId, username: &str) -> Result<Vec<TokenInfo>, IndexError>;
    /// Deletes a study, series or instance (every version), with `audit` in the same
    /// transaction; lists the blobs left unreferenced in `blob_deletion`.
    async fn delete(&self, scope: DeleteScope, audit: AuditEvent) -> Result<Deleted, IndexError>;
    /// Blobs whose removal was committed but not yet confirmed done.
    async fn pending_blob_deletions(&self) -> Result<Vec<String>, IndexError>;
    async fn clear_blob_deletions(&self, keys: Vec<String>) -> Result<u64, IndexError>;
    async fn stats(&self, tenant: TenantId) -> Result<Stats, IndexError>;
    /// Bytes the index occupies in its engine (all tenants), for the operator's metrics.
    async fn footprint_bytes(&self) -> Result<u64, IndexError>;
    /// One trivial statement: whether the engine answers (for `/healthz`).
    async fn ping(&self) -> Result<(), IndexError>;
    /// Applies a workflow change with its audit line; returns rows changed or the new key
    /// (0: nothing matched; see [`WorkflowWrite`]).
    async fn write_workflow(
        &self,
        tenant: TenantId,
        write: WorkflowWrite,
        audit: AuditEvent,
    ) -> Result<i64, IndexError>;
    /// Scheduled and in-progress worklist items, prefiltered on the indexed keys.
    async fn worklist(
        &self,
        tenant: TenantId,
        filter: WorklistFilter,
    ) -> Result<Vec<WorklistItem>, IndexError>;
    async fn mpps(&self, tenant: TenantId, sop_uid: &str) -> Result<Option<MppsRecord>, IndexError>;
    /// The status of the latest performed procedure step of each of these accession numbers
    /// that has one: `(accession number, status)`.
    async fn mpps_states(
        &self,
        tenant: TenantId,
        accessions: &[String],
    ) -> Result<Vec<(String, String)>, IndexError>;
    async fn reports(&self, tenant: TenantId, study_uid: &str) -> Result<Vec<Report>, IndexError>;
    async fn unmatched_studies(&self, tenant: TenantId, limit: u32) -> Result<Vec<StudySummary>, IndexError>;
    async fn stable_studies(
        &self,
        tenant: TenantId,
        quiet_secs: u64,
    ) -> Result<Vec<StudySummary>, IndexError>;
    /// For instances whose stored patient attributes are out of date: the current ones.
    async fn patient_patches(
        &self,
        tenant: TenantId,
        instance_pks: &[i64],
    ) -> Result<Vec<(i64, PatientRecord)>, IndexError>;
    async fn patient(&self, tenant: TenantId, key: &PatientKey) -> Result<Option<PatientRecord>, IndexError>;
    /// Patient merges, newest first.
    async fn merges(&self, tenant: TenantId) -> Result<Vec<MergeRecord>, IndexError>;
}

/// Worklist prefilter (exact values and an inclusive date range, YYYYMMDD).
#[derive(Clone, Debug, Default)]
pub struct WorklistFilter {
    pub modality: Option<String>,
    pub station_ae: Option<String>,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// Completed and discontinued orders too (the technologists' page); the Modality
    /// Worklist answers only what is still to be done.
    pub any_status: bool,
}

/// An audit line as stored, with its key and time.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub pk: i64,
    pub at: String,
    pub event: AuditEvent,
}

/// What to look for in the audit log. Every filter is optional; dates are UTC instants or
/// days in the index's text format (`2024-05-01`, `2024-05-01T08:00:00Z`), compared as text.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// A user name (`alice` matches the web's `http:alice` too) or an AE title.
    pub actor: Option<String>,
    pub patient_id: Option<String>,
    pub event: Option<String>,
    pub outcome: Option<String>,
    /// At or after.
    pub from: Option<String>,
    /// Before.
    pub to: Option<String>,
    /// Oldest first after this key (default), or newest first before `before`.
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub newest_first: bool,
    pub limit: u32,
}

enum WriteRequest {
    Instance(
        Box<NewInstance>,
        oneshot::Sender<Result<IndexOutcome, IndexError>>,
    ),
    Audit(AuditEvent, oneshot::Sender<Result<(), IndexError>>),
    Account(
        i64,
        AccountWrite,
        oneshot::Sender<Result<AccountOutcome, IndexError>>,
    ),
    Delete(
        DeleteScope,
        AuditEvent,
        oneshot::Sender<Result<Deleted, IndexError>>,
    ),
    ClearBlobDeletions(Vec<String>, oneshot::Sender<Result<u64, IndexError>>),
    Ae(i64, AeWrite, AuditEvent, oneshot::Sender<Result<u64, IndexError>>),
    Workflow(
        i64,
        Box<WorkflowWrite>,
        AuditEvent,
        oneshot::Sender<Result<i64, IndexError>>,
    ),
    Job(Box<JobWrite>, oneshot::Sender<Result<JobOutcome, IndexError>>),
    Tenant(
        Box<TenantWrite>,
        AuditEvent,
        oneshot::Sender<Result<TenantOutcome, IndexError>>,
    ),
}

/// The index on either engine: SQLite (the embedded default, one file beside the blobs) or
/// PostgreSQL (shared by several openpacs nodes). Both run the same statements through
/// [`Conn`]; what differs is how connections are opened, the migrations, and the few pieces of
/// SQL [`sql::Dialect`] gives.
pub struct SqlIndex {
    readers: Readers,
    writer: mpsc::Sender<WriteRequest>,
    /// Where stores and removals of one blob key meet (see `blob_lock.rs`).
    blob_locks: crate::blob_lock::BlobLocks,
}

impl SqlIndex {
    /// Applies a change to the job table through the writer (see `jobs.rs`).
    pub(crate) async fn write_jobs(&self, write: JobWrite) -> Result<JobOutcome, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Job(Box::new(write), tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }
}

/// The embedded default's historical name.
pub type SqliteIndex = SqlIndex;

#[allow(clippy::large_enum_variant)] // one per index, never moved about
enum Readers {
    /// Read-only connections, and the options of a writable one (tests reach the file with it).
    Sqlite(
        SqlitePool,
        #[cfg_attr(not(test), allow(dead_code))] SqliteConnectOptions,
    ),
    Postgres(PgPool),
}

/// A connection taken from the readers' pool, returned to it when dropped.
pub(crate) enum Reader {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Reader {
    pub(crate) fn conn(&mut self) -> &mut dyn Conn {
        match self {
            Reader::Sqlite(c) => &mut **c,
            Reader::Postgres(c) => &mut **c,
        }
    }
}

/// Opens a fresh connection for the writer (at start and after a failed batch).
type Connect = Box<dyn Fn() -> BoxFuture<'static, Result<Box<dyn Conn>, sqlx::Error>> + Send + Sync>;

pub(crate) fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk when it returns, which is what an acknowledgement promises.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        .pragma("cache_size", "-16384")
}

impl SqlIndex {
    /// Opens the index an `[index] url` names: `sqlite://PATH` or `postgres://…`.
    pub async fn open_url(url: &str) -> Result<SqlIndex, IndexError> {
        SqlIndex::open_url_with(url, IndexOptions::default()).await
    }

    /// [`SqlIndex::open_url`] with settings other than the defaults.
    pub async fn open_url_with(url: &str, options: IndexOptions) -> Result<SqlIndex, IndexError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            SqlIndex::open(Path::new(path)).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            SqlIndex::open_postgres(url, options).await
        } else {
            Err(IndexError::Schema(format!(
                "unknown index engine in {:?}: use sqlite://PATH or postgres://…",
                crate::pg::redacted(url)
            )))
        }
    }

    /// Opens (creating and migrating) the SQLite index at `path` and starts the writer task.
    pub async fn open(path: &Path) -> Result<SqlIndex, IndexError> {
        let options = connect_options(path);
        let mut conn = SqliteConnection::connect_with(&options).await?;
        migrate(&mut conn).await?;
        refresh_statistics(&mut conn, true).await;
        // Readers keep a smaller page cache than the writer (4 MiB each instead of 16): the
        // operating system caches the file anyway, and four full caches were most of the
        // server's resident memory with a million instances indexed.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true).pragma("cache_size", "-4096"))
            .await?;
        let readers = Readers::Sqlite(pool, options.clone());
        let connect: Connect = Box::new(move || {
            let options = options.clone();
            Box::pin(async move {
                let conn = SqliteConnection::connect_with(&options).await?;
                Ok(Box::new(conn) as Box<dyn Conn>)
            })
        });
        let locks = crate::blob_lock::BlobLocks::process();
        // No deadline on the embedded file: nothing between the writer and the disk can stop
        // answering while staying connected.
        Ok(SqlIndex::start(readers, Box::new(conn), connect, locks, None))
    }

    /// Opens (creating and migrating) a PostgreSQL index and starts this node's writer.
    pub async fn open_postgres(url: &str, settings: IndexOptions) -> Result<SqlIndex, IndexError> {
        let unreachable = |error| IndexError::Unreachable {
            url: crate::pg::redacted(url),
            error,
        };
        let options: PgConnectOptions = url.parse().map_err(unreachable)?;
        let mut conn = PgConnection::connect_with(&options).await.map_err(unreachable)?;
        crate::pg::migrate(&mut conn).await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // A query while the engine is away fails within seconds (the caller answers "try
            // again later"), rather than after sqlx's default of 30.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.clone())
            .await?;
        let locks = crate::blob_lock::BlobLocks::postgres(options.clone(), settings.write_deadline);
        let connect: Connect = Box::new(move || {
            let options = options.clone();
            Box::pin(async move {
                let conn = PgConnection::connect_with(&options).await?;
                Ok(Box::new(conn) as Box<dyn Conn>)
            })
        });
        Ok(SqlIndex::start(
            Readers::Postgres(pool),
            Box::new(conn),
            connect,
            locks,
            Some(settings.write_deadline),
        ))
    }

    fn start(
        readers: Readers,
        writer: Box<dyn Conn>,
        connect: Connect,
        blob_locks: crate::blob_lock::BlobLocks,
        write_deadline: Option<Duration>,
    ) -> SqlIndex {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run_writer(writer, connect, rx, write_deadline));
        SqlIndex {
            readers,
            writer: tx,
            blob_locks,
        }
    }

    pub(crate) async fn reader(&self) -> Result<Reader, IndexError> {
        Ok(match &self.readers {
            Readers::Sqlite(pool, _) => Reader::Sqlite(pool.acquire().await?),
            Readers::Postgres(pool) => Reader::Postgres(pool.acquire().await?),
        })
    }

    /// A connection that may write, beside the writer: for tests that set up or tamper with rows.
    #[cfg(test)]
    pub(crate) async fn test_conn(&self) -> Box<dyn Conn> {
        match &self.readers {
            Readers::Sqlite(_, options) => Box::new(SqliteConnection::connect_with(options).await.unwrap()),
            Readers::Postgres(pool) => Box::new(pool.acquire().await.unwrap().detach()),
        }
    }

    /// The schema version of an index file, without migrating it.
    pub async fn schema_version(path: &Path) -> Result<i64, IndexError> {
        let mut conn = SqliteConnection::connect_with(&connect_options(path)).await?;
        Ok(sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut conn)
            .await?)
    }
}

async fn migrate(conn: &mut SqliteConnection) -> Result<(), IndexError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    let known = SQLITE_MIGRATIONS.len() as i64;
    if version > known {
        return Err(IndexError::Schema(format!(
            "index schema version {version} is newer than this openpacs ({known})"
        )));
    }
    for (i, sql) in SQLITE_MIGRATIONS.iter().enumerate().skip(version as usize) {
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = i + 1, "index schema migrated");
    }
    Ok(())
}

/// Gives the query planner table statistics (`sqlite_stat1`), which it needs to pick the
/// selective index at scale: without them it prefers any index whose first column is
/// `tenant_pk` (one value in practice), e.g. reading every study to sort them for a study list.
/// `PRAGMA optimize` analyzes only the tables that changed a lot since their last analysis, and
/// `analysis_limit` samples, so this takes milliseconds even on millions of rows. `at_open`
/// also analyzes tables that have no statistics yet. (PostgreSQL's autovacuum does this.)
async fn refresh_statistics(conn: &mut dyn Conn, at_open: bool) {
    if conn.dialect() != Dialect::Sqlite {
        return;
    }
    let optimize = if at_open {
        "PRAGMA optimize = 0x10002"
    } else {
        "PRAGMA optimize"
    };
    for sql in ["PRAGMA analysis_limit = 1000", optimize] {
        if let Err(e) = conn.execute(sql, Vec::new()).await {
            tracing::warn!(error = %e, "refreshing the index statistics failed");
            return;
        }
    }
}

/// A fresh writer connection, retried until the database opens again. After a failed batch
/// the old connection cannot be trusted: when SQLite reports SQLITE_FULL mid-transaction, the
/// connection was seen (disk_full test) to stay inside a transaction that sqlx no longer
/// tracks, so every later "commit" only released a savepoint and nothing became durable.
async fn reopen_writer(
    old: Box<dyn Conn>,
    connect: &Connect,
    rx: &mut mpsc::Receiver<WriteRequest>,
) -> Option<Box<dyn Conn>> {
    // Whatever the old connection holds uncommitted is abandoned with it.
    drop(old);
    let mut delay = Duration::from_millis(50);
    let mut logged = false;
    loop {
        let error = match tokio::time::timeout(Duration::from_secs(5), connect()).await {
            Ok(Ok(conn)) => {
                if logged {
                    tracing::info!("the index is open for writing again");
                }
                return Some(conn);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_string(),
        };
        if !logged {
            tracing::error!(%error, "cannot reopen the index for writing; retrying, and refusing writes meanwhile");
            logged = true;
        }
        // Writes arriving meanwhile are refused at once ("try again later"), not held until
        // the engine is back: a modality waiting on its C-STORE would time out anyway, and
        // would not know whether its object was saved.
        let retry_at = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at) => break,
                request = rx.recv() => match request {
                    Some(request) => fail(request, IndexError::Unavailable(error.clone())),
                    None => return None,
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The single writer: batches everything queued into one transaction.
/// Settings of an index on an engine across the network.
#[derive(Clone, Copy, Debug)]
pub struct IndexOptions {
    /// How long one write transaction may go unanswered before its connection is taken for
    /// lost: an engine that stops answering without closing the connection (a black-holed
    /// route, a frozen host) would otherwise hold every store until TCP gives up, minutes
    /// later. The batch is refused as unavailable and the writer reconnects. A batch holding
    /// a deletion gets twenty times as long (a study of many thousand instances).
    pub write_deadline: Duration,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            write_deadline: Duration::from_secs(30),
        }
    }
}

/// The deadline of one batch (see [`IndexOptions::write_deadline`]).
fn batch_deadline(deadline: Duration, batch: &[WriteRequest]) -> Duration {
    if batch.iter().any(|r| matches!(r, WriteRequest::Delete(..))) {
        deadline * 20
    } else {
        deadline
    }
}

async fn run_writer(
    mut conn: Box<dyn Conn>,
    connect: Connect,
    mut rx: mpsc::Receiver<WriteRequest>,
    deadline: Option<Duration>,
) {
    const MAX_BATCH: usize = 512;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut cache = RowCache::default();
    // Statistics are refreshed after 1,000 instances written, then 2,000, 4,000… (each time
    // the tables may have grown enough for the planner's choice to change).
    let mut written: u64 = 0;
    let mut next_refresh: u64 = 1000;
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        metrics::histogram!(crate::metrics::INDEX_BATCH_SIZE).record(batch.len() as f64);
        written += batch
            .iter()
            .filter(|r| matches!(r, WriteRequest::Instance(..)))
            .count() as u64;
        let written_batch = match deadline {
            None => write_batch(&mut *conn, &mut batch, &mut cache).await,
            Some(deadline) => {
                let limit = batch_deadline(deadline, &batch);
                match tokio::time::timeout(limit, write_batch(&mut *conn, &mut batch, &mut cache)).await {
                    Ok(done) => done,
                    Err(_) => {
                        // Abandoned half-way: what the cache learnt may not have committed.
                        cache = RowCache::default();
                        Err(IndexError::Unavailable(format!(
                            "the index did not answer a write within {} s",
                            limit.as_secs()
                        )))
                    }
                }
            }
        };
        match written_batch {
            Ok(results) => {
                for (request, result) in batch.drain(..).zip(results) {
                    match (request, result) {
                        (WriteRequest::Instance(_, reply), r) => {
                            let _ = reply.send(r.map(|w| match w {
                                Written::Instance(o) => o,
                                _ => IndexOutcome::Duplicate { pk: 0 },
                            }));
                        }
                        (WriteRequest::Audit(_, reply), r) => {
                            let _ = reply.send(r.map(|_| ()));
                        }
                        (WriteRequest::Account(_, _, reply), r)
                        | (WriteRequest::ClearBlobDeletions(_, reply), r)
                        | (WriteRequest::Ae(_, _, _, reply), r) => {
                            let _ = reply.send(r.map(|w| match w {
                                Written::Rows(n) => n,
                                _ => 0,
                            }));
                        }
                        (WriteRequest::Workflow(_, _, _, reply), r) => {
                            let _ = reply.send(r.map(|w| match w {
                                Written::Rows(n) => n as i64,
                                Written::Key(k) => k,
                                _ => 0,
                            }));
                        }
                        (WriteRequest::Delete(_, _, reply), r) => {
                            let _ = reply.send(r.map(|w| match w {
                                Written::Deleted(d) => d,
                                _ => Deleted::default(),
                            }));
                        }
                        (WriteRequest::Job(_, reply), r) => {
                            let _ = reply.send(r.and_then(|w| match w {
                                Written::Job(outcome) => Ok(outcome),
                                _ => Err(IndexError::Schema("a job write wrote no job".into())),
                            }));
                        }
                        (WriteRequest::Tenant(_, _, reply), r) => {
                            let _ = reply.send(r.and_then(|w| match w {
                                Written::Tenant(outcome) => Ok(outcome),
                                _ => Err(IndexError::Schema("a tenant write wrote no tenant".into())),
                            }));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "index transaction failed");
                let msg = e.to_string();
                let unavailable = e.is_unavailable();
                for request in batch.drain(..) {
                    fail(
                        request,
                        if unavailable {
                            IndexError::Unavailable(msg.clone())
                        } else {
                            IndexError::Schema(msg.clone())
                        },
                    );
                }
                match reopen_writer(conn, &connect, &mut rx).await {
                    Some(reopened) => conn = reopened,
                    None => return,
                }
            }
        }
        if written >= next_refresh {
            next_refresh = written.saturating_mul(2);
            refresh_statistics(&mut *conn, false).await;
        }
    }
}

fn fail(request: WriteRequest, error: IndexError) {
    match request {
        WriteRequest::Instance(_, reply) => {
            let _ = reply.send(Err(error));
        }
        WriteRequest::Audit(_, reply) => {
            let _ = reply.send(Err(error));
        }
        WriteRequest::Account(_, _, reply)
        | WriteRequest::ClearBlobDeletions(_, reply)
        | WriteRequest::Ae(_, _, _, reply) => {
            let _ = reply.send(Err(error));
        }
        WriteRequest::Delete(_, _, reply) => {
            let _ = reply.send(Err(error));
        }
        WriteRequest::Workflow(_, _, _, reply) => {
            let _ = reply.send(Err(error));
        }
        WriteRequest::Job(_, reply) => {
            let _ = reply.send(Err(error));
        }
        WriteRequest::Tenant(_, _, reply) => {
            let _ = reply.send(Err(error));
        }
    }
}

/// What one request of a batch wrote.
enum Written {
    Instance(IndexOutcome),
    Audit,
    Rows(u64),
    Key(i64),
    Deleted(Deleted),
    Job(JobOutcome),
    Tenant(TenantOutcome),
}

type BatchResult = Result<Written, IndexError>;

/// Applies a batch in one transaction, where one bad request must fail alone. Optimistically
/// first, with no savepoints (each statement is a round trip to SQLite's thread, and a savepoint
/// costs two per request); when a request fails, that transaction is rolled back and the batch
/// applied again with each request in its own savepoint.
async fn write_batch(
    conn: &mut dyn Conn,
    batch: &mut [WriteRequest],
    cache: &mut RowCache,
) -> Result<Vec<BatchResult>, IndexError> {
    let applied = match apply_batch(conn, batch, false, cache).await {
        Ok(None) => apply_batch(conn, batch, true, cache).await,
        other => other,
    };
    match applied {
        Ok(Some(results)) => Ok(results),
        Ok(None) => Err(IndexError::Schema(
            "batch failed without a failing request".into(),
        )),
        Err(e) => {
            // Rows cached during a transaction that did not commit do not exist.
            cache.clear();
            Err(e)
        }
    }
}

/// One attempt at a batch. Without savepoints, a failing request rolls everything back: `None`
/// for a batch of several (to be retried with savepoints), its error for a batch of one.
async fn apply_batch(
    tx: &mut dyn Conn,
    batch: &[WriteRequest],
    savepoints: bool,
    cache: &mut RowCache,
) -> Result<Option<Vec<BatchResult>>, IndexError> {
    // Plain statements rather than sqlx's transaction guard: the connection is an engine-neutral
    // `Conn`. A failure before the commit leaves the connection to `reopen_writer`, which
    // abandons whatever it held.
    tx.execute("BEGIN", Vec::new()).await?;
    // Another node may change the rows the cache remembers: on PostgreSQL nothing is cached.
    let cacheable = tx.dialect() == Dialect::Sqlite;
    let mut results = Vec::with_capacity(batch.len());
    for request in batch.iter() {
        if savepoints {
            tx.execute("SAVEPOINT item", Vec::new()).await?;
        }
        if !cacheable || !matches!(request, WriteRequest::Instance(..) | WriteRequest::Job(..)) {
            // Any other write may change what the cached rows say (a merge, a deletion…);
            // the job table is no part of them (workers claim every second or so).
            cache.clear();
        }
        let result = match request {
            WriteRequest::Instance(instance, _) => instance_rows::insert_instance(tx, instance, cache)
                .await
                .map(Written::Instance),
            WriteRequest::Audit(event, _) => insert_audit(tx, event).await.map(|_| Written::Audit),
            WriteRequest::Account(tenant, write, _) => {
                accounts::apply(tx, *tenant, write).await.map(Written::Rows)
            }
            WriteRequest::Delete(scope, audit, _) => {
                admin::delete(tx, scope, audit).await.map(Written::Deleted)
            }
            WriteRequest::ClearBlobDeletions(keys, _) => {
                admin::clear_blob_deletions(tx, keys).await.map(Written::Rows)
            }
            WriteRequest::Ae(tenant, write, audit, _) => {
                ae::apply(tx, *tenant, write, audit).await.map(Written::Rows)
            }
            WriteRequest::Workflow(tenant, write, audit, _) => {
                workflow::apply(tx, *tenant, write, audit).await.map(Written::Key)
            }
            WriteRequest::Job(write, _) => jobs::apply(tx, write).await.map(Written::Job),
            WriteRequest::Tenant(write, audit, _) => {
                tenants::apply(tx, write, audit).await.map(Written::Tenant)
            }
        };
        if result.is_err() {
            cache.clear();
        }
        if savepoints {
            if result.is_err() {
                tx.execute("ROLLBACK TO SAVEPOINT item", Vec::new()).await?;
            }
            tx.execute("RELEASE SAVEPOINT item", Vec::new()).await?;
        } else if result.is_err() {
            tx.execute("ROLLBACK", Vec::new()).await?;
            if batch.len() > 1 {
                return Ok(None);
            }
            results.push(result);
            return Ok(Some(results));
        }
        results.push(result);
    }
    tx.execute("COMMIT", Vec::new()).await?;
    Ok(Some(results))
}

/// One audit line; its values are bound in the order of [`AuditEvent`]'s fields.
pub(crate) fn audit_insert(dialect: Dialect) -> String {
    format!(
        "INSERT INTO audit (tenant_pk, at, event, actor, peer, patient_id, study_uid, outcome, detail)
         VALUES (?, {}, ?, ?, ?, ?, ?, ?, ?)",
        dialect.now()
    )
}

/// Binds the values of [`audit_insert`].
pub(crate) fn bind_audit<'q>(query: sql::Query<'q>, e: &AuditEvent) -> sql::Query<'q> {
    query
        .bind(e.tenant)
        .bind(bounded(&e.event, 64))
        .bind(bounded(&e.actor, 256))
        .bind(bounded(&e.peer, 128))
        .bind(e.patient_id.as_deref().map(|v| bounded(v, 128)))
        .bind(e.study_uid.as_deref().map(|v| bounded(v, 128)))
        .bind(bounded(&e.outcome, 64))
        .bind(e.detail.as_deref().map(|v| bounded(v, 4096)))
}

/// An audit field cut to at most `max` bytes (on a character boundary) and marked as cut:
/// every audit row goes through here, so no request — a 500 KB user name at a failed log-in
/// — can make the append-only log grow by more than a few kilobytes.
fn bounded(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_string();
    }
    let mark = format!("…[{} bytes cut]", value.len());
    let mut end = max.saturating_sub(mark.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &value[..end])
}

pub(crate) async fn insert_audit(tx: &mut dyn Conn, e: &AuditEvent) -> Result<(), IndexError> {
    bind_audit(sql::query(&audit_insert(tx.dialect())), e)
        .execute(tx)
        .await?;
    Ok(())
}

const INSTANCE_FIELDS: &str = "i.pk, i.sop_uid, i.sop_class, i.transfer_syntax, i.size, i.blob_key, i.dataset_offset, i.dataset_sha256, i.superseded_at IS NOT NULL";

fn location(row: &sql::DbRow, at: usize) -> Result<InstanceLocation, sqlx::Error> {
    Ok(InstanceLocation {
        pk: row.try_get(at)?,
        sop_uid: row.try_get(at + 1)?,
        sop_class: row.try_get(at + 2)?,
        transfer_syntax: row.try_get(at + 3)?,
        size: row.try_get::<i64>(at + 4)? as u64,
        blob_key: row.try_get(at + 5)?,
        dataset_offset: row.try_get::<i64>(at + 6)? as u64,
        dataset_sha256: row.try_get(at + 7)?,
        superseded: row.try_get(at + 8)?,
    })
}

/// A value bound to a query placeholder.
enum Bind {
    Text(String),
    Int(i64),
}

/// Adds the SQL prefilter for one condition. It only narrows to a superset of the exact
/// matches: the archive applies the matching engine to every row it gets back.
/// The literal prefix of a DICOM wildcard pattern (before the first `*` or `?`) and the
/// smallest string above every string that starts with it.
fn prefix_range(pattern: &str) -> Option<(String, String)> {
    let end = pattern.find(['*', '?']).unwrap_or(pattern.len());
    let prefix = &pattern[..end];
    let last = prefix.chars().next_back()?;
    let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32)?;
    let mut high = prefix[..prefix.len() - last.len_utf8()].to_string();
    high.push(next);
    Some((prefix.to_string(), high))
}

fn push_condition(sql: &mut String, binds: &mut Vec<Bind>, condition: &Condition) {
    let Some(expr) = condition.column.filter else {
        return;
    };
    match &condition.matcher {
        Matcher::Universal => {}
        Matcher::Single(v) => {
            sql.push_str(&format!(" AND {expr} = ?"));
            binds.push(Bind::Text(v.clone()));
        }
        Matcher::Wildcard(p) => {
            sql.push_str(&format!(" AND {expr} LIKE ? ESCAPE '\\'"));
            binds.push(Bind::Text(like_pattern(p)));
            // LIKE cannot use a BINARY index; a range on the literal prefix can. Matching is
            // case-sensitive (person names are compared folded, on their folded column), so
            // every match lies in [prefix, prefix with its last character incremented).
            if let Some((low, high)) = prefix_range(p) {
                sql.push_str(&format!(" AND {expr} >= ? AND {expr} < ?"));
                binds.push(Bind::Text(low));
                binds.push(Bind::Text(high));
            }
        }
        Matcher::Range { low, high } => {
            if condition.column.kind != pacs_model::ValueKind::Date {
                return;
            }
            if let Some(low) = low {
                sql.push_str(&format!(" AND {expr} >= ?"));
                binds.push(Bind::Text(low.clone()));
            }
            if let Some(high) = high {
                sql.push_str(&format!(" AND {expr} <= ?"));
                binds.push(Bind::Text(high.clone()));
            }
            if low.is_none() && high.is_none() {
                sql.push_str(&format!(" AND {expr} IS NOT NULL"));
            }
        }
        Matcher::NameWords(words) => {
            // A match contains each word's literal start somewhere: no index serves that,
            // but it keeps the matching engine's work to the rows that may match.
            for prefix in pacs_model::name_words::literal_prefixes(words) {
                sql.push_str(&format!(" AND {expr} LIKE ? ESCAPE '\\'"));
                binds.push(Bind::Text(format!("%{}%", like_pattern(prefix))));
            }
        }
        Matcher::UidList(uids) => {
            if uids.is_empty() {
                return;
            }
            sql.push_str(&format!(" AND {expr} IN ("));
            for (i, uid) in uids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                binds.push(Bind::Text(uid.clone()));
            }
            sql.push(')');
        }
    }
}

impl SqlIndex {
    /// The rows of a query, one page of them (see [`Page`]).
    async fn query_rows(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        conditions: &[Condition],
        page: Page<'_>,
        limit: u32,
    ) -> Result<Vec<QueryRow>, IndexError> {
        let mut reader = self.reader().await?;
        let dialect = reader.conn().dialect();
        let selected: Vec<&Column> = columns::columns_for(level).collect();
        let mut sql = String::from("SELECT ");
        let key = match level {
            QueryLevel::Patient => "p.pk",
            QueryLevel::Study => "st.pk",
            QueryLevel::Series => "se.pk",
            QueryLevel::Image => "i.pk",
        };
        sql.push_str(key);
        for c in &selected {
            sql.push_str(", ");
            sql.push_str(c.select);
        }
        if level == QueryLevel::Image {
            sql.push_str(", ");
            sql.push_str(INSTANCE_FIELDS);
        }
        // From the queried level up to the patient, each parent by its primary key, and the
        // tenant on the queried level's own table: the planner then walks that table in key
        // order (a page of a list stops after `limit` rows) or enters through the index of a
        // condition, instead of starting from the patients and sorting every row.
        let depth = columns::depth(level);
        sql.push_str(match depth {
            0 => " FROM patient p WHERE p.tenant_pk = ?",
            1 => {
                " FROM study st JOIN patient p ON p.pk = st.patient_pk \
                 WHERE st.tenant_pk = ? AND st.num_instances > 0"
            }
            2 => {
                " FROM series se JOIN study st ON st.pk = se.study_pk AND st.num_instances > 0 \
                 JOIN patient p ON p.pk = st.patient_pk \
                 WHERE se.tenant_pk = ? AND se.num_instances > 0"
            }
            _ => {
                " FROM instance i JOIN series se ON se.pk = i.series_pk AND se.num_instances > 0 \
                 JOIN study st ON st.pk = se.study_pk AND st.num_instances > 0 \
                 JOIN patient p ON p.pk = st.patient_pk \
                 WHERE i.tenant_pk = ? AND i.superseded_at IS NULL"
            }
        });
        let mut binds = vec![Bind::Int(tenant.0)];
        if depth == 0 {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM study s3 WHERE s3.patient_pk = p.pk AND s3.num_instances > 0)",
            );
        }
        for condition in conditions {
            if columns::depth(condition.column.level) <= depth {
                push_condition(&mut sql, &mut binds, condition);
            }
        }
        match page {
            Page::AfterKey(after_pk) => {
                sql.push_str(&format!(" AND {key} > ? ORDER BY {key} LIMIT ?"));
                binds.push(Bind::Int(after_pk));
                binds.push(Bind::Int(limit as i64));
            }
            Page::Sorted(sort, offset) => {
                sql.push_str(" ORDER BY ");
                for k in sort {
                    // Only columns of this level or above are joined in.
                    if columns::depth(k.column.level) > depth {
                        continue;
                    }
                    let expr = k.column.filter.unwrap_or(k.column.select);
                    let dir = dialect.order(k.descending);
                    if k.numeric {
                        sql.push_str(&format!("{} {dir}, ", dialect.numeric_sort_key(expr)));
                    } else {
                        // Bare, so that an index on the column can give the order; empty
                        // values (NULL) come first ascending, last descending.
                        sql.push_str(&format!("{expr} {dir}, "));
                    }
                }
                let dir = dialect.order(sort.first().is_some_and(|k| k.descending));
                sql.push_str(&format!("{key} {dir} LIMIT ? OFFSET ?"));
                binds.push(Bind::Int(limit as i64));
                binds.push(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
            }
        }
        let mut q = sql::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(reader.conn()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            let mut values = Vec::with_capacity(selected.len());
            for i in 0..selected.len() {
                // Computed counts are integers, everything else text: integers read as
                // their decimal text.
                values.push(row.take_text(i + 1)?);
            }
            let instance = if level == QueryLevel::Image {
                Some(location(&row, selected.len() + 1)?)
            } else {
                None
            };
            out.push(QueryRow {
                pk: row.try_get(0)?,
                values,
                instance,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Index for SqlIndex {
    async fn add_instance(&self, instance: NewInstance) -> Result<IndexOutcome, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Instance(Box::new(instance), tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn audit(&self, event: AuditEvent) -> Result<(), IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Audit(event, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn study_patient_id(
        &self,
        tenant: TenantId,
        study_uid: &str,
    ) -> Result<Option<String>, IndexError> {
        Ok(sql::query_scalar(
            "SELECT p.patient_id FROM study s JOIN patient p ON p.pk = s.patient_pk
             WHERE s.tenant_pk = ? AND s.study_uid = ?",
        )
        .bind(tenant.0)
        .bind(study_uid)
        .fetch_optional(self.reader().await?.conn())
        .await?)
    }

    async fn current_instance(
        &self,
        tenant: TenantId,
        sop_uid: &str,
    ) -> Result<Option<InstanceLocation>, IndexError> {
        let row = sql::query(&format!(
            "SELECT {INSTANCE_FIELDS} FROM instance i
             WHERE i.tenant_pk = ? AND i.sop_uid = ? AND i.superseded_at IS NULL"
        ))
        .bind(tenant.0)
        .bind(sop_uid)
        .fetch_optional(self.reader().await?.conn())
        .await?;
        Ok(row.map(|r| location(&r, 0)).transpose()?)
    }

    async fn query(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        conditions: &[Condition],
        after_pk: i64,
        limit: u32,
    ) -> Result<Vec<QueryRow>, IndexError> {
        self.query_rows(tenant, level, conditions, Page::AfterKey(after_pk), limit)
            .await
    }

    async fn query_sorted(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        conditions: &[Condition],
        sort: &[SortKey],
        offset: u64,
        limit: u32,
    ) -> Result<Vec<QueryRow>, IndexError> {
        self.query_rows(tenant, level, conditions, Page::Sorted(sort, offset), limit)
            .await
    }

    async fn instance(&self, tenant: TenantId, pk: i64) -> Result<Option<InstanceLocation>, IndexError> {
        let row = sql::query(&format!(
            "SELECT {INSTANCE_FIELDS} FROM instance i WHERE i.pk = ? AND i.tenant_pk = ?"
        ))
        .bind(pk)
        .bind(tenant.0)
        .fetch_optional(self.reader().await?.conn())
        .await?;
        Ok(row.map(|r| location(&r, 0)).transpose()?)
    }

    async fn instance_for_retrieval(
        &self,
        tenant: TenantId,
        pk: i64,
    ) -> Result<Option<(InstanceLocation, Option<PatientRecord>)>, IndexError> {
        let row = sql::query(&format!(
            "SELECT {INSTANCE_FIELDS}, i.patient_revision <> p.revision,
                    p.pk, p.issuer, p.patient_id, p.patient_name, p.birth_date, p.sex, p.revision,
                    p.ris_fields
             FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study s ON s.pk = se.study_pk
             JOIN patient p ON p.pk = s.patient_pk
             WHERE i.pk = ? AND i.tenant_pk = ?"
        ))
        .bind(pk)
        .bind(tenant.0)
        .fetch_optional(self.reader().await?.conn())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let patched: bool = row.try_get(9)?;
        let patch = if patched {
            Some(workflow::patient_record_at(&row, 10)?)
        } else {
            None
        };
        Ok(Some((location(&row, 0)?, patch)))
    }

    async fn header(
        &self,
        tenant: TenantId,
        level: QueryLevel,
        pk: i64,
    ) -> Result<Option<String>, IndexError> {
        let sql = match level {
            QueryLevel::Image => {
                "SELECT h.header FROM instance_header h JOIN instance i ON i.pk = h.instance_pk
                 WHERE h.instance_pk = ?1 AND i.tenant_pk = ?2"
            }
            QueryLevel::Series => {
                "SELECT h.header FROM instance i JOIN instance_header h ON h.instance_pk = i.pk
                 WHERE i.series_pk = ?1 AND i.tenant_pk = ?2 AND i.superseded_at IS NULL
                 ORDER BY i.pk DESC LIMIT 1"
            }
            QueryLevel::Study => {
                "SELECT h.header FROM instance i JOIN instance_header h ON h.instance_pk = i.pk
                 JOIN series se ON i.series_pk = se.pk
                 WHERE se.study_pk = ?1 AND i.tenant_pk = ?2 AND i.superseded_at IS NULL
                 ORDER BY i.pk DESC LIMIT 1"
            }
            QueryLevel::Patient => {
                "SELECT h.header FROM instance i JOIN instance_header h ON h.instance_pk = i.pk
                 JOIN series se ON i.series_pk = se.pk JOIN study st ON se.study_pk = st.pk
                 WHERE st.patient_pk = ?1 AND i.tenant_pk = ?2 AND i.superseded_at IS NULL
                 ORDER BY i.pk DESC LIMIT 1"
            }
        };
        Ok(sql::query_scalar(sql)
            .bind(pk)
            .bind(tenant.0)
            .fetch_optional(self.reader().await?.conn())
            .await?)
    }

    async fn instances_in(
        &self,
        tenant: TenantId,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> Result<Vec<InstanceLocation>, IndexError> {
        let mut sql = format!(
            "SELECT {INSTANCE_FIELDS} FROM study st \
             JOIN series se ON se.study_pk = st.pk \
             JOIN instance i ON i.series_pk = se.pk AND i.superseded_at IS NULL \
             WHERE st.tenant_pk = ? AND st.study_uid = ?"
        );
        if series_uid.is_some() {
            sql.push_str(" AND se.series_uid = ?");
        }
        if sop_uid.is_some() {
            sql.push_str(" AND i.sop_uid = ?");
        }
        sql.push_str(" ORDER BY i.pk");
        let mut q = sql::query(&sql).bind(tenant.0).bind(study_uid);
        for uid in [series_uid, sop_uid].into_iter().flatten() {
            q = q.bind(uid);
        }
        let rows = q.fetch_all(self.reader().await?.conn()).await?;
        Ok(rows.iter().map(|r| location(r, 0)).collect::<Result<_, _>>()?)
    }

    async fn instance_headers(
        &self,
        tenant: TenantId,
        pks: &[i64],
    ) -> Result<Vec<(i64, String)>, IndexError> {
        let mut out = Vec::with_capacity(pks.len());
        // SQLite accepts at most 32,766 parameters; stay far below.
        for chunk in pks.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT h.instance_pk, h.header FROM instance_header h JOIN instance i ON i.pk = h.instance_pk
                 WHERE i.tenant_pk = ? AND h.instance_pk IN ({placeholders}) ORDER BY h.instance_pk"
            );
            let mut q = sql::query_as::<(i64, String)>(&sql).bind(tenant.0);
            for pk in chunk {
                q = q.bind(pk);
            }
            out.extend(q.fetch_all(self.reader().await?.conn()).await?);
        }
        Ok(out)
    }

    async fn instances_page(&self, after_pk: i64, limit: u32) -> Result<Vec<InstanceLocation>, IndexError> {
        let rows = sql::query(&format!(
            "SELECT {INSTANCE_FIELDS} FROM instance i WHERE i.pk > ? ORDER BY i.pk LIMIT ?"
        ))
        .bind(after_pk)
        .bind(limit as i64)
        .fetch_all(self.reader().await?.conn())
        .await?;
        Ok(rows.iter().map(|r| location(r, 0)).collect::<Result<_, _>>()?)
    }

    async fn lock_blob(
        &self,
        blob_key: &str,
        mode: crate::BlobLockMode,
    ) -> Result<crate::BlobLock, IndexError> {
        self.blob_locks.lock(blob_key, mode).await
    }

    async fn blob_referenced(&self, blob_key: &str) -> Result<bool, IndexError> {
        let n: i64 = sql::query_scalar("SELECT COUNT(*) FROM instance WHERE blob_key = ?")
            .bind(blob_key)
            .fetch_one(self.reader().await?.conn())
            .await?;
        Ok(n > 0)
    }

    async fn blob_keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, IndexError> {
        // Keys are lowercase hex, so every key with this prefix sorts below prefix + 'g'.
        Ok(sql::query_scalar(
            "SELECT DISTINCT blob_key FROM instance WHERE blob_key >= ? AND blob_key < ? ORDER BY blob_key",
        )
        .bind(prefix)
        .bind(format!("{prefix}g"))
        .fetch_all(self.reader().await?.conn())
        .await?)
    }

    async fn write_accounts(
        &self,
        tenant: TenantId,
        write: AccountWrite,
    ) -> Result<AccountOutcome, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Account(tenant.0, write, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn user(&self, tenant: TenantId, username: &str) -> Result<Option<UserAccount>, IndexError> {
        accounts::user_by_name(self.reader().await?.conn(), tenant.0, username).await
    }

    async fn users(&self, tenant: TenantId) -> Result<Vec<UserAccount>, IndexError> {
        accounts::users(self.reader().await?.conn(), tenant.0).await
    }

    async fn any_user(&self) -> Result<bool, IndexError> {
        Ok(sql::query_scalar("SELECT EXISTS (SELECT 1 FROM user_account)")
            .fetch_one(self.reader().await?.conn())
            .await?)
    }

    async fn credential_user(
        &self,
        kind: CredentialKind,
        secret_sha256: &str,
    ) -> Result<Option<UserAccount>, IndexError> {
        accounts::credential_user(self.reader().await?.conn(), kind, secret_sha256).await
    }

    async fn tokens(&self, tenant: TenantId, username: &str) -> Result<Vec<TokenInfo>, IndexError> {
        accounts::tokens(self.reader().await?.conn(), tenant.0, username).await
    }

    async fn delete(&self, scope: DeleteScope, audit: AuditEvent) -> Result<Deleted, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Delete(scope, audit, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn pending_blob_deletions(&self) -> Result<Vec<String>, IndexError> {
        admin::pending_blob_deletions(self.reader().await?.conn()).await
    }

    async fn clear_blob_deletions(&self, keys: Vec<String>) -> Result<u64, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::ClearBlobDeletions(keys, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn stats(&self, tenant: TenantId) -> Result<Stats, IndexError> {
        admin::stats(self.reader().await?.conn(), tenant.0).await
    }

    async fn ping(&self) -> Result<(), IndexError> {
        sql::query("SELECT 1")
            .execute(self.reader().await?.conn())
            .await?;
        Ok(())
    }

    async fn footprint_bytes(&self) -> Result<u64, IndexError> {
        let mut reader = self.reader().await?;
        let sql = match reader.conn().dialect() {
            // The main database file; the write-ahead log is folded into it at each checkpoint.
            Dialect::Sqlite => "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            Dialect::Postgres => "SELECT pg_database_size(current_database())",
        };
        let bytes: i64 = sql::query_scalar(sql).fetch_one(reader.conn()).await?;
        Ok(bytes.max(0) as u64)
    }

    async fn write_workflow(
        &self,
        tenant: TenantId,
        write: WorkflowWrite,
        audit: AuditEvent,
    ) -> Result<i64, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Workflow(tenant.0, Box::new(write), audit, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn worklist(&self, tenant: TenantId, f: WorklistFilter) -> Result<Vec<WorklistItem>, IndexError> {
        workflow::worklist(
            self.reader().await?.conn(),
            tenant.0,
            f.modality.as_deref(),
            f.station_ae.as_deref(),
            f.date_from.as_deref(),
            f.date_to.as_deref(),
            f.any_status,
        )
        .await
    }

    async fn mpps_states(
        &self,
        tenant: TenantId,
        accessions: &[String],
    ) -> Result<Vec<(String, String)>, IndexError> {
        workflow::mpps_states(self.reader().await?.conn(), tenant.0, accessions).await
    }

    async fn mpps(&self, tenant: TenantId, sop_uid: &str) -> Result<Option<MppsRecord>, IndexError> {
        workflow::mpps(self.reader().await?.conn(), tenant.0, sop_uid).await
    }

    async fn reports(&self, tenant: TenantId, study_uid: &str) -> Result<Vec<Report>, IndexError> {
        workflow::reports(self.reader().await?.conn(), tenant.0, study_uid).await
    }

    async fn unmatched_studies(&self, tenant: TenantId, limit: u32) -> Result<Vec<StudySummary>, IndexError> {
        workflow::unmatched_studies(self.reader().await?.conn(), tenant.0, limit).await
    }

    async fn stable_studies(
        &self,
        tenant: TenantId,
        quiet_secs: u64,
    ) -> Result<Vec<StudySummary>, IndexError> {
        workflow::stable_studies(self.reader().await?.conn(), tenant.0, quiet_secs).await
    }

    async fn patient_patches(
        &self,
        tenant: TenantId,
        instance_pks: &[i64],
    ) -> Result<Vec<(i64, PatientRecord)>, IndexError> {
        workflow::patient_patches(self.reader().await?.conn(), tenant.0, instance_pks).await
    }

    async fn patient(&self, tenant: TenantId, key: &PatientKey) -> Result<Option<PatientRecord>, IndexError> {
        workflow::patient(self.reader().await?.conn(), tenant.0, key).await
    }

    async fn merges(&self, tenant: TenantId) -> Result<Vec<MergeRecord>, IndexError> {
        workflow::merges(self.reader().await?.conn(), tenant.0).await
    }

    async fn audit_page(&self, after_pk: i64, limit: u32) -> Result<Vec<AuditRecord>, IndexError> {
        let rows = sql::query(
            "SELECT pk, at, tenant_pk, event, actor, peer, patient_id, study_uid, outcome, detail
             FROM audit WHERE pk > ? ORDER BY pk LIMIT ?",
        )
        .bind(after_pk)
        .bind(limit as i64)
        .fetch_all(self.reader().await?.conn())
        .await?;
        Ok(rows.iter().map(audit_record).collect::<Result<_, _>>()?)
    }

    async fn audit_search(&self, tenant: TenantId, f: &AuditFilter) -> Result<Vec<AuditRecord>, IndexError> {
        // One fixed statement per order: every value is bound, none is spliced into the text.
        let sql = if f.newest_first {
            concat!(audit_search_sql!(), " ORDER BY pk DESC LIMIT ?10")
        } else {
            concat!(audit_search_sql!(), " ORDER BY pk LIMIT ?10")
        };
        let rows = sql::query(sql)
            .bind(tenant.0)
            .bind(&f.actor)
            .bind(&f.patient_id)
            .bind(&f.event)
            .bind(&f.outcome)
            .bind(&f.from)
            .bind(&f.to)
            .bind(f.after)
            .bind(f.before)
            .bind(i64::from(f.limit))
            .fetch_all(self.reader().await?.conn())
            .await?;
        Ok(rows.iter().map(audit_record).collect::<Result<_, _>>()?)
    }

    async fn write_ae(&self, tenant: TenantId, write: AeWrite, audit: AuditEvent) -> Result<u64, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Ae(tenant.0, write, audit, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn aes(&self, tenant: TenantId) -> Result<Vec<AeRecord>, IndexError> {
        ae::list(self.reader().await?.conn(), tenant.0).await
    }

    async fn write_tenant(&self, write: TenantWrite, audit: AuditEvent) -> Result<TenantOutcome, IndexError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteRequest::Tenant(Box::new(write), audit, tx))
            .await
            .map_err(|_| IndexError::WriterGone)?;
        rx.await.map_err(|_| IndexError::WriterGone)?
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, IndexError> {
        tenants::list(self.reader().await?.conn()).await
    }

    async fn billing_month(
        &self,
        tenant: TenantId,
        month: crate::billing::Month,
        grace_secs: u64,
    ) -> Result<crate::billing::MonthUsage, IndexError> {
        crate::billing::month(self.reader().await?.conn(), tenant.0, month, grace_secs).await
    }

    async fn access_grant(&self, tenant: TenantId, operator: &str) -> Result<Option<String>, IndexError> {
        tenants::access_grant(self.reader().await?.conn(), tenant.0, operator).await
    }

    async fn tenant_usage(&self) -> Result<Vec<(i64, u64)>, IndexError> {
        let rows: Vec<(i64, i64)> =
            sql::query_as("SELECT pk, stored_bytes FROM tenant WHERE pk > 0 ORDER BY pk")
                .fetch_all(self.reader().await?.conn())
                .await?;
        Ok(rows
            .into_iter()
            .map(|(pk, bytes)| (pk, bytes.max(0) as u64))
            .collect())
    }
}

fn audit_record(r: &sql::DbRow) -> Result<AuditRecord, sqlx::Error> {
    Ok(AuditRecord {
        pk: r.try_get(0)?,
        at: r.try_get(1)?,
        event: AuditEvent {
            tenant: r.try_get(2)?,
            event: r.try_get(3)?,
            actor: r.try_get(4)?,
            peer: r.try_get(5)?,
            patient_id: r.try_get(6)?,
            study_uid: r.try_get(7)?,
            outcome: r.try_get(8)?,
            detail: r.try_get(9)?,
        },
    })
}

/// The audit search without its order: a user name matches the web's `http:` actor too.
macro_rules! audit_search_sql {
    () => {
        "SELECT pk, at, tenant_pk, event, actor, peer, patient_id, study_uid, outcome, detail
         FROM audit WHERE tenant_pk = ?1
           AND (CAST(?2 AS TEXT) IS NULL OR actor = ?2 OR actor = 'http:' || ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR patient_id = ?3)
           AND (CAST(?4 AS TEXT) IS NULL OR event = ?4)
           AND (CAST(?5 AS TEXT) IS NULL OR outcome = ?5)
           AND (CAST(?6 AS TEXT) IS NULL OR at >= ?6)
           AND (CAST(?7 AS TEXT) IS NULL OR at < ?7)
           AND (CAST(?8 AS BIGINT) IS NULL OR pk > ?8)
           AND (CAST(?9 AS BIGINT) IS NULL OR pk < ?9)"
    };
}
use audit_search_sql;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The index the tests run against: SQLite in `dir`, or with `PACS_TEST_INDEX=postgres`
    /// a new database of its own on the PostgreSQL server `PACS_TEST_POSTGRES` names
    /// (default: this machine's, 127.0.0.1:5432), so that every index test also runs on the
    /// second engine (the test command runs them both ways). The databases are named
    /// `openpacs_test_…`; the test command drops the previous run's before it starts.
    pub(crate) async fn test_index(dir: &Path) -> SqlIndex {
        SqlIndex::open_url(&test_index_url(dir).await).await.unwrap()
    }

    /// Where [`test_index`] opens its index (a new, empty database), for tests that open it
    /// twice, as two nodes would.
    pub(crate) async fn test_index_url(dir: &Path) -> String {
        if std::env::var("PACS_TEST_INDEX").as_deref() != Ok("postgres") {
            return format!("sqlite://{}", dir.join("index.sqlite").display());
        }
        let server = std::env::var("PACS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "openpacs_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&server).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        format!("{base}/{name}")
    }

    /// Adds a tenant row, as tenancy management will.
    pub(crate) async fn add_tenant(index: &SqlIndex, pk: i64, name: &str) {
        sql::query("INSERT INTO tenant (pk, name) VALUES (?, ?)")
            .bind(pk)
            .bind(name)
            .execute(&mut *index.test_conn().await)
            .await
            .unwrap();
    }

    pub(crate) fn instance(sop: &str, dataset_sha: &str) -> NewInstance {
        NewInstance {
            tenant: 1,
            patient: PatientAttrs {
                patient_id: "P1".into(),
                name: Some("Lefèvre^Hélène".into()),
                name_folded: Some(pacs_model::fold_person_name("Lefèvre^Hélène")),
                ..PatientAttrs::default()
            },
            study: StudyAttrs {
                study_uid: "1.2.3".into(),
                date: Some("20240102".into()),
                ..StudyAttrs::default()
            },
            series: SeriesAttrs {
                series_uid: "1.2.3.4".into(),
                modality: Some("CT".into()),
                ..SeriesAttrs::default()
            },
            sop_uid: sop.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            size: 10,
            sha256: dataset_sha.repeat(2),
            dataset_sha256: dataset_sha.into(),
            header_json: "{}".into(),
            audit: Some(AuditEvent {
                tenant: 1,
                event: "store".into(),
                actor: "TEST".into(),
                peer: "local".into(),
                outcome: "success".into(),
                ..AuditEvent::default()
            }),
            ..NewInstance::default()
        }
    }

    fn condition(tag: (u16, u16), matcher: Matcher) -> Condition {
        Condition {
            column: columns::column_for_tag(tag).unwrap(),
            matcher,
        }
    }

    #[tokio::test]
    async fn duplicates_are_recognised_and_changed_objects_supersede() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let first = index.add_instance(instance("1.2.3.4.1", "aa")).await.unwrap();
        let IndexOutcome::Stored { pk } = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            index.add_instance(instance("1.2.3.4.1", "aa")).await.unwrap(),
            IndexOutcome::Duplicate { pk }
        );
        // Other bytes: nothing written until the archive says the new one replaces.
        assert!(matches!(
            index.add_instance(instance("1.2.3.4.1", "bb")).await.unwrap(),
            IndexOutcome::Differs { pk: current, .. } if current == pk
        ));
        let mut replacing = instance("1.2.3.4.1", "bb");
        replacing.replace_current = true;
        let replaced = index.add_instance(replacing).await.unwrap();
        let IndexOutcome::Replaced {
            superseded_pk,
            pk: new_pk,
        } = replaced
        else {
            panic!("{replaced:?}")
        };
        assert_eq!(superseded_pk, pk);
        index.add_instance(instance("1.2.3.4.2", "cc")).await.unwrap();

        // Image level: the current objects only.
        let rows = index
            .query(TenantId(1), QueryLevel::Image, &[], 0, 100)
            .await
            .unwrap();
        let pks: Vec<i64> = rows.iter().map(|r| r.pk).collect();
        assert_eq!(pks.len(), 2);
        assert!(pks.contains(&new_pk) && !pks.contains(&pk));
        // Both versions are kept for fixity checks.
        assert_eq!(index.instances_page(0, 100).await.unwrap().len(), 3);
        let old = index.instance(TenantId(1), pk).await.unwrap().unwrap();
        assert!(old.superseded);

        // Study level counts current instances; name matching uses the folded column.
        let by_name = [condition(
            (0x0010, 0x0010),
            Matcher::parse(pacs_model::ValueKind::PersonName, "LEFEVRE*"),
        )];
        let studies = index
            .query(TenantId(1), QueryLevel::Study, &by_name, 0, 100)
            .await
            .unwrap();
        assert_eq!(studies.len(), 1);
        let count_pos = columns::columns_for(QueryLevel::Study)
            .position(|c| c.tag == (0x0020, 0x1208))
            .unwrap();
        assert_eq!(studies[0].values[count_pos].as_deref(), Some("2"));
        let by_date = [condition(
            (0x0008, 0x0020),
            Matcher::parse(pacs_model::ValueKind::Date, "20240101-20240131"),
        )];
        assert_eq!(
            index
                .query(TenantId(1), QueryLevel::Study, &by_date, 0, 100)
                .await
                .unwrap()
                .len(),
            1
        );
        let other_date = [condition(
            (0x0008, 0x0020),
            Matcher::parse(pacs_model::ValueKind::Date, "-20231231"),
        )];
        assert!(index
            .query(TenantId(1), QueryLevel::Study, &other_date, 0, 100)
            .await
            .unwrap()
            .is_empty());
        // Another tenant sees nothing.
        assert!(index
            .query(TenantId(2), QueryLevel::Study, &[], 0, 100)
            .await
            .unwrap()
            .is_empty());
        // Four store audits were committed with the rows.
        let audit = index.audit_page(0, 100).await.unwrap();
        assert_eq!(audit.iter().filter(|a| a.event.event == "store").count(), 4);
    }

    /// `instances_in` (WADO-RS, metadata, archives, single-key retrieves): current versions
    /// only, in key order, narrowed by series and instance, within the tenant.
    #[tokio::test]
    async fn instances_in_lists_the_current_instances_of_a_study_series_or_instance() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        index.add_instance(instance("1.2.3.4.1", "aa")).await.unwrap();
        index.add_instance(instance("1.2.3.4.2", "bb")).await.unwrap();
        let mut other_series = instance("1.2.3.5.1", "cc");
        other_series.series.series_uid = "1.2.3.5".into();
        index.add_instance(other_series).await.unwrap();
        // A new version of the first instance supersedes it.
        let mut replacing = instance("1.2.3.4.1", "dd");
        replacing.replace_current = true;
        index.add_instance(replacing).await.unwrap();

        let sops = |l: Vec<InstanceLocation>| -> Vec<(String, String)> {
            l.into_iter().map(|l| (l.sop_uid, l.dataset_sha256)).collect()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        let study = index
            .instances_in(TenantId(1), "1.2.3", None, None)
            .await
            .unwrap();
        assert!(study.windows(2).all(|w| w[0].pk < w[1].pk), "key order");
        assert!(study.iter().all(|l| !l.superseded));
        assert_eq!(
            sops(study),
            vec![
                pair("1.2.3.4.2", "bb"),
                pair("1.2.3.5.1", "cc"),
                pair("1.2.3.4.1", "dd")
            ]
        );
        let series = index
            .instances_in(TenantId(1), "1.2.3", Some("1.2.3.4"), None)
            .await
            .unwrap();
        assert_eq!(
            sops(series),
            vec![pair("1.2.3.4.2", "bb"), pair("1.2.3.4.1", "dd")]
        );
        let one = index
            .instances_in(TenantId(1), "1.2.3", Some("1.2.3.4"), Some("1.2.3.4.1"))
            .await
            .unwrap();
        assert_eq!(sops(one), vec![pair("1.2.3.4.1", "dd")]);
        // A series of another study, an unknown study, another tenant: nothing.
        assert!(index
            .instances_in(TenantId(1), "1.2.9", Some("1.2.3.4"), None)
            .await
            .unwrap()
            .is_empty());
        assert!(index
            .instances_in(TenantId(2), "1.2.3", None, None)
            .await
            .unwrap()
            .is_empty());
    }

    /// Consecutive instances of a series reuse the rows the first one wrote
    /// (`instance_rows::RowCache`); what a later instance adds must still reach the index, and
    /// each instance gets its own header and its study's reception time.
    #[tokio::test]
    async fn later_instances_of_a_series_still_update_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let received_at = || async {
            sql::query_scalar::<String>("SELECT last_received_at FROM study WHERE study_uid = '1.2.3'")
                .fetch_one(index.reader().await.unwrap().conn())
                .await
                .unwrap()
        };
        let mut pks = Vec::new();
        for (n, sop) in ["1.2.3.4.1", "1.2.3.4.2"].iter().enumerate() {
            let mut i = instance(sop, &format!("{n:02}"));
            i.header_json = format!("{{\"n\":{n}}}");
            let IndexOutcome::Stored { pk } = index.add_instance(i).await.unwrap() else {
                panic!()
            };
            pks.push(pk);
        }
        let first_received = received_at().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut third = instance("1.2.3.4.3", "03");
        third.series.description = Some("AXIAL 1mm".into());
        third.study.description = Some("CT THORAX".into());
        third.patient.sex = Some("F".into());
        third.header_json = "{\"n\":2}".into();
        let IndexOutcome::Stored { pk } = index.add_instance(third).await.unwrap() else {
            panic!()
        };
        pks.push(pk);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let IndexOutcome::Stored { pk } = index.add_instance(instance("1.2.3.4.4", "04")).await.unwrap()
        else {
            panic!()
        };
        pks.push(pk);
        let last_received = received_at().await;
        assert!(
            last_received > first_received,
            "{first_received} then {last_received}"
        );

        let (series_desc, study_desc, sex, series_count): (
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
        ) = sql::query_as(
            "SELECT se.description, st.description, p.sex, (SELECT COUNT(*) FROM series)
                 FROM series se JOIN study st ON st.pk = se.study_pk JOIN patient p ON p.pk = st.patient_pk",
        )
        .fetch_one(index.reader().await.unwrap().conn())
        .await
        .unwrap();
        assert_eq!(series_desc.as_deref(), Some("AXIAL 1mm"));
        assert_eq!(study_desc.as_deref(), Some("CT THORAX"));
        assert_eq!(sex.as_deref(), Some("F"));
        assert_eq!(series_count, 1);
        let headers = index.instance_headers(TenantId(1), &pks).await.unwrap();
        let mut by_pk: Vec<(i64, String)> = headers;
        by_pk.sort();
        assert_eq!(
            by_pk,
            vec![
                (pks[0], "{\"n\":0}".to_string()),
                (pks[1], "{\"n\":1}".to_string()),
                (pks[2], "{\"n\":2}".to_string()),
                (pks[3], "{}".to_string()),
            ]
        );
        let audit = index.audit_page(0, 100).await.unwrap();
        assert_eq!(audit.iter().filter(|a| a.event.event == "store").count(), 4);
    }

    #[tokio::test]
    async fn audit_log_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        index
            .audit(AuditEvent {
                tenant: 1,
                event: "query".into(),
                actor: "X".into(),
                peer: "p".into(),
                outcome: "success".into(),
                ..AuditEvent::default()
            })
            .await
            .unwrap();
        let mut conn = index.test_conn().await;
        assert!(sql::query("DELETE FROM audit").execute(&mut *conn).await.is_err());
        assert!(sql::query("UPDATE audit SET outcome = 'x'")
            .execute(&mut *conn)
            .await
            .is_err());
    }

    #[test]
    fn wildcard_prefix_range_bounds_every_match() {
        assert_eq!(prefix_range("lef*"), Some(("lef".into(), "leg".into())));
        assert_eq!(prefix_range("2020*"), Some(("2020".into(), "2021".into())));
        assert_eq!(prefix_range("ab?d*"), Some(("ab".into(), "ac".into())));
        assert_eq!(prefix_range("bé*"), Some(("bé".into(), "bê".into())));
        assert_eq!(prefix_range("*x"), None);
        let (low, high) = prefix_range("lef*").unwrap();
        for v in ["lef", "lefevre^helene", "lef\u{10FFFF}"] {
            assert!(v >= low.as_str() && v < high.as_str(), "{v}");
        }
    }
}
