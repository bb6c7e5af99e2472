//! STOW-RS (PS3.18 §10.5): `POST /studies` and `/studies/{study}` with
//! `multipart/related; type="application/dicom"`, parsed as a stream. Each part goes through the
//! same ingest as C-STORE (durable before it counts as stored, same duplicate policy). Up to
//! [`PARTS_IN_FLIGHT`] received parts are made durable while the next ones arrive; the response
//! waits for all of them.

use std::collections::VecDeque;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_archive::{ArchiveError, Refused, Source, StoredInstance};
use pacs_model::url_segment;
use pacs_store::AuditEvent;
use tokio::task::JoinHandle;

use crate::{ApiError, WebState};

/// Failure reasons (PS3.18 Table 10.5.3-2, from PS3.4 C-STORE statuses).
const PROCESSING_FAILURE: u16 = 0x0110;
const OUT_OF_RESOURCES: u16 = 0xA700;
const DATASET_MISMATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;
/// A part that is not a DICOM object at all (Cxxx: "cannot understand", our sub-code), told
/// apart from a DICOM object that is malformed (C000).
const NOT_DICOM: u16 = 0xC001;

pub(crate) async fn store(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    stow(state, peer, headers, None, body).await
}

pub(crate) async fn store_in_study(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(study): Path<String>,
    body: Body,
) -> Response {
    stow(state, peer, headers, Some(study), body).await
}

/// Received parts whose ingest (parse, fsyncs, index commit) may run at once within one
/// request. Durability is mostly waiting for the disk: overlapping it with the reception of the
/// next parts, and letting the index writer commit several parts in one transaction, is what
/// makes a request of many instances fast. Each holds a temporary file and a 256 KiB buffer.
const PARTS_IN_FLIGHT: usize = 8;

/// A part being made durable in its own task, or already settled.
enum Pending {
    Settled(Outcome),
    Finishing(JoinHandle<Result<StoredInstance, Refused>>),
}

impl Pending {
    async fn settle(self) -> Outcome {
        let finished = match self {
            Pending::Settled(outcome) => return outcome,
            Pending::Finishing(task) => task.await,
        };
        match finished {
            Ok(Ok(stored)) => Outcome::Stored(stored),
            Ok(Err(refused)) => Outcome::Failed {
                reason: failure_reason(&refused.error),
                security: matches!(refused.error, ArchiveError::LimitExceeded(_)),
                unavailable: matches!(refused.error, ArchiveError::Unavailable(_)),
                why: refused.error.to_string(),
                identity: refused.identity,
            },
            Err(e) => Outcome::Failed {
                reason: PROCESSING_FAILURE,
                security: false,
                unavailable: false,
                why: format!("internal error: {e}"),
                identity: None,
            },
        }
    }
}

/// Waits for every part still being made durable, in order.
async fn settle_all(pending: &mut VecDeque<Pending>, outcomes: &mut Vec<Outcome>) {
    while let Some(p) = pending.pop_front() {
        outcomes.push(p.settle().await);
    }
}

/// One part's outcome.
enum Outcome {
    Stored(StoredInstance),
    /// A refused part, with its SOP Class and Instance UIDs when they could be read (not
    /// when the part is not DICOM at all).
    Failed {
        reason: u16,
        /// Past a memory bound (a decompression bomb): the request is audited as `security`.
        security: bool,
        /// The database or the object store did not answer ([`ArchiveError::Unavailable`]).
        unavailable: bool,
        why: String,
        identity: Option<(String, String)>,
    },
}

fn failure_reason(e: &ArchiveError) -> u16 {
    match e {
        ArchiveError::OutOfResources(_)
        | ArchiveError::QuotaExceeded(_)
        | ArchiveError::LimitExceeded(_)
        | ArchiveError::Unavailable(_) => OUT_OF_RESOURCES,
        ArchiveError::MissingAttribute(_) | ArchiveError::Mismatch(_) => DATASET_MISMATCH,
        ArchiveError::Invalid(_) => CANNOT_UNDERSTAND,
        ArchiveError::NotPart10(_) => NOT_DICOM,
        _ => PROCESSING_FAILURE,
    }
}

