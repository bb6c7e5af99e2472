//! The RIS workflow in the index: patient identity from ADT (registration, updates, merges and
//! their undoing, identifier changes), orders and their scheduled procedure steps (the Modality
//! Worklist), MPPS, reports, study completion and reconciliation of studies with orders.
//!
//! Identity changes never touch stored objects. Each change gives the patient a new
//! `revision` (from one counter for all patients); an instance records the revision it was
//! indexed under, and retrieval patches the patient attributes of any instance whose revision
//! differs from its patient's (see `pacs-archive`).

use crate::sql::{self, Conn};

use crate::index::insert_audit;
use crate::{AuditEvent, IndexError, PatientAttrs};

/// A patient's key: issuer of patient ID (empty when none) and patient ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientKey {
    pub issuer: String,
    pub patient_id: String,
}

/// Demographics as the RIS sent them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demographics {
    pub name: Option<String>,
    pub name_folded: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
}

/// A patient as the index holds it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatientRecord {
    pub pk: i64,
    pub key: PatientKey,
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub sex: Option<String>,
    pub revision: i64,
    /// Which demographics an explicit identity change set ([`PatientRecord::RIS_NAME`]…):
    /// the only ones ever patched into an object sent out.
    pub ris_fields: i64,
}

impl PatientRecord {
    pub const RIS_NAME: i64 = 1;
    pub const RIS_BIRTH_DATE: i64 = 2;
    pub const RIS_SEX: i64 = 4;

    /// The name, if an explicit identity change set it.
    pub fn ris_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .filter(|_| self.ris_fields & Self::RIS_NAME != 0)
    }

    /// The birth date, if an explicit identity change set it.
    pub fn ris_birth_date(&self) -> Option<&str> {
        self.birth_date
            .as_deref()
            .filter(|_| self.ris_fields & Self::RIS_BIRTH_DATE != 0)
    }

    /// The sex, if an explicit identity change set it.
    pub fn ris_sex(&self) -> Option<&str> {
        self.sex
            .as_deref()
            .filter(|_| self.ris_fields & Self::RIS_SEX != 0)
    }
}

/// An order's scheduled procedure step: one Modality Worklist item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Order {
    pub placer_order: String,
    pub filler_order: Option<String>,
    pub accession_number: Option<String>,
    pub requested_procedure_id: Option<String>,
    pub requested_procedure_description: Option<String>,
    pub study_uid: Option<String>,
    pub sps_id: Option<String>,
    pub sps_description: Option<String>,
    pub station_ae: Option<String>,
    pub station_name: Option<String>,
    pub modality: Option<String>,
    /// YYYYMMDD and HHMMSS (DICOM DA/TM).
    pub start_date: Option<String>,
    pub start_time: Option<String>,
    pub performing_physician: Option<String>,
    pub referring_physician: Option<String>,
    pub status: String,
}

/// A worklist item: the order and its patient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorklistItem {
    pub order: Order,
    pub patient: PatientRecord,
}

/// A stored MPPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MppsRecord {
    pub sop_uid: String,
    pub status: String,
    pub accession_number: Option<String>,
    pub study_uid: Option<String>,
    pub dataset: String,
}

/// A report as received.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub study_uid: Option<String>,
    pub accession_number: Option<String>,
    pub status: String,
    pub text: String,
    pub author: Option<String>,
    pub observed_at: Option<String>,
    pub received_at: String,
    pub control_id: Option<String>,
}

/// A recorded patient merge (A40).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeRecord {
    pub id: i64,
    pub survivor_patient_id: String,
    pub merged_patient_id: String,
    pub at: String,
    pub undone_at: Option<String>,
}

/// A study for completion notices and the review list.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StudySummary {
    pub study_uid: String,
    pub accession_number: Option<String>,
    pub patient_id: String,
    pub patient_name: Option<String>,
    pub review_reason: Option<String>,
    pub instances: i64,
}

/// Workflow changes, applied by the index writer. Each carries its audit line, committed in
/// the same transaction.
#[derive(Clone, Debug)]
pub enum WorkflowWrite {
    /// A01/A04/A05: create or update; the RIS's demographics win from now on.
    RegisterPatient {
        key: PatientKey,
        demographics: Demographics,
    },
    /// A08/A31: update a known patient (0 rows: unknown).
    UpdatePatient {
        key: PatientKey,
        demographics: Demographics,
    },
    /// A40: `merged`'s studies move under `survivor`; returns the merge's key (0: unknown).
    MergePatients {
        survivor: PatientKey,
        merged: PatientKey,
    },
    /// Undoes a merge (0: no such merge, or already undone).
    UndoMerge {
        merge: i64,
    },
    /// A47: the patient known as `old` is now `new` (0: `old` unknown or `new` taken).
    ChangePatientId {
        old: PatientKey,
        new: PatientKey,
    },
    /// The tenant's identifier domain is `issuer`: patients indexed without an issuer join it
    /// (merged, undoably, into the patient of the same ID in that domain when there is one).
    /// Returns how many patients changed; with none, no audit line is written.
    AdoptIssuer {
        issuer: String,
    },
    /// NW/XO: create or replace an order (by placer order number) for a patient registered
    /// with these demographics.
    UpsertOrder {
        key: PatientKey,
        demographics: Demographics,
        order: Box<Order>,
        /// The Study Instance UID the order gets when neither this message nor an earlier one
        /// for it named one: the worklist must answer one (Type 1), always the same.
        new_study_uid: String,
    },
    /// CA/DC (DISCONTINUED), MPPS (IN PROGRESS, COMPLETED…): by placer order or accession.
    SetOrderStatus {
        placer_order: Option<String>,
        accession_number: Option<String>,
        status: String,
    },
    /// N-CREATE (0: the instance exists already).
    CreateMpps(MppsRecord),
    /// N-SET on an IN PROGRESS step (0: unknown or already final).
    UpdateMpps(MppsRecord),
    AddReport(Report),
    /// Claims the completion notice of a study: 1 for the first caller, 0 afterwards.
    ClaimCompletion {
        study_uid: String,
    },
    /// `write`, and `job` enqueued in the same transaction when `write` changed something
    /// (a non-zero result): the job exists exactly when the change that decided it does.
    /// The job gets the write's tenant.
    WithJob {
        write: Box<WorkflowWrite>,
        job: crate::NewJob,
    },
}

