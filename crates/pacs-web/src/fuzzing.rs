//! Entry points for the fuzz targets (`fuzz/`): the parsers of this crate that read what an
//! HTTP client sends, called exactly as the handlers call them, without a server or an index.

use axum::extract::Query;
use axum::http::Uri;
use dicom_object::InMemDicomObject;
use pacs_archive::query::FindQuery;
use pacs_model::{InformationModel, QueryLevel};

use crate::WebConfig;

/// Reads a STOW-RS body as the handler does (Content-Type check, boundary, multipart stream in
/// `chunk`-byte pieces within `config`'s limits, part types) and hands every DICOM part to
/// `part`. Returns the number of parts, or the refusal's HTTP status and message.
pub fn stow_multipart(
    content_type: &str,
    body: &[u8],
    chunk: usize,
    config: &WebConfig,
    part: &mut dyn FnMut(&[u8]),
) -> Result<usize, String> {
    let boundary = crate::stow::boundary(content_type).map_err(|r| r.status().to_string())?;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(chunk.max(1)).map(|c| Ok(c.to_vec())).collect();
    let mut multipart = crate::stow::multipart(futures::stream::iter(pieces), boundary, config);
    // multer needs no reactor: a plain executor drives it.
    futures::executor::block_on(async {
        let mut parts = 0;
        while let Some(mut field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            parts += 1;
            let is_dicom = crate::stow::not_dicom(&field).is_none();
            let mut bytes = Vec::new();
            while let Some(data) = field.chunk().await.map_err(|e| e.to_string())? {
                if is_dicom {
                    bytes.extend_from_slice(&data);
                }
            }
            if is_dicom {
                part(&bytes);
            }
        }
        Ok(parts)
    })
}

/// Reads a QIDO-RS query string (`PatientName=DOE*&limit=10&includefield=…`) at every level
/// and scope, as the handlers do, into the queries the archive would run. Returns how many
/// were accepted.
pub fn qido_params(query: &str) -> usize {
    let Some(params) = query_params(query) else {
        return 0;
    };
    let mut accepted = 0;
    for level in [QueryLevel::Study, QueryLevel::Series, QueryLevel::Image] {
        for scope in [
            crate::qido::Scope::default(),
            crate::qido::Scope {
                study: Some("1.2.3".into()),
                series: Some("1.2.3.4".into()),
            },
        ] {
            let Ok(request) = crate::qido::parse_request(level, &scope, &params) else {
                continue;
            };
            if let Ok(mut q) = FindQuery::parse(InformationModel::StudyRoot, &request.identifier) {
                if request.by_words {
                    q.match_names_by_words();
                }
                accepted += 1;
            }
        }
    }
    accepted
}

/// Reads a REST API search's query string (`/api/studies?PatientName=…&sort=-StudyDate`) at
/// every level, as the handlers do. Returns how many were accepted.
pub fn rest_params(query: &str) -> usize {
    let Some(params) = query_params(query) else {
        return 0;
    };
    let scope = crate::api::Scope {
        study: None,
        series: None,
    };
    [
        QueryLevel::Patient,
        QueryLevel::Study,
        QueryLevel::Series,
        QueryLevel::Image,
    ]
    .into_iter()
    .filter(|level| crate::api::parse_search(*level, &[], &scope, &params).is_ok())
    .count()
}

/// The query string as axum's `Query<Vec<(String, String)>>` extractor reads it.
fn query_params(query: &str) -> Option<Vec<(String, String)>> {
    let uri: Uri = format!("/dicom-web/studies?{query}").parse().ok()?;
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .ok()
        .map(|q| q.0)
}

/// A data set as QIDO-RS and the REST API write it in their responses.
pub fn result_json(obj: &InMemDicomObject) -> (serde_json::Value, serde_json::Value) {
    let qido = crate::qido::to_json(obj.clone(), QueryLevel::Image, "http://127.0.0.1:8080/dicom-web");
    let rest = crate::api::plain_json(obj);
    (qido, rest)
}
