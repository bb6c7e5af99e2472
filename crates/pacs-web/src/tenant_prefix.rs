//! Every route also exists under a tenant's prefix, `/t/{name}/…` (e.g.
//! `/t/montelimar/dicom-web/studies`): the prefix is taken off before routing, so the route
//! table, its rules and the handlers know one set of paths, and kept in the request as
//! [`RequestedTenant`] for the middleware of [`crate::auth`], which alone decides what it
//! means (the caller's own tenant, or a 404 exactly like a tenant that does not exist).

use axum::extract::Request;
use axum::http::Uri;
use axum::Router;

/// The tenant name a request's `/t/{name}` prefix gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestedTenant(pub(crate) String);

/// `router`, answering under `/t/{name}/…` too.
pub(crate) fn wrap(router: Router) -> Router {
    let service = tower::ServiceBuilder::new().map_request(strip).service(router);
    Router::new().fallback_service(service)
}

/// `/t/NAME/rest?query` → `/rest?query` with `RequestedTenant(NAME)`; `/t/NAME` alone is
/// `/` (the UI). Other paths pass unchanged.
fn strip(mut request: Request) -> Request {
    let Some((name, rest)) = split(request.uri().path()) else {
        return request;
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let target = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    };
    let Ok(path_and_query) = target.parse() else {
        return request;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(parts) else {
        return request;
    };
    let name = name.to_string();
    *request.uri_mut() = uri;
    request.extensions_mut().insert(RequestedTenant(name));
    request
}

/// The name and the rest of a `/t/{name}…` path.
fn split(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("/t/")?;
    let (name, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
    (!name.is_empty()).then_some((name, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_taken_off_and_kept() {
        let request = Request::builder()
            .uri("/t/montelimar/dicom-web/studies?PatientID=1")
            .body(axum::body::Body::empty())
            .unwrap();
        let request = strip(request);
        assert_eq!(request.uri().to_string(), "/dicom-web/studies?PatientID=1");
        assert_eq!(
            request.extensions().get::<RequestedTenant>(),
            Some(&RequestedTenant("montelimar".into()))
        );
        for (path, expected) in [
            ("/t/valence", Some(("valence", ""))),
            ("/t/valence/", Some(("valence", "/"))),
            ("/t/", None),
            ("/tenants", None),
            ("/dicom-web/t/x", None),
        ] {
            assert_eq!(split(path), expected, "{path}");
        }
    }
}