pub(crate) async fn apply(
    conn: &mut dyn Conn,
    tenant: i64,
    write: &WorkflowWrite,
    audit: &AuditEvent,
) -> Result<i64, IndexError> {
    let now = conn.dialect().now();
    let done = match write {
        WorkflowWrite::RegisterPatient { key, demographics } => {
            register(conn, tenant, key, demographics).await?;
            1
        }
        WorkflowWrite::UpdatePatient { key, demographics } => match find_patient(conn, tenant, key).await? {
            Some(_) => {
                register(conn, tenant, key, demographics).await?;
                1
            }
            None => 0,
        },
        WorkflowWrite::MergePatients { survivor, merged } => merge(conn, tenant, survivor, merged).await?,
        WorkflowWrite::UndoMerge { merge } => undo_merge(conn, tenant, *merge).await?,
        WorkflowWrite::ChangePatientId { old, new } => change_id(conn, tenant, old, new).await?,
        WorkflowWrite::AdoptIssuer { issuer } => {
            let adopted = adopt_issuer(conn, tenant, issuer).await?;
            if adopted == 0 {
                return Ok(0); // Nothing to say at every start-up.
            }
            adopted
        }
        WorkflowWrite::UpsertOrder {
            key,
            demographics,
            order,
            new_study_uid,
        } => {
            let patient = register(conn, tenant, key, demographics).await?;
            upsert_order(conn, tenant, patient, order, new_study_uid).await?
        }
        WorkflowWrite::SetOrderStatus {
            placer_order,
            accession_number,
            status,
        } => sql::query(&format!(
            "UPDATE procedure_order SET status = ?, updated_at = {now}
             WHERE tenant_pk = ? AND ((CAST(? AS TEXT) IS NOT NULL AND placer_order = ?) OR (CAST(? AS TEXT) IS NOT NULL AND accession_number = ?))"
        ))
        .bind(status)
        .bind(tenant)
        .bind(placer_order)
        .bind(placer_order)
        .bind(accession_number)
        .bind(accession_number)
        .execute(&mut *conn)
        .await? as i64,
        WorkflowWrite::CreateMpps(m) => sql::query(&format!(
            "INSERT INTO mpps (tenant_pk, sop_uid, status, accession_number, study_uid, dataset, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, {now}, {now}) ON CONFLICT (tenant_pk, sop_uid) DO NOTHING"
        ))
        .bind(tenant)
        .bind(&m.sop_uid)
        .bind(&m.status)
        .bind(&m.accession_number)
        .bind(&m.study_uid)
        .bind(&m.dataset)
        .execute(&mut *conn)
        .await? as i64,
        WorkflowWrite::UpdateMpps(m) => sql::query(&format!(
            "UPDATE mpps SET status = ?, dataset = ?, study_uid = COALESCE(?, study_uid),
             accession_number = COALESCE(?, accession_number), updated_at = {now}
             WHERE tenant_pk = ? AND sop_uid = ? AND status = 'IN PROGRESS'"
        ))
        .bind(&m.status)
        .bind(&m.dataset)
        .bind(&m.study_uid)
        .bind(&m.accession_number)
        .bind(tenant)
        .bind(&m.sop_uid)
        .execute(&mut *conn)
        .await? as i64,
        WorkflowWrite::AddReport(r) => sql::query_scalar(&format!(
            "INSERT INTO report (tenant_pk, study_uid, accession_number, status, text, author, observed_at,
                                 received_at, control_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, {now}, ?) RETURNING pk"
        ))
        .bind(tenant)
        .bind(&r.study_uid)
        .bind(&r.accession_number)
        .bind(&r.status)
        .bind(&r.text)
        .bind(&r.author)
        .bind(&r.observed_at)
        .bind(&r.control_id)
        .fetch_one(&mut *conn)
        .await?,
        WorkflowWrite::WithJob { write, job } => {
            // The write's own audit line is its own; the job adds none.
            let done = Box::pin(apply(conn, tenant, write, audit)).await?;
            if done != 0 {
                let job = crate::NewJob {
                    tenant,
                    ..job.clone()
                };
                crate::jobs::insert(conn, &[job]).await?;
            }
            return Ok(done);
        }
        WorkflowWrite::ClaimCompletion { study_uid } => sql::query(&format!(
            "UPDATE study SET completion_notified_at = {now}
             WHERE tenant_pk = ? AND study_uid = ? AND completion_notified_at IS NULL"
        ))
        .bind(tenant)
        .bind(study_uid)
        .execute(&mut *conn)
        .await? as i64,
    };
    let mut audit = audit.clone();
    if done == 0 {
        audit.outcome = "refused".into();
    }
    insert_audit(conn, &audit).await?;
    Ok(done)
}

async fn next_revision(conn: &mut dyn Conn) -> Result<i64, IndexError> {
    Ok(
        sql::query_scalar("UPDATE revision_counter SET value = value + 1 RETURNING value")
            .fetch_one(&mut *conn)
            .await?,
    )
}

