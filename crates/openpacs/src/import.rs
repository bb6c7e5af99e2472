//! `openpacs import`: files and folders into the archive, with the same durability and
//! duplicate policy as C-STORE.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use futures::stream::{self, StreamExt};
use pacs_archive::{ArchiveError, Source, StoreResult};

use crate::config::Config;

/// Past this many skipped or refused files, the terminal gets the first ones and the full list
/// goes to a report file.
const PRINTED_FILES: usize = 20;

pub async fn run(
    config: Config,
    paths: Vec<PathBuf>,
    jobs: usize,
    report: Option<PathBuf>,
    tenant: Option<String>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let files = crate::collect_files(&paths)?;
    let total = files.len();
    let archive = crate::tenant::open_archive(&config, tenant.as_deref()).await?;
    let bar = crate::progress_bar(total as u64, "importing");
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let mut stored = 0u64;
    let mut duplicates = 0u64;
    let mut replaced = 0u64;
    let mut kept_first = 0u64;
    // (file, reason), sorted by file at the end for a reproducible listing.
    let mut skipped: Vec<(PathBuf, String)> = Vec::new();
    let mut refused: Vec<(PathBuf, String)> = Vec::new();
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
            Err(ArchiveError::NotPart10(why)) => skipped.push((path, why)),
            Err(e) => refused.push((path, e.to_string())),
        }
    }
    bar.finish_and_clear();
    skipped.sort();
    refused.sort();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{total} files in {seconds:.0} s ({rate} files/s): stored {stored}, duplicates {duplicates}, \
         replaced {replaced}, kept first {kept_first} (another object with a SOP Instance UID \
         already stored; not indexed), skipped {} (not DICOM files), refused {}",
        skipped.len(),
        refused.len(),
        rate = (total as f64 / seconds.max(0.001)).round() as u64,
    );
    let listed = skipped.len() + refused.len();
    let report = match report {
        Some(path) => Some(path),
        None if listed > PRINTED_FILES => {
            Some(PathBuf::from(format!("import-report-{}.txt", report_stamp())))
        }
        None => None,
    };
    print_files("skipped (not DICOM files)", &skipped, PRINTED_FILES);
    print_files("refused", &refused, PRINTED_FILES);
    if let Some(path) = &report {
        write_report(path, &skipped, &refused)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        println!(
            "every skipped and refused file, with its reason: {}",
            path.display()
        );
    }
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn print_files(heading: &str, files: &[(PathBuf, String)], at_most: usize) {
    if files.is_empty() {
        return;
    }
    println!("{heading}:");
    for (path, reason) in files.iter().take(at_most) {
        println!("  {}: {reason}", path.display());
    }
    if files.len() > at_most {
        println!("  … and {} more (see the report)", files.len() - at_most);
    }
}

fn write_report(
    path: &Path,
    skipped: &[(PathBuf, String)],
    refused: &[(PathBuf, String)],
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (outcome, files) in [("skipped", skipped), ("refused", refused)] {
        for (file, reason) in files {
            writeln!(out, "{outcome}\t{}\t{reason}", file.display())?;
        }
    }
    out.flush()
}

/// Seconds since the Unix epoch: a report name that sorts by time and does not overwrite the
/// previous run's.
fn report_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
