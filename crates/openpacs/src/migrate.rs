//! `openpacs migrate --to-index postgres://… --to-blobs s3://…`: an embedded installation
//! (SQLite index and files in `data_dir`) is copied to the scaled engines, for a move from one
//! machine to several nodes.
//!
//! Blobs first, then the index: the index names the blobs, so a copy that stopped half-way
//! never leaves an index pointing at objects that are not there yet. Each blob is copied,
//! then read back from the destination and re-hashed: its SHA-256 must be its name. A blob
//! already in the destination with the source's size is not copied again, so a run that
//! stopped (network, credentials, Ctrl-C) is resumed by running it again. The index is copied
//! in one PostgreSQL transaction (`pacs_store::copy`); a destination that already holds this
//! index (the same numbers of instances) is left as it is. The source is only read.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use pacs_model::TenantId;
use pacs_store::{blob, BlobLocation, BlobStore, Index, SqlIndex};

use crate::blobs_config::BlobsConfig;
use crate::config::Config;

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database to copy the index into (`postgres://user@host:port/db`; a
    /// password is better in OPENPACS_MIGRATE_INDEX_URL than on the command line).
    #[arg(long, env = "OPENPACS_MIGRATE_INDEX_URL")]
    pub to_index: Option<String>,
    /// The bucket to copy the blobs into (`s3://bucket` or `s3://bucket/prefix`); credentials
    /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --to-blobs-credentials-file.
    #[arg(long)]
    pub to_blobs: Option<String>,
    /// The bucket's S3 endpoint (`http://127.0.0.1:3900`); none: AWS's.
    #[arg(long)]
    pub to_blobs_endpoint: Option<String>,
    /// The bucket's region (Garage's `s3_region`).
    #[arg(long, default_value = "us-east-1")]
    pub to_blobs_region: String,
    /// A TOML file (mode 0600) with access_key_id and secret_access_key.
    #[arg(long)]
    pub to_blobs_credentials_file: Option<PathBuf>,
}

/// What the blob copy did.
#[derive(Default)]
struct BlobReport {
    copied: u64,
    bytes: u64,
    already_there: u64,
    /// Named by the index but absent from `data_dir`, or whose bytes no longer hash to their
    /// name: nothing to copy (`openpacs verify` tells the same story).
    problems: Vec<String>,
}

