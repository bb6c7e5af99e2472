//! HTTP front end: `/healthz`, Prometheus `/metrics`, and DICOMweb under `/dicom-web`
//! (QIDO-RS, WADO-RS retrieval and metadata, STOW-RS so far). WADO-RS, STOW-RS, the REST API and the UI will be mounted here.

mod frames;
mod metadata;
mod qido;
mod stow;
mod wado;
mod wado_uri;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pacs_archive::Archive;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Renders the metrics exposition text; provided by the binary, which owns the recorder.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// HTTP settings the binary passes in.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest STOW-RS part accepted (413 beyond).
    pub stow_max_part_bytes: u64,
    /// Largest STOW-RS request accepted (413 beyond).
    pub stow_max_request_bytes: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            stow_max_part_bytes: 2 << 30,
            stow_max_request_bytes: 16 << 30,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct WebState {
    archive: Arc<Archive>,
    config: Arc<WebConfig>,
}

/// Failures of the HTTP front end, mapped to a status in one place. Client errors say what is
/// wrong; internal ones are logged and never shown.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "HTTP request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response()
    }
}

impl WebState {
    /// The one current instance a WADO-RS instance URL names, with the access audited
    /// (`event`, `detail`); a 404 response when there is none.
    async fn audited_instance(
        &self,
        peer: std::net::SocketAddr,
        (study, series, instance): (&str, &str, &str),
        event: &str,
        detail: String,
    ) -> Result<pacs_store::InstanceLocation, Response> {
        let found = self
            .archive
            .instances_in(study, Some(series), Some(instance))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()).into_response())?;
        self.archive
            .record(pacs_store::AuditEvent {
                tenant: self.archive.tenant().0,
                event: event.into(),
                actor: "http:anonymous".into(),
                peer: peer.to_string(),
                study_uid: Some(study.to_string()),
                outcome: if found.is_empty() { "not found" } else { "success" }.into(),
                detail: Some(detail),
                ..pacs_store::AuditEvent::default()
            })
            .await;
        found
            .into_iter()
            .next()
            .ok_or_else(|| (StatusCode::NOT_FOUND, "no such instance\n").into_response())
    }
}

/// The HTTP routes.
pub fn router(archive: Arc<Archive>, config: WebConfig, metrics: MetricsRender) -> Router {
    let state = WebState {
        archive,
        config: Arc::new(config),
    };
    let dicomweb = Router::new()
        .route("/studies", get(qido::studies).post(stow::store))
        .route("/series", get(qido::all_series))
        .route("/instances", get(qido::all_instances))
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route("/studies/{study}", get(wado::study).post(stow::store_in_study))
        .route("/studies/{study}/metadata", get(metadata::study))
        .route("/studies/{study}/series/{series}/metadata", get(metadata::series))
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(metadata::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
            get(metadata::bulkdata),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(frames::frames),
        )
        .route("/studies/{study}/series/{series}", get(wado::series))
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            get(wado::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(qido::series_instances),
        )
        .with_state(state.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let text = metrics();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response() }
            }),
        )
        .nest("/dicom-web", dicomweb)
        .route("/wado", get(wado_uri::wado).with_state(state))
}

/// Serves `router` until `shutdown` turns true, then finishes requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|s| *s).await;
    })
    .await
}
