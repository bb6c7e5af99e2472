//! WADO-RS metadata (PS3.18 §10.4.1.1.2) and bulk data.
//!
//! Metadata comes from the headers stored at ingest (no instance file is opened): one index
//! query per 500 instances, streamed out as a JSON array without re-parsing the JSON. Pixel data and large binary values
//! appear as `BulkDataURI`s pointing at the bulkdata resource below.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_store::AuditEvent;
use tokio::sync::mpsc;

use crate::{ApiError, WebState};

pub(crate) async fn study(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Response {
    metadata(state, peer, headers, study, None, None).await
}

pub(crate) async fn series(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    metadata(state, peer, headers, study, Some(series), None).await
}

pub(crate) async fn instance(
    state: axum::Extension<WebState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    metadata(state, peer, headers, study, Some(series), Some(instance)).await
}

async fn metadata(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    study: String,
    series: Option<String>,
    instance: Option<String>,
) -> Response {
    let archive = state.archive.clone();
    let locations = match archive
        .instances_in(&study, series.as_deref(), instance.as_deref())
        .await
    {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    archive
        .record(AuditEvent {
            event: "retrieve-metadata".into(),
            actor: crate::auth::current_actor(),
            peer: peer.to_string(),
            study_uid: Some(study.clone()),
            outcome: if locations.is_empty() {
                "not found"
            } else {
                "success"
            }
            .into(),
            detail: Some(format!("instances={}", locations.len())),
            ..AuditEvent::default()
        })
        .await;
    if locations.is_empty() {
        return (StatusCode::NOT_FOUND, "no such study, series or instance\n").into_response();
    }
    let base = state.dicomweb_base(&headers);
    let pks: Vec<i64> = locations.iter().map(|l| l.pk).collect();
    // The stored transfer syntax of each instance, as Available Transfer Syntax UID
    // (0008,3002): a viewer needs it to know what decoded frames hold (a JPEG's YCbCr comes
    // out as RGB).
    let syntaxes: std::collections::HashMap<i64, String> = locations
        .iter()
        .map(|l| (l.pk, l.transfer_syntax.clone()))
        .collect();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut first = true;
        if tx.send(Ok(Bytes::from_static(b"["))).await.is_err() {
            return;
        }
        for page in pks.chunks(500) {
            let headers = match archive.index().instance_headers(page).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read stored headers");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            // Identity changed by the RIS since storage: those few headers are patched.
            let patches: std::collections::HashMap<i64, pacs_store::PatientRecord> =
                match archive.index().patient_patches(page).await {
                    Ok(p) => p.into_iter().collect(),
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                };
            let mut chunk = String::new();
            for (pk, json) in headers {
                if !first {
                    chunk.push(',');
                }
                first = false;
                let json = match patches.get(&pk) {
                    Some(patient) => absolute_bulk_uris(&patched_header(&json, patient), &base),
                    None => absolute_bulk_uris(&json, &base),
                };
                chunk.push_str(&with_transfer_syntax(&json, syntaxes.get(&pk)));
            }
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from_static(b"]"))).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Body::from_stream(body),
    )
        .into_response()
}

/// A stored header with the patient's current identity and the demographics the RIS set.
fn patched_header(json: &str, p: &pacs_store::PatientRecord) -> String {
    let Ok(serde_json::Value::Object(mut header)) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_string();
    };
    let mut put = |tag: &str, vr: &str, value: serde_json::Value| {
        header.insert(tag.into(), serde_json::json!({ "vr": vr, "Value": [value] }));
    };
    put("00100020", "LO", p.key.patient_id.clone().into());
    if !p.key.issuer.is_empty() {
        put("00100021", "LO", p.key.issuer.clone().into());
    }
    // The same attributes as a patched object carries (`pacs_archive::retrieve::patch_patient`).
    if let Some(name) = p.ris_name() {
        put("00100010", "PN", serde_json::json!({ "Alphabetic": name }));
    }
    if let Some(date) = p.ris_birth_date() {
        put("00100030", "DA", date.into());
    }
    if let Some(sex) = p.ris_sex() {
        put("00100040", "CS", sex.into());
    }
    serde_json::Value::Object(header).to_string()
}

/// Adds Available Transfer Syntax UID to a stored header (a JSON object as text), unless it is
/// there already. UIDs hold only digits and dots, so the value needs no escaping.
fn with_transfer_syntax(json: &str, syntax: Option<&String>) -> String {
    match (syntax, json.strip_prefix('{')) {
        (Some(uid), Some(rest))
            if !json.contains("\"00083002\"") && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            let separator = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{{\"00083002\":{{\"vr\":\"UI\",\"Value\":[\"{uid}\"]}}{separator}{rest}")
        }
        _ => json.to_string(),
    }
}

/// Makes the `BulkDataURI`s stored at ingest (relative to the DICOMweb root, see
/// `pacs_archive::ingest`) absolute. A text substitution: no JSON is parsed on this path.
fn absolute_bulk_uris(json: &str, base: &str) -> String {
    json.replace(
        "\"BulkDataURI\":\"studies/",
        &format!("\"BulkDataURI\":\"{base}/studies/"),
    )
}

/// `…/instances/{instance}/bulkdata/{tag}`: one element's value as a single-part
/// `multipart/related; type="application/octet-stream"`.
pub(crate) async fn bulkdata(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
) -> Response {
    let parsed = (tag.len() == 8)
        .then(|| {
            Some((
                u16::from_str_radix(&tag[..4], 16).ok()?,
                u16::from_str_radix(&tag[4..], 16).ok()?,
            ))
        })
        .flatten();
    let Some((group, element)) = parsed else {
        return ApiError::BadRequest(format!("{tag:?} is not a tag (8 hexadecimal digits)")).into_response();
    };
    let location = match state
        .audited_instance(
            peer,
            (&study, &series, &instance),
            "retrieve-bulkdata",
            format!("{instance} {tag}"),
        )
        .await
    {
        Ok(l) => l,
        Err(response) => return response,
    };
    let archive = state.archive.clone();
    let value = match archive.bulk_value(&location, group, element).await {
        Ok(Some(v)) => v,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such attribute\n").into_response(),
        Err(pacs_archive::ArchiveError::Invalid(m)) => {
            return (StatusCode::NOT_ACCEPTABLE, format!("{m}\n")).into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let boundary = "openpacs-bulk";
    let mut body = format!("--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(&value);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_syntax_is_added_once_and_keeps_the_json_valid() {
        let uid = "1.2.840.10008.1.2.4.50".to_string();
        let added = with_transfer_syntax(r#"{"00100010":{"vr":"PN"}}"#, Some(&uid));
        let value: serde_json::Value = serde_json::from_str(&added).unwrap();
        assert_eq!(value["00083002"]["Value"][0], uid.as_str());
        assert_eq!(value["00100010"]["vr"], "PN");
        let empty: serde_json::Value = serde_json::from_str(&with_transfer_syntax("{}", Some(&uid))).unwrap();
        assert_eq!(empty["00083002"]["vr"], "UI");
        // Already present, or not a UID: unchanged.
        assert_eq!(with_transfer_syntax(&added, Some(&uid)), added);
        let odd = "1.2\"}".to_string();
        assert_eq!(with_transfer_syntax("{}", Some(&odd)), "{}");
        assert_eq!(with_transfer_syntax("{}", None), "{}");
    }
}
