//! `/api/tenants`: the platform operator manages the establishments it hosts (the same
//! operations as `openpacs tenant`), and reads their usage. Nothing here reads patient data:
//! the operator's role grants `Operate` only (see `auth::allows`), and every change is in the
//! platform's audit trail.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pacs_store::tenants::{check_ae_title, check_facility, check_name};
use pacs_store::{AuditEvent, TenantFields, TenantOutcome, TenantRecord, TenantWrite};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiError, WebState};

fn tenant_json(t: &TenantRecord, usage: &HashMap<i64, u64>) -> serde_json::Value {
    json!({
        "name": t.name,
        "title": t.title,
        "aeTitles": t.ae_titles,
        "hl7Facilities": t.hl7_facilities,
        "issuerOfPatientId": t.issuer_of_patient_id,
        "quotaBytes": t.quota_bytes,
        "usageBytes": usage.get(&t.pk).copied().unwrap_or(0),
        "disabled": t.disabled,
        "createdAt": t.created_at,
    })
}

/// `GET /api/tenants`: every tenant with its routes, quota and usage.
pub(crate) async fn list(axum::Extension(state): axum::Extension<WebState>) -> Response {
    let usage: HashMap<i64, u64> = match state.platform.system().tenant_usage().await {
        Ok(usage) => usage.into_iter().collect(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let tenants: Vec<_> = state
        .platform
        .records()
        .iter()
        .map(|t| tenant_json(&state.platform.with_routes(t), &usage))
        .collect();
    Json(tenants).into_response()
}

/// Missing: left as it is; `null`: removed (the quota).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TenantBody {
    name: Option<String>,
    title: Option<String>,
    ae_titles: Option<Vec<String>>,
    hl7_facilities: Option<Vec<String>>,
    issuer_of_patient_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    quota_bytes: Option<Option<u64>>,
}

impl TenantBody {
    fn fields(self) -> Result<TenantFields, String> {
        for ae in self.ae_titles.iter().flatten() {
            check_ae_title(ae)?;
        }
        for facility in self.hl7_facilities.iter().flatten() {
            check_facility(facility)?;
        }
        Ok(TenantFields {
            title: self.title,
            ae_titles: self.ae_titles,
            hl7_facilities: self.hl7_facilities,
            issuer_of_patient_id: self.issuer_of_patient_id,
            quota_bytes: self.quota_bytes,
        })
    }
}

/// Applies `write`, audited in the platform's trail; answers with the tenant as it now is.
async fn apply(state: &WebState, peer: SocketAddr, write: TenantWrite, created: bool) -> Response {
    let name = write.name().to_string();
    let what = match &write {
        TenantWrite::Add { .. } => "add",
        TenantWrite::Set { .. } => "set",
        TenantWrite::Disable { .. } => "disable",
        TenantWrite::Enable { .. } => "enable",
        TenantWrite::GrantAccess { .. } => "grant-access",
        TenantWrite::RevokeAccess { .. } => "revoke-access",
    };
    let audit = AuditEvent {
        event: "tenant".into(),
        actor: crate::auth::current_actor(),
        peer: peer.to_string(),
        outcome: "success".into(),
        detail: Some(format!("{what} {name}")),
        ..AuditEvent::default()
    };
    match state.platform.write_tenant(write, audit).await {
        Ok(TenantOutcome::Done { .. }) => {}
        Ok(TenantOutcome::NotFound) => {
            return (StatusCode::NOT_FOUND, format!("no tenant {name}\n")).into_response()
        }
        Ok(TenantOutcome::Conflict(why)) => {
            return (StatusCode::CONFLICT, format!("{why}\n")).into_response()
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let usage: HashMap<i64, u64> = match state.platform.system().tenant_usage().await {
        Ok(usage) => usage.into_iter().collect(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    match state.platform.records().iter().find(|t| t.name == name) {
        Some(t) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(tenant_json(t, &usage))).into_response()
        }
        None => (StatusCode::NOT_FOUND, format!("no tenant {name}\n")).into_response(),
    }
}

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

fn parse(bytes: &Bytes) -> Result<TenantBody, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// `POST /api/tenants` `{name, title?, aeTitles?, hl7Facilities?, issuerOfPatientId?,
/// quotaBytes?}`: 201, 400 (what is wrong), 409 (the name, an AE title or a facility taken).
pub(crate) async fn add(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bytes: Bytes,
) -> Response {
    let checked = parse(&bytes).and_then(|mut body| {
        let name = body.name.take().ok_or("a tenant needs a name")?;
        check_name(&name)?;
        let mut fields = body.fields()?;
        fields.ae_titles.get_or_insert_with(Vec::new);
        fields.hl7_facilities.get_or_insert_with(Vec::new);
        Ok(TenantWrite::Add { name, fields })
    });
    match checked {
        Ok(write) => apply(&state, peer, write, true).await,
        Err(why) => bad_request(why),
    }
}

/// `PUT /api/tenants/{name}`: changes what the body names (`quotaBytes: null` removes the
/// quota; a list given replaces the list).
pub(crate) async fn set(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let checked = parse(&bytes).and_then(|body| {
        if body.name.as_ref().is_some_and(|n| *n != name) {
            return Err("a tenant's name does not change".to_string());
        }
        body.fields()
    });
    match checked {
        Ok(fields) => apply(&state, peer, TenantWrite::Set { name, fields }, false).await,
        Err(why) => bad_request(why),
    }
}

/// `POST /api/tenants/{name}/disable`: no new stores, messages or log-ins; the data stays.
pub(crate) async fn disable(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> Response {
    apply(&state, peer, TenantWrite::Disable { name }, false).await
}

/// `POST /api/tenants/{name}/enable`.
pub(crate) async fn enable(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> Response {
    apply(&state, peer, TenantWrite::Enable { name }, false).await
}
