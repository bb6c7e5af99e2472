//! The two handles through which the rest of openpacs reaches the index, so that tenant
//! scoping is enforced here, once, and not remembered at each call site:
//!
//! - [`TenantIndex`]: the index as one tenant sees it. Its methods take no tenant; each passes
//!   its own to the engine, and writes carrying a tenant (an instance, an audit line, a
//!   deletion) get it stamped over whatever the caller put there.
//! - [`SystemIndex`]: the few operations that span every tenant by nature (recovery, fixity,
//!   blob garbage collection, platform metrics, resolving a credential to its owner at log-in,
//!   the audit export). Code holding one says so by its type.
//!
//! The tenant is chosen at the edge (today: the one tenant of the installation) and the
//! handle handed inward; engines implement [`Index`] and are reached only through these.

use std::sync::Arc;
use std::time::Duration;

use pacs_model::{QueryLevel, TenantId};

use crate::accounts::{AccountOutcome, AccountWrite, CredentialKind, TokenInfo, UserAccount};
use crate::admin::{DeleteScope, Deleted, Stats};
use crate::ae::{AeRecord, AeWrite};
use crate::index::{
    AuditEvent, AuditFilter, AuditRecord, Condition, Index, IndexOutcome, InstanceLocation, NewInstance,
    QueryRow, SortKey, WorklistFilter,
};
use crate::jobs::{ClaimedJob, Job, JobFilter, JobState, NewJob};
use crate::tenants::{TenantOutcome, TenantRecord, TenantWrite};
use crate::workflow::{
    MergeRecord, MppsRecord, PatientKey, PatientRecord, Report, StudySummary, WorkflowWrite, WorklistItem,
};
use crate::IndexError;

type R<T> = Result<T, IndexError>;

/// The index scoped to one tenant. Cheap to clone.
#[derive(Clone)]
pub struct TenantIndex {
    index: Arc<dyn Index>,
    tenant: TenantId,
}

