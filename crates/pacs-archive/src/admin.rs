//! Deleting studies, series and instances.
//!
//! Order matters for durability: the index commit (rows gone, audit line written, blobs listed
//! in `blob_deletion`) comes first; files are removed after it, then the list is cleared. A
//! crash anywhere leaves either the data intact or a list that recovery finishes.

use std::sync::Arc;

use pacs_store::{AuditEvent, BlobLockMode, DeleteScope, Deleted};

use crate::{Archive, ArchiveError};

impl Archive {
    /// Deletes a study, one of its series, or one instance, with every stored version.
    /// `actor` and `peer` go into the audit line committed with the deletion.
    pub async fn delete(
        self: &Arc<Self>,
        study_uid: &str,
        series_uid: Option<&str>,
        sop_uid: Option<&str>,
        actor: String,
        peer: String,
    ) -> Result<Deleted, ArchiveError> {
        let what = match (series_uid, sop_uid) {
            (_, Some(sop)) => format!("instance {sop}"),
            (Some(series), None) => format!("series {series}"),
            (None, None) => format!("study {study_uid}"),
        };
        let audit = AuditEvent {
            event: "delete".into(),
            actor,
            peer,
            study_uid: Some(study_uid.to_string()),
            outcome: "success".into(),
            detail: Some(what),
            ..AuditEvent::default()
        };
        let scope = DeleteScope {
            tenant: self.tenant.0,
            study_uid: study_uid.to_string(),
            series_uid: series_uid.map(str::to_string),
            sop_uid: sop_uid.map(str::to_string),
        };
        let deleted = self.index.delete(scope, audit).await?;
        self.remove_deleted_blobs(deleted.blob_keys.clone()).await?;
        Ok(deleted)
    }

    /// Removes the files of blobs whose last row was deleted, unless a store of the same bytes
    /// has referenced them again since, then clears them from the pending list. Each key is
    /// locked against stores of the same bytes on every node (`pacs_store::blob_lock`); a key
    /// whose stores keep it busy past the lock's wait stays pending for the next pass.
    pub(crate) async fn remove_deleted_blobs(&self, keys: Vec<String>) -> Result<usize, ArchiveError> {
        let mut removed = 0;
        let mut settled = Vec::with_capacity(keys.len());
        for key in keys {
            let _exclusive = match self.system.lock_blob(&key, BlobLockMode::Remove).await {
                Ok(lock) => lock,
                Err(e) if pacs_store::blob_lock::is_lock_timeout(&e) => {
                    tracing::warn!(blob = %key, "blob still in use by a store; its removal waits for the next pass");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !self.system.blob_referenced(&key).await? {
                let done = match self.blobs.delete(&key).await {
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => false,
                    done => done.map_err(ArchiveError::from_io)?,
                };
                removed += usize::from(done);
            }
            settled.push(key);
        }
        if !settled.is_empty() {
            self.system.clear_blob_deletions(settled).await?;
        }
        Ok(removed)
    }

    /// Finishes blob removals a crash interrupted (run by recovery before anything else).
    pub(crate) async fn finish_deletions(&self) -> Result<usize, ArchiveError> {
        let pending = self.system.pending_blob_deletions().await?;
        self.remove_deleted_blobs(pending).await
    }
}
