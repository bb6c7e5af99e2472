//! The rows one stored instance adds to the index: its audit line, patient, study, series,
//! instance and header, written by the index writer inside its transaction.
//!
//! sqlx runs each SQLite connection on a thread of its own, so every statement is a round trip
//! between threads. Under load those hand-overs, not SQLite's work, were most of the writer's
//! time (about 1 ms per instance with four associations storing at once on two cores), and the
//! writer is the one place every store passes through. Two things keep them few:
//! - independent statements travel together, as one multi-statement query (sqlx binds the `?`
//!   of successive statements from one argument list, in order);
//! - [`RowCache`] remembers the patient, study and series rows the previous instance wrote.
//!   Consecutive instances of one series (what a modality sends) carry identical attributes,
//!   and an upsert repeated with identical values changes nothing, so it is skipped.
//!
//! An instance of a cached series then costs four round trips (begin, audit + current object,
//! instance + header, commit) instead of ten or more.

use crate::sql::{self, Conn};

use crate::index::{
    audit_insert, bind_audit, IndexOutcome, NewInstance, PatientAttrs, SeriesAttrs, StudyAttrs,
};
use crate::workflow::{self, PatientRecord};
use crate::IndexError;

/// Rows written by earlier instances, valid only while nothing but instance inserts has run
/// on the writer's connection since they were written and their transaction committed. The
/// writer clears it before any other kind of write (a merge, a deletion, an order…) and
/// whenever a transaction is rolled back.
#[derive(Default)]
pub(crate) struct RowCache {
    patient: Option<CachedPatient>,
    study: Option<CachedStudy>,
    series: Option<CachedSeries>,
}

struct CachedPatient {
    tenant: i64,
    attrs: PatientAttrs,
    /// The surviving patient's key (after following merges).
    pk: i64,
}

struct CachedStudy {
    tenant: i64,
    patient_pk: i64,
    attrs: StudyAttrs,
    correct_from_orders: bool,
    /// The patient attributes the revision below was worked out for.
    patient_attrs: PatientAttrs,
    pk: i64,
    patient_revision: i64,
}

struct CachedSeries {
    tenant: i64,
    study_pk: i64,
    attrs: SeriesAttrs,
    pk: i64,
}

impl RowCache {
    pub(crate) fn clear(&mut self) {
        *self = RowCache::default();
    }
}

const CURRENT_INSTANCE: &str = "SELECT pk, dataset_sha256 FROM instance
     WHERE tenant_pk = ? AND sop_uid = ? AND superseded_at IS NULL";

