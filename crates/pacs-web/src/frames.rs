//! WADO-RS frames (PS3.18 §10.4.1.1.4): `…/instances/{instance}/frames/{list}`.
//!
//! Uncompressed frames go out as `application/octet-stream`. Compressed frames go out as
//! stored (e.g. `image/jpeg`, `image/jls`, `image/jp2`) when the client accepts that media
//! type, else decoded to `application/octet-stream` when the client accepts that and we have
//! a decoder (406 when we do not).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_archive::{ArchiveError, Frames};

use crate::{ApiError, WebState};

/// Media type of a compressed transfer syntax's frames (PS3.18 Table 8.7.3-2).
fn media_type_of(transfer_syntax: &str) -> &'static str {
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => "application/octet-stream",
    }
}

/// Whether the Accept header admits `media` (bare or as a multipart `type=`), `*/*` included.
fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) else {
        return media == "application/octet-stream";
    };
    let accept = accept.to_ascii_lowercase();
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let first = parts.next().unwrap_or("");
        let part_type = parts
            .find_map(|p| p.strip_prefix("type="))
            .map(|t| t.trim_matches('"').to_string());
        let offered = match first {
            "multipart/related" => part_type.unwrap_or_else(|| "application/octet-stream".into()),
            other => other.to_string(),
        };
        offered == media || offered == "*/*"
    })
}

pub(crate) async fn frames(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
) -> Response {
    let numbers: Result<Vec<u32>, _> = list.split(',').map(|n| n.trim().parse::<u32>()).collect();
    let Ok(numbers) = numbers
        .map_err(|_| ())
        .and_then(|n| if n.is_empty() { Err(()) } else { Ok(n) })
    else {
        return ApiError::BadRequest(format!("{list:?} is not a list of frame numbers")).into_response();
    };
    let location = match state
        .audited_instance(
            peer,
            (&study, &series, &instance),
            "retrieve-frames",
            format!("{instance} frames {list}"),
        )
        .await
    {
        Ok(l) => l,
        Err(response) => return response,
    };
    // The stored bitstream when the client takes it; decoded pixels otherwise.
    let stored_media = media_type_of(&location.transfer_syntax);
    let decode = stored_media != "application/octet-stream"
        && !accepts(&headers, stored_media)
        && accepts(&headers, "application/octet-stream");
    let archive = state.archive.clone();
    let frames = match archive.frames(&location, &numbers, decode).await {
        Ok(f) => f,
        Err(ArchiveError::MissingAttribute(m)) => {
            return (StatusCode::NOT_FOUND, format!("no {m}\n")).into_response()
        }
        Err(ArchiveError::Invalid(m)) => {
            return (StatusCode::NOT_ACCEPTABLE, format!("{m}\n")).into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (media, part_type, frames) = match frames {
        Frames::Native(f) => (
            "application/octet-stream",
            "application/octet-stream".to_string(),
            f,
        ),
        Frames::Encapsulated(f) => {
            let media = media_type_of(&location.transfer_syntax);
            (
                media,
                format!("{media}; transfer-syntax={}", location.transfer_syntax),
                f,
            )
        }
    };
    if !accepts(&headers, media) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "frames of this instance are {media} (stored as {}); ask for {media} or application/octet-stream\n",
                location.transfer_syntax
            ),
        )
            .into_response();
    }
    let boundary = "openpacs-frames";
    let mut body = Vec::new();
    for frame in frames {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {part_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(&frame);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"{media}\"; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_for_frames() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, v.parse().unwrap());
            m
        };
        assert!(accepts(&HeaderMap::new(), "application/octet-stream"));
        assert!(!accepts(&HeaderMap::new(), "image/jpeg"));
        assert!(accepts(
            &h("multipart/related; type=\"image/jpeg\""),
            "image/jpeg"
        ));
        assert!(accepts(
            &h("multipart/related; type=application/octet-stream"),
            "application/octet-stream"
        ));
        assert!(accepts(&h("*/*"), "image/jls"));
        assert!(!accepts(
            &h("multipart/related; type=\"image/jpeg\""),
            "application/octet-stream"
        ));
        assert_eq!(media_type_of("1.2.840.10008.1.2.4.80"), "image/jls");
    }
}
