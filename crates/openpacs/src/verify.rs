//! `openpacs verify` (fixity check of every stored object) and `openpacs audit` (the audit log).

use std::process::ExitCode;

use pacs_archive::Archive;

use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&crate::serve::archive_config(&config)?).await?;
    let total = archive.count_objects().await?;
    let bar = crate::progress_bar(total, "verifying");
    let problems = archive.verify(|done| bar.set_position(done)).await?;
    bar.finish_and_clear();
    for p in &problems {
        println!("{}\t{}\t{}", p.sop_uid, p.blob_key, p.problem);
    }
    println!("verified {total} objects: {} problem(s)", problems.len());
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn audit(config: Config) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let archive = Archive::open(&crate::serve::archive_config(&config)?).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = 0;
    loop {
        let page = archive.system().audit_page(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.pk;
        for record in page {
            let e = &record.event;
            // Tabs and newlines inside values would break the columns.
            let clean = |s: &str| s.replace(['\t', '\n'], " ");
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                clean(&record.at),
                clean(&e.event),
                clean(&e.actor),
                clean(&e.peer),
                clean(e.patient_id.as_deref().unwrap_or("")),
                clean(e.study_uid.as_deref().unwrap_or("")),
                clean(&e.outcome),
                clean(e.detail.as_deref().unwrap_or(""))
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
