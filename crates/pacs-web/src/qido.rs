//! QIDO-RS (PS3.18 §10.6): search for studies, series and instances over HTTP.
//!
//! The query parameters become a C-FIND identifier and run through the same matching engine
//! as DIMSE (`pacs_archive::query`); this module only translates parameters, paging and the
//! DICOM JSON response.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use pacs_archive::query::FindQuery;
use pacs_model::{url_segment, InformationModel, QueryLevel};
use pacs_store::AuditEvent;
use tokio::sync::mpsc;

use crate::{ApiError, WebState};

/// Results returned when the client gives no `limit`; more are announced with a Warning.
const DEFAULT_LIMIT: usize = 1000;
/// Largest `limit` honoured.
const MAX_LIMIT: usize = 10_000;

/// Attributes returned by default at each level (PS3.18 Table 10.6.3-3, -4, -5).
const STUDY_DEFAULTS: &[Tag] = &[
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::INSTANCE_AVAILABILITY,
    tags::MODALITIES_IN_STUDY,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_DESCRIPTION,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
    tags::NUMBER_OF_STUDY_RELATED_SERIES,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
];
const SERIES_DEFAULTS: &[Tag] = &[
    tags::MODALITY,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_NUMBER,
    tags::SERIES_INSTANCE_UID,
    tags::BODY_PART_EXAMINED,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
];
const INSTANCE_DEFAULTS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_AVAILABILITY,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::NUMBER_OF_FRAMES,
];

/// Path UIDs of a QIDO resource.
#[derive(Default)]
pub(crate) struct Scope {
    pub(crate) study: Option<String>,
    pub(crate) series: Option<String>,
}

pub(crate) async fn studies(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Query<Vec<(String, String)>>,
) -> Response {
    search(state, peer, headers, q, QueryLevel::Study, Scope::default()).await
}

pub(crate) async fn all_series(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Query<Vec<(String, String)>>,
) -> Response {
    search(state, peer, headers, q, QueryLevel::Series, Scope::default()).await
}

pub(crate) async fn all_instances(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    q: Query<Vec<(String, String)>>,
) -> Response {
    search(state, peer, headers, q, QueryLevel::Image, Scope::default()).await
}

pub(crate) async fn study_series(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(study): Path<String>,
    q: Query<Vec<(String, String)>>,
) -> Response {
    let scope = Scope {
        study: Some(study),
        series: None,
    };
    search(state, peer, headers, q, QueryLevel::Series, scope).await
}

pub(crate) async fn study_instances(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(study): Path<String>,
    q: Query<Vec<(String, String)>>,
) -> Response {
    let scope = Scope {
        study: Some(study),
        series: None,
    };
    search(state, peer, headers, q, QueryLevel::Image, scope).await
}

pub(crate) async fn series_instances(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    q: Query<Vec<(String, String)>>,
) -> Response {
    let scope = Scope {
        study: Some(study),
        series: Some(series),
    };
    search(state, peer, headers, q, QueryLevel::Image, scope).await
}

/// A parsed QIDO request.
pub(crate) struct Request {
    pub(crate) identifier: InMemDicomObject,
    limit: usize,
    offset: usize,
    warnings: Vec<String>,
    /// `fuzzymatching=true`: person names match by words.
    pub(crate) by_words: bool,
}

/// An attribute named by keyword (`PatientID`) or by tag (`00100020`), with its dictionary VR.
pub(crate) fn attribute(name: &str) -> Option<(Tag, VR)> {
    let tag = if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&name[..4], 16).ok()?;
        let element = u16::from_str_radix(&name[4..], 16).ok()?;
        Tag(group, element)
    } else {
        StandardDataDictionary.by_name(name)?.tag()
    };
    let vr = StandardDataDictionary
        .by_tag(tag)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::UN);
    Some((tag, vr))
}

/// A matching key a client gave (QIDO-RS, the REST searches): UID lists may be separated by
/// commas as well as backslashes (PS3.18 §8.3.4.1), and a date or time that is neither a
/// value nor a range is refused, rather than matching nothing.
pub(crate) fn search_key(
    identifier: &mut InMemDicomObject,
    name: &str,
    tag: Tag,
    vr: VR,
    value: &str,
) -> Result<(), ApiError> {
    let kind = pacs_model::ValueKind::from_vr(vr);
    pacs_model::check_temporal_key(kind, value).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))?;
    let value = if vr == VR::UI {
        std::borrow::Cow::Owned(value.replace(',', "\\"))
    } else {
        std::borrow::Cow::Borrowed(value)
    };
    put_key(identifier, tag, vr, &value);
    Ok(())
}

pub(crate) fn put_key(identifier: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    let value = if value.is_empty() {
        PrimitiveValue::Empty
    } else {
        PrimitiveValue::from(value)
    };
    identifier.put(DataElement::new(tag, vr, value));
}