async fn find_patient(
    conn: &mut dyn Conn,
    tenant: i64,
    key: &PatientKey,
) -> Result<Option<PatientRecord>, IndexError> {
    let row = sql::query(
        "SELECT pk, issuer, patient_id, patient_name, birth_date, sex, revision, ris_fields FROM patient
         WHERE tenant_pk = ? AND issuer = ? AND patient_id = ? AND unidentified_study = ''",
    )
    .bind(tenant)
    .bind(&key.issuer)
    .bind(&key.patient_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(patient_record).transpose()
}

pub(crate) fn patient_record(row: &sql::DbRow) -> Result<PatientRecord, IndexError> {
    patient_record_at(row, 0)
}

/// A patient record from eight columns of a row starting at `at`: pk, issuer, patient_id,
/// patient_name, birth_date, sex, revision, ris_fields.
pub(crate) fn patient_record_at(row: &sql::DbRow, at: usize) -> Result<PatientRecord, IndexError> {
    Ok(PatientRecord {
        pk: row.try_get(at)?,
        key: PatientKey {
            issuer: row.try_get(at + 1)?,
            patient_id: row.try_get(at + 2)?,
        },
        name: row.try_get(at + 3)?,
        birth_date: row.try_get(at + 4)?,
        sex: row.try_get(at + 5)?,
        revision: row.try_get(at + 6)?,
        ris_fields: row.try_get(at + 7)?,
    })
}

/// Creates or updates a patient with the RIS's demographics; returns its key. A change of
/// demographics gives it a new revision (its stored objects are patched at retrieval).
async fn register(
    conn: &mut dyn Conn,
    tenant: i64,
    key: &PatientKey,
    d: &Demographics,
) -> Result<i64, IndexError> {
    let existing = find_patient(conn, tenant, key).await?;
    let changed = existing.as_ref().is_none_or(|p| {
        (d.name.is_some() && d.name != p.name)
            || (d.birth_date.is_some() && d.birth_date != p.birth_date)
            || (d.sex.is_some() && d.sex != p.sex)
    });
    let revision = match &existing {
        Some(p) if !changed => p.revision,
        _ => next_revision(conn).await?,
    };
    // The demographics this message sets become the RIS's: only those are patched later.
    let ris_fields = [
        (d.name.is_some(), PatientRecord::RIS_NAME),
        (d.birth_date.is_some(), PatientRecord::RIS_BIRTH_DATE),
        (d.sex.is_some(), PatientRecord::RIS_SEX),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .fold(0, |bits, (_, bit)| bits | bit);
    let pk: i64 = sql::query_scalar(
        "INSERT INTO patient (tenant_pk, issuer, patient_id, unidentified_study, patient_name,
                              patient_name_folded, birth_date, sex, ris_managed, revision, ris_fields)
         VALUES (?, ?, ?, '', ?, ?, ?, ?, 1, ?, ?)
         ON CONFLICT (tenant_pk, issuer, patient_id, unidentified_study) DO UPDATE SET
           patient_name = COALESCE(excluded.patient_name, patient.patient_name),
           patient_name_folded = COALESCE(excluded.patient_name_folded, patient.patient_name_folded),
           birth_date = COALESCE(excluded.birth_date, patient.birth_date),
           sex = COALESCE(excluded.sex, patient.sex),
           ris_managed = 1,
           revision = excluded.revision,
           ris_fields = patient.ris_fields | excluded.ris_fields
         RETURNING pk",
    )
    .bind(tenant)
    .bind(&key.issuer)
    .bind(&key.patient_id)
    .bind(&d.name)
    .bind(&d.name_folded)
    .bind(&d.birth_date)
    .bind(&d.sex)
    .bind(revision)
    .bind(ris_fields)
    .fetch_one(&mut *conn)
    .await?;
    Ok(pk)
}

async fn touch_revision(conn: &mut dyn Conn, patient: i64) -> Result<(), IndexError> {
    let revision = next_revision(conn).await?;
    sql::query("UPDATE patient SET revision = ? WHERE pk = ?")
        .bind(revision)
        .bind(patient)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn merge(
    conn: &mut dyn Conn,
    tenant: i64,
    survivor: &PatientKey,
    merged: &PatientKey,
) -> Result<i64, IndexError> {
    let now = conn.dialect().now();
    let (Some(s), Some(m)) = (
        find_patient(conn, tenant, survivor).await?,
        find_patient(conn, tenant, merged).await?,
    ) else {
        return Ok(0);
    };
    if s.pk == m.pk {
        return Ok(0);
    }
    let studies: Vec<i64> = sql::query_scalar("SELECT pk FROM study WHERE patient_pk = ? ORDER BY pk")
        .bind(m.pk)
        .fetch_all(&mut *conn)
        .await?;
    sql::query("UPDATE study SET patient_pk = ? WHERE patient_pk = ?")
        .bind(s.pk)
        .bind(m.pk)
        .execute(&mut *conn)
        .await?;
    sql::query("UPDATE patient SET merged_into = ? WHERE pk = ?")
        .bind(s.pk)
        .bind(m.pk)
        .execute(&mut *conn)
        .await?;
    touch_revision(conn, s.pk).await?;
    let moved = format!(
        "[{}]",
        studies.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    );
    Ok(sql::query_scalar(&format!(
        "INSERT INTO patient_merge (tenant_pk, survivor_pk, merged_pk, moved_studies, at, actor)
         VALUES (?, ?, ?, ?, {now}, '') RETURNING pk"
    ))
    .bind(tenant)
    .bind(s.pk)
    .bind(m.pk)
    .bind(moved)
    .fetch_one(&mut *conn)
    .await?)
}

async fn adopt_issuer(conn: &mut dyn Conn, tenant: i64, issuer: &str) -> Result<i64, IndexError> {
    if issuer.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = sql::query_scalar(
        "SELECT patient_id FROM patient
         WHERE tenant_pk = ? AND issuer = '' AND unidentified_study = '' AND merged_into IS NULL",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    for patient_id in &ids {
        let without = PatientKey {
            issuer: String::new(),
            patient_id: patient_id.clone(),
        };
        let within = PatientKey {
            issuer: issuer.to_string(),
            patient_id: patient_id.clone(),
        };
        if find_patient(conn, tenant, &within).await?.is_some() {
            // One patient split in two (images without issuer, the RIS with it): merged like
            // an A40, so the RIS's identity reaches every instance and the merge can be undone.
            merge(conn, tenant, &within, &without).await?;
        } else {
            sql::query(
                "UPDATE patient SET issuer = ?
                 WHERE tenant_pk = ? AND issuer = '' AND patient_id = ? AND unidentified_study = ''",
            )
            .bind(issuer)
            .bind(tenant)
            .bind(patient_id)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(ids.len() as i64)
}

async fn undo_merge(conn: &mut dyn Conn, tenant: i64, merge: i64) -> Result<i64, IndexError> {
    let now = conn.dialect().now();
    let row: Option<(i64, i64, String)> = sql::query_as(
        "SELECT survivor_pk, merged_pk, moved_studies FROM patient_merge
         WHERE pk = ? AND tenant_pk = ? AND undone_at IS NULL",
    )
    .bind(merge)
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((survivor, merged, moved)) = row else {
        return Ok(0);
    };
    let studies: Vec<i64> = serde_json::from_str(&moved)
        .map_err(|e| IndexError::Schema(format!("patient_merge.moved_studies: {e}")))?;
    for study in studies {
        sql::query("UPDATE study SET patient_pk = ? WHERE pk = ? AND patient_pk = ?")
            .bind(merged)
            .bind(study)
            .bind(survivor)
            .execute(&mut *conn)
            .await?;
    }
    sql::query("UPDATE patient SET merged_into = NULL WHERE pk = ?")
        .bind(merged)
        .execute(&mut *conn)
        .await?;
    touch_revision(conn, survivor).await?;
    touch_revision(conn, merged).await?;
    sql::query(&format!(
        "UPDATE patient_merge SET undone_at = {now} WHERE pk = ?"
    ))
    .bind(merge)
    .execute(&mut *conn)
    .await?;
    Ok(1)
}

/// A47: the patient takes the new identifier; a placeholder keeps the old one, merged into it,
/// so that late images carrying the old identifier join the same patient.
async fn change_id(
    conn: &mut dyn Conn,
    tenant: i64,
    old: &PatientKey,
    new: &PatientKey,
) -> Result<i64, IndexError> {
    let Some(patient) = find_patient(conn, tenant, old).await? else {
        return Ok(0);
    };
    if find_patient(conn, tenant, new).await?.is_some() {
        return Ok(0);
    }
    sql::query("UPDATE patient SET issuer = ?, patient_id = ? WHERE pk = ?")
        .bind(&new.issuer)
        .bind(&new.patient_id)
        .bind(patient.pk)
        .execute(&mut *conn)
        .await?;
    sql::query(
        "INSERT INTO patient (tenant_pk, issuer, patient_id, unidentified_study, merged_into, ris_managed)
         VALUES (?, ?, ?, '', ?, 1)",
    )
    .bind(tenant)
    .bind(&old.issuer)
    .bind(&old.patient_id)
    .bind(patient.pk)
    .execute(&mut *conn)
    .await?;
    touch_revision(conn, patient.pk).await?;
    Ok(1)
}

async fn upsert_order(
    conn: &mut dyn Conn,
    tenant: i64,
    patient: i64,
    o: &Order,
    new_study_uid: &str,
) -> Result<i64, IndexError> {
    let now = conn.dialect().now();
    Ok(sql::query_scalar(&format!(
        "INSERT INTO procedure_order (tenant_pk, patient_pk, placer_order, filler_order, accession_number,
            requested_procedure_id, requested_procedure_description, study_uid, sps_id, sps_description,
            station_ae, station_name, modality, start_date, start_time, performing_physician,
            referring_physician, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE(?8, ?19), ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, {now}, {now})
         ON CONFLICT (tenant_pk, placer_order) DO UPDATE SET
            patient_pk = excluded.patient_pk, filler_order = excluded.filler_order,
            accession_number = excluded.accession_number,
            requested_procedure_id = excluded.requested_procedure_id,
            requested_procedure_description = excluded.requested_procedure_description,
            study_uid = COALESCE(?8, procedure_order.study_uid, ?19), sps_id = excluded.sps_id,
            sps_description = excluded.sps_description, station_ae = excluded.station_ae,
            station_name = excluded.station_name, modality = excluded.modality,
            start_date = excluded.start_date, start_time = excluded.start_time,
            performing_physician = excluded.performing_physician,
            referring_physician = excluded.referring_physician, status = excluded.status,
            updated_at = excluded.updated_at
         RETURNING pk"
    ))
    .bind(tenant)
    .bind(patient)
    .bind(&o.placer_order)
    .bind(&o.filler_order)
    .bind(&o.accession_number)
    .bind(&o.requested_procedure_id)
    .bind(&o.requested_procedure_description)
    .bind(&o.study_uid)
    .bind(&o.sps_id)
    .bind(&o.sps_description)
    .bind(&o.station_ae)
    .bind(&o.station_name)
    .bind(&o.modality)
    .bind(&o.start_date)
    .bind(&o.start_time)
    .bind(&o.performing_physician)
    .bind(&o.referring_physician)
    .bind(&o.status)
    .bind(new_study_uid)
    .fetch_one(&mut *conn)
    .await?)
}

/// Follows `merged_into` from a patient to the one that survives (bounded: a cycle, which
/// the merge code never makes, stops the walk).
pub(crate) async fn surviving_patient(conn: &mut dyn Conn, mut pk: i64) -> Result<i64, IndexError> {
    for _ in 0..32 {
        let next: Option<i64> = sql::query_scalar("SELECT merged_into FROM patient WHERE pk = ?")
            .bind(pk)
            .fetch_one(&mut *conn)
            .await?;
        match next {
            Some(n) => pk = n,
            None => break,
        }
    }
    Ok(pk)
}

/// Links a study not yet reconciled to the order with its accession number. When the order is
/// another patient's, the RIS wins: the study moves under the order's patient (`correct`), or
/// it is flagged for review. True when the study's patient may have changed.
pub(crate) async fn reconcile_study(
    conn: &mut dyn Conn,
    study: i64,
    correct: bool,
) -> Result<bool, IndexError> {
    // The order whose Study Instance UID the images carry (the worklist gave it to the
    // modality), else the newest one with their accession number.
    let order: Option<(i64, i64, i64)> = sql::query_as(
        "SELECT o.pk, o.patient_pk, s.patient_pk FROM study s
         JOIN procedure_order o ON o.pk = COALESCE(
           (SELECT pk FROM procedure_order
            WHERE tenant_pk = s.tenant_pk AND study_uid = s.study_uid ORDER BY pk DESC LIMIT 1),
           (SELECT pk FROM procedure_order
            WHERE tenant_pk = s.tenant_pk AND s.accession_number <> ''
              AND accession_number = s.accession_number ORDER BY pk DESC LIMIT 1))
         WHERE s.pk = ? AND s.order_pk IS NULL",
    )
    .bind(study)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((order, order_patient, study_patient)) = order else {
        return Ok(false);
    };
    if order_patient == study_patient || correct {
        sql::query("UPDATE study SET order_pk = ?, patient_pk = ?, review_reason = NULL WHERE pk = ?")
            .bind(order)
            .bind(order_patient)
            .bind(study)
            .execute(&mut *conn)
            .await?;
    } else {
        sql::query(
            "UPDATE study SET review_reason = 'the images name another patient than their order (same Study Instance UID or accession number)'
             WHERE pk = ?",
        )
        .bind(study)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// The revision an instance is indexed under: its patient's, when the instance's own patient
/// attributes agree with the patient's; -1 (patch at retrieval) when they do not.
pub(crate) async fn revision_for(
    conn: &mut dyn Conn,
    study: i64,
    attrs: &PatientAttrs,
) -> Result<i64, IndexError> {
    let row = sql::query(
        "SELECT p.pk, p.issuer, p.patient_id, p.patient_name, p.birth_date, p.sex, p.revision,
                p.ris_fields
         FROM study s JOIN patient p ON p.pk = s.patient_pk WHERE s.pk = ?",
    )
    .bind(study)
    .fetch_one(&mut *conn)
    .await?;
    Ok(revision_at_ingest(&patient_record(&row)?, attrs))
}

/// The revision an instance is indexed under: its patient's current one, so that it goes out
/// exactly as stored until an explicit identity change comes after it — unless an explicit
/// decision already overrides what the instance says: it is filed under another patient than
/// the one it names (a merge, a reconciliation with an order), or it disagrees with a
/// demographic the RIS set. Then -1: patched at retrieval, with the identifier and the
/// RIS-set demographics only. Other images of the same patient disagreeing with this one
/// never make it change (which demographics C-FIND shows is the patient row's business).
pub(crate) fn revision_at_ingest(p: &PatientRecord, attrs: &PatientAttrs) -> i64 {
    let filed_as_named = p.key.patient_id == attrs.patient_id && p.key.issuer == attrs.issuer;
    let agrees_with_ris = p.ris_name().is_none_or(|v| attrs.name.as_deref() == Some(v))
        && p.ris_birth_date()
            .is_none_or(|v| attrs.birth_date.as_deref() == Some(v))
        && p.ris_sex().is_none_or(|v| attrs.sex.as_deref() == Some(v));
    if filed_as_named && agrees_with_ris {
        p.revision
    } else {
        -1
    }
}

// Reads.

pub(crate) async fn worklist(
    conn: &mut dyn Conn,
    tenant: i64,
    modality: Option<&str>,
    station_ae: Option<&str>,
    date_from: Option<&str>,
    date_to: Option<&str>,
    any_status: bool,
) -> Result<Vec<WorklistItem>, IndexError> {
    let rows = sql::query(
        "SELECT o.placer_order, o.filler_order, o.accession_number, o.requested_procedure_id,
                o.requested_procedure_description, o.study_uid, o.sps_id, o.sps_description, o.station_ae,
                o.station_name, o.modality, o.start_date, o.start_time, o.performing_physician,
                o.referring_physician, o.status,
                p.pk, p.issuer, p.patient_id, p.patient_name, p.birth_date, p.sex, p.revision,
                p.ris_fields
         FROM procedure_order o JOIN patient p ON p.pk = o.patient_pk
         WHERE o.tenant_pk = ? AND (? <> 0 OR o.status IN ('SCHEDULED', 'IN PROGRESS'))
           AND (CAST(? AS TEXT) IS NULL OR o.modality = ?) AND (CAST(? AS TEXT) IS NULL OR o.station_ae = ?)
           AND (CAST(? AS TEXT) IS NULL OR o.start_date >= ?) AND (CAST(? AS TEXT) IS NULL OR o.start_date <= ?)
         ORDER BY o.start_date, o.start_time, o.pk LIMIT 10000",
    )
    .bind(tenant)
    .bind(any_status)
    .bind(modality)
    .bind(modality)
    .bind(station_ae)
    .bind(station_ae)
    .bind(date_from)
    .bind(date_from)
    .bind(date_to)
    .bind(date_to)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WorklistItem {
                order: Order {
                    placer_order: r.try_get(0)?,
                    filler_order: r.try_get(1)?,
                    accession_number: r.try_get(2)?,
                    requested_procedure_id: r.try_get(3)?,
                    requested_procedure_description: r.try_get(4)?,
                    study_uid: r.try_get(5)?,
                    sps_id: r.try_get(6)?,
                    sps_description: r.try_get(7)?,
                    station_ae: r.try_get(8)?,
                    station_name: r.try_get(9)?,
                    modality: r.try_get(10)?,
                    start_date: r.try_get(11)?,
                    start_time: r.try_get(12)?,
                    performing_physician: r.try_get(13)?,
                    referring_physician: r.try_get(14)?,
                    status: r.try_get(15)?,
                },
                patient: PatientRecord {
                    pk: r.try_get(16)?,
                    key: PatientKey {
                        issuer: r.try_get(17)?,
                        patient_id: r.try_get(18)?,
                    },
                    name: r.try_get(19)?,
                    birth_date: r.try_get(20)?,
                    sex: r.try_get(21)?,
                    revision: r.try_get(22)?,
                    ris_fields: r.try_get(23)?,
                },
            })
        })
        .collect()
}

pub(crate) async fn mpps(
    conn: &mut dyn Conn,
    tenant: i64,
    sop_uid: &str,
) -> Result<Option<MppsRecord>, IndexError> {
    let row = sql::query(
        "SELECT sop_uid, status, accession_number, study_uid, dataset FROM mpps WHERE tenant_pk = ? AND sop_uid = ?",
    )
    .bind(tenant)
    .bind(sop_uid)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(MppsRecord {
            sop_uid: r.try_get(0)?,
            status: r.try_get(1)?,
            accession_number: r.try_get(2)?,
            study_uid: r.try_get(3)?,
            dataset: r.try_get(4)?,
        })
    })
    .transpose()
}

