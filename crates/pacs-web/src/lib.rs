//! HTTP front end: `/healthz`, Prometheus `/metrics`, DICOMweb under `/dicom-web` (QIDO-RS,
//! WADO-RS, STOW-RS), WADO-URI at `/wado` and the REST API under `/api`, all behind the
//! authentication middleware of [`auth`], which decides from the route table of [`routes`]
//! what each needs; the embedded web UI (`ui`) answers everything else.

mod access_audit;
mod admin;
mod api;
pub mod auth;
mod body_rate;
mod credentials;
mod frames;
pub mod fuzzing;
mod health;
pub mod http_metrics;
mod jobs;
mod listen;
mod metadata;
mod origin;
pub mod password;
mod qido;
mod rendered;
pub mod routes;
mod stow;
mod tenant_prefix;
mod tenants;
pub mod throttle;
mod ui;
mod wado;
mod wado_uri;
mod worklist;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pacs_archive::{Archive, Platform};

pub use body_rate::BodyRate;
pub use listen::{serve, ServeConfig, TlsFiles};

/// Renders the metrics exposition text; provided by the binary, which owns the recorder and
/// refreshes the gauges it reads from the index and the disks at each scrape.
pub type MetricsRender = Arc<dyn Fn() -> futures::future::BoxFuture<'static, String> + Send + Sync>;

/// HTTP settings the binary passes in.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest STOW-RS part accepted (413 beyond).
    pub stow_max_part_bytes: u64,
    /// Largest STOW-RS request accepted (413 beyond).
    pub stow_max_request_bytes: u64,
    pub auth: auth::AuthConfig,
    /// Origins allowed to call us from a browser (CORS), and to send state-changing requests
    /// from a page of theirs; empty means CORS stays off.
    pub cors_allowed_origins: Vec<String>,
    /// The root clients reach us at (`https://pacs.example.org`), for the URLs we hand out
    /// (RetrieveURL, BulkDataURI); without it, see [`WebConfig::public_root`].
    pub public_base_url: Option<String>,
    /// Host header values trusted for those URLs when `public_base_url` is not set.
    pub allowed_hosts: Vec<String>,
    /// The address the HTTP listener is bound to.
    pub listen: SocketAddr,
    /// Whether HTTP is served over TLS (the scheme of the URLs we hand out).
    pub tls: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            stow_max_part_bytes: 2 << 30,
            stow_max_request_bytes: 16 << 30,
            auth: auth::AuthConfig::default(),
            cors_allowed_origins: Vec::new(),
            public_base_url: None,
            allowed_hosts: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: false,
        }
    }
}

/// What every handler can reach. The router holds one for the default tenant; the middleware
/// of [`auth`] puts the request's own (its tenant's archive, and the `/t/{name}` prefix it came
/// by) in the request's extensions, and handlers take that one (`Extension<WebState>`): the
/// tenant is chosen there, once, and nothing past it names one.
#[derive(Clone)]
pub struct WebState {
    platform: Arc<Platform>,
    /// The request's tenant.
    archive: Arc<Archive>,
    /// `/t/{name}` when the request came by a tenant's prefix: the URLs handed out keep it.
    prefix: Option<String>,
    config: Arc<WebConfig>,
    auth: Arc<auth::AuthState>,
    /// Viewing sessions, audited once each rather than per frame.
    accesses: access_audit::AccessSessions,
    /// What each route needs, from the route table.
    rules: Arc<routes::Rules>,
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
    /// The index or the blob store does not answer (503, try again).
    #[error("{0}")]
    Unavailable(String),
}

