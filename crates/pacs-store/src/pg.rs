//! What only the PostgreSQL engine needs: its migrations, applied once however many nodes
//! start at the same moment, and a connection URL fit for a log line.

use sqlx::{Connection, PgConnection};

use crate::IndexError;

/// Migrations, applied in order; `openpacs_schema` records how many ran.
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_initial.sql"),
    include_str!("../migrations/postgres/0002_jobs.sql"),
    include_str!("../migrations/postgres/0003_tenants.sql"),
];

/// The advisory lock the nodes of one installation take while migrating (any fixed number;
/// this one spells "opacs").
const MIGRATION_LOCK: i64 = 0x6f_7061_6373;

pub(crate) async fn migrate(conn: &mut PgConnection) -> Result<(), IndexError> {
    let mut tx = conn.begin().await?;
    // Held until the transaction ends: a second node waits here, then finds the schema done.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS openpacs_schema (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM openpacs_schema")
        .fetch_one(&mut *tx)
        .await?;
    let version = version.unwrap_or(0);
    let known = POSTGRES_MIGRATIONS.len() as i64;
    if version > known {
        return Err(IndexError::Schema(format!(
            "index schema version {version} is newer than this openpacs ({known})"
        )));
    }
    for (i, sql) in POSTGRES_MIGRATIONS.iter().enumerate().skip(version as usize) {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO openpacs_schema (version) VALUES ($1)")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = i + 1, "PostgreSQL index schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// The URL without its password, for messages: `postgres://user:…@host/db`.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:…@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redacted_url_keeps_everything_but_the_password() {
        assert_eq!(
            super::redacted("postgres://pacs:s3cr:et@db.example:5432/pacs"),
            "postgres://pacs:…@db.example:5432/pacs"
        );
        assert_eq!(
            super::redacted("postgres://127.0.0.1/test"),
            "postgres://127.0.0.1/test"
        );
        assert_eq!(
            super::redacted("postgres://pacs@db/pacs"),
            "postgres://pacs@db/pacs"
        );
    }
}
