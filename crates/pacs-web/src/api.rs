//! The REST API under `/api` for the web UI and for scripts: plain JSON (attribute keywords as
//! keys), paginated searches that run through the same matching engine as C-FIND and QIDO-RS,
//! statistics, deletion (admin only, audited) and the study download as a streamed ZIP.
//!
//! Search parameters are those of QIDO-RS (`PatientName=DOE*`, `StudyDate=20240101-20241231`,
//! `ModalitiesInStudy=CT`, tags as `00100020=…`), plus `limit` (default 100, at most 1000),
//! `offset` and `sort` (`-StudyDate,PatientName`: indexed attributes, `-` for descending; in
//! index order without it). With `fuzzymatching=true`, as in QIDO-RS, person names match by
//! words (`pacs_model::name_words`: "elodie" finds `DURAND^ELODIE`), which the UI asks for.

use std::io::Write;
use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use pacs_archive::query::FindQuery;
use pacs_model::{InformationModel, QueryLevel};
use pacs_store::AuditEvent;
use tokio::sync::mpsc;

use crate::qido::{attribute, put_key, search_key};
use crate::{ApiError, WebState};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

const PATIENT_KEYS: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::NUMBER_OF_PATIENT_RELATED_STUDIES,
];
const STUDY_KEYS: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::STUDY_ID,
    tags::STUDY_DESCRIPTION,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::MODALITIES_IN_STUDY,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
];
const SERIES_KEYS: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::MODALITY,
    tags::SERIES_NUMBER,
    tags::SERIES_DESCRIPTION,
    tags::BODY_PART_EXAMINED,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
];
const INSTANCE_KEYS: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SOP_INSTANCE_UID,
    tags::SOP_CLASS_UID,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::NUMBER_OF_FRAMES,
];

/// A search's path-given scope.
#[derive(Default)]
pub(crate) struct Scope<'a> {
    pub(crate) study: Option<&'a str>,
    pub(crate) series: Option<&'a str>,
}

pub(crate) async fn patients(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    list(
        &state,
        peer,
        QueryLevel::Patient,
        PATIENT_KEYS,
        Scope::default(),
        &params,
    )
    .await
}

pub(crate) async fn studies(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    list(
        &state,
        peer,
        QueryLevel::Study,
        STUDY_KEYS,
        Scope::default(),
        &params,
    )
    .await
}

