//! `openpacs import`: files and folders into the archive, with the same durability and
//! duplicate policy as C-STORE.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use futures::stream::{self, StreamExt};
use pacs_archive::{Archive, ArchiveError, Source, StoreResult};

use crate::config::Config;

pub async fn run(config: Config, paths: Vec<PathBuf>, jobs: usize) -> anyhow::Result<ExitCode> {
    let files = crate::collect_files(&paths)?;
    let archive = Archive::open(&crate::serve::archive_config(&config)).await?;
    let bar = crate::progress_bar(files.len() as u64, "importing");
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let mut stored = 0u64;
    let mut duplicates = 0u64;
    let mut replaced = 0u64;
    let mut kept_first = 0u64;
    let mut skipped = 0u64;
    let mut refused: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut results = stream::iter(files)
        .map(|path| {
            let archive = archive.clone();
            let source = Source {
                actor: format!("import:{user}"),
                peer: "local".into(),
                ..Source::default()
            };
            async move {
                let r = archive.import_file(&path, source).await;
                (path, r)
            }
        })
        .buffer_unordered(jobs.max(1));
    while let Some((path, result)) = results.next().await {
        bar.inc(1);
        match result {
            Ok(StoreResult::Stored) => stored += 1,
            Ok(StoreResult::Duplicate) => duplicates += 1,
            Ok(StoreResult::KeptFirst) => kept_first += 1,
            Ok(StoreResult::Replaced) => replaced += 1,
            Err(ArchiveError::NotPart10(_)) => skipped += 1,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "refused");
                refused.entry(e.to_string()).or_default().push(path);
            }
        }
    }
    bar.finish_and_clear();
    let refused_count: usize = refused.values().map(Vec::len).sum();
    println!(
        "stored {stored}, duplicates {duplicates}, replaced {replaced}, kept first (another object with a known SOP Instance UID, not indexed) {kept_first}, skipped (not DICOM) {skipped}, refused {refused_count}"
    );
    for (reason, files) in &refused {
        println!("refused ({reason}):");
        for f in files {
            println!("  {}", f.display());
        }
    }
    Ok(if refused_count > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
