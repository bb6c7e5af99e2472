//! Rendered resources and thumbnails (PS3.18 §10.4.1.1.3 / §8.3.5, thumbnails from
//! Supplement 203): `…/instances/{i}/rendered`, `…/frames/{list}/rendered`, and `thumbnail`
//! on studies, series, instances and frames. WADO-URI `image/jpeg` and `image/png` use the
//! same path (`render_response`).
//!
//! The image is made by `pacs_imaging` from the stored object read into memory (one instance
//! per request, at most `RENDER_SLOTS` at once), on a blocking thread.
//!
//! Statuses: unknown UIDs 404; a bad `window`/`viewport`/`quality` 400; an Accept (or
//! `accept=`) naming neither JPEG nor PNG 406. An object this server cannot turn into an image
//! (no decoder for its transfer syntax, a codec failure, an unsupported photometric
//! interpretation) is also 406: the resource exists and the request is well-formed, but none of
//! the acceptable rendered media types can be produced for it, which is what 406 means in
//! HTTP (RFC 9110 §15.5.7) and what PS3.18 §8.7 uses when the origin server cannot provide an
//! acceptable media type. An object without pixel data and a frame number past the end are
//! 404, as for WADO-RS frames.
//!
//! A frame list renders its first frame only (a rendered resource is one image here; multi-
//! frame media types such as GIF or video are not offered). A series thumbnail is the middle
//! image of the series by Instance Number; a study thumbnail is that of its first series by
//! Series Number.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_imaging::{ImageFormat, RenderError, RenderParams};
use pacs_model::{Matcher, QueryLevel};
use pacs_store::{columns, Condition, InstanceLocation};
use tokio::sync::Semaphore;

use crate::{ApiError, WebState};

/// Renders running at once: each holds one instance and one decoded frame in memory.
static RENDER_SLOTS: Semaphore = Semaphore::const_new(4);

type QueryPairs = Query<Vec<(String, String)>>;

/// The rendered format a client accepts, best quality value first, then order; `None` when it
/// accepts neither JPEG nor PNG. The `accept` query parameter replaces the Accept header
/// (PS3.18 §8.3.3.1). No preference at all means JPEG.
fn negotiate(headers: &HeaderMap, query: &[(String, String)]) -> Option<ImageFormat> {
    let value = query
        .iter()
        .find(|(k, _)| k == "accept")
        .map(|(_, v)| v.as_str())
        .or_else(|| headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()));
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Some(ImageFormat::Jpeg);
    };
    let mut best: Option<(f32, ImageFormat)> = None;
    for range in value.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "image/*" | "*/*" => ImageFormat::Jpeg,
            other => match ImageFormat::from_media_type(other) {
                Some(f) => f,
                None => continue,
            },
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f)
}

fn status_of(error: &RenderError) -> StatusCode {
    match error {
        RenderError::Undecodable(_) => StatusCode::NOT_ACCEPTABLE,
        RenderError::NoPixelData | RenderError::FrameOutOfRange { .. } => StatusCode::NOT_FOUND,
        RenderError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Renders frame `frame` (1-based) of a located instance into an HTTP response.
pub(crate) async fn render_response(
    state: &WebState,
    location: &InstanceLocation,
    frame: u32,
    params: RenderParams,
) -> Response {
    let Ok(_slot) = RENDER_SLOTS.acquire().await else {
        return ApiError::Internal("rendering is shut down".into()).into_response();
    };
    let local = match state.archive.local_blob(location).await {
        Ok(local) => local,
        Err(e) => return ApiError::Internal(format!("cannot read stored object: {e}")).into_response(),
    };
    let format = params.format;
    let limits = state.archive.limits();
    let rendered = tokio::task::spawn_blocking(move || {
        let object = pacs_archive::open_stored_object(local.path(), limits).map_err(|e| match e {
            pacs_archive::ArchiveError::LimitExceeded(m) | pacs_archive::ArchiveError::Invalid(m) => {
                RenderError::Undecodable(m)
            }
            e => RenderError::Internal(format!("cannot read stored object: {e}")),
        })?;
        pacs_imaging::render(&object, frame.saturating_sub(1), &params)
    })
    .await;
    match rendered {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, format.media_type())], bytes).into_response(),
        Ok(Err(RenderError::Internal(m))) => ApiError::Internal(m).into_response(),
        Ok(Err(e)) => (status_of(&e), format!("{e}\n")).into_response(),
        Err(e) => ApiError::Internal(format!("rendering task failed: {e}")).into_response(),
    }
}