/// The latest MPPS status of each accession number that has one. The table has no index on
/// accession numbers: one scan per call, which a page of orders makes once.
pub(crate) async fn mpps_states(
    conn: &mut dyn Conn,
    tenant: i64,
    accessions: &[String],
) -> Result<Vec<(String, String)>, IndexError> {
    if accessions.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::to_string(accessions).unwrap_or_else(|_| "[]".into());
    let sql = format!(
        "SELECT accession_number, status FROM mpps
         WHERE tenant_pk = ? AND accession_number IN ({})
         ORDER BY updated_at, pk",
        conn.dialect().json_text_values("?")
    );
    let rows = sql::query(&sql).bind(tenant).bind(list).fetch_all(conn).await?;
    // Oldest first, so the latest step of an accession number is the one kept.
    let mut latest = std::collections::BTreeMap::new();
    for row in &rows {
        latest.insert(row.try_get::<String>(0)?, row.try_get::<String>(1)?);
    }
    Ok(latest.into_iter().collect())
}

/// Reports of a study, by its UID or its accession number, oldest first.
pub(crate) async fn reports(
    conn: &mut dyn Conn,
    tenant: i64,
    study_uid: &str,
) -> Result<Vec<Report>, IndexError> {
    let rows = sql::query(
        "SELECT r.study_uid, r.accession_number, r.status, r.text, r.author, r.observed_at, r.received_at, r.control_id
         FROM report r WHERE r.tenant_pk = ?1 AND (r.study_uid = ?2 OR (r.accession_number <> '' AND r.accession_number =
           (SELECT accession_number FROM study WHERE tenant_pk = ?1 AND study_uid = ?2)))
         ORDER BY r.pk",
    )
    .bind(tenant)
    .bind(study_uid)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Report {
                study_uid: r.try_get(0)?,
                accession_number: r.try_get(1)?,
                status: r.try_get(2)?,
                text: r.try_get(3)?,
                author: r.try_get(4)?,
                observed_at: r.try_get(5)?,
                received_at: r.try_get(6)?,
                control_id: r.try_get(7)?,
            })
        })
        .collect()
}

