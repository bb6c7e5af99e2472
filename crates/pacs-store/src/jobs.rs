//! Durable jobs, shared by every node of an installation: the work openpacs owes the outside
//! world after a change (an HL7 message to the RIS now; storage-commitment reports, C-MOVE
//! retries and fixity checks later), kept in the index so that it survives a crash and any
//! node can do it.
//!
//! - A job is written in the same transaction as the change that causes it
//!   ([`crate::WorkflowWrite::WithJob`]), or alone ([`Jobs::enqueue_jobs`]).
//! - A node claims jobs with a lease ([`Jobs::claim_jobs`]), renews the lease while it works,
//!   then completes or fails the job. A lease that runs out (the node died, or hangs) makes
//!   the job claimable again by any node: that is how a dead node's work is taken over.
//!   Delivery is therefore at least once; a job is never run by two nodes at once while its
//!   lease is renewed.
//! - Jobs with the same `queue_key` run one at a time, in id order: only the oldest open job
//!   of a key (pending or running) can be claimed, so a job waiting out its back-off holds the
//!   ones queued after it (an HL7 destination needs its messages in sequence). A failed job
//!   no longer holds its queue.
//! - On PostgreSQL a claim locks the rows it takes with `FOR UPDATE SKIP LOCKED`, so that two
//!   nodes claiming at once take different jobs; on SQLite the claim is one statement in the
//!   single writer's transaction, serialised with every other write to the file.
//!
//! Every job carries its tenant; listing and retrying go through the tenant's handle, claiming
//! through the system handle (a node works for every tenant).

use std::time::Duration;

use async_trait::async_trait;
use pacs_model::TenantId;

use crate::index::insert_audit;
use crate::sql::{self, Conn, Dialect};
use crate::{AuditEvent, IndexError};

/// The kind of an outbound HL7 message (payload: the message's bytes, exactly as sent).
pub const HL7_OUTBOUND: &str = "hl7-outbound";
/// A storage commitment report to send again on a new association (`pacs-archive`'s
/// `commitment_retry`).
pub const COMMITMENT_REPORT: &str = "commitment-report";

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to be claimed (after `not_before`).
    Pending,
    /// Claimed by `lease_owner` until `lease_until`.
    Running,
    Done,
    /// Set aside: refused by its peer, or out of attempts. Only an administrator's retry
    /// brings it back.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Pending,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A job to enqueue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewJob {
    /// Stamped by the tenant handle (or the write) that enqueues it.
    pub tenant: i64,
    pub kind: String,
    /// Jobs with the same key run one at a time, in id order.
    pub queue_key: String,
    pub payload: Vec<u8>,
    /// What the job is about, for the operator's list (`ORM^O01 CM accession=A1`); never
    /// parsed.
    pub summary: String,
    /// Attempts after which a failing job is set aside (state failed).
    pub max_attempts: u32,
}

/// A job as the index holds it (without its payload: see [`ClaimedJob`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: i64,
    #[serde(skip)]
    pub tenant: i64,
    pub kind: String,
    pub queue_key: String,
    pub summary: String,
    pub state: JobState,
    /// Claims so far (a claim is an attempt, even if its node died during it).
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    /// Not claimed before this time (back-off after a failed attempt).
    pub not_before: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A job a node has claimed: the job and what it is to do.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub job: Job,
    pub payload: Vec<u8>,
}