/// One study (404 when unknown).
pub(crate) async fn study(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(study): Path<String>,
) -> Response {
    let scope = Scope {
        study: Some(&study),
        series: None,
    };
    match search(&state, peer, QueryLevel::Study, STUDY_KEYS, scope, &[]).await {
        Ok(page) => match page.items.into_iter().next() {
            Some(item) => Json(item).into_response(),
            None => (StatusCode::NOT_FOUND, "no such study\n").into_response(),
        },
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn series(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    list(
        &state,
        peer,
        QueryLevel::Series,
        SERIES_KEYS,
        Scope::default(),
        &params,
    )
    .await
}

pub(crate) async fn study_series(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(study): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let scope = Scope {
        study: Some(&study),
        series: None,
    };
    list(&state, peer, QueryLevel::Series, SERIES_KEYS, scope, &params).await
}

pub(crate) async fn series_instances(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((study, series)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let scope = Scope {
        study: Some(&study),
        series: Some(&series),
    };
    list(&state, peer, QueryLevel::Image, INSTANCE_KEYS, scope, &params).await
}

pub(crate) async fn instances(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    list(
        &state,
        peer,
        QueryLevel::Image,
        INSTANCE_KEYS,
        Scope::default(),
        &params,
    )
    .await
}

struct Page {
    items: Vec<serde_json::Value>,
    offset: usize,
    limit: usize,
    more: bool,
}

async fn list(
    state: &WebState,
    peer: SocketAddr,
    level: QueryLevel,
    keys: &[Tag],
    scope: Scope<'_>,
    params: &[(String, String)],
) -> Response {
    match search(state, peer, level, keys, scope, params).await {
        Ok(page) => Json(serde_json::json!({
            "items": page.items,
            "offset": page.offset,
            "limit": page.limit,
            "more": page.more,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn search(
    state: &WebState,
    peer: SocketAddr,
    level: QueryLevel,
    keys: &[Tag],
    scope: Scope<'_>,
    params: &[(String, String)],
) -> Result<Page, ApiError> {
    let SearchRequest {
        query,
        limit,
        offset,
        sort,
    } = parse_search(level, keys, &scope, params)?;
    let (tx, mut rx) = mpsc::channel(64);
    let archive = state.archive.clone();
    let expected = offset.saturating_add(limit).saturating_add(1);
    let finding = tokio::spawn(async move { archive.find_sorted(&query, &sort, expected, &tx).await });
    let mut items = Vec::new();
    let mut skipped = 0;
    let mut more = false;
    while let Some(found) = rx.recv().await {
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(plain_json(&found));
    }
    drop(rx);
    let outcome = finding.await;
    let succeeded = matches!(outcome, Ok(Ok(_)));
    state
        .archive
        .record(AuditEvent {
            event: "query".into(),
            actor: crate::auth::current_actor(),
            peer: peer.to_string(),
            study_uid: scope.study.map(str::to_string),
            outcome: if succeeded { "success" } else { "failure" }.into(),
            detail: Some(format!("REST level={} matches={}", level.as_str(), items.len())),
            ..AuditEvent::default()
        })
        .await;
    match outcome {
        Ok(Ok(_)) => {}
        // A failure after we stopped reading (more results than the page) is not an error.
        Ok(Err(_)) if more => {}
        Ok(Err(e)) => return Err(ApiError::Internal(e.to_string())),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    }
    Ok(Page {
        items,
        offset,
        limit,
        more,
    })
}

/// A REST search's parameters, read.
pub(crate) struct SearchRequest {
    pub(crate) query: FindQuery,
    pub(crate) limit: usize,
    pub(crate) offset: usize,
    pub(crate) sort: Vec<pacs_store::SortKey>,
}

/// Reads a REST search's parameters (attributes as keys, paging, sort, fuzzy matching) into
/// the query the archive runs.
pub(crate) fn parse_search(
    level: QueryLevel,
    keys: &[Tag],
    scope: &Scope<'_>,
    params: &[(String, String)],
) -> Result<SearchRequest, ApiError> {
    let mut identifier = InMemDicomObject::new_empty();
    put_key(
        &mut identifier,
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        level.as_str(),
    );
    for tag in keys {
        let vr = StandardDataDictionary
            .by_tag(*tag)
            .map(|e| e.vr().relaxed())
            .unwrap_or(VR::LO);
        put_key(&mut identifier, *tag, vr, "");
    }
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    let mut sort = Vec::new();
    let mut by_words = false;
    let number = |name: &str, value: &str| {
        value
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("{name} {value:?} is not a number")))
    };
    for (name, value) in params {
        match name.as_str() {
            "limit" => limit = number(name, value)?.clamp(1, MAX_LIMIT),
            "offset" => offset = number(name, value)?,
            "sort" => sort = sort_keys(level, value)?,
            "fuzzymatching" => by_words = crate::qido::fuzzy_matching(value)?,
            other => {
                let (tag, vr) = attribute(other)
                    .ok_or_else(|| ApiError::BadRequest(format!("unknown search parameter {other:?}")))?;
                if vr == VR::SQ {
                    return Err(ApiError::BadRequest(format!(
                        "{other} is a sequence: not searchable"
                    )));
                }
                search_key(&mut identifier, other, tag, vr, value)?;
            }
        }
    }
    if let Some(study) = scope.study {
        put_key(&mut identifier, tags::STUDY_INSTANCE_UID, VR::UI, study);
    }
    if let Some(series) = scope.series {
        put_key(&mut identifier, tags::SERIES_INSTANCE_UID, VR::UI, series);
    }
    let model = if level == QueryLevel::Patient {
        InformationModel::PatientRoot
    } else {
        InformationModel::StudyRoot
    };
    let mut query = FindQuery::parse(model, &identifier).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if by_words {
        query.match_names_by_words();
    }
    Ok(SearchRequest {
        query,
        limit,
        offset,
        sort,
    })
}

/// `sort=-StudyDate,PatientName`: attributes kept in index columns at this level or above,
/// `-` for descending.
fn sort_keys(level: QueryLevel, value: &str) -> Result<Vec<pacs_store::SortKey>, ApiError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|key| {
            let (descending, name) = match key.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, key.strip_prefix('+').unwrap_or(key)),
            };
            let (tag, vr) = attribute(name)
                .ok_or_else(|| ApiError::BadRequest(format!("cannot sort by {name:?}: not an attribute")))?;
            let column = pacs_store::columns::column_for_tag((tag.group(), tag.element()))
                .filter(|c| {
                    // A stored column, not a computed one (counts, modalities in study).
                    (c.filter.is_some() || !c.select.starts_with('('))
                        && pacs_store::columns::depth(c.level) <= pacs_store::columns::depth(level)
                })
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "cannot sort {} results by {name:?}: not an indexed attribute of this level",
                        level.as_str().to_ascii_lowercase()
                    ))
                })?;
            // Numbers (Series Number, Instance Number…) are kept as text: sorted as numbers.
            let numeric = matches!(
                vr,
                VR::IS | VR::DS | VR::US | VR::UL | VR::SS | VR::SL | VR::FL | VR::FD
            );
            Ok(pacs_store::SortKey {
                column,
                descending,
                numeric,
            })
        })
        .collect()
}