/// Indexes one instance inside the writer's open transaction.
pub(crate) async fn insert_instance(
    tx: &mut dyn Conn,
    n: &NewInstance,
    cache: &mut RowCache,
) -> Result<IndexOutcome, IndexError> {
    let now = tx.dialect().now();
    // Round trip 1: the current object with this SOP Instance UID. The audit line waits for
    // the outcome, which it names.
    let current: Option<(i64, String)> = sql::query_as(CURRENT_INSTANCE)
        .bind(n.tenant)
        .bind(&n.sop_uid)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((pk, dataset_sha)) = &current {
        if *dataset_sha == n.dataset_sha256 {
            if let Some(e) = &n.audit {
                let mut e = e.clone();
                e.outcome = "duplicate".into();
                bind_audit(sql::query(&audit_insert(tx.dialect())), &e)
                    .execute(&mut *tx)
                    .await?;
            }
            return Ok(IndexOutcome::Duplicate { pk: *pk });
        }
        if !n.replace_current {
            return Ok(IndexOutcome::Differs {
                pk: *pk,
                dataset_sha256: dataset_sha.clone(),
            });
        }
    }

    if n.check_quota {
        // Locked on PostgreSQL until the commit, so that two nodes storing for one tenant
        // cannot both pass the last bytes of its quota; tenants without one pay nothing.
        let sql = format!(
            "SELECT stored_bytes, quota_bytes FROM tenant WHERE pk = ?{}",
            tx.dialect().lock_rows()
        );
        let (stored, quota): (i64, Option<i64>) =
            sql::query_as(&sql).bind(n.tenant).fetch_one(&mut *tx).await?;
        let (stored, size) = (stored.max(0) as u64, n.size);
        if let Some(quota) = quota.map(|q| q.max(0) as u64) {
            if stored.saturating_add(size) > quota {
                return Ok(IndexOutcome::QuotaExceeded { quota, stored });
            }
        }
    }
    let (study_pk, patient_revision, study_written) = study_rows(tx, n, cache).await?;
    let series_pk = series_row(tx, n, study_pk, cache).await?;

    // Round trip 2: the audit line, the study's reception time (the upsert set it when it
    // ran), the object this one supersedes, the instance and its header.
    let mut sql = String::new();
    if n.audit.is_some() {
        sql.push_str(&audit_insert(tx.dialect()));
        sql.push_str(";\n");
    }
    if !study_written {
        sql.push_str(&format!(
            "UPDATE study SET last_received_at = {now} WHERE pk = ?;\n"
        ));
    }
    if current.is_some() {
        sql.push_str(&format!(
            "UPDATE instance SET superseded_at = {now} WHERE pk = ?;\n"
        ));
    }
    let last_key = tx.dialect().last_insert_key();
    sql.push_str(&format!(
        "INSERT INTO instance (tenant_pk, series_pk, sop_uid, sop_class, instance_number, rows, columns_,
                               bits_allocated, number_of_frames, transfer_syntax,
                               size, sha256, dataset_sha256, blob_key, dataset_offset, source_ae, received_at,
                               patient_revision)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now}, ?)
         RETURNING pk;
         INSERT INTO instance_header (instance_pk, header) VALUES ({last_key}, ?)"
    ));
    let mut query = sql::query(&sql);
    if let Some(e) = &n.audit {
        query = bind_audit(query, e);
    }
    if !study_written {
        query = query.bind(study_pk);
    }
    if let Some((old_pk, _)) = &current {
        query = query.bind(*old_pk);
    }
    let rows = query
        .bind(n.tenant)
        .bind(series_pk)
        .bind(&n.sop_uid)
        .bind(&n.sop_class)
        .bind(&n.instance_number)
        .bind(&n.rows)
        .bind(&n.columns)
        .bind(&n.bits_allocated)
        .bind(&n.number_of_frames)
        .bind(&n.transfer_syntax)
        .bind(n.size as i64)
        .bind(&n.sha256)
        .bind(&n.dataset_sha256)
        .bind(&n.sha256)
        .bind(n.dataset_offset as i64)
        .bind(&n.source_ae)
        .bind(patient_revision)
        .bind(&n.header_json)
        .fetch_all(&mut *tx)
        .await?;
    let pk: i64 = rows
        .first()
        .ok_or_else(|| IndexError::Schema("instance insert returned no key".into()))?
        .try_get(0)?;
    Ok(match current {
        Some((superseded_pk, _)) => IndexOutcome::Replaced { pk, superseded_pk },
        None => IndexOutcome::Stored { pk },
    })
}

/// The study row (and its patient) for an instance: its key, the patient revision the
/// instance is indexed under, and whether the study row was written (false: taken from the
/// cache, its reception time still to update).
async fn study_rows(
    tx: &mut dyn Conn,
    n: &NewInstance,
    cache: &mut RowCache,
) -> Result<(i64, i64, bool), IndexError> {
    let now = tx.dialect().now();
    let p = &n.patient;
    let cached_patient = cache
        .patient
        .as_ref()
        .filter(|c| c.tenant == n.tenant && c.attrs == *p)
        .map(|c| c.pk);
    if let Some(patient_pk) = cached_patient {
        let cached_study = cache.study.as_ref().filter(|c| {
            c.tenant == n.tenant
                && c.patient_pk == patient_pk
                && c.attrs == n.study
                && c.correct_from_orders == n.correct_from_orders
                && c.patient_attrs == *p
        });
        if let Some(c) = cached_study {
            return Ok((c.pk, c.patient_revision, false));
        }
    }
    let (patient_pk, mut patient) = match cached_patient {
        Some(pk) => (pk, None),
        None => {
            let (pk, record) = upsert_patient(tx, n.tenant, p).await?;
            cache.patient = Some(CachedPatient {
                tenant: n.tenant,
                attrs: p.clone(),
                pk,
            });
            (pk, record)
        }
    };
    let s = &n.study;
    let row = sql::query(&format!(
        "INSERT INTO study (tenant_pk, patient_pk, study_uid, study_date, study_time, accession_number,
                            study_id, description, referring, referring_folded, last_received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now})
         ON CONFLICT (tenant_pk, study_uid) DO UPDATE SET
           last_received_at = excluded.last_received_at,
           -- A study reconciled with an order stays with the order's patient.
           patient_pk = CASE WHEN study.order_pk IS NULL THEN excluded.patient_pk ELSE study.patient_pk END,
           study_date = COALESCE(excluded.study_date, study.study_date),
           study_time = COALESCE(excluded.study_time, study.study_time),
           accession_number = COALESCE(excluded.accession_number, study.accession_number),
           study_id = COALESCE(excluded.study_id, study.study_id),
           description = COALESCE(excluded.description, study.description),
           referring = COALESCE(excluded.referring, study.referring),
           referring_folded = COALESCE(excluded.referring_folded, study.referring_folded)
         RETURNING pk, patient_pk, CASE WHEN order_pk IS NULL THEN 1 ELSE 0 END"
    ))
    .bind(n.tenant)
    .bind(patient_pk)
    .bind(&s.study_uid)
    .bind(&s.date)
    .bind(&s.time)
    .bind(&s.accession_number)
    .bind(&s.study_id)
    .bind(&s.description)
    .bind(&s.referring)
    .bind(&s.referring_folded)
    .fetch_one(&mut *tx)
    .await?;
    let study_pk: i64 = row.try_get(0)?;
    // A study linked to an order keeps the order's patient, whoever the images name.
    if row.try_get::<i64>(1)? != patient_pk {
        patient = None;
    }
    if row.try_get::<bool>(2)? && workflow::reconcile_study(tx, study_pk, n.correct_from_orders).await? {
        patient = None;
    }
    // The patient row is read again only when the one just written is not the study's.
    let patient_revision = match &patient {
        Some(record) => workflow::revision_at_ingest(record, p),
        None => workflow::revision_for(tx, study_pk, p).await?,
    };
    cache.study = Some(CachedStudy {
        tenant: n.tenant,
        patient_pk,
        attrs: s.clone(),
        correct_from_orders: n.correct_from_orders,
        patient_attrs: p.clone(),
        pk: study_pk,
        patient_revision,
    });
    Ok((study_pk, patient_revision, true))
}

