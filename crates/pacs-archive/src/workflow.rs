//! The modality workflow on the archive: MPPS (PS3.4 Annex F) with its state rules, Storage
//! Commitment (Annex J) for what is durably stored and intact, and the end-of-exam events the
//! RIS is told about (MPPS COMPLETED, or a study that stayed quiet long enough).

use std::sync::Arc;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_store::{AuditEvent, MppsRecord, NewJob, WorkflowWrite};

use crate::{Archive, ArchiveError};

pub const IN_PROGRESS: &str = "IN PROGRESS";
pub const COMPLETED: &str = "COMPLETED";
pub const DISCONTINUED: &str = "DISCONTINUED";

/// Why an exam is over, for the RIS notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompletionSource {
    Mpps { sop_instance_uid: String },
    StudyStable,
}

/// An exam the RIS should hear has ended (ORC-5 CM by default) or was discontinued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExamEvent {
    pub accession_number: Option<String>,
    pub study_uid: Option<String>,
    pub patient_id: Option<String>,
    pub discontinued: bool,
    pub source: CompletionSource,
}

/// Tells the outside world that exams ended (the binary connects the RIS's notifier,
/// `hl7_outbox::RisNotifier`).
pub trait ExamListener: Send + Sync {
    /// The job that carries the notice: the archive writes it in the transaction of the change
    /// that decides the notice is due (a claim of the study's completion, a discontinuation).
    fn notice(&self, event: &ExamEvent) -> NewJob;
    /// A notice was committed: its sender may go.
    fn queued(&self);
}

/// An MPPS refusal: a DIMSE status code and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MppsRefusal {
    pub status: u16,
    pub comment: String,
}

impl MppsRefusal {
    fn new(status: u16, comment: impl Into<String>) -> Self {
        MppsRefusal {
            status,
            comment: comment.into(),
        }
    }
}

// PS3.7 statuses used here.
const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
const PROCESSING_FAILURE: u16 = 0x0110;
const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
const MISSING_ATTRIBUTE: u16 = 0x0120;

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
}

/// Accession number and study UID of the first Scheduled Step Attributes item.
fn scheduled_step_keys(obj: &InMemDicomObject) -> (Option<String>, Option<String>) {
    let item = obj
        .get(tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first());
    match item {
        Some(item) => (
            text(item, tags::ACCESSION_NUMBER),
            text(item, tags::STUDY_INSTANCE_UID),
        ),
        None => (None, None),
    }
}

fn to_json(obj: &InMemDicomObject) -> Result<String, ArchiveError> {
    dicom_json::to_string(obj).map_err(|e| ArchiveError::Internal(format!("MPPS to JSON: {e}")))
}

fn from_json(json: &str) -> Result<InMemDicomObject, ArchiveError> {
    dicom_json::from_str(json).map_err(|e| ArchiveError::Internal(format!("stored MPPS: {e}")))
}

/// A new UID (an MPPS the modality left unnamed, the study of an order that names none): 2.25
/// and a random 128-bit number (PS3.5 B.2).
pub(crate) fn new_uid() -> String {
    let value = u128::from_be_bytes(rand::random::<[u8; 16]>());
    format!("2.25.{value}")
}

impl Archive {
    /// Connects the listener told about ended exams.
    pub fn set_exam_listener(&self, listener: Arc<dyn ExamListener>) {
        let mut slot = self.exam_listener.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(listener);
    }