/// What to list. Newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    /// Only jobs with a smaller id (the next page).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The durable job queue; the index engines implement it (every [`crate::Index`] is one).
#[async_trait]
pub trait Jobs: Send + Sync {
    /// Enqueues jobs, in order, in one transaction; returns their ids.
    async fn enqueue_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<i64>, IndexError>;
    /// Claims at most `limit` jobs of these kinds for `owner` (a node's id) for `lease`: each
    /// the oldest open job of its queue key, pending and past its back-off, or running with a
    /// lease that has run out. Returned in id order.
    async fn claim_jobs(
        &self,
        owner: &str,
        kinds: &[&str],
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, IndexError>;
    /// Extends the lease `owner` holds on a running job; false when it holds it no more.
    async fn renew_job_lease(&self, id: i64, owner: &str, lease: Duration) -> Result<bool, IndexError>;
    /// Marks a job `owner` runs done; false when it runs it no more (taken over).
    async fn complete_job(&self, id: i64, owner: &str) -> Result<bool, IndexError>;
    /// Records a failed attempt of a job `owner` runs: pending again once `retry_in` has
    /// passed (the worker's back-off, which doubles from attempt to attempt up to a cap), or
    /// failed when `retry_in` is `None` (the peer refused it: the same attempt would fail the
    /// same way) or its attempts are used up. Returns the job's new state (`None`: not
    /// `owner`'s).
    async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<Option<JobState>, IndexError>;
    /// An administrator's retry of a failed (or backing-off) job of the tenant: pending now,
    /// its attempts counted afresh; `audit` in the same transaction. False when no such job
    /// is failed or pending.
    async fn retry_job(&self, tenant: TenantId, id: i64, audit: AuditEvent) -> Result<bool, IndexError>;
    /// The tenant's jobs matching `filter`, newest first.
    async fn jobs(&self, tenant: TenantId, filter: &JobFilter) -> Result<Vec<Job>, IndexError>;
    /// Open (pending or running) jobs of a kind, every tenant: the depth of a queue.
    async fn open_jobs(&self, kind: &str) -> Result<u64, IndexError>;
}

/// A change to the job table, applied by the index writer.
#[derive(Clone, Debug)]
pub(crate) enum JobWrite {
    Enqueue(Vec<NewJob>),
    Claim {
        owner: String,
        kinds: Vec<String>,
        lease: Duration,
        limit: u32,
    },
    Renew {
        id: i64,
        owner: String,
        lease: Duration,
    },
    Complete {
        id: i64,
        owner: String,
    },
    Fail {
        id: i64,
        owner: String,
        error: String,
        retry_in: Option<Duration>,
    },
    Retry {
        tenant: i64,
        id: i64,
        audit: AuditEvent,
    },
}

/// What a [`JobWrite`] did.
#[derive(Debug)]
pub(crate) enum JobOutcome {
    Enqueued(Vec<i64>),
    Claimed(Vec<ClaimedJob>),
    Changed(bool),
    State(Option<JobState>),
}

const JOB_COLUMNS: &str =
    "pk, tenant_pk, kind, queue_key, summary, state, attempts, max_attempts, last_error, \
                           not_before, lease_owner, lease_until, created_at, updated_at";

fn job_of(row: &sql::DbRow) -> Result<Job, IndexError> {
    let state: String = row.try_get(5)?;
    Ok(Job {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        kind: row.try_get(2)?,
        queue_key: row.try_get(3)?,
        summary: row.try_get(4)?,
        state: JobState::parse(&state).ok_or_else(|| IndexError::Schema(format!("job state {state:?}")))?,
        attempts: row.try_get::<i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
        max_attempts: row.try_get::<i64>(7)?.clamp(0, i64::from(u32::MAX)) as u32,
        last_error: row.try_get(8)?,
        not_before: row.try_get(9)?,
        lease_owner: row.try_get(10)?,
        lease_until: row.try_get(11)?,
        created_at: row.try_get(12)?,
        updated_at: row.try_get(13)?,
    })
}

/// Whole seconds of a lease or back-off, at least one (the index's times are compared as
/// text to the millisecond, and a lease of zero would be expired as it is granted).
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// The error text kept with a job, bounded like an audit field.
fn bounded_error(error: &str) -> String {
    const MAX: usize = 2048;
    if error.len() <= MAX {
        return error.to_string();
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

/// Inserts jobs in order (inside the caller's transaction); returns their ids.
pub(crate) async fn insert(conn: &mut dyn Conn, jobs: &[NewJob]) -> Result<Vec<i64>, IndexError> {
    let now = conn.dialect().now();
    let statement = format!(
        "INSERT INTO job (tenant_pk, kind, queue_key, payload, summary, state, attempts, max_attempts,
                          not_before, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, {now}, {now}, {now}) RETURNING pk"
    );
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id: i64 = sql::query_scalar(&statement)
            .bind(job.tenant)
            .bind(&job.kind)
            .bind(&job.queue_key)
            .bind(job.payload.as_slice())
            .bind(&job.summary)
            .bind(i64::from(job.max_attempts.max(1)))
            .fetch_one(&mut *conn)
            .await?;
        ids.push(id);
    }
    Ok(ids)
}

pub(crate) async fn apply(conn: &mut dyn Conn, write: &JobWrite) -> Result<JobOutcome, IndexError> {
    let dialect = conn.dialect();
    let now = dialect.now();
    Ok(match write {
        JobWrite::Enqueue(jobs) => JobOutcome::Enqueued(insert(conn, jobs).await?),
        JobWrite::Claim {
            owner,
            kinds,
            lease,
            limit,
        } => JobOutcome::Claimed(claim(conn, owner, kinds, *lease, *limit).await?),
        JobWrite::Renew { id, owner, lease } => JobOutcome::Changed(
            sql::query(&format!(
                "UPDATE job SET lease_until = {}, updated_at = {now}
                 WHERE pk = ? AND state = 'running' AND lease_owner = ?",
                dialect.now_plus_secs("?")
            ))
            .bind(secs(*lease))
            .bind(id)
            .bind(owner)
            .execute(&mut *conn)
            .await?
                == 1,
        ),
        JobWrite::Complete { id, owner } => JobOutcome::Changed(
            sql::query(&format!(
                "UPDATE job SET state = 'done', lease_until = NULL, updated_at = {now}
                 WHERE pk = ? AND state = 'running' AND lease_owner = ?"
            ))
            .bind(id)
            .bind(owner)
            .execute(&mut *conn)
            .await?
                == 1,
        ),
        JobWrite::Fail {
            id,
            owner,
            error,
            retry_in,
        } => JobOutcome::State(fail(conn, *id, owner, error, *retry_in).await?),
        JobWrite::Retry { tenant, id, audit } => {
            let changed = sql::query(&format!(
                "UPDATE job SET state = 'pending', attempts = 0, not_before = {now}, lease_owner = NULL,
                                lease_until = NULL, updated_at = {now}
                 WHERE pk = ? AND tenant_pk = ? AND state IN ('failed', 'pending')"
            ))
            .bind(id)
            .bind(tenant)
            .execute(&mut *conn)
            .await?
                == 1;
            let mut audit = audit.clone();
            audit.tenant = *tenant;
            if !changed {
                audit.outcome = "refused".into();
            }
            insert_audit(conn, &audit).await?;
            JobOutcome::Changed(changed)
        }
    })
}

/// The claim: one statement on both engines, so that the choice and the taking cannot be
/// separated by another node's claim.
async fn claim(
    conn: &mut dyn Conn,
    owner: &str,
    kinds: &[String],
    lease: Duration,
    limit: u32,
) -> Result<Vec<ClaimedJob>, IndexError> {
    let dialect = conn.dialect();
    let now = dialect.now();
    let lock = match dialect {
        // Rows another node's claim is taking are skipped, not waited for; that claim's
        // transaction decides them.
        Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        // The single writer (and SQLite's one write lock per file) serialises claims.
        Dialect::Sqlite => "",
    };
    let statement = format!(
        "UPDATE job SET state = 'running', attempts = attempts + 1, lease_owner = ?1,
                        lease_until = {lease_until}, updated_at = {now}
         WHERE pk IN (
             SELECT j.pk FROM job j
             WHERE j.kind IN ({kinds})
               AND ((j.state = 'pending' AND j.not_before <= {now})
                    OR (j.state = 'running' AND j.lease_until <= {now}))
               AND NOT EXISTS (SELECT 1 FROM job e
                               WHERE e.queue_key = j.queue_key AND e.pk < j.pk
                                 AND e.state IN ('pending', 'running'))
             ORDER BY j.pk LIMIT ?4 {lock})
         RETURNING {JOB_COLUMNS}, payload",
        lease_until = dialect.now_plus_secs("?2"),
        kinds = dialect.json_text_values("?3"),
    );
    let kinds = serde_json::to_string(kinds).map_err(|e| IndexError::Schema(e.to_string()))?;
    let rows = sql::query(&statement)
        .bind(owner)
        .bind(secs(lease))
        .bind(kinds)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            Ok(ClaimedJob {
                job: job_of(row)?,
                payload: row.try_get(14)?,
            })
        })
        .collect::<Result<Vec<_>, IndexError>>()?;
    claimed.sort_by_key(|c| c.job.id);
    Ok(claimed)
}