pub async fn run(config: Config, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    if args.to_index.is_none() && args.to_blobs.is_none() {
        bail!("name a destination: --to-index postgres://… and/or --to-blobs s3://…");
    }
    if config.index_url.is_some() || config.blobs.url.is_some() {
        bail!(
            "migrate copies an embedded installation (index and blobs in data_dir); this \
             configuration already names index_url or [blobs] url"
        );
    }
    if let Some(url) = &args.to_index {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("--to-index must be a PostgreSQL URL (postgres://user@host:port/database)");
        }
    }
    let index_path = pacs_archive::index_path(&config.data_dir);
    if !index_path.exists() {
        bail!("no embedded index at {}", index_path.display());
    }
    let source_index = SqlIndex::open(&index_path).await?;
    let source_blobs = blob::open(&config.data_dir, &BlobLocation::DataDir)?;

    let mut failed = false;
    if let Some(url) = &args.to_blobs {
        let destination = BlobsConfig {
            url: Some(url.clone()),
            endpoint: args.to_blobs_endpoint.clone(),
            region: args.to_blobs_region.clone(),
            credentials_file: args.to_blobs_credentials_file.clone(),
        };
        let location = destination.location().context("--to-blobs")?;
        let target = blob::open(&config.data_dir, &location)?;
        target
            .check()
            .await
            .with_context(|| format!("the bucket {url} does not answer"))?;
        let started = Instant::now();
        let report = copy_blobs(&source_index, source_blobs.clone(), target).await?;
        println!(
            "blobs: {} copied ({}, each read back from the bucket and its SHA-256 checked), {} \
             already there, {} problems, in {:.0} s",
            report.copied,
            human_bytes(report.bytes),
            report.already_there,
            report.problems.len(),
            started.elapsed().as_secs_f64()
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
        failed = !report.problems.is_empty();
    }
    if let Some(url) = &args.to_index {
        if failed {
            println!(
                "index: not copied, since some blobs it names could not be copied (see above; \
                 `openpacs verify` lists the same)"
            );
        } else {
            copy_index(&source_index, &index_path, url).await?;
        }
    }
    if failed {
        return Ok(ExitCode::from(3));
    }
    println!(
        "the source in {} is left as it was; start openpacs with",
        config.data_dir.display()
    );
    if args.to_index.is_some() {
        println!("  index_url = \"postgres://…\"   (or OPENPACS_INDEX_URL)");
    }
    if let Some(url) = &args.to_blobs {
        println!("  [blobs] url = \"{url}\"");
        if let Some(endpoint) = &args.to_blobs_endpoint {
            println!("          endpoint = \"{endpoint}\"");
        }
        println!("          region = \"{}\"", args.to_blobs_region);
        if let Some(file) = &args.to_blobs_credentials_file {
            println!("          credentials_file = \"{}\"", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every blob the index names, by key prefix (one blob directory's worth at a time).
async fn copy_blobs(
    index: &SqlIndex,
    source: Arc<dyn BlobStore>,
    target: Arc<dyn BlobStore>,
) -> anyhow::Result<BlobReport> {
    // Instances, superseded versions included: as many keys or more (identical objects
    // share one), so the bar ends at or before its length.
    let stats = index.stats(TenantId::DEFAULT).await?;
    let bar = crate::progress_bar((stats.instances + stats.superseded_instances) as u64, "blobs");
    let mut report = BlobReport::default();
    for prefix in (0..=255u8).map(|b| format!("{b:02x}")) {
        for key in index.blob_keys_with_prefix(&prefix).await? {
            copy_one(&key, &source, &target, &mut report).await?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

async fn copy_one(
    key: &str,
    source: &Arc<dyn BlobStore>,
    target: &Arc<dyn BlobStore>,
    report: &mut BlobReport,
) -> anyhow::Result<()> {
    let Some(size) = source.size(key).await? else {
        report.problems.push(format!("{key}: missing from data_dir"));
        return Ok(());
    };
    if target.size(key).await? == Some(size) {
        report.already_there += 1;
        return Ok(());
    }
    let local = source.local(key).await?;
    let target_for_commit = target.clone();
    let expected = key.to_string();
    // Staged and hashed as ingest stages an object, then committed (one PUT, or multipart
    // beyond 8 MiB): the key the destination computes is the SHA-256 of what it was sent.
    let committed = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut file = std::fs::File::open(local.path())?;
        let mut temp = target_for_commit.create_temp()?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            temp.write(&buffer[..n])?;
        }
        temp.start_sync()?;
        if temp.content_key() != expected {
            return Ok(None);
        }
        target_for_commit.commit(temp).map(Some)
    })
    .await??;
    match committed {
        None => report.problems.push(format!(
            "{key}: its bytes in data_dir no longer hash to its name (damaged)"
        )),
        Some(committed) => {
            let (read_back, length) = target.hash(key).await?;
            if read_back != key || length != size || committed.key != key {
                bail!("{key}: read back from the bucket, it hashes to {read_back} ({length} bytes)");
            }
            report.copied += 1;
            report.bytes += size;
        }
    }
    Ok(())
}

async fn copy_index(source: &SqlIndex, path: &std::path::Path, url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    match pacs_store::copy::sqlite_to_postgres(path, url).await {
        Ok(report) => {
            let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
            println!(
                "index: {rows} rows in {} tables copied in {:.1} s",
                report.tables.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) if e.to_string().contains("not empty") => {
            // A run that already copied it: the same counts on both sides.
            let target = SqlIndex::open_url(url).await?;
            let (was, is) = (
                source.stats(TenantId::DEFAULT).await?,
                target.stats(TenantId::DEFAULT).await?,
            );
            if (was.instances, was.superseded_instances, was.studies)
                == (is.instances, is.superseded_instances, is.studies)
            {
                println!(
                    "index: already in PostgreSQL ({} instances, {} studies), not copied again",
                    is.instances, is.studies
                );
                Ok(())
            } else {
                bail!(
                    "the PostgreSQL database already holds another index ({} instances, here {}): \
                     migrate into a new, empty database",
                    is.instances,
                    was.instances
                )
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
