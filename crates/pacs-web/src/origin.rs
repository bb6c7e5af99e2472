//! Which origin we are: the root of the URLs we hand out (never a Host header we do not know),
//! and the guard that refuses state-changing requests sent by another site's page.
//!
//! A browser attaches cached Basic credentials, and a session cookie from a sibling origin,
//! to requests a foreign page makes; such a page cannot set a JSON content type without a CORS
//! preflight, and its browser names it in `Origin` (or `Referer`). So a state-changing request
//! whose `Origin`/`Referer` is neither ours nor configured is refused (403), and one to the
//! REST API with a body must be JSON (415). Requests naming no origin at all (curl, DICOMweb
//! clients, modalities) are not from a page and stay allowed.

use std::net::SocketAddr;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pacs_store::AuditEvent;

use crate::{WebConfig, WebState};

impl WebConfig {
    /// The root clients reach us at, without a trailing slash: `public_base_url` when set;
    /// else our scheme with the request's Host when we know that host (the listen address,
    /// `localhost` on a loopback listener, or `allowed_hosts`); else the listen address. A
    /// forged Host never reaches a RetrieveURL.
    pub(crate) fn public_root(&self, headers: &HeaderMap) -> String {
        if let Some(base) = &self.public_base_url {
            return base.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls { "https" } else { "http" };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| self.trusts_host(h))
            .map_or_else(|| self.listen.to_string(), str::to_string);
        format!("{scheme}://{host}")
    }

    fn trusts_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == self.listen.to_string()
            || (self.listen.ip().is_loopback() && host == format!("localhost:{}", self.listen.port()))
            || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host))
    }

    /// Whether a page of `origin` (`scheme://host[:port]`) may change state here: our own
    /// origin (the request's Host, over our scheme), that of `public_base_url`, or one of
    /// `cors_allowed_origins`. An opaque origin (`null`) never may.
    fn allows_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        let origin = origin.trim_end_matches('/');
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        let ours = if self.tls { "https" } else { "http" };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        (scheme == ours && host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str())))
            || self
                .public_base_url
                .as_deref()
                .and_then(origin_of)
                .is_some_and(|o| o.eq_ignore_ascii_case(origin))
            || self
                .cors_allowed_origins
                .iter()
                .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// `scheme://authority` of an absolute URL (a `Referer`, `public_base_url`).
fn origin_of(url: &str) -> Option<String> {
    let uri = url.parse::<Uri>().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// The origin a browser says the request comes from: `Origin`, else that of `Referer`. An
/// unreadable value counts as foreign (`null`).
fn claimed_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.to_str().unwrap_or("null").to_string());
    }
    let referer = headers.get(header::REFERER)?;
    Some(
        referer
            .to_str()
            .ok()
            .and_then(origin_of)
            .unwrap_or_else(|| "null".into()),
    )
}

fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    media_type
        .is_some_and(|t| t == "application/json" || (t.starts_with("application/") && t.ends_with("+json")))
}

/// The middleware: state-changing requests from a foreign page get 403 (audited), REST API
/// ones with a body that is not JSON 415; everything else passes untouched.
pub(crate) async fn same_origin_guard(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !changes_state(request.method()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(origin) = claimed_origin(headers) {
        if !state.config.allows_origin(&origin, headers) {
            let shown: String = origin.chars().take(200).collect();
            state
                .archive
                .record(AuditEvent {
                    event: "http-access".into(),
                    actor: "http:anonymous".into(),
                    peer: peer.to_string(),
                    outcome: "forbidden".into(),
                    detail: Some(format!(
                        "{} {}: cross-origin request from {shown:?}",
                        request.method(),
                        request.uri().path()
                    )),
                    ..AuditEvent::default()
                })
                .await;
            return (
                StatusCode::FORBIDDEN,
                "forbidden: a state-changing request from another origin (see cors_allowed_origins)\n",
            )
                .into_response();
        }
    }
    let api = request.uri().path().starts_with("/api/");
    // From the body itself, not its headers: an HTTP/2 body need not announce its length.
    if api && !request.body().is_end_stream() && !is_json(headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the REST API takes JSON bodies (Content-Type: application/json)\n",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn config() -> WebConfig {
        WebConfig {
            cors_allowed_origins: vec!["https://viewer.example.org".into()],
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ..WebConfig::default()
        }
    }

    #[test]
    fn urls_we_hand_out_use_a_host_we_know() {
        let c = config();
        let root = |host: &str| c.public_root(&headers(&[(header::HOST, host)]));
        assert_eq!(root("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(root("localhost:8080"), "http://localhost:8080");
        assert_eq!(root("evil.example"), "http://127.0.0.1:8080");
        assert_eq!(c.public_root(&HeaderMap::new()), "http://127.0.0.1:8080");
        let listed = WebConfig {
            allowed_hosts: vec!["pacs.example.org".into()],
            tls: true,
            ..config()
        };
        let h = headers(&[(header::HOST, "PACS.example.org")]);
        assert_eq!(listed.public_root(&h), "https://PACS.example.org");
        let public = WebConfig {
            public_base_url: Some("https://pacs.example.org/".into()),
            ..config()
        };
        assert_eq!(public.public_root(&h), "https://pacs.example.org");
    }

    #[test]
    fn only_our_origin_and_configured_ones_may_change_state() {
        let c = config();
        let ours = headers(&[(header::HOST, "127.0.0.1:8080")]);
        assert!(c.allows_origin("http://127.0.0.1:8080", &ours));
        assert!(c.allows_origin("https://viewer.example.org", &ours));
        assert!(
            !c.allows_origin("https://127.0.0.1:8080", &ours),
            "another scheme is another origin"
        );
        assert!(!c.allows_origin("http://evil.example", &ours));
        assert!(!c.allows_origin("http://127.0.0.1:8081", &ours));
        assert!(!c.allows_origin("null", &ours));
        assert!(!c.allows_origin("http://127.0.0.1:8080", &HeaderMap::new()));
        let referer = headers(&[(header::REFERER, "http://evil.example/page?x=1")]);
        assert_eq!(claimed_origin(&referer).as_deref(), Some("http://evil.example"));
        assert_eq!(claimed_origin(&HeaderMap::new()), None);
    }

    #[test]
    fn json_bodies_are_recognised() {
        let ct = |v: &str| is_json(&headers(&[(header::CONTENT_TYPE, v)]));
        assert!(ct("application/json") && ct("Application/JSON; charset=utf-8"));
        assert!(ct("application/merge-patch+json"));
        assert!(!ct("text/plain") && !ct("application/x-www-form-urlencoded"));
        assert!(!ct("multipart/form-data; boundary=x") && !ct("text/plain; application/json"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