fn summary(r: &sql::DbRow) -> Result<StudySummary, IndexError> {
    Ok(StudySummary {
        study_uid: r.try_get(0)?,
        accession_number: r.try_get(1)?,
        patient_id: r.try_get(2)?,
        patient_name: r.try_get(3)?,
        review_reason: r.try_get(4)?,
        instances: r.try_get(5)?,
    })
}

const SUMMARY_FIELDS: &str =
    "s.study_uid, s.accession_number, p.patient_id, p.patient_name, s.review_reason, s.num_instances";

/// Studies not linked to any order, or flagged for review, newest first.
pub(crate) async fn unmatched_studies(
    conn: &mut dyn Conn,
    tenant: i64,
    limit: u32,
) -> Result<Vec<StudySummary>, IndexError> {
    let rows = sql::query(&format!(
        "SELECT {SUMMARY_FIELDS} FROM study s JOIN patient p ON p.pk = s.patient_pk
         WHERE s.tenant_pk = ? AND (s.order_pk IS NULL OR s.review_reason IS NOT NULL) AND s.num_instances > 0
         ORDER BY s.pk DESC LIMIT ?"
    ))
    .bind(tenant)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(summary).collect()
}

/// Studies that received nothing for `quiet_secs` and whose completion was not notified.
pub(crate) async fn stable_studies(
    conn: &mut dyn Conn,
    tenant: i64,
    quiet_secs: u64,
) -> Result<Vec<StudySummary>, IndexError> {
    let quiet_since = conn.dialect().now_plus_secs("?");
    let rows = sql::query(&format!(
        "SELECT {SUMMARY_FIELDS} FROM study s JOIN patient p ON p.pk = s.patient_pk
         WHERE s.tenant_pk = ? AND s.completion_notified_at IS NULL AND s.last_received_at IS NOT NULL
           AND s.last_received_at < {quiet_since}
           AND s.num_instances > 0
           -- A modality that reports its steps ends the exam itself: an exam in progress may
           -- pause longer than the quiet time between two series.
           AND NOT EXISTS (SELECT 1 FROM mpps m WHERE m.tenant_pk = s.tenant_pk
                           AND m.status = 'IN PROGRESS'
                           AND (m.study_uid = s.study_uid OR m.accession_number = s.accession_number))
         ORDER BY s.last_received_at LIMIT 1000"
    ))
    .bind(tenant)
    .bind(-(quiet_secs.min(i64::MAX as u64) as i64))
    .fetch_all(conn)
    .await?;
    rows.iter().map(summary).collect()
}