/// The value of `fuzzymatching` (PS3.18 8.3.4.1: `true` or `false`).
pub(crate) fn fuzzy_matching(value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ApiError::BadRequest(format!(
            "fuzzymatching is true or false, not {other:?}"
        ))),
    }
}

pub(crate) fn parse_request(
    level: QueryLevel,
    scope: &Scope,
    params: &[(String, String)],
) -> Result<Request, ApiError> {
    let mut identifier = InMemDicomObject::new_empty();
    put_key(
        &mut identifier,
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        level.as_str(),
    );
    let mut defaults: Vec<&[Tag]> = vec![STUDY_DEFAULTS];
    if level != QueryLevel::Study {
        defaults.push(SERIES_DEFAULTS);
    }
    if level == QueryLevel::Image {
        defaults.push(INSTANCE_DEFAULTS);
    }
    for tag in defaults.into_iter().flatten() {
        if let Some((tag, vr)) = attribute(&format!("{:04X}{:04X}", tag.group(), tag.element())) {
            put_key(&mut identifier, tag, vr, "");
        }
    }
    let mut request = Request {
        identifier,
        limit: DEFAULT_LIMIT,
        offset: 0,
        warnings: Vec::new(),
        by_words: false,
    };
    for (name, value) in params {
        match name.as_str() {
            "limit" => {
                request.limit = value
                    .parse::<usize>()
                    .map_err(|_| ApiError::BadRequest(format!("limit {value:?} is not a number")))?
                    .min(MAX_LIMIT)
            }
            "offset" => {
                request.offset = value
                    .parse()
                    .map_err(|_| ApiError::BadRequest(format!("offset {value:?} is not a number")))?
            }
            // Person names are always matched case- and accent-insensitively; fuzzy
            // matching also matches them by words (pacs_model::name_words).
            "fuzzymatching" => request.by_words = fuzzy_matching(value)?,
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        for tag in STUDY_DEFAULTS
                            .iter()
                            .chain(SERIES_DEFAULTS)
                            .chain(INSTANCE_DEFAULTS)
                        {
                            if request.identifier.get(*tag).is_none() {
                                if let Some((tag, vr)) =
                                    attribute(&format!("{:04X}{:04X}", tag.group(), tag.element()))
                                {
                                    put_key(&mut request.identifier, tag, vr, "");
                                }
                            }
                        }
                        continue;
                    }
                    let (tag, vr) = attribute(field).ok_or_else(|| {
                        ApiError::BadRequest(format!("unknown attribute {field:?} in includefield"))
                    })?;
                    if request.identifier.get(tag).is_none() {
                        put_key(&mut request.identifier, tag, vr, "");
                    }
                }
            }
            other => {
                let (tag, vr) = attribute(other)
                    .ok_or_else(|| ApiError::BadRequest(format!("unknown query parameter {other:?}")))?;
                if vr == VR::SQ {
                    request
                        .warnings
                        .push(format!("sequence matching on {other} is not supported; ignored"));
                    continue;
                }
                search_key(&mut request.identifier, other, tag, vr, value)?;
            }
        }
    }
    if let Some(study) = &scope.study {
        put_key(&mut request.identifier, tags::STUDY_INSTANCE_UID, VR::UI, study);
    }
    if let Some(series) = &scope.series {
        put_key(&mut request.identifier, tags::SERIES_INSTANCE_UID, VR::UI, series);
    }
    Ok(request)
}

