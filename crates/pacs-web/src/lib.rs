//! HTTP front end: `/healthz`, Prometheus `/metrics`, DICOMweb under `/dicom-web` (QIDO-RS,
//! WADO-RS, STOW-RS), WADO-URI at `/wado` and the REST API under `/api`, all behind the
//! authentication middleware of [`auth`]; the embedded web UI (`ui`) answers everything else.

mod access_audit;
mod admin;
mod api;
pub mod auth;
mod body_rate;
mod credentials;
mod frames;
mod listen;
mod metadata;
pub mod password;
mod qido;
mod rendered;
mod stow;
pub mod throttle;
mod ui;
mod wado;
mod wado_uri;
mod worklist;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pacs_archive::Archive;

pub use body_rate::BodyRate;
pub use listen::{serve, ServeConfig, TlsFiles};

/// Renders the metrics exposition text; provided by the binary, which owns the recorder.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// HTTP settings the binary passes in.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest STOW-RS part accepted (413 beyond).
    pub stow_max_part_bytes: u64,
    /// Largest STOW-RS request accepted (413 beyond).
    pub stow_max_request_bytes: u64,
    pub auth: auth::AuthConfig,
    /// Origins allowed to call us from a browser (CORS); empty means CORS stays off.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            stow_max_part_bytes: 2 << 30,
            stow_max_request_bytes: 16 << 30,
            auth: auth::AuthConfig::default(),
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct WebState {
    archive: Arc<Archive>,
    config: Arc<WebConfig>,
    auth: Arc<auth::AuthState>,
    /// Viewing sessions, audited once each rather than per frame.
    accesses: access_audit::AccessSessions,
}

/// Failures of the HTTP front end, mapped to a status in one place. Client errors say what is
/// wrong; internal ones are logged and never shown.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Password log-ins refused for this long: too many failures for the account or from the
    /// address (one answer for both, whether the password was right or not).
    #[error("too many failed log-ins")]
    TooManyAttempts(std::time::Duration),
    /// Every password-hashing slot busy and the queue full.
    #[error("busy checking passwords")]
    Busy(std::time::Duration),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Whole seconds, rounded up: what `Retry-After` says.
        let secs = |wait: &std::time::Duration| (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let (status, message, retry_after) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone(), None),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "HTTP request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                    None,
                )
            }
            ApiError::TooManyAttempts(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed log-ins for this account or from this address: try again in {} s, \
                     or ask an administrator to unlock the account",
                    secs(wait)
                ),
                Some(secs(wait)),
            ),
            ApiError::Busy(wait) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("busy checking passwords: try again in {} s", secs(wait)),
                Some(secs(wait)),
            ),
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        response
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
        let lines = if !found.is_empty() && access_audit::aggregated(event) {
            self.accesses.record(access_audit::Access {
                actor: crate::auth::current_actor(),
                peer: peer.to_string(),
                study,
                series,
                instance,
                event,
            })
        } else {
            vec![pacs_store::AuditEvent {
                event: event.into(),
                actor: crate::auth::current_actor(),
                peer: peer.to_string(),
                study_uid: Some(study.to_string()),
                outcome: if found.is_empty() { "not found" } else { "success" }.into(),
                detail: Some(detail),
                ..pacs_store::AuditEvent::default()
            }]
        };
        for line in lines {
            let tenant = self.archive.tenant().0;
            self.archive
                .record(pacs_store::AuditEvent { tenant, ..line })
                .await;
        }
        found
            .into_iter()
            .next()
            .ok_or_else(|| (StatusCode::NOT_FOUND, "no such instance\n").into_response())
    }
}

/// The HTTP routes.
pub fn router(archive: Arc<Archive>, config: WebConfig, metrics: MetricsRender) -> Router {
    let accesses = access_audit::AccessSessions::default();
    accesses.spawn_flusher(&archive);
    let state = WebState {
        archive,
        auth: auth::state(config.auth.clone()),
        config: Arc::new(config),
        accesses,
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
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(rendered::frames),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
            get(rendered::frames_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(rendered::instance),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            get(rendered::instance_thumbnail),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(rendered::series_thumbnail),
        )
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
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
        .route("/wado", get(wado_uri::wado).with_state(state.clone()))
        .nest("/api", api_router(state.clone()))
        .fallback(ui::serve)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::middleware,
        ))
        .layer(cors_layer(&state.config.cors_allowed_origins))
}

/// The REST API under `/api`.
fn api_router(state: WebState) -> Router {
    Router::new()
        .route("/login", axum::routing::post(auth::login))
        .route("/logout", axum::routing::post(auth::logout))
        .route("/me", get(auth::me))
        .route("/patients", get(api::patients))
        .route("/studies", get(api::studies))
        .route("/studies/{study}", get(api::study).delete(api::delete))
        .route("/studies/{study}/archive", get(api::archive))
        .route("/studies/{study}/reports", get(api::reports))
        .route("/review/studies", get(api::review))
        .route("/worklist", get(worklist::worklist))
        .route("/merges", get(api::merges))
        .route("/merges/{id}/undo", axum::routing::post(api::undo_merge))
        .route("/studies/{study}/series", get(api::study_series))
        .route(
            "/studies/{study}/series/{series}",
            axum::routing::delete(api::delete),
        )
        .route(
            "/studies/{study}/series/{series}/instances",
            get(api::series_instances),
        )
        .route(
            "/studies/{study}/series/{series}/instances/{instance}",
            axum::routing::delete(api::delete),
        )
        .route("/series", get(api::series))
        .route("/instances", get(api::instances))
        .route("/stats", get(api::stats))
        .route("/users", get(admin::users).post(admin::add_user))
        .route("/users/{username}", axum::routing::delete(admin::remove_user))
        .route("/users/{username}/role", axum::routing::put(admin::set_role))
        .route(
            "/users/{username}/password",
            axum::routing::put(admin::set_password),
        )
        .route("/users/{username}/unlock", axum::routing::post(admin::unlock))
        .route("/aes", get(admin::aes))
        .route(
            "/aes/{aet}",
            get(admin::ae).put(admin::put_ae).delete(admin::remove_ae),
        )
        .route("/aes/{aet}/echo", axum::routing::post(admin::echo))
        .route("/audit", get(admin::audit))
        .route("/openapi.json", get(api::openapi))
        .with_state(state)
}

/// CORS for the configured origins only; with none configured the layer adds nothing, so a
/// browser refuses cross-origin reads as it would without us.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let origins: Vec<axum::http::HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::HEAD,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE])
        .expose_headers([header::WARNING, header::CONTENT_LENGTH])
        .allow_credentials(true)
        .max_age(std::time::Duration::from_secs(600))
}
