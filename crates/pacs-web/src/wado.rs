//! WADO-RS retrieval of studies, series and instances (PS3.18 §10.4) as
//! `multipart/related; type="application/dicom"`, streamed from the blob files.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_archive::Archive;
use pacs_store::{AuditEvent, InstanceLocation};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::{ApiError, WebState};

/// Explicit VR Little Endian: what `application/dicom` means without a transfer-syntax
/// parameter (PS3.18 §8.7.3.5).
const DEFAULT_SYNTAX: &str = "1.2.840.10008.1.2.1";
const CHUNK: usize = 256 * 1024;

pub(crate) async fn study(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Response {
    retrieve(state, peer, headers, study, None, None).await
}

pub(crate) async fn series(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    retrieve(state, peer, headers, study, Some(series), None).await
}

pub(crate) async fn instance(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    retrieve(state, peer, headers, study, Some(series), Some(instance)).await
}

/// The transfer syntax the client asks for ("*" for any), or `None` when it accepts nothing
/// this resource can produce.
fn requested_syntax(headers: &HeaderMap) -> Option<String> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) else {
        return Some(DEFAULT_SYNTAX.into());
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut part_type = None;
        let mut syntax = None;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "type" => part_type = Some(v.to_ascii_lowercase()),
                    "transfer-syntax" => syntax = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        let dicom_parts = match media.as_str() {
            "*/*" | "multipart/*" | "application/dicom" => true,
            "multipart/related" => part_type.as_deref().is_none_or(|t| t == "application/dicom"),
            _ => false,
        };
        if dicom_parts {
            return Some(syntax.unwrap_or_else(|| DEFAULT_SYNTAX.into()));
        }
    }
    None
}

async fn retrieve(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    study: String,
    series: Option<String>,
    instance: Option<String>,
) -> Response {
    let Some(requested) = requested_syntax(&headers) else {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "this resource is served as multipart/related; type=\"application/dicom\"\n",
        )
            .into_response();
    };
    let archive = state.archive.clone();
    let locations = match archive
        .instances_in(&study, series.as_deref(), instance.as_deref())
        .await
    {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut event = AuditEvent {
        event: "retrieve-wado".into(),
        actor: crate::auth::current_actor(),
        peer: peer.to_string(),
        study_uid: Some(study.clone()),
        outcome: "success".into(),
        detail: Some(format!(
            "instances={} transfer-syntax={requested}",
            locations.len()
        )),
        ..AuditEvent::default()
    };
    if locations.is_empty() {
        event.outcome = "not found".into();
        archive.record(event).await;
        return (StatusCode::NOT_FOUND, "no such study, series or instance\n").into_response();
    }
    // What can be delivered in the requested syntax is sent; one odd instance does not hide
    // a whole study. The others are named in a Warning, with 206 (PS3.18 §10.4.3).
    let mut parts = Vec::with_capacity(locations.len());
    let mut refused = Vec::new();
    for location in locations {
        if requested == "*" {
            let target = location.transfer_syntax.clone();
            parts.push((location, target));
        } else if Archive::can_send_as(&location.transfer_syntax, &requested) {
            parts.push((location, requested.clone()));
        } else {
            refused.push(location);
        }
    }
    let not_convertible = |l: &InstanceLocation| {
        format!(
            "instance {} is stored as {} and cannot be converted to {requested}",
            l.sop_uid, l.transfer_syntax
        )
    };
    if parts.is_empty() {
        event.outcome = "not acceptable".into();
        archive.record(event).await;
        let why = not_convertible(&refused[0]);
        return (
            StatusCode::NOT_ACCEPTABLE,
            format!("{why}; ask for transfer-syntax=*\n"),
        )
            .into_response();
    }
    if !refused.is_empty() {
        event.outcome = "partial".into();
        event.detail = Some(format!(
            "instances={} not-convertible={} transfer-syntax={requested}",
            parts.len(),
            refused.len()
        ));
    }
    archive.record(event).await;
    let boundary = format!(
        "openpacs-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(stream_parts(archive, parts, boundary.clone(), tx));
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = (
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )],
        Body::from_stream(body),
    )
        .into_response();
    if !refused.is_empty() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        // A few named, the rest counted: headers stay small whatever the study.
        const NAMED: usize = 10;
        let mut warnings: Vec<String> = refused.iter().take(NAMED).map(not_convertible).collect();
        if refused.len() > NAMED {
            warnings.push(format!(
                "{} more instances cannot be converted to {requested}",
                refused.len() - NAMED
            ));
        }
        for w in warnings {
            if let Ok(value) = axum::http::HeaderValue::from_str(&format!("299 openpacs \"{w}\"")) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
    }
    response
}

/// Writes the multipart body into `tx`, a bounded channel: memory stays at a few chunks
/// whatever the size of the study. A failure mid-way ends the body with an error, so the
/// client sees a truncated message rather than a silently incomplete one.
async fn stream_parts(
    archive: std::sync::Arc<Archive>,
    parts: Vec<(InstanceLocation, String)>,
    boundary: String,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    // Patient identity changes (RIS corrections) for the whole request in one go, rather
    // than a query per instance.
    let locations: Vec<InstanceLocation> = parts.iter().map(|(l, _)| l.clone()).collect();
    let mut patches = match archive.patient_patches(&locations).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot read patient corrections for WADO-RS");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            return;
        }
    };
    for (location, target) in parts {
        let head =
            format!("--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={target}\r\n\r\n");
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        let patch = patches.remove(&location.pk);
        let mut opened = match archive.open_part10_patched(&location, patch, &target).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(sop = %location.sop_uid, error = %e, "cannot open instance for WADO-RS");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        };
        let mut remaining = opened.len;
        while remaining > 0 {
            let mut chunk = vec![0u8; CHUNK.min(remaining as usize)];
            if let Err(e) = opened.reader.read_exact(&mut chunk).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
            remaining -= chunk.len() as u64;
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
        if tx.send(Ok(Bytes::from_static(b"\r\n"))).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Ok(Bytes::from(format!("--{boundary}--\r\n")))).await;
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
    fn accept_header_selects_the_transfer_syntax() {
        assert_eq!(
            requested_syntax(&HeaderMap::new()).as_deref(),
            Some(DEFAULT_SYNTAX)
        );
        assert_eq!(
            requested_syntax(&accept(
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*"
            ))
            .as_deref(),
            Some("*")
        );
        assert_eq!(
            requested_syntax(&accept(
                "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2"
            ))
            .as_deref(),
            Some("1.2.840.10008.1.2")
        );
        assert_eq!(
            requested_syntax(&accept("multipart/related; type=\"application/dicom\"")).as_deref(),
            Some(DEFAULT_SYNTAX)
        );
        assert_eq!(requested_syntax(&accept("application/json")), None);
        assert_eq!(
            requested_syntax(&accept("multipart/related; type=\"image/jpeg\"")),
            None
        );
    }
}