/// A match as a flat JSON object keyed by attribute keyword: strings, numbers for IS/DS and
/// the counts, arrays for multi-valued attributes, null for empty ones.
pub(crate) fn plain_json(found: &InMemDicomObject) -> serde_json::Value {
    use dicom_core::header::Header;
    let mut out = serde_json::Map::new();
    for element in found {
        let tag = element.tag();
        if tag == tags::QUERY_RETRIEVE_LEVEL || tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        let key = StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.alias().to_string())
            .unwrap_or_else(|| format!("{:04X}{:04X}", tag.group(), tag.element()));
        // Values held as one backslash-joined string (computed ModalitiesInStudy) are
        // several values too; texts whose backslash is a character stay whole.
        let splits = !matches!(element.vr(), VR::LT | VR::ST | VR::UT | VR::UR);
        let values: Vec<String> = element
            .to_multi_str()
            .map(|v| {
                v.iter()
                    .flat_map(|s| {
                        if splits {
                            s.split('\\').collect::<Vec<_>>()
                        } else {
                            vec![s.as_str()]
                        }
                    })
                    .map(|s| s.trim_matches(['\0', ' ']).to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let numeric = matches!(element.vr(), VR::IS | VR::DS | VR::US | VR::UL | VR::SS | VR::SL);
        let as_json = |s: &String| {
            if numeric {
                if let Ok(n) = s.trim().parse::<i64>() {
                    return serde_json::Value::from(n);
                }
                if let Ok(f) = s.trim().parse::<f64>() {
                    return serde_json::Value::from(f);
                }
            }
            serde_json::Value::from(s.clone())
        };
        let value = match values.as_slice() {
            [] => serde_json::Value::Null,
            [one] if element.vr() != VR::CS || tag != tags::MODALITIES_IN_STUDY => as_json(one),
            many => serde_json::Value::Array(many.iter().map(as_json).collect()),
        };
        out.insert(key, value);
    }
    serde_json::Value::Object(out)
}

/// `GET /api/stats`: the tenant's contents, and its usage against its quota (the bytes its
/// objects hold, superseded versions included: what the quota is checked against).
pub(crate) async fn stats(axum::Extension(state): axum::Extension<WebState>) -> Response {
    let tenant = state.archive.tenant();
    let (stats, usage) = match (
        state.archive.index().stats().await,
        state.platform.system().tenant_usage().await,
    ) {
        (Ok(stats), Ok(usage)) => (stats, usage),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    let mut body = serde_json::to_value(stats).unwrap_or_default();
    body["usageBytes"] = usage
        .iter()
        .find(|(pk, _)| *pk == tenant.0)
        .map_or(0, |(_, bytes)| *bytes)
        .into();
    body["quotaBytes"] = state.platform.record(tenant).and_then(|t| t.quota_bytes).into();
    Json(body).into_response()
}

/// `DELETE /api/studies/{study}`, `…/series/{series}`, `…/instances/{instance}`.
pub(crate) async fn delete(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<Vec<(String, String)>>,
) -> Response {
    let get = |name: &str| path.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(study) = get("study") else {
        return ApiError::BadRequest("a study UID is required".into()).into_response();
    };
    let deleted = state
        .archive
        .delete(
            study,
            get("series"),
            get("instance"),
            crate::auth::current_actor(),
            peer.to_string(),
        )
        .await;
    match deleted {
        Ok(d) if d.instances == 0 => (StatusCode::NOT_FOUND, "nothing to delete\n").into_response(),
        Ok(d) => Json(serde_json::json!({
            "deletedInstances": d.instances,
            "removedFiles": d.blob_keys.len(),
        }))
        .into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// Letters, digits, '-' and '_' only: ZIP entry names never carry a path from the data.
fn safe_name(text: &str, fallback: &str) -> String {
    let cleaned: String = text
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.trim_matches('_').is_empty() {
        fallback.to_string()
    } else {
        cleaned
    }
}

/// Sends what the ZIP writer produces to the response body in 256 KiB chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

const ZIP_CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(ZIP_CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= ZIP_CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /api/studies/{study}/archive`: the study's objects as stored, in a ZIP streamed as it
/// is written (entries stored, not compressed: image data barely compresses and speed
/// matters). Memory stays at a few chunks whatever the study's size.
pub(crate) async fn archive(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(study): Path<String>,
) -> Response {
    let scope = Scope {
        study: Some(&study),
        series: None,
    };
    let series = match search(
        &state,
        peer,
        QueryLevel::Series,
        SERIES_KEYS,
        scope,
        &[("limit".into(), "1000".into())],
    )
    .await
    {
        Ok(page) => page.items,
        Err(e) => return e.into_response(),
    };
    if series.is_empty() {
        return (StatusCode::NOT_FOUND, "no such study\n").into_response();
    }
    let mut entries = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let uid = s["SeriesInstanceUID"].as_str().unwrap_or_default();
        let folder = format!(
            "{:03}_{}",
            i + 1,
            safe_name(s["Modality"].as_str().unwrap_or_default(), "OT")
        );
        match state.archive.instances_in(&study, Some(uid), None).await {
            Ok(found) => entries.extend(found.into_iter().map(|l| (folder.clone(), l))),
            Err(e) => return ApiError::Internal(e.to_string()).into_response(),
        }
    }
    state
        .archive
        .record(AuditEvent {
            event: "retrieve-zip".into(),
            actor: crate::auth::current_actor(),
            peer: peer.to_string(),
            study_uid: Some(study.clone()),
            outcome: "success".into(),
            detail: Some(format!("{} instance(s)", entries.len())),
            ..AuditEvent::default()
        })
        .await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let archive = state.archive.clone();
    let runtime = tokio::runtime::Handle::current();
    let root = safe_name(&study, "study");
    let file_name = format!("attachment; filename=\"{root}.zip\"");
    tokio::task::spawn_blocking(move || {
        let mut zip = zip::ZipWriter::new_stream(ChannelWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(ZIP_CHUNK),
        });
        let result = (|| -> Result<(), String> {
            for (n, (folder, location)) in entries.iter().enumerate() {
                let opened = runtime
                    .block_on(archive.open_part10(location, &location.transfer_syntax))
                    .map_err(|e| e.to_string())?;
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored)
                    .large_file(opened.len >= u64::from(u32::MAX));
                zip.start_file(format!("{root}/{folder}/{:05}.dcm", n + 1), options)
                    .map_err(|e| e.to_string())?;
                let mut reader =
                    tokio_util::io::SyncIoBridge::new_with_handle(opened.reader, runtime.clone());
                std::io::copy(&mut reader, &mut zip).map_err(|e| e.to_string())?;
            }
            zip.finish()
                .map_err(|e| e.to_string())?
                .flush()
                .map_err(|e| e.to_string())
        })();
        if let Err(e) = result {
            // The status line is gone already: end the body with an error so the client sees a
            // broken transfer, never a truncated ZIP that looks complete.
            tracing::warn!(error = %e, "study download interrupted");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, file_name),
        ],
        body,
    )
        .into_response()
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The OpenAPI description of this API, at the stable URL `/api/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /api/studies/{study}/reports`: the RIS's reports for a study (ORU^R01), oldest first.
pub(crate) async fn reports(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(study): Path<String>,
) -> Response {
    let found = state.archive.index().reports(&study).await;
    state
        .archive
        .record(AuditEvent {
            event: "retrieve-reports".into(),
            actor: crate::auth::current_actor(),
            peer: peer.to_string(),
            study_uid: Some(study.clone()),
            outcome: if found.is_ok() { "success" } else { "failure" }.into(),
            ..AuditEvent::default()
        })
        .await;
    match found {
        Ok(reports) => Json(reports).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// `GET /api/review/studies`: studies not reconciled with an order, or flagged for review.
pub(crate) async fn review(axum::Extension(state): axum::Extension<WebState>) -> Response {
    match state.archive.index().unmatched_studies(1000).await {
        Ok(studies) => Json(studies).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// `GET /api/merges` (admin): patient merges received from the RIS (A40), newest first.
pub(crate) async fn merges(axum::Extension(state): axum::Extension<WebState>) -> Response {
    match state.archive.index().merges().await {
        Ok(merges) => Json(merges).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// `POST /api/merges/{id}/undo` (admin): the merged patient gets their studies back.
pub(crate) async fn undo_merge(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<i64>,
) -> Response {
    let audit = AuditEvent {
        event: "merge-undo".into(),
        actor: crate::auth::current_actor(),
        peer: peer.to_string(),
        outcome: "success".into(),
        detail: Some(format!("merge {id}")),
        ..AuditEvent::default()
    };
    let write = pacs_store::WorkflowWrite::UndoMerge { merge: id };
    match state.archive.index().write_workflow(write, audit).await {
        Ok(0) => (StatusCode::NOT_FOUND, "no such merge, or already undone\n").into_response(),
        Ok(_) => Json(serde_json::json!({ "undone": id })).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}