/// What a request renders: an instance (or some of its frames), with the defaults of the
/// resource (rendered or thumbnail) and the audit event to record.
struct Target {
    uids: (String, String, String),
    frames: Option<String>,
    base: RenderParams,
    event: &'static str,
}

/// Accept negotiation and query parameters, then the audited lookup and the rendering.
async fn rendered(
    state: WebState,
    peer: SocketAddr,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    target: Target,
) -> Response {
    let Target {
        uids: (study, series, instance),
        frames,
        base,
        event,
    } = target;
    let Some(format) = negotiate(&headers, &query) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "rendered resources are served as image/jpeg or image/png\n",
        )
            .into_response();
    };
    let params = match base.apply_query(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(p) => RenderParams { format, ..p },
        Err(message) => return ApiError::BadRequest(message).into_response(),
    };
    let frame = match frames.as_deref() {
        None => 1,
        Some(list) => {
            let numbers: Result<Vec<u32>, _> = list.split(',').map(|n| n.trim().parse::<u32>()).collect();
            match numbers.ok().filter(|n| !n.is_empty() && !n.contains(&0)) {
                // One image per response: the first frame listed.
                Some(n) => n[0],
                None => {
                    return ApiError::BadRequest(format!("{list:?} is not a list of frame numbers"))
                        .into_response()
                }
            }
        }
    };
    let detail = match &frames {
        Some(list) => format!("{instance} frames {list}"),
        None => instance.clone(),
    };
    let location = match state
        .audited_instance(peer, (&study, &series, &instance), event, detail)
        .await
    {
        Ok(l) => l,
        Err(response) => return response,
    };
    render_response(&state, &location, frame, params).await
}

pub(crate) async fn instance(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(uids): Path<(String, String, String)>,
    Query(query): QueryPairs,
) -> Response {
    let target = Target {
        uids,
        frames: None,
        base: RenderParams::default(),
        event: "retrieve-rendered",
    };
    rendered(state, peer, headers, query, target).await
}

pub(crate) async fn frames(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    Query(query): QueryPairs,
) -> Response {
    let target = Target {
        uids: (study, series, instance),
        frames: Some(list),
        base: RenderParams::default(),
        event: "retrieve-rendered",
    };
    rendered(state, peer, headers, query, target).await
}

pub(crate) async fn instance_thumbnail(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(uids): Path<(String, String, String)>,
    Query(query): QueryPairs,
) -> Response {
    let target = Target {
        uids,
        frames: None,
        base: RenderParams::thumbnail(),
        event: "retrieve-thumbnail",
    };
    rendered(state, peer, headers, query, target).await
}

pub(crate) async fn frames_thumbnail(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    Query(query): QueryPairs,
) -> Response {
    let target = Target {
        uids: (study, series, instance),
        frames: Some(list),
        base: RenderParams::thumbnail(),
        event: "retrieve-thumbnail",
    };
    rendered(state, peer, headers, query, target).await
}

pub(crate) async fn series_thumbnail(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    Query(query): QueryPairs,
) -> Response {
    representative_thumbnail(state, peer, headers, query, study, Some(series)).await
}

pub(crate) async fn study_thumbnail(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Query(query): QueryPairs,
) -> Response {
    representative_thumbnail(state, peer, headers, query, study, None).await
}

/// Sort key of a number kept as text in the index: numbers first, in numeric order.
fn numeric(value: Option<&str>) -> (bool, i64) {
    match value.and_then(|v| v.trim().parse::<i64>().ok()) {
        Some(n) => (false, n),
        None => (true, 0),
    }
}

