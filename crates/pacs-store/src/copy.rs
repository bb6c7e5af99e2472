//! Moving an installation's index from the embedded SQLite file to PostgreSQL
//! (`openpacs migrate-index`): every row, keys included, in one PostgreSQL transaction read
//! from one SQLite snapshot, so that the copy is whole or absent and consistent even if a
//! server still wrote meanwhile. Blobs do not move: they are named by their hash, which the
//! rows keep.

use std::path::Path;

use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::sql::{self, Conn, Value};
use crate::IndexError;

/// The tables in an order that satisfies their references, and the column each is paged by.
const TABLES: &[&str] = &[
    "tenant",
    "tenant_ae",
    "tenant_hl7_facility",
    "patient",
    "procedure_order",
    "study",
    "series",
    "instance",
    "instance_header",
    "audit",
    "user_account",
    "credential",
    "blob_deletion",
    "patient_merge",
    "mpps",
    "report",
    "application_entity",
    "job",
    "access_grant",
    "metering_event",
];

/// Rows per INSERT: PostgreSQL takes at most 65,535 parameters in one statement.
const ROWS_PER_INSERT: usize = 200;

/// How many rows of each table were copied, in [`TABLES`] order.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub tables: Vec<(String, u64)>,
}

/// Copies the SQLite index at `sqlite_path` into the empty PostgreSQL index at `pg_url`
/// (creating its schema). Refuses a PostgreSQL index that already holds anything.
pub async fn sqlite_to_postgres(sqlite_path: &Path, pg_url: &str) -> Result<CopyReport, IndexError> {
    if !sqlite_path.exists() {
        return Err(IndexError::Schema(format!(
            "no SQLite index at {}",
            sqlite_path.display()
        )));
    }
    // Opening migrates an older file to the schema this version copies from.
    drop(crate::SqlIndex::open(sqlite_path).await?);
    let mut source =
        SqliteConnection::connect_with(&crate::index::connect_options(sqlite_path).read_only(true)).await?;
    let unreachable = |error| IndexError::Unreachable {
        url: crate::pg::redacted(pg_url),
        error,
    };
    let mut target = PgConnection::connect(pg_url).await.map_err(unreachable)?;
    crate::pg::migrate(&mut target).await?;

    let occupied: i64 = sql::query_scalar(
        "SELECT (SELECT count(*) FROM patient) + (SELECT count(*) FROM audit)
              + (SELECT count(*) FROM user_account) + (SELECT count(*) FROM application_entity)",
    )
    .fetch_one(&mut target)
    .await?;
    if occupied > 0 {
        return Err(IndexError::Schema(
            "the PostgreSQL index is not empty: migrate into a new, empty database".into(),
        ));
    }

    // One read transaction: every table as of the same moment.
    source.execute("BEGIN", Vec::new()).await?;
    target.execute("BEGIN", Vec::new()).await?;
    let result = copy_all(&mut source, &mut target).await;
    let _ = source.execute("ROLLBACK", Vec::new()).await;
    match result {
        Ok(report) => {
            target.execute("COMMIT", Vec::new()).await?;
            Ok(report)
        }
        Err(e) => {
            let _ = target.execute("ROLLBACK", Vec::new()).await;
            Err(e)
        }
    }
}