async fn stow(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = match boundary(content_type) {
        Ok(boundary) => boundary,
        Err(refusal) => return *refusal,
    };
    // A declared length past the limit is refused before a byte of the body is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > state.config.stow_max_request_bytes) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request of {length} bytes is larger than the limit of {} bytes\n",
                state.config.stow_max_request_bytes
            ),
        )
            .into_response();
    }
    let mut multipart = multipart(body.into_data_stream(), boundary, &state.config);
    let source = Source {
        actor: crate::auth::current_actor(),
        peer: peer.to_string(),
        audited_by_caller: true,
    };
    let mut outcomes = Vec::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        while pending.len() >= PARTS_IN_FLIGHT {
            if let Some(oldest) = pending.pop_front() {
                outcomes.push(oldest.settle().await);
            }
        }
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                settle_all(&mut pending, &mut outcomes).await;
                let response = multipart_error(e, outcomes.len());
                audit_request(&state, &source, &outcomes, response.status()).await;
                return response;
            }
        };
        if let Some(part_type) = not_dicom(&field) {
            // Drain it; it is refused alone.
            while let Ok(Some(_)) = field.chunk().await {}
            pending.push_back(Pending::Settled(Outcome::Failed {
                reason: NOT_DICOM,
                security: false,
                unavailable: false,
                why: format!("part of type {part_type} is not application/dicom"),
                identity: None,
            }));
            continue;
        }
        let mut incoming = match state.archive.begin_part10(source.clone(), study.clone()) {
            Ok(i) => i,
            Err(e) => {
                settle_all(&mut pending, &mut outcomes).await;
                return ApiError::Internal(e.to_string()).into_response();
            }
        };
        let mut failed = None;
        loop {
            match field.chunk().await {
                Ok(Some(bytes)) => {
                    if failed.is_none() {
                        if let Err(e) = incoming.write(&bytes) {
                            failed = Some(e);
                        }
                    }
                }
                Ok(None) => break,
                // The part did not arrive whole: nothing of it is kept (the temporary blob is
                // removed when `incoming` is dropped).
                Err(e) => {
                    drop(incoming);
                    settle_all(&mut pending, &mut outcomes).await;
                    let response = multipart_error(e, outcomes.len());
                    audit_request(&state, &source, &outcomes, response.status()).await;
                    return response;
                }
            }
        }
        pending.push_back(match failed {
            Some(error) => {
                incoming.abort();
                Pending::Settled(Outcome::Failed {
                    reason: failure_reason(&error),
                    security: matches!(error, ArchiveError::LimitExceeded(_)),
                    unavailable: matches!(error, ArchiveError::Unavailable(_)),
                    why: error.to_string(),
                    identity: None,
                })
            }
            // Its own task: it goes on while the next parts are received (and ends, object
            // stored, even if the client goes away meanwhile, like a C-STORE whose response
            // was lost).
            None => Pending::Finishing(tokio::spawn(incoming.finish_detailed())),
        });
    }
    settle_all(&mut pending, &mut outcomes).await;
    let response = respond(&state.dicomweb_base(&headers), study.as_deref(), &outcomes);
    audit_request(&state, &source, &outcomes, response.status()).await;
    response
}

/// The boundary of a STOW-RS body from its Content-Type, or the response that refuses it.
pub(crate) fn boundary(content_type: &str) -> Result<String, Box<Response>> {
    let lowered = content_type.to_ascii_lowercase();
    if !lowered.starts_with("multipart/related") {
        return Err(Box::new(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "STOW-RS takes multipart/related; type=\"application/dicom\"\n",
            )
                .into_response(),
        ));
    }
    if lowered.contains("type=") && !lowered.contains("application/dicom") {
        return Err(Box::new(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "only application/dicom parts are accepted (no metadata + bulk data form yet)\n",
            )
                .into_response(),
        ));
    }
    content_type
        .split(';')
        .find_map(|p| {
            p.trim()
                .strip_prefix("boundary=")
                .map(|b| b.trim_matches('"').to_string())
        })
        .ok_or_else(|| {
            Box::new(ApiError::BadRequest("multipart/related without a boundary".into()).into_response())
        })
}

/// The streaming multipart reader of a STOW-RS body, within the request and part limits.
pub(crate) fn multipart<S, O, E>(
    stream: S,
    boundary: String,
    config: &crate::WebConfig,
) -> multer::Multipart<'static>
where
    S: futures::Stream<Item = Result<O, E>> + Send + 'static,
    O: Into<axum::body::Bytes> + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let limits = multer::SizeLimit::new()
        .whole_stream(config.stow_max_request_bytes)
        .per_field(config.stow_max_part_bytes);
    multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(limits))
}

/// The type of a part that declares one other than application/dicom (an undeclared type is
/// taken as DICOM).
pub(crate) fn not_dicom(field: &multer::Field<'_>) -> Option<String> {
    let part_type = field
        .content_type()
        .map(|m| m.essence_str().to_ascii_lowercase())?;
    (part_type != "application/dicom").then_some(part_type)
}