async fn search(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
    level: QueryLevel,
    scope: Scope,
) -> Response {
    let request = match parse_request(level, &scope, &params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut query = match FindQuery::parse(InformationModel::StudyRoot, &request.identifier) {
        Ok(q) => q,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    if request.by_words {
        query.match_names_by_words();
    }
    let base = state.dicomweb_base(&headers);
    let (tx, mut rx) = mpsc::channel(64);
    let archive = state.archive.clone();
    let search = tokio::spawn(async move { archive.find(&query, &tx).await });
    let mut results = Vec::new();
    let mut skipped = 0;
    let mut more = false;
    while let Some(found) = rx.recv().await {
        if skipped < request.offset {
            skipped += 1;
            continue;
        }
        if results.len() == request.limit {
            more = true;
            break;
        }
        results.push(to_json(found, level, &base));
    }
    drop(rx);
    let outcome = search.await;
    let mut event = AuditEvent {
        event: "query".into(),
        actor: crate::auth::current_actor(),
        peer: peer.to_string(),
        outcome: "success".into(),
        detail: Some(format!(
            "QIDO-RS level={} matches={}",
            level.as_str(),
            results.len()
        )),
        study_uid: scope.study.clone(),
        ..AuditEvent::default()
    };
    if !matches!(outcome, Ok(Ok(_))) {
        event.outcome = "failure".into();
    }
    state.archive.record(event).await;
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => return ApiError::Internal(e.to_string()).into_response(),
    }
    let mut warnings = request.warnings;
    if more {
        warnings.push(format!(
            "more than {} results; use limit and offset to page through them",
            request.limit
        ));
    }
    let mut response = if results.is_empty() && !more {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/dicom+json")],
            serde_json::Value::Array(results).to_string(),
        )
            .into_response()
    };
    for w in warnings {
        let text = format!("299 openpacs \"{}\"", w.replace('"', "'"));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn uid(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// A C-FIND match as a QIDO-RS result: no QueryRetrieveLevel, a RetrieveURL.
pub(crate) fn to_json(mut found: InMemDicomObject, level: QueryLevel, base: &str) -> serde_json::Value {
    found.remove_element(tags::QUERY_RETRIEVE_LEVEL);
    empty_values_as_absent(&mut found);
    // Escaped, although ingest lets only digits and dots in: what was indexed before that
    // check still cannot add a segment to the URL.
    let segment = |tag| url_segment(&uid(&found, tag));
    let study = segment(tags::STUDY_INSTANCE_UID);
    let url = match level {
        QueryLevel::Patient | QueryLevel::Study => format!("{base}/studies/{study}"),
        QueryLevel::Series => format!(
            "{base}/studies/{study}/series/{}",
            segment(tags::SERIES_INSTANCE_UID)
        ),
        QueryLevel::Image => format!(
            "{base}/studies/{study}/series/{}/instances/{}",
            segment(tags::SERIES_INSTANCE_UID),
            segment(tags::SOP_INSTANCE_UID)
        ),
    };
    found.put(DataElement::new(
        tags::RETRIEVE_URL,
        VR::UR,
        PrimitiveValue::from(url),
    ));
    values_split(&mut found);
    numbers_as_numbers(&mut found);
    dicom_json::to_value(&found).unwrap_or(serde_json::Value::Null)
}

/// A value held as one backslash-separated string ("US\\CT", as the index keeps computed
/// ModalitiesInStudy and multi-valued columns) becomes one JSON array element per value
/// (PS3.18 §F.2.4). Texts whose backslash is a character (LT, ST, UT, UR) stay whole.
fn values_split(obj: &mut InMemDicomObject) {
    use dicom_core::header::Header;
    let joined: Vec<(Tag, VR, Vec<String>)> = obj
        .iter()
        .filter(|e| !matches!(e.vr(), VR::SQ | VR::LT | VR::ST | VR::UT | VR::UR | VR::UN))
        .filter_map(|e| match e.value().primitive()? {
            PrimitiveValue::Str(s) if s.contains('\\') => Some((
                e.tag(),
                e.vr(),
                s.split('\\')
                    .map(|v| v.trim_matches([' ', '\0']).to_string())
                    .collect(),
            )),
            _ => None,
        })
        .collect();
    for (tag, vr, values) in joined {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values.into())));
    }
}

/// Empty values are written without a "Value" (PS3.18 §F.2.5), never as `[""]`. An empty
/// ModalitiesInStudy is left out: OHIF's study list reads its `Value` whenever it is present
/// (and one such study emptied the whole list); absent, it shows no modality.
fn empty_values_as_absent(obj: &mut InMemDicomObject) {
    use dicom_core::header::Header;
    let empty: Vec<(Tag, VR)> = obj
        .iter()
        .filter(|e| e.vr() != VR::SQ)
        .filter(|e| {
            e.to_str()
                .is_ok_and(|s| s.trim_matches(['\0', ' ', '\\']).is_empty())
        })
        .map(|e| (e.tag(), e.vr()))
        .collect();
    for (tag, vr) in empty {
        if tag == tags::MODALITIES_IN_STUDY {
            obj.remove_element(tag);
        } else {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        }
    }
}

/// DICOM JSON carries IS and DS values as JSON numbers (PS3.18 §F.2.3); the index holds
/// them as text. Values that do not parse stay text rather than being lost.
fn numbers_as_numbers(obj: &mut InMemDicomObject) {
    use dicom_core::header::Header;
    let text_numbers: Vec<(Tag, VR, String)> = obj
        .iter()
        .filter(|e| matches!(e.vr(), VR::IS | VR::DS))
        .filter_map(|e| Some((e.tag(), e.vr(), e.to_str().ok()?.into_owned())))
        .collect();
    for (tag, vr, text) in text_numbers {
        let parts: Vec<&str> = text.split('\\').map(str::trim).collect();
        let value = if vr == VR::IS {
            parts
                .iter()
                .map(|p| p.parse::<i64>())
                .collect::<Result<_, _>>()
                .ok()
                .map(PrimitiveValue::I64)
        } else {
            parts
                .iter()
                .map(|p| p.parse::<f64>())
                .collect::<Result<_, _>>()
                .ok()
                .map(PrimitiveValue::F64)
        };
        if let Some(value) = value.filter(|_| !parts.iter().any(|p| p.is_empty())) {
            obj.put(DataElement::new(tag, vr, value));
        }
    }
}
