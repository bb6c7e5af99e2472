//! Start-up recovery and fixity checks.

use std::sync::Arc;

use futures::StreamExt;
use pacs_store::BlobLockMode;

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
        self.recover_orphans_as(self, true).await
    }

    /// [`Archive::recover`], with unreferenced blobs indexed into `owner` when `reindex_orphans`
    /// (one tenant: an orphan can only be its own), else quarantined: with several tenants a
    /// blob does not say whose it is, and guessing would hand one establishment's images to
    /// another. Its sender was never acknowledged and sends it again; the bytes stay aside.
    pub(crate) async fn recover_orphans_as(
        self: &Arc<Self>,
        owner: &Arc<Archive>,
        reindex_orphans: bool,
    ) -> Result<RecoveryReport, ArchiveError> {
        let mut report = RecoveryReport {
            temp_removed: self.blobs.clean_temp().map_err(ArchiveError::from_io)?,
            ..RecoveryReport::default()
        };
        // Deleted blobs first, or the orphan scan below would index them again.
        report.deletions_finished = self.finish_deletions().await?;
        // The store's keys come sorted: one group of keys sharing their first four digits (a
        // directory of the file backend) at a time, so memory stays bounded however large
        // the store, with one index look-up per group.
        let mut listing = self.blobs.list();
        let mut group: Vec<String> = Vec::new();
        loop {
            let next = listing.next().await.transpose().map_err(ArchiveError::from_io)?;
            let same_group = match (&next, group.first()) {
                (Some(key), Some(first)) => key[..4] == first[..4],
                _ => true,
            };
            if !same_group || next.is_none() {
                if let Some(first) = group.first() {
                    let referenced = self.system.blob_keys_with_prefix(&first[..4]).await?;
                    for key in std::mem::take(&mut group) {
                        if referenced.binary_search(&key).is_err() {
                            if reindex_orphans {
                                owner.recover_orphan(&key, &mut report).await?;
                            } else {
                                self.quarantine_orphan(&key, "several tenants: owner unknown", &mut report)
                                    .await?;
                            }
                        }
                    }
                }
            }
            match next {
                Some(key) => group.push(key),
                None => break,
            }
        }
        drop(listing);
        let mut after = 0;
        loop {
            let page = self.system.instances_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.pk;
            for location in page {
                let present = matches!(self.blobs.size(&location.blob_key).await, Ok(Some(_)));
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
        let local = match self.blobs.local(key).await {
            Ok(local) => local,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ArchiveError::from_io(e)),
        };
        let source = Source {
            actor: "recovery".into(),
            peer: "local".into(),
            ..Source::default()
        };
        let imported = self.import_file(local.path(), source).await;
        drop(local);
        match imported {
            Ok(StoreResult::Stored | StoreResult::Replaced) => report.orphans_reindexed += 1,
            // A re-send the duplicate policy did not index leaves its blob unreferenced too.
            // Removed as deleted blobs are, under the key's lock and after a fresh look at the
            // index: with several nodes, another may be storing these very bytes right now.
            Ok(StoreResult::Duplicate | StoreResult::KeptFirst) => {
                report.duplicates_removed += self.remove_deleted_blobs(vec![key.to_string()]).await?;
            }
            // The engines are away: nothing is wrong with the blob; recovery stops here and the
            // next one looks again.
            Err(e @ ArchiveError::Unavailable(_)) => return Err(e),
            Err(e) => {
                self.quarantine_orphan(key, &format!("cannot be indexed: {e}"), report)
                    .await?
            }
        }
        Ok(())
    }

    /// Moves an orphan aside, unless another node indexed it meanwhile.
    async fn quarantine_orphan(
        &self,
        key: &str,
        why: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), ArchiveError> {
        let _exclusive = self.system.lock_blob(key, BlobLockMode::Remove).await?;
        if self.system.blob_referenced(key).await? {
            return Ok(());
        }
        tracing::warn!(blob = %key, reason = why, "orphan blob quarantined");
        self.blobs.quarantine(key).await.map_err(ArchiveError::from_io)?;
        report.orphans_quarantined += 1;
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
                let problem = match self.blobs.hash(&location.blob_key).await {
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        Some("blob key is not a SHA-256".to_string())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("blob missing".into()),
                    Err(e) => Some(format!("blob unreadable: {e}")),
                    Ok((hash, _)) if hash != location.blob_key => {
                        Some(format!("content changed: SHA-256 is now {hash}"))
                    }
                    Ok((_, size)) if size != location.size => {
                        Some(format!("size {size} instead of {}", location.size))
                    }
                    Ok(_) => None,
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