/// One audit line for the whole request — one request of 100,000 parts wrote 100,000 rows —
/// in the shape of PS3.15's "DICOM Instances Transferred": counts by outcome, the patients and
/// studies (a few named, the rest counted), the status answered.
async fn audit_request(state: &WebState, source: &Source, outcomes: &[Outcome], status: StatusCode) {
    use pacs_archive::ingest::StoreResult;
    use std::collections::BTreeSet;
    let (mut stored, mut duplicates, mut replaced, mut refused) = (0, 0, 0, 0);
    let mut security = false;
    let (mut patients, mut studies) = (BTreeSet::new(), BTreeSet::new());
    for outcome in outcomes {
        match outcome {
            Outcome::Stored(s) => {
                match s.result {
                    StoreResult::Stored => stored += 1,
                    StoreResult::Duplicate | StoreResult::KeptFirst => duplicates += 1,
                    StoreResult::Replaced => replaced += 1,
                }
                patients.insert(s.patient_id.as_str());
                studies.insert(s.study_instance_uid.as_str());
            }
            Outcome::Failed { security: bomb, .. } => {
                refused += 1;
                security |= *bomb;
            }
        }
    }
    if outcomes.is_empty() && status.is_success() {
        return;
    }
    let named = |set: &BTreeSet<&str>| {
        let mut text: Vec<&str> = set.iter().take(5).copied().collect();
        let more = set.len().saturating_sub(text.len());
        let more = (more > 0).then(|| format!("+{more}"));
        text.extend(more.as_deref());
        text.join(" ")
    };
    let one = |set: &BTreeSet<&str>| (set.len() == 1).then(|| set.iter().next().unwrap().to_string());
    let outcome = match (stored + duplicates + replaced, refused) {
        (_, 0) if status.is_success() => "success",
        (0, _) => "refused",
        _ => "partial",
    };
    let detail = format!(
        "STOW-RS {status}: parts={} stored={stored} duplicates={duplicates} replaced={replaced} refused={refused} patients=[{}] studies=[{}]",
        outcomes.len(),
        named(&patients),
        named(&studies)
    );
    state
        .archive
        .record(AuditEvent {
            event: if security { "security" } else { "store" }.into(),
            actor: source.actor.clone(),
            peer: source.peer.clone(),
            patient_id: one(&patients),
            study_uid: one(&studies),
            outcome: outcome.into(),
            detail: Some(detail),
            ..AuditEvent::default()
        })
        .await;
}

fn multipart_error(e: multer::Error, parts_done: usize) -> Response {
    use multer::Error as E;
    if crate::body_rate::is_too_slow(&e) {
        return (
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body came too slowly; {parts_done} part(s) before it were processed\n"),
        )
            .into_response();
    }
    match e {
        E::StreamSizeExceeded { limit } | E::FieldSizeExceeded { limit, .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request or part larger than {limit} bytes; {parts_done} part(s) before it were processed\n"
            ),
        )
            .into_response(),
        other => ApiError::BadRequest(format!(
            "malformed multipart body after {parts_done} part(s): {other}"
        ))
        .into_response(),
    }
}

fn uid_element(tag: dicom_core::Tag, uid: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(uid))
}

/// The STOW-RS response: ReferencedSOPSequence and FailedSOPSequence, 200 / 202 / 409.
fn respond(base: &str, study: Option<&str>, outcomes: &[Outcome]) -> Response {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    // Every part refused because the database or the object store did not answer: the whole
    // request is "try again later" (503), not a conflict in the data.
    let mut unavailable = 0;
    for outcome in outcomes {
        match outcome {
            Outcome::Stored(s) => {
                let mut item = InMemDicomObject::new_empty();
                item.put(uid_element(tags::REFERENCED_SOP_CLASS_UID, &s.sop_class_uid));
                item.put(uid_element(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    &s.sop_instance_uid,
                ));
                item.put(DataElement::new(
                    tags::RETRIEVE_URL,
                    VR::UR,
                    PrimitiveValue::from(format!(
                        "{base}/studies/{}/series/{}/instances/{}",
                        url_segment(&s.study_instance_uid),
                        url_segment(&s.series_instance_uid),
                        url_segment(&s.sop_instance_uid)
                    )),
                ));
                referenced.push(item);
            }
            Outcome::Failed {
                reason,
                why,
                identity,
                unavailable: unavailable_part,
                ..
            } => {
                tracing::info!(reason = format!("0x{reason:04X}"), %why, "STOW-RS part refused");
                unavailable += usize::from(*unavailable_part);
                let mut item = InMemDicomObject::new_empty();
                if let Some((class, instance)) = identity {
                    item.put(uid_element(tags::REFERENCED_SOP_CLASS_UID, class));
                    item.put(uid_element(tags::REFERENCED_SOP_INSTANCE_UID, instance));
                }
                item.put(DataElement::new(
                    tags::FAILURE_REASON,
                    VR::US,
                    PrimitiveValue::from(*reason),
                ));
                failed.push(item);
            }
        }
    }
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) if unavailable == failed.len() => StatusCode::SERVICE_UNAVAILABLE,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut response = InMemDicomObject::new_empty();
    if let Some(study) = study {
        response.put(DataElement::new(
            tags::RETRIEVE_URL,
            VR::UR,
            // The study named in the request's own URL: escaped like every UID we embed.
            PrimitiveValue::from(format!("{base}/studies/{}", url_segment(study))),
        ));
    }
    if !referenced.is_empty() {
        response.put(DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(referenced),
        ));
    }
    if !failed.is_empty() {
        response.put(DataElement::new(
            tags::FAILED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(failed),
        ));
    }
    let json = dicom_json::to_string(&response).unwrap_or_else(|_| "{}".into());
    (status, [(header::CONTENT_TYPE, "application/dicom+json")], json).into_response()
}
