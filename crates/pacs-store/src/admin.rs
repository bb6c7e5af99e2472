//! Administrative index operations: deleting studies, series and instances, and statistics.
//!
//! A deletion removes the rows (every version of each object, superseded ones included) and
//! the patients, studies and series it leaves empty, in one transaction with its audit line.
//! Blobs no longer referenced by any row are listed in `blob_deletion` in that same
//! transaction; the archive removes the files after the commit and then clears the list, and
//! start-up recovery finishes any removal a crash interrupted.

use crate::sql::{self, Conn};

use crate::index::insert_audit;
use crate::{AuditEvent, IndexError};

/// What to delete: a study, one of its series, or one instance of that series.
#[derive(Clone, Debug)]
pub struct DeleteScope {
    pub tenant: i64,
    pub study_uid: String,
    pub series_uid: Option<String>,
    pub sop_uid: Option<String>,
}

/// What a deletion removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Instance rows removed (all versions).
    pub instances: u64,
    /// Blobs that no row references any more, to remove from disk.
    pub blob_keys: Vec<String>,
}

/// Archive-wide figures.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    pub patients: i64,
    pub studies: i64,
    pub series: i64,
    pub instances: i64,
    /// Size of the current objects as received.
    pub bytes: i64,
    /// Older versions kept after a changed object replaced them.
    pub superseded_instances: i64,
    pub modalities: Vec<ModalityStats>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ModalityStats {
    pub modality: String,
    pub studies: i64,
    pub series: i64,
    pub instances: i64,
    pub bytes: i64,
}