/// Creates or updates the patient an instance names; returns the surviving patient's key and,
/// when it was not merged into another, its row as written.
async fn upsert_patient(
    tx: &mut dyn Conn,
    tenant: i64,
    p: &PatientAttrs,
) -> Result<(i64, Option<PatientRecord>), IndexError> {
    let row = sql::query(
        // Later objects update the attributes they carry; an absent value never erases one;
        // demographics the RIS sent are never overwritten by images.
        "INSERT INTO patient (tenant_pk, issuer, patient_id, unidentified_study, patient_name,
                              patient_name_folded, birth_date, sex)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant_pk, issuer, patient_id, unidentified_study) DO UPDATE SET
           patient_name = CASE WHEN patient.ris_managed <> 0 THEN patient.patient_name
                               ELSE COALESCE(excluded.patient_name, patient.patient_name) END,
           patient_name_folded = CASE WHEN patient.ris_managed <> 0 THEN patient.patient_name_folded
                                      ELSE COALESCE(excluded.patient_name_folded, patient.patient_name_folded) END,
           birth_date = CASE WHEN patient.ris_managed <> 0 THEN patient.birth_date
                             ELSE COALESCE(excluded.birth_date, patient.birth_date) END,
           sex = CASE WHEN patient.ris_managed <> 0 THEN patient.sex ELSE COALESCE(excluded.sex, patient.sex) END
         RETURNING pk, issuer, patient_id, patient_name, birth_date, sex, revision, ris_fields,
                   merged_into",
    )
    .bind(tenant)
    .bind(&p.issuer)
    .bind(&p.patient_id)
    .bind(&p.unidentified_study)
    .bind(&p.name)
    .bind(&p.name_folded)
    .bind(&p.birth_date)
    .bind(&p.sex)
    .fetch_one(&mut *tx)
    .await?;
    let merged_into: Option<i64> = row.try_get(8)?;
    Ok(match merged_into {
        // A patient merged into another (HL7 A40): late images join the survivor.
        Some(_) => (workflow::surviving_patient(tx, row.try_get(0)?).await?, None),
        None => {
            let record = workflow::patient_record(&row)?;
            (record.pk, Some(record))
        }
    })
}

async fn series_row(
    tx: &mut dyn Conn,
    n: &NewInstance,
    study_pk: i64,
    cache: &mut RowCache,
) -> Result<i64, IndexError> {
    let se = &n.series;
    if let Some(c) = cache
        .series
        .as_ref()
        .filter(|c| c.tenant == n.tenant && c.study_pk == study_pk && c.attrs == *se)
    {
        return Ok(c.pk);
    }
    let pk: i64 = sql::query_scalar(
        "INSERT INTO series (tenant_pk, study_pk, series_uid, modality, series_number, description, body_part)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant_pk, series_uid) DO UPDATE SET
           modality = COALESCE(excluded.modality, series.modality),
           series_number = COALESCE(excluded.series_number, series.series_number),
           description = COALESCE(excluded.description, series.description),
           body_part = COALESCE(excluded.body_part, series.body_part)
         RETURNING pk",
    )
    .bind(n.tenant)
    .bind(study_pk)
    .bind(&se.series_uid)
    .bind(&se.modality)
    .bind(&se.series_number)
    .bind(&se.description)
    .bind(&se.body_part)
    .fetch_one(&mut *tx)
    .await?;
    cache.series = Some(CachedSeries {
        tenant: n.tenant,
        study_pk,
        attrs: se.clone(),
        pk,
    });
    Ok(pk)
}