impl TenantIndex {
    pub fn new(index: Arc<dyn Index>, tenant: TenantId) -> TenantIndex {
        TenantIndex { index, tenant }
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Stamps this tenant on an audit line: a tenant's events are its own.
    fn own(&self, mut event: AuditEvent) -> AuditEvent {
        event.tenant = self.tenant.0;
        event
    }

    pub async fn add_instance(&self, mut instance: NewInstance) -> R<IndexOutcome> {
        instance.tenant = self.tenant.0;
        instance.audit = instance.audit.map(|event| self.own(event));
        self.index.add_instance(instance).await
    }
    pub async fn audit(&self, event: AuditEvent) -> R<()> {
        self.index.audit(self.own(event)).await
    }
    pub async fn study_patient_id(&self, study_uid: &str) -> R<Option<String>> {
        self.index.study_patient_id(self.tenant, study_uid).await
    }
    pub async fn current_instance(&self, sop_uid: &str) -> R<Option<InstanceLocation>> {
        self.index.current_instance(self.tenant, sop_uid).await
    }
    pub async fn query(
        &self,
        level: QueryLevel,
        conditions: &[Condition],
        after_pk: i64,
        limit: u32,
    ) -> R<Vec<QueryRow>> {
        self.index
            .query(self.tenant, level, conditions, after_pk, limit)
            .await
    }
    pub async fn query_sorted(
        &self,
        level: QueryLevel,
        conditions: &[Condition],
        sort: &[SortKey],
        offset: u64,
        limit: u32,
    ) -> R<Vec<QueryRow>> {
        self.index
            .query_sorted(self.tenant, level, conditions, sort, offset, limit)
            .await
    }
    pub async fn instance(&self, pk: i64) -> R<Option<InstanceLocation>> {
        self.index.instance(self.tenant, pk).await
    }
    pub async fn instance_for_retrieval(
        &self,
        pk: i64,
    ) -> R<Option<(InstanceLocation, Option<PatientRecord>)>> {
        self.index.instance_for_retrieval(self.tenant, pk).await
    }
    pub async fn header(&self, level: QueryLevel, pk: i64) -> R<Option<String>> {
        self.index.header(self.tenant, level, pk).await
    }
    pub async fn instance_headers(&self, pks: &[i64]) -> R<Vec<(i64, String)>> {
        self.index.instance_headers(self.tenant, pks).await
    }
    pub async fn instances_in(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
    ) -> R<Vec<InstanceLocation>> {
        self.index
            .instances_in(self.tenant, study_uid, series_uid, sop_uid)
            .await
    }
    pub async fn audit_search(&self, filter: &AuditFilter) -> R<Vec<AuditRecord>> {
        self.index.audit_search(self.tenant, filter).await
    }
    pub async fn write_ae(&self, write: AeWrite, audit: AuditEvent) -> R<u64> {
        self.index.write_ae(self.tenant, write, self.own(audit)).await
    }
    pub async fn aes(&self) -> R<Vec<AeRecord>> {
        self.index.aes(self.tenant).await
    }
    pub async fn write_accounts(&self, write: AccountWrite) -> R<AccountOutcome> {
        self.index.write_accounts(self.tenant, write).await
    }
    pub async fn user(&self, username: &str) -> R<Option<UserAccount>> {
        self.index.user(self.tenant, username).await
    }
    pub async fn users(&self) -> R<Vec<UserAccount>> {
        self.index.users(self.tenant).await
    }
    pub async fn tokens(&self, username: &str) -> R<Vec<TokenInfo>> {
        self.index.tokens(self.tenant, username).await
    }
    pub async fn delete(&self, mut scope: DeleteScope, audit: AuditEvent) -> R<Deleted> {
        scope.tenant = self.tenant.0;
        self.index.delete(scope, self.own(audit)).await
    }
    pub async fn stats(&self) -> R<Stats> {
        self.index.stats(self.tenant).await
    }
    pub async fn write_workflow(&self, write: WorkflowWrite, audit: AuditEvent) -> R<i64> {
        self.index
            .write_workflow(self.tenant, write, self.own(audit))
            .await
    }
    /// Enqueues jobs of this tenant, in order, in one transaction.
    pub async fn enqueue_jobs(&self, jobs: Vec<NewJob>) -> R<Vec<i64>> {
        let tenant = self.tenant.0;
        let jobs = jobs.into_iter().map(|job| NewJob { tenant, ..job }).collect();
        self.index.enqueue_jobs(jobs).await
    }
    pub async fn jobs(&self, filter: &JobFilter) -> R<Vec<Job>> {
        self.index.jobs(self.tenant, filter).await
    }
    pub async fn retry_job(&self, id: i64, audit: AuditEvent) -> R<bool> {
        self.index.retry_job(self.tenant, id, self.own(audit)).await
    }
    pub async fn worklist(&self, filter: WorklistFilter) -> R<Vec<WorklistItem>> {
        self.index.worklist(self.tenant, filter).await
    }
    pub async fn mpps(&self, sop_uid: &str) -> R<Option<MppsRecord>> {
        self.index.mpps(self.tenant, sop_uid).await
    }
    pub async fn mpps_states(&self, accessions: &[String]) -> R<Vec<(String, String)>> {
        self.index.mpps_states(self.tenant, accessions).await
    }
    pub async fn reports(&self, study_uid: &str) -> R<Vec<Report>> {
        self.index.reports(self.tenant, study_uid).await
    }
    pub async fn unmatched_studies(&self, limit: u32) -> R<Vec<StudySummary>> {
        self.index.unmatched_studies(self.tenant, limit).await
    }
    pub async fn stable_studies(&self, quiet_secs: u64) -> R<Vec<StudySummary>> {
        self.index.stable_studies(self.tenant, quiet_secs).await
    }
    pub async fn patient_patches(&self, instance_pks: &[i64]) -> R<Vec<(i64, PatientRecord)>> {
        self.index.patient_patches(self.tenant, instance_pks).await
    }
    pub async fn patient(&self, key: &PatientKey) -> R<Option<PatientRecord>> {
        self.index.patient(self.tenant, key).await
    }
    pub async fn merges(&self) -> R<Vec<MergeRecord>> {
        self.index.merges(self.tenant).await
    }
}

/// The operations across every tenant. Cheap to clone.
#[derive(Clone)]
pub struct SystemIndex {
    index: Arc<dyn Index>,
}

impl SystemIndex {
    pub fn new(index: Arc<dyn Index>) -> SystemIndex {
        SystemIndex { index }
    }