/// Archive failures as HTTP answers: an engine out of reach is 503 (a load balancer or client
/// tries again), anything else 500 with the details in the log only.
impl From<pacs_archive::ArchiveError> for ApiError {
    fn from(e: pacs_archive::ArchiveError) -> ApiError {
        match e {
            pacs_archive::ArchiveError::Unavailable(m) => ApiError::Unavailable(m),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<pacs_store::IndexError> for ApiError {
    fn from(e: pacs_store::IndexError) -> ApiError {
        ApiError::from(pacs_archive::ArchiveError::from(e))
    }
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
            ApiError::Unavailable(m) => {
                tracing::error!(error = %m, "storage engine unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the archive's database or object store does not answer: try again later".to_string(),
                    Some(5),
                )
            }
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
    /// This state for another tenant (the same prefix, the same server).
    pub(crate) fn for_tenant(&self, archive: Arc<Archive>) -> WebState {
        WebState {
            archive,
            ..self.clone()
        }
    }

    /// The tenant a log-in name is for, and the user name within it: `user@tenant` names it
    /// (split at the last `@`, and only when what follows is a tenant's name, so that a user
    /// called `jean@chu.fr` of the default tenant stays one), else the request's prefix, else
    /// the default tenant.
    pub(crate) fn login_tenant(&self, login: &str) -> (WebState, String) {
        if let Some((user, tenant)) = login.rsplit_once('@') {
            // `op@platform`: an operator, a user of the platform itself.
            let archive = if tenant == pacs_store::tenants::PLATFORM_NAME {
                self.platform.archive(pacs_model::TenantId::PLATFORM)
            } else {
                self.platform.by_name(tenant)
            };
            if let Some(archive) = archive {
                return (self.for_tenant(archive), user.to_string());
            }
        }
        let prefixed = self
            .prefix
            .as_deref()
            .and_then(|p| p.strip_prefix("/t/"))
            .and_then(|name| self.platform.by_name(name));
        match prefixed {
            Some(archive) => (self.for_tenant(archive), login.to_string()),
            None => (self.clone(), login.to_string()),
        }
    }

    /// Whether the request's tenant is disabled (no log-ins, no stores).
    pub(crate) fn tenant_disabled(&self) -> bool {
        self.platform
            .record(self.archive.tenant())
            .is_some_and(|t| t.disabled)
    }

    /// The DICOMweb root as clients should reach it, for RetrieveURL and BulkDataURI: the
    /// tenant's prefix kept when the request came by it (see [`WebConfig::public_root`]).
    pub(crate) fn dicomweb_base(&self, headers: &axum::http::HeaderMap) -> String {
        format!(
            "{}{}/dicom-web",
            self.config.public_root(headers),
            self.prefix.as_deref().unwrap_or("")
        )
    }

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
            .map_err(|e| ApiError::from(e).into_response())?;
        let lines = if !found.is_empty() && access_audit::aggregated(event) {
            self.accesses.record(access_audit::Access {
                tenant: self.archive.tenant().0,
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
            self.archive.record(line).await;
        }
        found
            .into_iter()
            .next()
            .ok_or_else(|| (StatusCode::NOT_FOUND, "no such instance\n").into_response())
    }
}

/// The HTTP routes: the table of [`routes`], each behind the middleware of [`auth`], which
/// decides from the matched route what the request needs; the same-origin guard of [`origin`]
/// in front of them for state-changing requests; the UI as the fallback.
pub fn router(platform: Arc<Platform>, config: WebConfig, metrics: MetricsRender) -> Router {
    let accesses = access_audit::AccessSessions::default();
    accesses.spawn_flusher(&platform);
    let routes = routes::table(metrics);
    http_metrics::register(routes.iter().map(|r| &r.spec));
    let state = WebState {
        archive: platform.default_archive(),
        platform,
        prefix: None,
        auth: auth::state(config.auth.clone()),
        config: Arc::new(config),
        accesses,
        rules: Arc::new(routes::Rules::of(routes.iter().map(|r| r.spec.clone()))),
    };
    let mut router = Router::new();
    for route in routes {
        router = router.route(route.spec.path, route.handler);
    }
    let router = router
        .fallback(ui::serve)
        .with_state(state.clone())
        // `Router::layer` wraps each route after matching, so the middleware sees `MatchedPath`.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::same_origin_guard,
        ))
        .layer(cors_layer(&state.config.cors_allowed_origins))
        // Outermost, so that requests refused by the layers above are counted too.
        .layer(axum::middleware::from_fn(http_metrics::record));
    tenant_prefix::wrap(router)
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
