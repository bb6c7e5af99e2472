//! WADO-URI (PS3.18 §9): `/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`.
//! `application/dicom` returns the stored Part 10 file, or one converted to the requested
//! `transferSyntax` (native objects re-encoded; compressed ones decoded to little endian when
//! this build has their codec). `image/jpeg` (the default) and `image/png` are rendered like
//! the DICOMweb rendered resources, with `windowCenter`/`windowWidth`, `rows`/`columns`,
//! `imageQuality` and `frameNumber`; `region`, `annotation` and `presentationUID` are ignored.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_archive::{Archive, ArchiveError};
use pacs_imaging::{ImageFormat, RenderParams};
use tokio::io::AsyncReadExt;

use crate::{ApiError, WebState};

pub(crate) async fn wado(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("requestType") != Some("WADO") {
        return ApiError::BadRequest("requestType=WADO is required".into()).into_response();
    }
    let (Some(study), Some(series), Some(object)) = (get("studyUID"), get("seriesUID"), get("objectUID"))
    else {
        return ApiError::BadRequest("studyUID, seriesUID and objectUID are required".into()).into_response();
    };
    let content_type = get("contentType").unwrap_or("image/jpeg");
    // The first type listed that we serve: the object itself or a rendered image.
    let Some(wanted) = content_type.split(',').map(str::trim).find_map(|t| {
        if t == "application/dicom" {
            Some(None)
        } else {
            ImageFormat::from_media_type(t).map(Some)
        }
    }) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            format!("contentType {content_type}: this server serves application/dicom, image/jpeg and image/png\n"),
        )
            .into_response();
    };
    if let Some(format) = wanted {
        let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let render_params = match RenderParams::default().apply_wado_uri(pairs) {
            Ok(p) => RenderParams { format, ..p },
            Err(message) => return ApiError::BadRequest(message).into_response(),
        };
        let frame = match get("frameNumber").map(|n| n.trim().parse::<u32>()) {
            None => 1,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => {
                return ApiError::BadRequest("frameNumber must be a positive integer".into()).into_response()
            }
        };
        let location = match state
            .audited_instance(
                peer,
                (study, series, object),
                "retrieve-wado-uri",
                format!("{object} {content_type}"),
            )
            .await
        {
            Ok(l) => l,
            Err(response) => return response,
        };
        return crate::rendered::render_response(&state, &location, frame, render_params).await;
    }
    let location = match state
        .audited_instance(
            peer,
            (study, series, object),
            "retrieve-wado-uri",
            object.to_string(),
        )
        .await
    {
        Ok(l) => l,
        Err(response) => return response,
    };
    let target = get("transferSyntax")
        .unwrap_or(&location.transfer_syntax)
        .to_string();
    if !Archive::can_send_as(&location.transfer_syntax, &target) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "stored as {}, cannot be converted to {target}\n",
                location.transfer_syntax
            ),
        )
            .into_response();
    }
    let (reader, len) = match state.archive.open_part10(&location, &target).await {
        Ok(o) => (o.reader, o.len),
        // A compressed object the decoder fails on: nothing was sent yet.
        Err(ArchiveError::Invalid(m)) => {
            return (StatusCode::NOT_ACCEPTABLE, format!("{m}\n")).into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let body = futures::stream::unfold((reader, len), |(mut reader, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let mut chunk = vec![0u8; remaining.min(64 * 1024) as usize];
        match reader.read_exact(&mut chunk).await {
            Ok(_) => {
                let left = remaining - chunk.len() as u64;
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (reader, left)))
            }
            Err(e) => Some((Err(e), (reader, 0))),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/dicom".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