/// The instance that stands for a study or series: among its images (instances with Rows),
/// the first series by Series Number, then the middle instance by Instance Number.
async fn representative(
    state: &WebState,
    study: &str,
    series: Option<&str>,
) -> Result<Option<(String, InstanceLocation)>, ApiError> {
    let column = |tag: (u16, u16)| {
        columns::columns_for(QueryLevel::Image)
            .position(|c| c.tag == tag)
            .ok_or_else(|| ApiError::Internal(format!("no index column for {tag:04X?}")))
    };
    let (series_at, series_number_at, number_at, rows_at) = (
        column((0x0020, 0x000E))?,
        column((0x0020, 0x0011))?,
        column((0x0020, 0x0013))?,
        column((0x0028, 0x0010))?,
    );
    let mut conditions = Vec::new();
    for (tag, value) in [((0x0020, 0x000D), Some(study)), ((0x0020, 0x000E), series)] {
        if let (Some(value), Some(column)) = (value, columns::column_for_tag(tag)) {
            conditions.push(Condition {
                column,
                matcher: Matcher::Single(value.to_string()),
            });
        }
    }
    let archive = &state.archive;
    // (series number, series UID, instance number, location), about 300 bytes per image.
    let mut images = Vec::new();
    let mut after = 0;
    loop {
        let rows = archive
            .index()
            .query(QueryLevel::Image, &conditions, after, 1000)
            .await
            .map_err(ApiError::from)?;
        let Some(last) = rows.last() else { break };
        after = last.pk;
        for row in rows {
            let value = |at: usize| row.values.get(at).cloned().flatten();
            let Some(location) = row.instance.filter(|l| !l.superseded) else {
                continue;
            };
            if value(rows_at).is_none() {
                continue;
            }
            let series_uid = value(series_at).unwrap_or_default();
            // The SQL filter is exact for UIDs; check again all the same.
            if series.is_some_and(|s| s != series_uid) {
                continue;
            }
            images.push((
                numeric(value(series_number_at).as_deref()),
                series_uid,
                numeric(value(number_at).as_deref()),
                location,
            ));
        }
    }
    images.sort_by(|a, b| (&a.0, &a.1, &a.2).cmp(&(&b.0, &b.1, &b.2)));
    let Some(first_series) = images.first().map(|i| i.1.clone()) else {
        return Ok(None);
    };
    images.retain(|i| i.1 == first_series);
    let middle = images.swap_remove(images.len() / 2);
    Ok(Some((middle.1, middle.3)))
}

async fn representative_thumbnail(
    state: WebState,
    peer: SocketAddr,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    study: String,
    series: Option<String>,
) -> Response {
    let chosen = match representative(&state, &study, series.as_deref()).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some((series_uid, location)) = chosen else {
        state
            .archive
            .record(pacs_store::AuditEvent {
                event: "retrieve-thumbnail".into(),
                actor: crate::auth::current_actor(),
                peer: peer.to_string(),
                study_uid: Some(study.clone()),
                outcome: "not found".into(),
                detail: Some(format!("series {}", series.as_deref().unwrap_or("*"))),
                ..pacs_store::AuditEvent::default()
            })
            .await;
        return (StatusCode::NOT_FOUND, "no image in this study or series\n").into_response();
    };
    let target = Target {
        uids: (study, series_uid, location.sop_uid),
        frames: None,
        base: RenderParams::thumbnail(),
        event: "retrieve-thumbnail",
    };
    rendered(state, peer, headers, query, target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, value.parse().unwrap());
        h
    }

    #[test]
    fn accept_negotiation_for_rendered_resources() {
        let none: Vec<(String, String)> = Vec::new();
        assert_eq!(negotiate(&HeaderMap::new(), &none), Some(ImageFormat::Jpeg));
        assert_eq!(negotiate(&accept("*/*"), &none), Some(ImageFormat::Jpeg));
        assert_eq!(negotiate(&accept("image/png"), &none), Some(ImageFormat::Png));
        assert_eq!(
            negotiate(&accept("image/png;q=0.5, image/jpeg"), &none),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            negotiate(&accept("image/webp,image/*;q=0.8"), &none),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(negotiate(&accept("application/pdf"), &none), None);
        assert_eq!(negotiate(&accept("image/jpeg;q=0"), &none), None);
        let query = vec![("accept".to_string(), "image/png".to_string())];
        assert_eq!(negotiate(&accept("image/jpeg"), &query), Some(ImageFormat::Png));
    }
}