    fn exam_listener(&self) -> Option<Arc<dyn ExamListener>> {
        self.exam_listener
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `write`, carrying the notice of `event` when someone is to be told: written with it,
    /// in its transaction, if it changes something.
    fn with_notice(&self, write: WorkflowWrite, event: &ExamEvent) -> WorkflowWrite {
        match self.exam_listener() {
            Some(listener) => WorkflowWrite::WithJob {
                write: Box::new(write),
                job: listener.notice(event),
            },
            None => write,
        }
    }

    /// The notice of `event` was committed (or would have been, with a listener).
    fn notice_committed(&self, event: &ExamEvent) {
        match self.exam_listener() {
            Some(listener) => listener.queued(),
            None => tracing::info!(?event, "exam ended; no RIS notification configured"),
        }
    }

    async fn workflow_write(&self, write: WorkflowWrite, audit: AuditEvent) -> Result<i64, ArchiveError> {
        Ok(self.index.write_workflow(write, audit).await?)
    }

    /// MPPS N-CREATE: a new step, IN PROGRESS. Returns its UID and the data set as created.
    pub async fn mpps_create(
        &self,
        sop_instance_uid: Option<String>,
        dataset: InMemDicomObject,
        audit: AuditEvent,
    ) -> Result<Result<(String, InMemDicomObject), MppsRefusal>, ArchiveError> {
        match text(&dataset, tags::PERFORMED_PROCEDURE_STEP_STATUS).as_deref() {
            Some(IN_PROGRESS) => {}
            Some(other) => {
                return Ok(Err(MppsRefusal::new(
                    INVALID_ATTRIBUTE_VALUE,
                    format!("a new Performed Procedure Step must be IN PROGRESS, not {other}"),
                )))
            }
            None => {
                return Ok(Err(MppsRefusal::new(
                    MISSING_ATTRIBUTE,
                    "Performed Procedure Step Status (0040,0252) is required",
                )))
            }
        }
        let uid = sop_instance_uid.unwrap_or_else(new_uid);
        let (accession_number, study_uid) = scheduled_step_keys(&dataset);
        let record = MppsRecord {
            sop_uid: uid.clone(),
            status: IN_PROGRESS.into(),
            accession_number: accession_number.clone(),
            study_uid,
            dataset: to_json(&dataset)?,
        };
        let mut audit = audit;
        audit.event = "mpps-create".into();
        audit.detail = Some(format!(
            "{uid} accession={}",
            accession_number.as_deref().unwrap_or("")
        ));
        if self
            .workflow_write(WorkflowWrite::CreateMpps(record), audit.clone())
            .await?
            == 0
        {
            return Ok(Err(MppsRefusal::new(
                DUPLICATE_SOP_INSTANCE,
                format!("Performed Procedure Step {uid} exists already"),
            )));
        }
        if let Some(accession) = accession_number {
            self.set_order_status(accession, IN_PROGRESS, audit).await?;
        }
        Ok(Ok((uid, dataset)))
    }

    async fn set_order_status(
        &self,
        accession: String,
        status: &str,
        mut audit: AuditEvent,
    ) -> Result<(), ArchiveError> {
        audit.event = "order-status".into();
        audit.detail = Some(format!("accession={accession} status={status}"));
        let write = WorkflowWrite::SetOrderStatus {
            placer_order: None,
            accession_number: Some(accession),
            status: status.into(),
        };
        self.workflow_write(write, audit).await?;
        Ok(())
    }

    /// MPPS N-SET: changes an IN PROGRESS step; COMPLETED and DISCONTINUED are final and end
    /// the exam (the order follows, the RIS is told).
    pub async fn mpps_set(
        &self,
        sop_instance_uid: &str,
        modifications: InMemDicomObject,
        audit: AuditEvent,
    ) -> Result<Result<InMemDicomObject, MppsRefusal>, ArchiveError> {
        let Some(current) = self.index.mpps(sop_instance_uid).await? else {
            return Ok(Err(MppsRefusal::new(
                NO_SUCH_SOP_INSTANCE,
                format!("no Performed Procedure Step {sop_instance_uid}"),
            )));
        };
        if current.status != IN_PROGRESS {
            return Ok(Err(MppsRefusal::new(
                PROCESSING_FAILURE,
                format!(
                    "Performed Procedure Step Object may no longer be updated (it is {})",
                    current.status
                ),
            )));
        }
        let status = match text(&modifications, tags::PERFORMED_PROCEDURE_STEP_STATUS) {
            None => IN_PROGRESS.to_string(),
            Some(s) if [IN_PROGRESS, COMPLETED, DISCONTINUED].contains(&s.as_str()) => s,
            Some(other) => {
                return Ok(Err(MppsRefusal::new(
                    INVALID_ATTRIBUTE_VALUE,
                    format!(
                    "Performed Procedure Step Status {other:?} is not IN PROGRESS, COMPLETED or DISCONTINUED"
                ),
                )))
            }
        };
        let mut dataset = from_json(&current.dataset)?;
        for element in modifications.into_iter() {
            dataset.put(element);
        }
        let (accession_number, study_uid) = scheduled_step_keys(&dataset);
        let accession_number = accession_number.or(current.accession_number);
        let study_uid = study_uid.or(current.study_uid);
        let record = MppsRecord {
            sop_uid: sop_instance_uid.to_string(),
            status: status.clone(),
            accession_number: accession_number.clone(),
            study_uid: study_uid.clone(),
            dataset: to_json(&dataset)?,
        };
        let mut audit = audit;
        audit.event = "mpps-set".into();
        audit.study_uid = study_uid.clone();
        audit.detail = Some(format!("{sop_instance_uid} status={status}"));
        let ends = status != IN_PROGRESS;
        let event = ExamEvent {
            accession_number: accession_number.clone(),
            study_uid: study_uid.clone(),
            patient_id: text(&dataset, tags::PATIENT_ID),
            discontinued: status == DISCONTINUED,
            source: CompletionSource::Mpps {
                sop_instance_uid: sop_instance_uid.to_string(),
            },
        };
        // One notice per study: whichever of this step and the stable-study timer claims the
        // study first sends it, in the claim's transaction. A timer that got there first (the
        // modality took longer than `study_stable_secs` between its last image and this N-SET)
        // already said "completed"; only a discontinuation still tells the RIS something new,
        // and it goes with the step's own change, as does the notice of a step that names no
        // study (nothing to claim).
        let notice_with_step = ends && (event.discontinued || study_uid.is_none());
        let mut update = WorkflowWrite::UpdateMpps(record);
        if notice_with_step {
            update = self.with_notice(update, &event);
        }
        if self.workflow_write(update, audit.clone()).await? == 0 {
            // Another N-SET made it final in between.
            return Ok(Err(MppsRefusal::new(
                PROCESSING_FAILURE,
                "Performed Procedure Step Object may no longer be updated",
            )));
        }
        if notice_with_step {
            self.notice_committed(&event);
        }
        if ends {
            if let Some(accession) = accession_number {
                self.set_order_status(accession, &status, audit).await?;
            }
            if let Some(study) = &study_uid {
                let mut claim = WorkflowWrite::ClaimCompletion {
                    study_uid: study.clone(),
                };
                if !notice_with_step {
                    claim = self.with_notice(claim, &event);
                }
                let mut claim_audit = self.system_audit("exam-completed");
                claim_audit.study_uid = Some(study.clone());
                let first = self.workflow_write(claim, claim_audit).await? == 1;
                if first && !notice_with_step {
                    self.notice_committed(&event);
                }
            }
        }
        Ok(Ok(dataset))
    }

    fn system_audit(&self, event: &str) -> AuditEvent {
        AuditEvent {
            event: event.into(),
            actor: "openpacs".into(),
            peer: "local".into(),
            outcome: "success".into(),
            ..AuditEvent::default()
        }
    }

    /// Studies quiet for `quiet_secs` whose end was never notified (no MPPS): each is claimed
    /// once, its notice written with the claim. Returns how many were.
    pub async fn notify_stable_studies(&self, quiet_secs: u64) -> Result<usize, ArchiveError> {
        let mut notified = 0;
        for study in self.index.stable_studies(quiet_secs).await? {
            let mut audit = self.system_audit("exam-completed");
            audit.study_uid = Some(study.study_uid.clone());
            audit.patient_id = Some(study.patient_id.clone());
            audit.detail = Some(format!("no new instance for {quiet_secs} s"));
            let event = ExamEvent {
                accession_number: study.accession_number,
                study_uid: Some(study.study_uid.clone()),
                patient_id: Some(study.patient_id),
                discontinued: false,
                source: CompletionSource::StudyStable,
            };
            let claim = WorkflowWrite::ClaimCompletion {
                study_uid: study.study_uid,
            };
            if self
                .workflow_write(self.with_notice(claim, &event), audit)
                .await?
                == 1
            {
                notified += 1;
                self.notice_committed(&event);
            }
        }
        Ok(notified)
    }

    /// Storage commitment: each requested instance is committed when it is stored (current)
    /// with that SOP class and its blob still hashes to its name; failures carry the PS3.4 J
    /// failure reason.
    pub async fn commit(
        &self,
        instances: Vec<(String, String)>,
    ) -> (Vec<(String, String)>, Vec<(String, String, u16)>) {
        let mut committed = Vec::new();
        let mut failed = Vec::new();
        for (class, uid) in instances {
            let reason = match self.index.current_instance(&uid).await {
                Ok(None) => Some(0x0112),
                Ok(Some(location)) if location.sop_class != class => Some(0x0119),
                Ok(Some(location)) => match self.blobs.hash(&location.blob_key).await {
                    Ok((hash, _)) if hash == location.blob_key => None,
                    _ => {
                        tracing::error!(sop = %uid, "storage commitment: stored object fails its fixity check");
                        Some(0x0110)
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "storage commitment: index lookup failed");
                    Some(0x0110)
                }
            };
            match reason {
                None => committed.push((class, uid)),
                Some(r) => failed.push((class, uid, r)),
            }
        }
        (committed, failed)
    }
}

/// Puts the status into a response data set the way N-CREATE/N-SET answers carry it.
pub fn with_status(mut dataset: InMemDicomObject, status: &str) -> InMemDicomObject {
    dataset.put(DataElement::new(
        tags::PERFORMED_PROCEDURE_STEP_STATUS,
        VR::CS,
        PrimitiveValue::from(status),
    ));
    dataset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_uids_are_valid() {
        let uid = new_uid();
        assert!(uid.starts_with("2.25."));
        assert!(uid.len() <= 64);
        assert!(uid[5..].bytes().all(|b| b.is_ascii_digit()));
        assert!(!uid[5..].starts_with('0') || uid.len() == 6);
    }
}
