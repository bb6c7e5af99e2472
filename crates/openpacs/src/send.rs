//! `openpacs send`: C-STORE SCU for files and folders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use pacs_dimse::client::ScuAssociation;
use pacs_dimse::{DatasetStream, DimseStatus, RetrieveItem};
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
    let mut outgoing: Vec<Outgoing> = Vec::new();
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
    // One association per 128 distinct (SOP class, transfer syntax) pairs, the most that fit.
    outgoing.sort_by(|a, b| {
        (&a.item.sop_class_uid, &a.item.transfer_syntax_uid)
            .cmp(&(&b.item.sop_class_uid, &b.item.transfer_syntax_uid))
    });
    let bar = crate::progress_bar(outgoing.len() as u64, "sending");
    let (mut sent, mut failed) = (0u64, 0u64);
    let timeout = Duration::from_secs(config.idle_timeout_secs);
    for batch in batches(&outgoing, 128) {
        let mut proposals: Vec<(String, Vec<String>)> = Vec::new();
        for o in batch {
            let pair = (
                o.item.sop_class_uid.clone(),
                vec![o.item.transfer_syntax_uid.clone()],
            );
            if !proposals.contains(&pair) {
                proposals.push(pair);
            }
        }
        let mut scu =
            ScuAssociation::connect(addr, &calling_ae, called_ae, &proposals, config.max_pdu, timeout)
                .await
                .with_context(|| format!("cannot associate with {to}"))?;
        for o in batch {
            bar.inc(1);
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
            let status = DimseStatus { code, comment: None };
            if status.is_success() || status.is_warning() {
                sent += 1;
            } else {
                tracing::warn!(file = %o.path.display(), status = format!("0x{code:04X}"), "C-STORE failed");
                failed += 1;
            }
        }
        scu.release().await;
    }
    bar.finish_and_clear();
    println!("sent {sent}, failed {failed}, skipped (not DICOM) {skipped}");
    Ok(if failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Splits files sorted by (SOP class, transfer syntax) into runs of at most `max_pairs`
/// distinct pairs.
fn batches(sorted: &[Outgoing], max_pairs: usize) -> Vec<&[Outgoing]> {
    let mut out = Vec::new();
    let (mut start, mut pairs) = (0, 0);
    for i in 0..sorted.len() {
        let new_pair = i == start
            || sorted[i].item.sop_class_uid != sorted[i - 1].item.sop_class_uid
            || sorted[i].item.transfer_syntax_uid != sorted[i - 1].item.transfer_syntax_uid;
        if new_pair {
            if pairs == max_pairs {
                out.push(&sorted[start..i]);
                start = i;
                pairs = 0;
            }
            pairs += 1;
        }
    }
    if start < sorted.len() {
        out.push(&sorted[start..]);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(class: &str, ts: &str) -> Outgoing {
        Outgoing {
            path: PathBuf::from("x.dcm"),
            item: RetrieveItem {
                sop_class_uid: class.into(),
                sop_instance_uid: "1".into(),
                transfer_syntax_uid: ts.into(),
                handle: 0,
            },
            offset: 0,
            len: 0,
        }
    }

    #[test]
    fn batches_hold_at_most_the_allowed_distinct_pairs() {
        let files = [
            file("a", "1"),
            file("a", "1"),
            file("a", "2"),
            file("b", "1"),
            file("c", "1"),
            file("c", "1"),
        ];
        let sizes: Vec<usize> = batches(&files, 2).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![3, 3]);
        let sizes: Vec<usize> = batches(&files, 1).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 2]);
        assert_eq!(batches(&files, 128).len(), 1);
        assert!(batches(&[], 128).is_empty());
    }
}
