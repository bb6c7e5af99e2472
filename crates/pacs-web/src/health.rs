//! `GET /healthz`: whether this node can serve, for a load balancer routing around a bad one.
//! 200 when the index answers and the blob store can be read, 503 otherwise, with one line per
//! check. Public, so it says only "ok" or "unreachable": the reason goes to the log.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::WebState;

/// A check slower than this counts as failed: a load balancer's own timeout is a few seconds.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn healthz(axum::Extension(state): axum::Extension<WebState>) -> Response {
    let index = async {
        match tokio::time::timeout(CHECK_TIMEOUT, state.archive.system().ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health check: the index does not answer");
                false
            }
            Err(_) => {
                tracing::warn!("health check: the index did not answer within 2 s");
                false
            }
        }
    };
    let archive = state.archive.clone();
    let blobs = async move {
        // A directory read on a blocking thread (the store may be a network file system that
        // hangs), or a request to the bucket.
        match tokio::time::timeout(CHECK_TIMEOUT, archive.blobs().check()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "health check: the blob store cannot be read");
                false
            }
            Err(_) => {
                tracing::warn!("health check: the blob store did not answer within 2 s");
                false
            }
        }
    };
    let (index, blobs) = tokio::join!(index, blobs);
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let (status, first) = if index && blobs {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = format!("{first}\nindex: {}\nblob store: {}\n", word(index), word(blobs));
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
