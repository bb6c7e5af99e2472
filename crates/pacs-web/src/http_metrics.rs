//! The HTTP front end's Prometheus metrics: requests and their latency by route, method and
//! status class, connections refused and bodies cut. Every label value comes from a bounded
//! set (the route table's templates, a fixed list of methods, five status classes), so that
//! no request can create new series: an attacker choosing paths or methods would otherwise
//! grow the registry without bound.

use std::time::Instant;

use ::metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::routes::RouteSpec;

pub const REQUESTS: &str = "openpacs_http_requests_total";
pub const REQUEST_SECONDS: &str = "openpacs_http_request_seconds";
pub const CONNECTIONS_REFUSED: &str = "openpacs_http_connections_refused_total";
pub const BODIES_CUT: &str = "openpacs_http_bodies_cut_total";

/// The route label of requests no route matched: the web UI's files, and unknown paths.
const FALLBACK_ROUTE: &str = "fallback";
/// The status classes created at zero for every route (1xx and 3xx are rare enough to
/// appear only when they happen).
const ZEROED_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// Describes the HTTP metrics and creates, at zero, one request counter per route, method
/// and status class and one latency histogram per route and method.
pub fn register<'a>(routes: impl IntoIterator<Item = &'a RouteSpec>) {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by route template, method and status class"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "time from a request's arrival to its response headers, by route template and method (a streamed body may take longer)"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "HTTP connections refused, by reason (limit: too many open)"
    );
    counter!(CONNECTIONS_REFUSED, "reason" => "limit").increment(0);
    describe_counter!(BODIES_CUT, "request bodies cut for arriving too slowly");
    counter!(BODIES_CUT).increment(0);
    for spec in routes {
        let method = method_label(&spec.method);
        for status in ZEROED_CLASSES {
            counter!(REQUESTS, "route" => spec.path, "method" => method, "status" => status).increment(0);
        }
        let _ = histogram!(REQUEST_SECONDS, "route" => spec.path, "method" => method);
    }
}

/// Middleware: counts the request and records its latency under its route template. Added
/// with `Router::layer`, so it runs after matching and sees `MatchedPath`.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| FALLBACK_ROUTE.to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = status_class(response.status().as_u16());
    counter!(REQUESTS, "route" => route.clone(), "method" => method, "status" => status).increment(1);
    histogram!(REQUEST_SECONDS, "route" => route, "method" => method).record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label, from a fixed set (hyper accepts any token as a method).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_bounded_sets() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(999), "5xx");
    }
}
