//! `openpacs verify`: fixity check of every stored object.

use std::process::ExitCode;

use pacs_archive::Archive;

use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let archive = Archive::open(&crate::serve::archive_config(&config)).await?;
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
