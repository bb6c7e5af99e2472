//! Start-up recovery and fixity checks.

use std::sync::Arc;

use pacs_store::BlobStore;

use crate::ingest::Source;
use crate::{Archive, ArchiveError, StoreResult};

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Temporary files of transfers that never completed (never acknowledged): removed.
    pub temp_removed: usize,
    /// Blobs without an index row (written, but the process stopped before the commit):
    /// indexed again from the file.
    pub orphans_reindexed: usize,
    /// Orphan blobs that could not be indexed: moved aside under `quarantine/`.
    pub orphans_quarantined: usize,
    /// Second copies of data sets already stored under another file meta group: removed.
    pub duplicates_removed: usize,
    /// Blob removals of committed deletions that a stop interrupted: done now.
    pub deletions_finished: usize,
    /// Index rows whose blob is missing (should never happen; reported loudly).
    pub missing_blobs: Vec<String>,
}

/// One object that failed a fixity check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixityProblem {
    pub sop_uid: String,
    pub blob_key: String,
    pub problem: String,
}

impl Archive {
    /// Brings the data directory back to a consistent state after a crash.
    pub async fn recover(self: &Arc<Self>) -> Result<RecoveryReport, ArchiveError> {
        let mut report = RecoveryReport {
            temp_removed: self.blobs.clean_temp().map_err(ArchiveError::from_io)?,
            ..RecoveryReport::default()
        };
        // Deleted blobs first, or the orphan scan below would index them again.
        report.deletions_finished = self.finish_deletions().await?;
        // One blob directory at a time: memory stays bounded however large the store.
        for leaf in self.blobs.leaf_dirs().map_err(ArchiveError::from_io)? {
            let on_disk = self.blobs.keys_in(&leaf).map_err(ArchiveError::from_io)?;
            let Some(prefix) = on_disk.first().map(|k| k[..4].to_string()) else {
                continue;
            };
            let referenced = self.system.blob_keys_with_prefix(&prefix).await?;
            for key in on_disk {
                if referenced.binary_search(&key).is_ok() {
                    continue;
                }
                self.recover_orphan(&key, &mut report).await?;
            }
        }
        let mut after = 0;
        loop {
            let page = self.system.instances_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.pk;
            for location in page {
                let present = self
                    .blobs
                    .path_of(&location.blob_key)
                    .is_some_and(|p| p.is_file());
                if !present {
                    tracing::error!(sop = %location.sop_uid, blob = %location.blob_key, "index row points to a missing blob");
                    report.missing_blobs.push(location.sop_uid);
                }
            }
        }
        Ok(report)
    }

    /// A blob nobody references: written, but the process stopped before its index commit
    /// (never acknowledged), or a duplicate's second copy. Index it from the file; drop it if
    /// it turns out to be a duplicate; move it aside if it cannot be read.
    async fn recover_orphan(
        self: &Arc<Self>,
        key: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), ArchiveError> {
        let Some(path) = self.blobs.path_of(key) else {
            return Ok(());
        };
        let source = Source {
            actor: "recovery".into(),
            peer: "local".into(),
            ..Source::default()
        };
        match self.import_file(&path, source).await {
            Ok(StoreResult::Stored | StoreResult::Replaced) => report.orphans_reindexed += 1,
            // A re-send the duplicate policy did not index leaves its blob unreferenced too.
            Ok(StoreResult::Duplicate | StoreResult::KeptFirst) => {
                // Nothing else runs during recovery, so the check and the removal cannot race.
                if !self.system.blob_referenced(key).await? {
                    std::fs::remove_file(&path).map_err(ArchiveError::from_io)?;
                    report.duplicates_removed += 1;
                }
            }
            Err(e) => {
                tracing::warn!(blob = %key, error = %e, "orphan blob cannot be indexed; quarantined");
                let quarantine = self.blobs.root().join("quarantine");
                std::fs::create_dir_all(&quarantine).map_err(ArchiveError::from_io)?;
                std::fs::rename(&path, quarantine.join(key)).map_err(ArchiveError::from_io)?;
                report.orphans_quarantined += 1;
            }
        }
        Ok(())
    }

    /// Number of objects (current and superseded) a fixity check will look at.
    pub async fn count_objects(&self) -> Result<u64, ArchiveError> {
        let mut n = 0;
        let mut after = 0;
        loop {
            let page = self.system.instances_page(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.pk;
            n += page.len() as u64;
        }
        Ok(n)
    }

    /// Re-hashes every blob against the index; `progress` is called after each object.
    pub async fn verify(&self, mut progress: impl FnMut(u64)) -> Result<Vec<FixityProblem>, ArchiveError> {
        let mut problems = Vec::new();
        let mut after = 0;
        let mut done = 0;
        loop {
            let page = self.system.instances_page(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.pk;
            for location in page {
                let problem = match self.blobs.path_of(&location.blob_key) {
                    None => Some("blob key is not a SHA-256".to_string()),
                    Some(path) => {
                        let hashed = tokio::task::spawn_blocking(move || BlobStore::hash_file(&path))
                            .await
                            .map_err(|e| ArchiveError::Internal(e.to_string()))?;
                        match hashed {
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("blob missing".into()),
                            Err(e) => Some(format!("blob unreadable: {e}")),
                            Ok((hash, _)) if hash != location.blob_key => {
                                Some(format!("content changed: SHA-256 is now {hash}"))
                            }
                            Ok((_, size)) if size != location.size => {
                                Some(format!("size {size} instead of {}", location.size))
                            }
                            Ok(_) => None,
                        }
                    }
                };
                if let Some(problem) = problem {
                    problems.push(FixityProblem {
                        sop_uid: location.sop_uid,
                        blob_key: location.blob_key,
                        problem,
                    });
                }
                done += 1;
                progress(done);
            }
        }
        Ok(problems)
    }
}
