//! The durable jobs under `/api/jobs` (administrators only, by the route table): what the
//! archive owes the outside world (outbound HL7 messages…), with their state, attempts and
//! last error, and the retry of a failed one. Both are audited.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pacs_store::{JobFilter, JobState};
use serde_json::json;

use crate::{ApiError, WebState};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// `?state=failed&kind=hl7-outbound&before=ID&limit=N`: the tenant's jobs, newest first.
pub(crate) async fn list(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let filter = match job_filter(&params) {
        Ok(f) => f,
        Err(why) => {
            return state
                .refuse(peer, "jobs-read", StatusCode::BAD_REQUEST, why)
                .await
        }
    };
    let found = state.archive.index().jobs(&filter).await;
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let outcome = if found.is_ok() { "success" } else { "failure" };
    state
        .admin_audit(peer, "jobs-read", outcome, query.join("&"))
        .await;
    match found {
        Ok(jobs) => Json(jobs).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

fn job_filter(params: &[(String, String)]) -> Result<JobFilter, String> {
    let mut f = JobFilter {
        limit: DEFAULT_LIMIT,
        ..JobFilter::default()
    };
    let number = |name: &str, value: &str| {
        value
            .parse::<i64>()
            .map_err(|_| format!("{name} {value:?} is not a number"))
    };
    for (name, value) in params {
        match name.as_str() {
            "state" => {
                f.state = Some(
                    JobState::parse(value)
                        .ok_or_else(|| format!("state {value:?} is not pending, running, done or failed"))?,
                )
            }
            "kind" => f.kind = Some(value.clone()).filter(|v| !v.is_empty()),
            "before" => f.before = Some(number(name, value)?),
            "limit" => f.limit = number(name, value)?.clamp(1, i64::from(MAX_LIMIT)) as u32,
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(f)
}

/// Sends a failed (or backing-off) job again now, its attempts counted afresh.
pub(crate) async fn retry(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<i64>,
) -> Response {
    let audit = state.admin_event(peer, "job-retry", "success", format!("job {id}"));
    match state.archive.index().retry_job(id, audit).await {
        Ok(true) => Json(json!({ "retried": id })).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no failed or pending job {id}\n")).into_response(),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}
