//! The web UI: the files of `web/` (plain JavaScript modules and CSS, no build step) embedded
//! in the binary with `rust-embed` and served at `/`. Any other path outside the data roots
//! answers `index.html`, so that the client-side routes (`/studies/…`) survive a reload.
//!
//! Every answer carries a strict Content-Security-Policy (our own origin only, no inline
//! script, no framing) and an `ETag` (the file's SHA-256, computed at build time); the files
//! are not renamed per version, so browsers revalidate them (`no-cache`) and get a 304 when
//! nothing changed.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../../web/"]
struct Assets;

/// The policy sent with every UI answer: scripts, styles, images and requests from our own
/// origin only (images also as `blob:`/`data:` for previews drawn in the page).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Paths the UI never answers: the data roots keep their own 404s.
fn is_reserved(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "api" | "dicom-web" | "wado" | "healthz" | "metrics")
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The fallback handler: an embedded file, `index.html` for the client-side routes, 404 for
/// unknown paths under the data roots and for missing files that look like assets.
pub(crate) async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if is_reserved(path) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "method not allowed\n",
        )
            .into_response();
    }
    let wanted = path.trim_start_matches('/');
    let (name, file) = match Assets::get(wanted).filter(|_| !wanted.is_empty()) {
        Some(file) => (wanted, file),
        // A missing file of a known asset type is a broken link, not a page of the app (a
        // study's route ends in a UID, whose dots are no extension).
        None if content_type(wanted) != "application/octet-stream" => {
            return (StatusCode::NOT_FOUND, "not found\n").into_response();
        }
        None => match Assets::get("index.html") {
            Some(file) => ("index.html", file),
            None => return (StatusCode::NOT_FOUND, "the UI is not built in\n").into_response(),
        },
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn get(path: &str) -> Response {
        serve(Method::GET, path.parse().unwrap(), HeaderMap::new()).await
    }

    #[tokio::test]
    async fn files_routes_and_data_roots() {
        let index = get("/").await;
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(index.headers()[header::CACHE_CONTROL], "no-cache");
        let csp = index.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        let etag = index.headers()[header::ETAG].clone();
        let body = to_bytes(index.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("app.js"));

        // A client-side route gets the page; a module its own type.
        let route = get("/studies/1.2.3").await;
        assert_eq!(route.status(), StatusCode::OK);
        assert_eq!(route.headers()[header::ETAG], etag);
        let js = get("/app.js").await;
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            get("/style.css").await.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );

        assert_eq!(get("/missing.js").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/api/nothing").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(get("/dicom-web/x").await.status(), StatusCode::NOT_FOUND);

        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        let again = serve(Method::GET, "/".parse().unwrap(), headers).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

        let post = serve(Method::POST, "/".parse().unwrap(), HeaderMap::new()).await;
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