async fn fail(
    conn: &mut dyn Conn,
    id: i64,
    owner: &str,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<Option<JobState>, IndexError> {
    let dialect = conn.dialect();
    let now = dialect.now();
    let Some((attempts, max_attempts)): Option<(i64, i64)> = sql::query_as(
        "SELECT attempts, max_attempts FROM job WHERE pk = ? AND state = 'running' AND lease_owner = ?",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let (state, wait) = match retry_in.filter(|_| attempts < max_attempts) {
        Some(wait) => (JobState::Pending, wait),
        None => (JobState::Failed, Duration::ZERO),
    };
    sql::query(&format!(
        "UPDATE job SET state = ?, last_error = ?, not_before = {}, lease_until = NULL, updated_at = {now}
         WHERE pk = ? AND state = 'running' AND lease_owner = ?",
        dialect.now_plus_secs("?")
    ))
    .bind(state.as_str())
    .bind(bounded_error(error))
    .bind(if wait.is_zero() { 0 } else { secs(wait) })
    .bind(id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(Some(state))
}

pub(crate) async fn list(
    conn: &mut dyn Conn,
    tenant: i64,
    filter: &JobFilter,
) -> Result<Vec<Job>, IndexError> {
    let rows = sql::query(&format!(
        "SELECT {JOB_COLUMNS} FROM job
         WHERE tenant_pk = ?1
           AND (CAST(?2 AS TEXT) IS NULL OR state = ?2)
           AND (CAST(?3 AS TEXT) IS NULL OR kind = ?3)
           AND (CAST(?4 AS BIGINT) IS NULL OR pk < ?4)
         ORDER BY pk DESC LIMIT ?5"
    ))
    .bind(tenant)
    .bind(filter.state.map(JobState::as_str))
    .bind(&filter.kind)
    .bind(filter.before)
    .bind(i64::from(filter.limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(job_of).collect()
}

pub(crate) async fn open_count(conn: &mut dyn Conn, kind: &str) -> Result<u64, IndexError> {
    let n: i64 =
        sql::query_scalar("SELECT count(*) FROM job WHERE kind = ? AND state IN ('pending', 'running')")
            .bind(kind)
            .fetch_one(conn)
            .await?;
    Ok(n.max(0) as u64)
}

#[async_trait]
impl Jobs for crate::SqlIndex {
    async fn enqueue_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<i64>, IndexError> {
        match self.write_jobs(JobWrite::Enqueue(jobs)).await? {
            JobOutcome::Enqueued(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        kinds: &[&str],
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, IndexError> {
        let write = JobWrite::Claim {
            owner: owner.to_string(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            lease,
            limit,
        };
        match self.write_jobs(write).await? {
            JobOutcome::Claimed(jobs) => Ok(jobs),
            other => Err(unexpected(other)),
        }
    }

    async fn renew_job_lease(&self, id: i64, owner: &str, lease: Duration) -> Result<bool, IndexError> {
        let write = JobWrite::Renew {
            id,
            owner: owner.to_string(),
            lease,
        };
        changed(self.write_jobs(write).await?)
    }

    async fn complete_job(&self, id: i64, owner: &str) -> Result<bool, IndexError> {
        let write = JobWrite::Complete {
            id,
            owner: owner.to_string(),
        };
        changed(self.write_jobs(write).await?)
    }

    async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<Option<JobState>, IndexError> {
        let write = JobWrite::Fail {
            id,
            owner: owner.to_string(),
            error: error.to_string(),
            retry_in,
        };
        match self.write_jobs(write).await? {
            JobOutcome::State(state) => Ok(state),
            other => Err(unexpected(other)),
        }
    }

    async fn retry_job(&self, tenant: TenantId, id: i64, audit: AuditEvent) -> Result<bool, IndexError> {
        let write = JobWrite::Retry {
            tenant: tenant.0,
            id,
            audit,
        };
        changed(self.write_jobs(write).await?)
    }

    async fn jobs(&self, tenant: TenantId, filter: &JobFilter) -> Result<Vec<Job>, IndexError> {
        list(self.reader().await?.conn(), tenant.0, filter).await
    }

    async fn open_jobs(&self, kind: &str) -> Result<u64, IndexError> {
        open_count(self.reader().await?.conn(), kind).await
    }
}

fn changed(outcome: JobOutcome) -> Result<bool, IndexError> {
    match outcome {
        JobOutcome::Changed(c) => Ok(c),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: JobOutcome) -> IndexError {
    IndexError::Schema(format!("unexpected job write outcome {outcome:?}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::index::tests::{test_index, test_index_url};
    use crate::{Index, SqlIndex, WorkflowWrite};

    fn job(key: &str, payload: &[u8]) -> NewJob {
        NewJob {
            tenant: 1,
            kind: HL7_OUTBOUND.into(),
            queue_key: key.into(),
            payload: payload.to_vec(),
            summary: format!("to {key}"),
            max_attempts: 5,
        }
    }

    const LEASE: Duration = Duration::from_secs(60);

    fn ids(claimed: &[ClaimedJob]) -> Vec<i64> {
        claimed.iter().map(|c| c.job.id).collect()
    }

    async fn state_of(index: &SqlIndex, id: i64) -> Job {
        let all = index
            .jobs(
                TenantId(1),
                &JobFilter {
                    limit: 1000,
                    ..JobFilter::default()
                },
            )
            .await
            .unwrap();
        all.into_iter().find(|j| j.id == id).expect("job listed")
    }

    #[tokio::test]
    async fn a_claimed_job_carries_its_payload_and_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        // Latin-1 bytes, as an HL7 message in ISO 8859-1 would carry.
        let message = b"MSH|^~\\&|OPENPACS|\xe9|\r".to_vec();
        let enqueued = index.enqueue_jobs(vec![job("ris", &message)]).await.unwrap();
        assert_eq!(enqueued.len(), 1);
        let claimed = index
            .claim_jobs("node-a", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), enqueued);
        assert_eq!(claimed[0].payload, message);
        let first = &claimed[0].job;
        assert_eq!(
            (first.state, first.attempts, first.lease_owner.as_deref()),
            (JobState::Running, 1, Some("node-a"))
        );
        assert_eq!(first.summary, "to ris");
        // Running under a live lease: nobody else gets it; another kind is not claimed.
        assert!(index
            .claim_jobs("node-b", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        assert!(!index.complete_job(first.id, "node-b").await.unwrap());
        assert_eq!(index.open_jobs(HL7_OUTBOUND).await.unwrap(), 1);
        assert!(index.renew_job_lease(first.id, "node-a", LEASE).await.unwrap());
        assert!(index.complete_job(first.id, "node-a").await.unwrap());
        assert_eq!(state_of(&index, first.id).await.state, JobState::Done);
        assert_eq!(index.open_jobs(HL7_OUTBOUND).await.unwrap(), 0);
        assert!(!index.renew_job_lease(first.id, "node-a", LEASE).await.unwrap());
        assert!(index
            .claim_jobs("node-a", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        // Kinds filter what is claimed.
        let mut other = job("pacs-b", b"x");
        other.kind = "commitment-report".into();
        index.enqueue_jobs(vec![other]).await.unwrap();
        assert!(index
            .claim_jobs("node-a", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            index
                .claim_jobs("node-a", &["commitment-report"], LEASE, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// Two nodes (two handles on one database, each with its own writer) claiming at once,
    /// over and over: every job is claimed exactly once.
    #[tokio::test]
    async fn two_claimers_never_get_the_same_job() {
        let dir = tempfile::tempdir().unwrap();
        let url = test_index_url(dir.path()).await;
        let a = Arc::new(SqlIndex::open_url(&url).await.unwrap());
        let b = Arc::new(SqlIndex::open_url(&url).await.unwrap());
        let jobs: Vec<NewJob> = (0..60).map(|n| job(&format!("dest-{n}"), b"m")).collect();
        let enqueued: HashSet<i64> = a.enqueue_jobs(jobs).await.unwrap().into_iter().collect();
        let mut tasks = Vec::new();
        for (n, index) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                let owner = format!("node-{n}");
                let mut mine = Vec::new();
                loop {
                    let got = index.claim_jobs(&owner, &[HL7_OUTBOUND], LEASE, 4).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(ids(&got));
                }
            }));
        }
        let mut seen = Vec::new();
        let mut claimers_with_work = 0;
        for task in tasks {
            let mine = task.await.unwrap();
            claimers_with_work += usize::from(!mine.is_empty());
            seen.extend(mine);
        }
        let distinct: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(seen.len(), distinct.len(), "a job was claimed twice: {seen:?}");
        assert_eq!(distinct, enqueued);
        assert!(claimers_with_work >= 2, "the claims did not overlap");
    }

    #[tokio::test]
    async fn jobs_of_one_key_run_one_at_a_time_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let e = index
            .enqueue_jobs(vec![job("ris", b"1"), job("ris", b"2"), job("other", b"3")])
            .await
            .unwrap();
        let first = index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10).await.unwrap();
        assert_eq!(ids(&first), vec![e[0], e[2]], "one per key, the oldest");
        assert!(index
            .claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        // A failed attempt backing off holds the key: the next message waits for it.
        assert_eq!(
            index
                .fail_job(e[0], "n", "no answer", Some(Duration::from_secs(1)))
                .await
                .unwrap(),
            Some(JobState::Pending)
        );
        assert!(index
            .claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let again = index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10).await.unwrap();
        assert_eq!(ids(&again), vec![e[0]]);
        assert!(index.complete_job(e[0], "n").await.unwrap());
        let second = index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10).await.unwrap();
        assert_eq!(ids(&second), vec![e[1]]);
        assert_eq!(second[0].payload, b"2");
        // A job set aside (refused) no longer holds its queue.
        let e4 = index.enqueue_jobs(vec![job("ris", b"4")]).await.unwrap()[0];
        assert_eq!(
            index.fail_job(e[1], "n", "AR: unknown", None).await.unwrap(),
            Some(JobState::Failed)
        );
        let third = index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10).await.unwrap();
        assert_eq!(ids(&third), vec![e4]);
    }

    #[tokio::test]
    async fn an_expired_lease_lets_another_node_take_the_job_over() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let e = index
            .enqueue_jobs(vec![job("ris", b"1"), job("ris", b"2")])
            .await
            .unwrap();
        let short = Duration::from_secs(1);
        let a = index
            .claim_jobs("node-a", &[HL7_OUTBOUND], short, 10)
            .await
            .unwrap();
        assert_eq!(ids(&a), vec![e[0]]);
        assert!(index
            .claim_jobs("node-b", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap()
            .is_empty());
        // Node A dies: its lease runs out, and the job (not the next one) goes to node B.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let b = index
            .claim_jobs("node-b", &[HL7_OUTBOUND], LEASE, 10)
            .await
            .unwrap();
        assert_eq!(ids(&b), vec![e[0]]);
        assert_eq!(
            (b[0].job.attempts, b[0].job.lease_owner.as_deref()),
            (2, Some("node-b"))
        );
        // Node A, back from the dead, can neither renew, complete nor fail it.
        assert!(!index.renew_job_lease(e[0], "node-a", LEASE).await.unwrap());
        assert!(!index.complete_job(e[0], "node-a").await.unwrap());
        assert_eq!(index.fail_job(e[0], "node-a", "late", None).await.unwrap(), None);
        assert!(index.complete_job(e[0], "node-b").await.unwrap());
        assert_eq!(
            ids(&index
                .claim_jobs("node-a", &[HL7_OUTBOUND], LEASE, 10)
                .await
                .unwrap()),
            vec![e[1]]
        );
    }

    #[tokio::test]
    async fn a_failed_attempt_waits_its_back_off_and_the_last_one_sets_the_job_aside() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let mut two = job("ris", b"1");
        two.max_attempts = 2;
        let id = index.enqueue_jobs(vec![two]).await.unwrap()[0];
        let backoff = Some(Duration::from_secs(2));
        index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 1).await.unwrap();
        assert_eq!(
            index
                .fail_job(id, "n", "connection refused", backoff)
                .await
                .unwrap(),
            Some(JobState::Pending)
        );
        let waiting = state_of(&index, id).await;
        assert_eq!(waiting.last_error.as_deref(), Some("connection refused"));
        assert_eq!(waiting.attempts, 1);
        assert!(waiting.lease_until.is_none());
        // Two seconds from now, to the millisecond format's precision.
        let mut conn = index.test_conn().await;
        let wait: i64 = sql::query_scalar(&format!(
            "SELECT {} FROM job WHERE pk = ?",
            conn.dialect().secs_until("not_before")
        ))
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!((1..=2).contains(&wait), "{wait}");
        assert!(index
            .claim_jobs("n", &[HL7_OUTBOUND], LEASE, 1)
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            ids(&index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 1).await.unwrap()),
            vec![id]
        );
        assert_eq!(
            index.fail_job(id, "n", "timeout", backoff).await.unwrap(),
            Some(JobState::Failed),
            "the second of two attempts"
        );
        let failed = state_of(&index, id).await;
        assert_eq!((failed.state, failed.attempts), (JobState::Failed, 2));
        assert_eq!(failed.last_error.as_deref(), Some("timeout"));
        assert!(index
            .claim_jobs("n", &[HL7_OUTBOUND], LEASE, 1)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(index.open_jobs(HL7_OUTBOUND).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_administrator_retries_a_failed_job_of_the_tenant_only() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        crate::index::tests::add_tenant(&index, 2, "other").await;
        let id = index.enqueue_jobs(vec![job("ris", b"1")]).await.unwrap()[0];
        index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 1).await.unwrap();
        index.fail_job(id, "n", "AR", None).await.unwrap();
        let audit = |outcome: &str| AuditEvent {
            event: "job-retry".into(),
            actor: "cli:op".into(),
            peer: "local".into(),
            outcome: outcome.into(),
            detail: Some(format!("job {id}")),
            ..AuditEvent::default()
        };
        assert!(!index.retry_job(TenantId(2), id, audit("success")).await.unwrap());
        assert!(index.retry_job(TenantId(1), id, audit("success")).await.unwrap());
        let retried = state_of(&index, id).await;
        assert_eq!((retried.state, retried.attempts), (JobState::Pending, 0));
        assert_eq!(retried.last_error.as_deref(), Some("AR"), "kept for the record");
        let claimed = index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 1).await.unwrap();
        assert_eq!(ids(&claimed), vec![id]);
        assert!(index.complete_job(id, "n").await.unwrap());
        // A done job is not retried.
        assert!(!index.retry_job(TenantId(1), id, audit("success")).await.unwrap());
        let lines: Vec<(i64, String)> = index
            .audit_page(0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.event == "job-retry")
            .map(|r| (r.event.tenant, r.event.outcome))
            .collect();
        assert_eq!(
            lines,
            vec![
                (2, "refused".to_string()),
                (1, "success".to_string()),
                (1, "refused".to_string())
            ]
        );
        // Each tenant lists its own jobs only; filters by state and kind, newest first.
        let other = NewJob {
            tenant: 2,
            ..job("ris", b"2")
        };
        index.enqueue_jobs(vec![other, job("ris", b"3")]).await.unwrap();
        let list = |tenant, state| {
            let index = &index;
            async move {
                index
                    .jobs(
                        TenantId(tenant),
                        &JobFilter {
                            state,
                            limit: 10,
                            ..JobFilter::default()
                        },
                    )
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|j| j.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(list(1, None).await, vec![id + 2, id]);
        assert_eq!(list(1, Some(JobState::Done)).await, vec![id]);
        assert_eq!(list(2, None).await, vec![id + 1]);
    }

    /// The job a workflow write carries is written in its transaction, and only when the
    /// write changed something: the end-of-exam notice exists exactly when its claim does.
    #[tokio::test]
    async fn a_job_joins_the_transaction_of_the_write_that_causes_it() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        index
            .add_instance(crate::index::tests::instance("1.2.3.4.1", "aa"))
            .await
            .unwrap();
        let claim = |n: &str| WorkflowWrite::WithJob {
            write: Box::new(WorkflowWrite::ClaimCompletion {
                study_uid: "1.2.3".into(),
            }),
            job: NewJob {
                tenant: 99, // stamped with the write's tenant
                ..job("ris", n.as_bytes())
            },
        };
        let audit = AuditEvent {
            tenant: 1,
            event: "exam-completed".into(),
            actor: "openpacs".into(),
            outcome: "success".into(),
            ..AuditEvent::default()
        };
        assert_eq!(
            index
                .write_workflow(TenantId(1), claim("first"), audit.clone())
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            index
                .write_workflow(TenantId(1), claim("second"), audit)
                .await
                .unwrap(),
            0
        );
        let claimed = index.claim_jobs("n", &[HL7_OUTBOUND], LEASE, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].payload, b"first");
        assert_eq!(claimed[0].job.tenant, 1);
        assert_eq!(index.open_jobs(HL7_OUTBOUND).await.unwrap(), 1);
    }
}
