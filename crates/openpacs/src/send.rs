//! `openpacs send`: C-STORE SCU for files and folders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use pacs_dimse::client::ScuAssociation;
use pacs_dimse::{DatasetStream, RetrieveItem};
use tokio::io::AsyncSeekExt;

use crate::config::Config;

struct Outgoing {
    path: PathBuf,
    item: RetrieveItem,
    offset: u64,
    len: u64,
}

pub async fn run(
    config: Config,
    to: String,
    calling_ae: Option<String>,
    paths: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (called_ae, addr) = to
        .split_once('@')
        .filter(|(ae, addr)| !ae.is_empty() && addr.contains(':'))
        .with_context(|| format!("--to {to:?} must look like AE@HOST:PORT"))?;
    let calling_ae = calling_ae.unwrap_or(config.ae_title.clone());
    let mut outgoing = Vec::new();
    let mut skipped = 0;
    for path in crate::collect_files(&paths)? {
        match read_meta(&path) {
            Ok(o) => outgoing.push(o),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "not sent");
                skipped += 1;
            }
        }
    }
    if outgoing.is_empty() {
        bail!("no DICOM file to send ({skipped} skipped)");
    }
    let mut proposals: Vec<(String, Vec<String>)> = Vec::new();
    for o in &outgoing {
        let pair = (
            o.item.sop_class_uid.clone(),
            vec![o.item.transfer_syntax_uid.clone()],
        );
        if !proposals.contains(&pair) {
            proposals.push(pair);
        }
    }
    if proposals.len() > 128 {
        bail!(
            "these files need {} presentation contexts; at most 128 fit in one association",
            proposals.len()
        );
    }
    let mut scu = ScuAssociation::connect(
        addr,
        &calling_ae,
        called_ae,
        &proposals,
        config.max_pdu,
        Duration::from_secs(config.idle_timeout_secs),
    )
    .await
    .with_context(|| format!("cannot associate with {to}"))?;
    let bar = crate::progress_bar(outgoing.len() as u64, "sending");
    let (mut sent, mut failed) = (0u64, 0u64);
    for o in &outgoing {
        let ctx = scu
            .accepted_contexts()
            .find(|(_, a, t)| *a == o.item.sop_class_uid && *t == o.item.transfer_syntax_uid)
            .map(|(id, _, _)| id);
        let Some(ctx) = ctx else {
            tracing::warn!(file = %o.path.display(), "peer did not accept this SOP class / transfer syntax");
            failed += 1;
            continue;
        };
        let mut file = tokio::fs::File::open(&o.path).await?;
        file.seek(std::io::SeekFrom::Start(o.offset)).await?;
        let mut dataset = DatasetStream {
            reader: Box::new(file),
            len: o.len,
        };
        let code = scu.store(ctx, &o.item, None, &mut dataset).await?;
        if code == 0 || code == 1 || code & 0xF000 == 0xB000 {
            sent += 1;
        } else {
            tracing::warn!(file = %o.path.display(), status = format!("0x{code:04X}"), "C-STORE failed");
            failed += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    scu.release().await;
    println!("sent {sent}, failed {failed}, skipped (not DICOM) {skipped}");
    Ok(if failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_meta(path: &Path) -> anyhow::Result<Outgoing> {
    let (meta, offset) = pacs_archive::read_part10_meta(path)?;
    let size = std::fs::metadata(path)?.len();
    Ok(Outgoing {
        path: path.to_path_buf(),
        item: RetrieveItem {
            sop_class_uid: meta.media_storage_sop_class_uid().to_string(),
            sop_instance_uid: meta.media_storage_sop_instance_uid().to_string(),
            transfer_syntax_uid: meta.transfer_syntax().to_string(),
            handle: 0,
        },
        offset,
        len: size - offset,
    })
}