/// For the instances among `pks` whose stored patient attributes are out of date (an ADT
/// update, merge or identifier change since they were stored): the patient's current ones.
pub(crate) async fn patient_patches(
    conn: &mut dyn Conn,
    tenant: i64,
    pks: &[i64],
) -> Result<Vec<(i64, PatientRecord)>, IndexError> {
    let mut out = Vec::new();
    for chunk in pks.chunks(500) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT p.pk, p.issuer, p.patient_id, p.patient_name, p.birth_date, p.sex, p.revision,
                    p.ris_fields, i.pk
             FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study s ON s.pk = se.study_pk
             JOIN patient p ON p.pk = s.patient_pk
             WHERE i.tenant_pk = ? AND i.pk IN ({placeholders}) AND i.patient_revision <> p.revision"
        );
        let mut q = sql::query(&sql).bind(tenant);
        for pk in chunk {
            q = q.bind(pk);
        }
        for row in q.fetch_all(conn).await? {
            out.push((row.try_get(8)?, patient_record(&row)?));
        }
    }
    Ok(out)
}

pub(crate) async fn merges(conn: &mut dyn Conn, tenant: i64) -> Result<Vec<MergeRecord>, IndexError> {
    let rows = sql::query(
        "SELECT m.pk, s.patient_id, p.patient_id, m.at, m.undone_at FROM patient_merge m
         JOIN patient s ON s.pk = m.survivor_pk JOIN patient p ON p.pk = m.merged_pk
         WHERE m.tenant_pk = ? ORDER BY m.pk DESC LIMIT 1000",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MergeRecord {
                id: r.try_get(0)?,
                survivor_patient_id: r.try_get(1)?,
                merged_patient_id: r.try_get(2)?,
                at: r.try_get(3)?,
                undone_at: r.try_get(4)?,
            })
        })
        .collect()
}