    /// Every instance (current and superseded), by key: fixity checks and recovery.
    pub async fn instances_page(&self, after_pk: i64, limit: u32) -> R<Vec<InstanceLocation>> {
        self.index.instances_page(after_pk, limit).await
    }
    /// Whether any row of any tenant refers to this blob: a blob is removed only when not.
    pub async fn blob_referenced(&self, blob_key: &str) -> R<bool> {
        self.index.blob_referenced(blob_key).await
    }
    /// See [`Index::lock_blob`]: blobs are shared by content, so the lock spans tenants.
    pub async fn lock_blob(&self, blob_key: &str, mode: crate::BlobLockMode) -> R<crate::BlobLock> {
        self.index.lock_blob(blob_key, mode).await
    }
    pub async fn blob_keys_with_prefix(&self, prefix: &str) -> R<Vec<String>> {
        self.index.blob_keys_with_prefix(prefix).await
    }
    pub async fn pending_blob_deletions(&self) -> R<Vec<String>> {
        self.index.pending_blob_deletions().await
    }
    pub async fn clear_blob_deletions(&self, keys: Vec<String>) -> R<u64> {
        self.index.clear_blob_deletions(keys).await
    }
    /// The whole audit log in order, for export and verification.
    pub async fn audit_page(&self, after_pk: i64, limit: u32) -> R<Vec<AuditRecord>> {
        self.index.audit_page(after_pk, limit).await
    }
    /// The owner of a live session or token, whichever tenant it belongs to: the log-in edge
    /// resolves the tenant from it.
    pub async fn credential_user(&self, kind: CredentialKind, secret_sha256: &str) -> R<Option<UserAccount>> {
        self.index.credential_user(kind, secret_sha256).await
    }
    /// Whether any account exists in any tenant.
    pub async fn any_user(&self) -> R<bool> {
        self.index.any_user().await
    }
    pub async fn footprint_bytes(&self) -> R<u64> {
        self.index.footprint_bytes().await
    }
    /// Claims jobs of any tenant for this node (see [`crate::Jobs::claim_jobs`]).
    pub async fn claim_jobs(
        &self,
        owner: &str,
        kinds: &[&str],
        lease: Duration,
        limit: u32,
    ) -> R<Vec<ClaimedJob>> {
        self.index.claim_jobs(owner, kinds, lease, limit).await
    }
    pub async fn renew_job_lease(&self, id: i64, owner: &str, lease: Duration) -> R<bool> {
        self.index.renew_job_lease(id, owner, lease).await
    }
    pub async fn complete_job(&self, id: i64, owner: &str) -> R<bool> {
        self.index.complete_job(id, owner).await
    }
    pub async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> R<Option<JobState>> {
        self.index.fail_job(id, owner, error, retry_in).await
    }
    /// Open jobs of a kind, every tenant's.
    pub async fn open_jobs(&self, kind: &str) -> R<u64> {
        self.index.open_jobs(kind).await
    }
    pub async fn ping(&self) -> R<()> {
        self.index.ping().await
    }
    /// Appends to the platform's own audit trail ([`TenantId::PLATFORM`]).
    pub async fn audit_platform(&self, event: AuditEvent) -> R<()> {
        let event = AuditEvent {
            tenant: TenantId::PLATFORM.0,
            ..event
        };
        self.index.audit(event).await
    }
    /// Adds or changes a tenant (a platform operation), audited in the same transaction.
    pub async fn write_tenant(&self, write: TenantWrite, audit: AuditEvent) -> R<TenantOutcome> {
        self.index.write_tenant(write, audit).await
    }
    pub async fn tenants(&self) -> R<Vec<TenantRecord>> {
        self.index.tenants().await
    }
    /// What `tenant` is billed for in `month` (the platform's bill of every tenant).
    pub async fn billing_month(
        &self,
        tenant: TenantId,
        month: crate::billing::Month,
        grace_secs: u64,
    ) -> R<crate::billing::MonthUsage> {
        self.index.billing_month(tenant, month, grace_secs).await
    }
    /// When `operator`'s live break-glass grant on `tenant` ends (the HTTP edge asks).
    pub async fn access_grant(&self, tenant: TenantId, operator: &str) -> R<Option<String>> {
        self.index.access_grant(tenant, operator).await
    }
    pub async fn tenant_usage(&self) -> R<Vec<(i64, u64)>> {
        self.index.tenant_usage().await
    }
    /// The index as `tenant` sees it: the platform hands one to each tenant's archive.
    pub fn tenant(&self, tenant: TenantId) -> TenantIndex {
        TenantIndex::new(self.index.clone(), tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Role;
    use crate::index::tests::instance;

    /// Two tenants on one index; tenant 2 holds a study, a user and audit lines. Through tenant
    /// 1's handle none of it can be read or changed, whatever tenant the caller writes into
    /// the requests it builds.
    #[tokio::test]
    async fn one_tenants_handle_neither_reads_nor_changes_anothers_data() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        crate::index::tests::add_tenant(&index, 2, "other").await;
        let engine: Arc<dyn Index> = Arc::new(index);
        let ours = TenantIndex::new(engine.clone(), TenantId(1));
        let theirs = TenantIndex::new(engine.clone(), TenantId(2));

        // A request built naming tenant 1 is still written for the handle's tenant.
        let mut object = instance("1.2.3.4.9", "cc");
        object.tenant = 1;
        let IndexOutcome::Stored { pk } = theirs.add_instance(object).await.unwrap() else {
            panic!("not stored")
        };
        assert!(theirs.instance(pk).await.unwrap().is_some());
        assert!(ours.instance(pk).await.unwrap().is_none());
        assert!(ours.instance_for_retrieval(pk).await.unwrap().is_none());
        for level in [
            QueryLevel::Image,
            QueryLevel::Series,
            QueryLevel::Study,
            QueryLevel::Patient,
        ] {
            assert!(
                ours.query(level, &[], 0, 100).await.unwrap().is_empty(),
                "{level:?}"
            );
            assert_eq!(
                theirs.query(level, &[], 0, 100).await.unwrap().len(),
                1,
                "{level:?}"
            );
        }
        let row = &theirs.query(QueryLevel::Series, &[], 0, 1).await.unwrap()[0];
        assert!(ours.header(QueryLevel::Series, row.pk).await.unwrap().is_none());
        assert!(ours.header(QueryLevel::Image, pk).await.unwrap().is_none());
        assert!(theirs.header(QueryLevel::Image, pk).await.unwrap().is_some());
        assert!(ours.instance_headers(&[pk]).await.unwrap().is_empty());
        assert!(ours.instances_in("1.2.3", None, None).await.unwrap().is_empty());
        assert!(ours.current_instance("1.2.3.4.9").await.unwrap().is_none());
        assert!(ours.study_patient_id("1.2.3").await.unwrap().is_none());
        assert_eq!(ours.stats().await.unwrap().instances, 0);
        assert_eq!(theirs.stats().await.unwrap().instances, 1);

        // Deleting through our handle with a scope naming their tenant deletes nothing of theirs.
        let scope = DeleteScope {
            tenant: 2,
            study_uid: "1.2.3".into(),
            series_uid: None,
            sop_uid: None,
        };
        assert_eq!(
            ours.delete(scope, AuditEvent::default()).await.unwrap().instances,
            0
        );
        assert!(theirs.instance(pk).await.unwrap().is_some());

        // Accounts: their user is invisible and unchangeable from our tenant.
        let add = AccountWrite::AddUser {
            username: "bob".into(),
            password_hash: "$argon2id$placeholder".into(),
            role: Role::Reader,
        };
        assert_eq!(theirs.write_accounts(add).await.unwrap(), 1);
        assert!(ours.user("bob").await.unwrap().is_none());
        assert!(ours.users().await.unwrap().is_empty());
        let promote = AccountWrite::SetRole {
            username: "bob".into(),
            role: Role::Admin,
        };
        assert_eq!(ours.write_accounts(promote.clone()).await.unwrap(), 0);
        assert_eq!(
            ours.write_accounts(AccountWrite::RemoveUser {
                username: "bob".into()
            })
            .await
            .unwrap(),
            0
        );
        assert_eq!(theirs.user("bob").await.unwrap().unwrap().role, Role::Reader);
        assert_eq!(theirs.write_accounts(promote).await.unwrap(), 1);

        // Audit lines carry the handle's tenant, whatever the event said.
        let event = AuditEvent {
            tenant: 2,
            event: "query".into(),
            actor: "http:alice".into(),
            outcome: "success".into(),
            ..AuditEvent::default()
        };
        ours.audit(event).await.unwrap();
        let queries = AuditFilter {
            event: Some("query".into()),
            limit: 10,
            ..AuditFilter::default()
        };
        assert_eq!(ours.audit_search(&queries).await.unwrap().len(), 1);
        assert!(theirs.audit_search(&queries).await.unwrap().is_empty());
        let stores = AuditFilter {
            event: Some("store".into()),
            limit: 10,
            ..AuditFilter::default()
        };
        assert!(
            ours.audit_search(&stores).await.unwrap().is_empty(),
            "the store was theirs"
        );
        assert_eq!(theirs.audit_search(&stores).await.unwrap().len(), 1);
    }
}