pub(crate) async fn delete(
    conn: &mut dyn Conn,
    scope: &DeleteScope,
    audit: &AuditEvent,
) -> Result<Deleted, IndexError> {
    let now = conn.dialect().now();
    // The instances in scope, every version.
    sql::query("CREATE TEMP TABLE IF NOT EXISTS doomed (pk BIGINT PRIMARY KEY, blob_key TEXT NOT NULL)")
        .execute(&mut *conn)
        .await?;
    sql::query("DELETE FROM doomed").execute(&mut *conn).await?;
    sql::query(
        "INSERT INTO doomed (pk, blob_key)
         SELECT i.pk, i.blob_key FROM instance i
         JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
         WHERE st.tenant_pk = ? AND st.study_uid = ?
           AND (CAST(? AS TEXT) IS NULL OR se.series_uid = ?) AND (CAST(? AS TEXT) IS NULL OR i.sop_uid = ?)",
    )
    .bind(scope.tenant)
    .bind(&scope.study_uid)
    .bind(&scope.series_uid)
    .bind(&scope.series_uid)
    .bind(&scope.sop_uid)
    .bind(&scope.sop_uid)
    .execute(&mut *conn)
    .await?;
    sql::query("DELETE FROM instance_header WHERE instance_pk IN (SELECT pk FROM doomed)")
        .execute(&mut *conn)
        .await?;
    let instances = sql::query("DELETE FROM instance WHERE pk IN (SELECT pk FROM doomed)")
        .execute(&mut *conn)
        .await?;
    // Containers left empty go too.
    sql::query(
        "DELETE FROM series WHERE study_pk IN (SELECT pk FROM study WHERE tenant_pk = ? AND study_uid = ?)
         AND NOT EXISTS (SELECT 1 FROM instance i WHERE i.series_pk = series.pk)",
    )
    .bind(scope.tenant)
    .bind(&scope.study_uid)
    .execute(&mut *conn)
    .await?;
    let patient: Option<i64> =
        sql::query_scalar("SELECT patient_pk FROM study WHERE tenant_pk = ? AND study_uid = ?")
            .bind(scope.tenant)
            .bind(&scope.study_uid)
            .fetch_optional(&mut *conn)
            .await?;
    sql::query(
        "DELETE FROM study WHERE tenant_pk = ? AND study_uid = ?
         AND NOT EXISTS (SELECT 1 FROM series se WHERE se.study_pk = study.pk)",
    )
    .bind(scope.tenant)
    .bind(&scope.study_uid)
    .execute(&mut *conn)
    .await?;
    if let Some(patient) = patient {
        sql::query(
            "DELETE FROM patient WHERE pk = ? AND NOT EXISTS (SELECT 1 FROM study s WHERE s.patient_pk = ?)",
        )
        .bind(patient)
        .bind(patient)
        .execute(&mut *conn)
        .await?;
    }
    // Blobs are shared by identical objects: only those nothing else references are removed.
    let blob_keys: Vec<String> = sql::query_scalar(
        "SELECT DISTINCT d.blob_key FROM doomed d
         WHERE NOT EXISTS (SELECT 1 FROM instance i WHERE i.blob_key = d.blob_key) ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    for key in &blob_keys {
        sql::query(&format!(
            "INSERT INTO blob_deletion (blob_key, requested_at) VALUES (?, {now}) ON CONFLICT DO NOTHING"
        ))
        .bind(key)
        .execute(&mut *conn)
        .await?;
    }
    sql::query("DELETE FROM doomed").execute(&mut *conn).await?;
    if instances > 0 {
        let mut audit = audit.clone();
        audit.detail = Some(format!(
            "{}; {instances} instance row(s), {} blob(s)",
            audit.detail.unwrap_or_default(),
            blob_keys.len()
        ));
        insert_audit(conn, &audit).await?;
    }
    Ok(Deleted { instances, blob_keys })
}

pub(crate) async fn clear_blob_deletions(conn: &mut dyn Conn, keys: &[String]) -> Result<u64, IndexError> {
    let mut done = 0;
    for key in keys {
        done += sql::query("DELETE FROM blob_deletion WHERE blob_key = ?")
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(done)
}

pub(crate) async fn pending_blob_deletions(conn: &mut dyn Conn) -> Result<Vec<String>, IndexError> {
    Ok(
        sql::query_scalar("SELECT blob_key FROM blob_deletion ORDER BY blob_key")
            .fetch_all(conn)
            .await?,
    )
}

pub(crate) async fn stats(conn: &mut dyn Conn, tenant: i64) -> Result<Stats, IndexError> {
    let row = sql::query(
        "SELECT (SELECT COUNT(*) FROM patient WHERE tenant_pk = ?1),
                (SELECT COUNT(*) FROM study WHERE tenant_pk = ?1),
                (SELECT COUNT(*) FROM series WHERE tenant_pk = ?1),
                (SELECT COUNT(*) FROM instance WHERE tenant_pk = ?1 AND superseded_at IS NULL),
                (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM instance WHERE tenant_pk = ?1 AND superseded_at IS NULL),
                (SELECT COUNT(*) FROM instance WHERE tenant_pk = ?1 AND superseded_at IS NOT NULL)",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?;
    let modalities = sql::query(
        "SELECT COALESCE(se.modality, ''), COUNT(DISTINCT se.study_pk), COUNT(DISTINCT se.pk),
                COUNT(i.pk), CAST(COALESCE(SUM(i.size), 0) AS BIGINT)
         FROM series se LEFT JOIN instance i ON i.series_pk = se.pk AND i.superseded_at IS NULL
         WHERE se.tenant_pk = ? GROUP BY 1 ORDER BY 4 DESC, 1",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| {
        Ok(ModalityStats {
            modality: r.try_get(0)?,
            studies: r.try_get(1)?,
            series: r.try_get(2)?,
            instances: r.try_get(3)?,
            bytes: r.try_get(4)?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(Stats {
        patients: row.try_get(0)?,
        studies: row.try_get(1)?,
        series: row.try_get(2)?,
        instances: row.try_get(3)?,
        bytes: row.try_get(4)?,
        superseded_instances: row.try_get(5)?,
        modalities,
    })
}