pub(crate) async fn patient(
    conn: &mut dyn Conn,
    tenant: i64,
    key: &PatientKey,
) -> Result<Option<PatientRecord>, IndexError> {
    find_patient(conn, tenant, key).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, NewInstance, SeriesAttrs, StudyAttrs, WorklistFilter};
    use crate::SqliteIndex;
    use pacs_model::TenantId;

    const T: TenantId = TenantId(1);

    fn image(sop: &str, patient: &str, name: &str, study: &str, accession: &str) -> NewInstance {
        NewInstance {
            tenant: 1,
            patient: PatientAttrs {
                patient_id: patient.into(),
                name: Some(name.into()),
                name_folded: Some(pacs_model::fold_person_name(name)),
                ..PatientAttrs::default()
            },
            study: StudyAttrs {
                study_uid: study.into(),
                accession_number: Some(accession.into()),
                ..StudyAttrs::default()
            },
            series: SeriesAttrs {
                series_uid: format!("{study}.1"),
                modality: Some("CT".into()),
                ..SeriesAttrs::default()
            },
            sop_uid: sop.into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            size: 10,
            sha256: format!("{sop:0>64}"),
            dataset_sha256: sop.into(),
            header_json: "{}".into(),
            correct_from_orders: true,
            ..NewInstance::default()
        }
    }

    fn key(id: &str) -> PatientKey {
        PatientKey {
            issuer: String::new(),
            patient_id: id.into(),
        }
    }

    fn named(name: &str) -> Demographics {
        Demographics {
            name: Some(name.into()),
            name_folded: Some(pacs_model::fold_person_name(name)),
            ..Demographics::default()
        }
    }

    fn audit() -> AuditEvent {
        AuditEvent {
            tenant: 1,
            event: "hl7".into(),
            actor: "test".into(),
            peer: "local".into(),
            outcome: "success".into(),
            ..AuditEvent::default()
        }
    }

    async fn patch_of(index: &SqliteIndex, pk: i64) -> Result<Option<PatientRecord>, IndexError> {
        Ok(index.patient_patches(T, &[pk]).await?.pop().map(|(_, p)| p))
    }

    async fn pk_of(index: &SqliteIndex, sop: &str) -> i64 {
        index.current_instance(T, sop).await.unwrap().unwrap().pk
    }

    async fn patient_of_study(index: &SqliteIndex, study: &str) -> String {
        sql::query_scalar(
            "SELECT p.patient_id FROM study s JOIN patient p ON p.pk = s.patient_pk WHERE s.study_uid = ?",
        )
        .bind(study)
        .fetch_one(index.reader().await.unwrap().conn())
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn adt_changes_reach_retrieval_without_touching_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let write = |w| index.write_workflow(T, w, audit());
        index
            .add_instance(image("1", "P1", "DOE^JOHN", "9.1", ""))
            .await
            .unwrap();
        let first = pk_of(&index, "1").await;
        assert_eq!(
            patch_of(&index, first).await.unwrap(),
            None,
            "nothing changed yet"
        );

        // A08 for an unknown patient changes nothing; for a known one, the RIS's name wins.
        let unknown = WorkflowWrite::UpdatePatient {
            key: key("NOPE"),
            demographics: named("X^Y"),
        };
        assert_eq!(write(unknown).await.unwrap(), 0);
        let update = WorkflowWrite::UpdatePatient {
            key: key("P1"),
            demographics: named("DOE^JANE"),
        };
        assert_eq!(write(update).await.unwrap(), 1);
        let patch = patch_of(&index, first).await.unwrap().expect("out of date");
        assert_eq!(patch.name.as_deref(), Some("DOE^JANE"));
        // A later image with the old name does not undo the RIS's correction, and is patched too.
        index
            .add_instance(image("2", "P1", "DOE^JOHN", "9.1", ""))
            .await
            .unwrap();
        let second = pk_of(&index, "2").await;
        assert_eq!(
            index
                .patient(T, &key("P1"))
                .await
                .unwrap()
                .unwrap()
                .name
                .as_deref(),
            Some("DOE^JANE")
        );
        assert!(patch_of(&index, second).await.unwrap().is_some());
        // An image that agrees with the RIS needs no patch.
        index
            .add_instance(image("3", "P1", "DOE^JANE", "9.1", ""))
            .await
            .unwrap();
        assert_eq!(patch_of(&index, pk_of(&index, "3").await).await.unwrap(), None);

        // A40: P2's study moves under P1; late P2 images follow; the merge can be undone.
        index
            .add_instance(image("4", "P2", "DOE^J", "9.2", ""))
            .await
            .unwrap();
        let merge = WorkflowWrite::MergePatients {
            survivor: key("P1"),
            merged: key("P2"),
        };
        let merged = write(merge).await.unwrap();
        assert!(merged > 0);
        assert_eq!(patient_of_study(&index, "9.2").await, "P1");
        let moved = patch_of(&index, pk_of(&index, "4").await).await.unwrap().unwrap();
        assert_eq!(moved.key.patient_id, "P1");
        index
            .add_instance(image("5", "P2", "DOE^J", "9.3", ""))
            .await
            .unwrap();
        assert_eq!(patient_of_study(&index, "9.3").await, "P1");
        assert_eq!(
            write(WorkflowWrite::UndoMerge { merge: merged }).await.unwrap(),
            1
        );
        assert_eq!(patient_of_study(&index, "9.2").await, "P2");
        assert_eq!(
            write(WorkflowWrite::UndoMerge { merge: merged }).await.unwrap(),
            0
        );

        // A47: P2 becomes P2B; late images under the old identifier join it.
        let change = WorkflowWrite::ChangePatientId {
            old: key("P2"),
            new: key("P2B"),
        };
        assert_eq!(write(change).await.unwrap(), 1);
        assert_eq!(patient_of_study(&index, "9.2").await, "P2B");
        index
            .add_instance(image("6", "P2", "DOE^J", "9.2", ""))
            .await
            .unwrap();
        assert_eq!(patient_of_study(&index, "9.2").await, "P2B");
        let patched = patch_of(&index, pk_of(&index, "6").await).await.unwrap().unwrap();
        assert_eq!(patched.key.patient_id, "P2B");
    }

    #[tokio::test]
    async fn orders_feed_the_worklist_and_reconcile_studies() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let write = |w| index.write_workflow(T, w, audit());
        let order = |placer: &str, accession: &str, modality: &str, date: &str| Order {
            placer_order: placer.into(),
            accession_number: Some(accession.into()),
            modality: Some(modality.into()),
            station_ae: Some("CT_1".into()),
            start_date: Some(date.into()),
            status: "SCHEDULED".into(),
            ..Order::default()
        };
        for (placer, accession, modality, date) in [
            ("O1", "A1", "CT", "20261128"),
            ("O2", "A2", "MR", "20261128"),
            ("O3", "A3", "CT", "20261201"),
        ] {
            let w = WorkflowWrite::UpsertOrder {
                key: key("P1"),
                demographics: named("MARTIN^AMELIE"),
                order: Box::new(order(placer, accession, modality, date)),
                new_study_uid: format!("2.25.{}", &placer[1..]),
            };
            assert!(write(w).await.unwrap() > 0);
        }
        let ct_today = WorklistFilter {
            modality: Some("CT".into()),
            date_from: Some("20261128".into()),
            date_to: Some("20261128".into()),
            ..WorklistFilter::default()
        };
        let items = index.worklist(T, ct_today.clone()).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].order.accession_number.as_deref(), Some("A1"));
        assert_eq!(items[0].patient.name.as_deref(), Some("MARTIN^AMELIE"));
        // Cancelled: gone from the worklist.
        let cancel = WorkflowWrite::SetOrderStatus {
            placer_order: Some("O1".into()),
            accession_number: None,
            status: "DISCONTINUED".into(),
        };
        assert_eq!(write(cancel).await.unwrap(), 1);
        assert!(index.worklist(T, ct_today.clone()).await.unwrap().is_empty());
        // The technologists' page still lists it, with its state.
        let every_state = WorklistFilter {
            any_status: true,
            ..ct_today
        };
        let items = index.worklist(T, every_state).await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].order.status, "DISCONTINUED");

        // Images with A2's accession but another patient ID: moved under the order's patient.
        index
            .add_instance(image("1", "WRONG", "MARTIN^A", "8.1", "A2"))
            .await
            .unwrap();
        assert_eq!(patient_of_study(&index, "8.1").await, "P1");
        let patch = patch_of(&index, pk_of(&index, "1").await).await.unwrap().unwrap();
        assert_eq!(patch.name.as_deref(), Some("MARTIN^AMELIE"));
        // With the flag policy, the study stays and is listed for review.
        let mut flagged = image("2", "WRONG", "MARTIN^A", "8.2", "A3");
        flagged.correct_from_orders = false;
        index.add_instance(flagged).await.unwrap();
        assert_eq!(patient_of_study(&index, "8.2").await, "WRONG");
        let review = index.unmatched_studies(T, 10).await.unwrap();
        assert!(review
            .iter()
            .any(|s| s.study_uid == "8.2" && s.review_reason.is_some()));
        assert!(!review.iter().any(|s| s.study_uid == "8.1"));
        // A study without an order is listed too.
        index
            .add_instance(image("3", "P9", "X^Y", "8.3", ""))
            .await
            .unwrap();
        assert!(index
            .unmatched_studies(T, 10)
            .await
            .unwrap()
            .iter()
            .any(|s| s.study_uid == "8.3"));
    }

    #[tokio::test]
    async fn mpps_reports_and_completion() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let write = |w| index.write_workflow(T, w, audit());
        let step = |status: &str| MppsRecord {
            sop_uid: "1.2.9".into(),
            status: status.into(),
            accession_number: Some("A1".into()),
            study_uid: None,
            dataset: "{}".into(),
        };
        assert_eq!(
            write(WorkflowWrite::CreateMpps(step("IN PROGRESS")))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            write(WorkflowWrite::CreateMpps(step("IN PROGRESS")))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            write(WorkflowWrite::UpdateMpps(step("COMPLETED"))).await.unwrap(),
            1
        );
        // Final: no further change.
        assert_eq!(
            write(WorkflowWrite::UpdateMpps(step("IN PROGRESS")))
                .await
                .unwrap(),
            0
        );
        assert_eq!(index.mpps(T, "1.2.9").await.unwrap().unwrap().status, "COMPLETED");
        let states = index.mpps_states(T, &["A1".into(), "A404".into()]).await.unwrap();
        assert_eq!(states, [("A1".to_string(), "COMPLETED".to_string())]);
        assert!(index.mpps_states(T, &[]).await.unwrap().is_empty());

        index
            .add_instance(image("1", "P1", "A^B", "7.1", "A1"))
            .await
            .unwrap();
        let report = Report {
            accession_number: Some("A1".into()),
            status: "F".into(),
            text: "No acute findings.".into(),
            ..Report::default()
        };
        assert!(write(WorkflowWrite::AddReport(report)).await.unwrap() > 0);
        let reports = index.reports(T, "7.1").await.unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].text, "No acute findings.");

        // A study whose modality reports a step in progress is not ended by the quiet timer;
        // one without (or once the step is final) is.
        let mut other = step("IN PROGRESS");
        other.sop_uid = "1.2.10".into();
        other.accession_number = Some("A2".into());
        write(WorkflowWrite::CreateMpps(other.clone())).await.unwrap();
        index
            .add_instance(image("2", "P2", "C^D", "7.2", "A2"))
            .await
            .unwrap();
        async fn stable(index: &crate::SqlIndex) -> Vec<String> {
            let studies = index.stable_studies(T, 0).await.unwrap();
            studies.into_iter().map(|s| s.study_uid).collect()
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(stable(&index).await, ["7.1"]);
        other.status = "COMPLETED".into();
        write(WorkflowWrite::UpdateMpps(other)).await.unwrap();
        let mut both = stable(&index).await;
        both.sort();
        assert_eq!(both, ["7.1", "7.2"]);

        let claim = || WorkflowWrite::ClaimCompletion {
            study_uid: "7.1".into(),
        };
        assert_eq!(write(claim()).await.unwrap(), 1);
        assert_eq!(write(claim()).await.unwrap(), 0, "notified once per study");
        assert_eq!(stable(&index).await, ["7.2"]);
    }
}
