//! `openpacs migrate-index --to postgres://…`: the embedded index moves to PostgreSQL.

use std::process::ExitCode;

use crate::config::Config;

pub async fn run(config: Config, to: Option<String>) -> anyhow::Result<ExitCode> {
    let Some(to) = to.or_else(|| config.index_url.clone()) else {
        anyhow::bail!("name the PostgreSQL database with --to or index_url (OPENPACS_INDEX_URL)");
    };
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        anyhow::bail!("--to must be a PostgreSQL URL (postgres://user@host:port/database)");
    }
    let source = pacs_archive::index_path(&config.data_dir);
    let report = pacs_store::copy::sqlite_to_postgres(&source, &to).await?;
    for (table, rows) in &report.tables {
        println!("{table}\t{rows}");
    }
    println!(
        "copied the index of {} into PostgreSQL; start openpacs with index_url set to it \
         (OPENPACS_INDEX_URL=…). The SQLite file is left as it was.",
        source.display()
    );
    Ok(ExitCode::SUCCESS)
}