async fn copy_all(source: &mut dyn Conn, target: &mut dyn Conn) -> Result<CopyReport, IndexError> {
    let mut report = CopyReport::default();
    for table in TABLES {
        if *table == "metering_event" {
            // The copied instances fired the metering trigger: those events are the copy's,
            // not history; the source's own are copied instead.
            target.execute("DELETE FROM metering_event", Vec::new()).await?;
        }
        let copied = copy_table(source, target, table).await?;
        report.tables.push((table.to_string(), copied));
    }
    // A patient merged into one with a later key was copied without the link (its survivor
    // did not exist yet): link them now.
    let merged: Vec<(i64, i64)> =
        sql::query_as("SELECT pk, merged_into FROM patient WHERE merged_into IS NOT NULL")
            .fetch_all(source)
            .await?;
    for (pk, into) in merged {
        sql::query("UPDATE patient SET merged_into = ? WHERE pk = ?")
            .bind(into)
            .bind(pk)
            .execute(target)
            .await?;
    }
    let revision: i64 = sql::query_scalar("SELECT value FROM revision_counter")
        .fetch_one(source)
        .await?;
    sql::query("UPDATE revision_counter SET value = ?")
        .bind(revision)
        .execute(target)
        .await?;
    // The count triggers counted every copied instance on top of the copied counts.
    target
        .execute(
            "UPDATE tenant SET stored_bytes = (SELECT COALESCE(SUM(size), 0) FROM instance i
                 WHERE i.tenant_pk = tenant.pk);
             UPDATE series SET num_instances = (SELECT count(*) FROM instance i
                 WHERE i.series_pk = series.pk AND i.superseded_at IS NULL);
             UPDATE study SET num_instances = (SELECT count(*) FROM instance i
                 JOIN series se ON se.pk = i.series_pk
                 WHERE se.study_pk = study.pk AND i.superseded_at IS NULL)",
            Vec::new(),
        )
        .await?;
    // New rows continue after the copied keys.
    for table in TABLES.iter().filter(|t| {
        !matches!(
            **t,
            "tenant"
                | "tenant_ae"
                | "tenant_hl7_facility"
                | "instance_header"
                | "blob_deletion"
                | "metering_event"
        )
    }) {
        target
            .execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'pk'), GREATEST((SELECT max(pk) FROM {table}), 1))"
                ),
                Vec::new(),
            )
            .await?;
    }
    // Both sides must now hold the same number of rows, table by table.
    for (table, copied) in &report.tables {
        let count = format!("SELECT count(*) FROM {table}");
        let source_rows: i64 = sql::query_scalar(&count).fetch_one(source).await?;
        let target_rows: i64 = sql::query_scalar(&count).fetch_one(target).await?;
        if source_rows != target_rows || source_rows as u64 != *copied {
            return Err(IndexError::Schema(format!(
                "{table}: {source_rows} rows in SQLite, {target_rows} in PostgreSQL after the copy"
            )));
        }
    }
    Ok(report)
}

/// Copies one table page by page, by SQLite's rowid; its columns are SQLite's, by name.
async fn copy_table(source: &mut dyn Conn, target: &mut dyn Conn, table: &str) -> Result<u64, IndexError> {
    let columns: Vec<String> = sql::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .fetch_all(source)
        .await?;
    let merged_into = columns.iter().position(|c| c == "merged_into");
    let list = columns.join(", ");
    let select = format!("SELECT rowid, {list} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1000");
    let row_placeholders = format!("({})", vec!["?"; columns.len()].join(", "));
    // The default tenant exists in every new index: it takes the copied settings.
    let conflict = if table == "tenant" {
        " ON CONFLICT (pk) DO UPDATE SET title = excluded.title, disabled = excluded.disabled,
           quota_bytes = excluded.quota_bytes, issuer_of_patient_id = excluded.issuer_of_patient_id,
           created_at = excluded.created_at"
    } else {
        ""
    };
    let mut after = 0i64;
    let mut copied = 0u64;
    loop {
        let rows = sql::query(&select).bind(after).fetch_all(source).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get(0)?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut args = Vec::with_capacity(chunk.len() * columns.len());
            for row in chunk {
                for i in 0..columns.len() {
                    let value: Value = row.value(i + 1).clone();
                    // Linked after every patient exists (see `copy_all`).
                    args.push(if Some(i) == merged_into {
                        Value::Null
                    } else {
                        value
                    });
                }
            }
            let values = vec![row_placeholders.as_str(); chunk.len()].join(", ");
            target
                .execute(
                    &format!("INSERT INTO {table} ({list}) VALUES {values}{conflict}"),
                    args,
                )
                .await?;
            copied += chunk.len() as u64;
        }
    }
    if table == "tenant" {
        // Counted as present, whether copied or already there.
        return Ok(sql::query_scalar::<i64>("SELECT count(*) FROM tenant")
            .fetch_one(source)
            .await? as u64);
    }
    Ok(copied)
}
