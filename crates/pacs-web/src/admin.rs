//! Administration under `/api` (administrators only, by `auth::access`): user accounts and
//! roles, the DICOM AE table with C-ECHO, and audit log searches. Every request leaves an
//! audit line, refusals included; passwords are hashed here and never come back out.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pacs_archive::{AeChange, AeEntry, AeSource, Peer};
use pacs_store::{AccountWrite, AuditEvent, AuditFilter, Role, UserAccount};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{check_username, MIN_PASSWORD_LEN};
use crate::{ApiError, WebState};

const DEFAULT_AUDIT_LIMIT: u32 = 100;
const MAX_AUDIT_LIMIT: u32 = 1000;

impl WebState {
    /// Appends an administration audit line for the caller.
    pub(crate) async fn admin_audit(&self, peer: SocketAddr, event: &str, outcome: &str, detail: String) {
        self.archive
            .record(self.admin_event(peer, event, outcome, detail))
            .await;
    }

    pub(crate) fn admin_event(
        &self,
        peer: SocketAddr,
        event: &str,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            event: event.into(),
            actor: crate::auth::current_actor(),
            peer: peer.to_string(),
            outcome: outcome.into(),
            detail: Some(detail),
            ..AuditEvent::default()
        }
    }

    /// A refusal: audited with its reason, answered with `status` and that reason.
    pub(crate) async fn refuse(
        &self,
        peer: SocketAddr,
        event: &str,
        status: StatusCode,
        why: String,
    ) -> Response {
        self.admin_audit(peer, event, "refused", why.clone()).await;
        (status, format!("{why}\n")).into_response()
    }

    /// The user named `username` in this archive's tenant (the index handle is scoped to it).
    async fn tenant_user(&self, username: &str) -> Result<Option<UserAccount>, ApiError> {
        self.archive.index().user(username).await.map_err(ApiError::from)
    }

    /// The user named `username` in this tenant, or the refusal to answer (404, audited).
    async fn existing_user(
        &self,
        peer: SocketAddr,
        event: &str,
        username: &str,
    ) -> Result<UserAccount, Response> {
        match self.tenant_user(username).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(self.not_a_user(peer, event, username).await),
            Err(e) => Err(e.into_response()),
        }
    }

    /// Applies a change to one user's account; the refusal to answer when there is no such
    /// user any more (404, audited) or the write failed.
    async fn write_user(
        &self,
        peer: SocketAddr,
        event: &str,
        username: &str,
        write: AccountWrite,
    ) -> Result<(), Response> {
        match self.archive.index().write_accounts(write).await {
            Ok(0) => Err(self.not_a_user(peer, event, username).await),
            Ok(_) => Ok(()),
            Err(e) => Err(internal(e)),
        }
    }

    async fn not_a_user(&self, peer: SocketAddr, event: &str, username: &str) -> Response {
        let why = format!("no user {username:?}");
        self.refuse(peer, event, StatusCode::NOT_FOUND, why).await
    }

    async fn tenant_users(&self) -> Result<Vec<UserAccount>, ApiError> {
        self.archive.index().users().await.map_err(ApiError::from)
    }
}

/// Parses a JSON request body, or says what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

fn internal(e: impl std::fmt::Display) -> Response {
    ApiError::Internal(e.to_string()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

fn user_json(u: &UserAccount) -> serde_json::Value {
    json!({
        "username": u.username,
        "role": u.role.as_str(),
        "createdAt": u.created_at,
        "lockedUntil": u.lock.as_ref().map(|l| &l.until),
    })
}

/// `GET /api/users`: the tenant's accounts and roles, never password hashes.
pub(crate) async fn users(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    match state.tenant_users().await {
        Ok(users) => {
            state
                .admin_audit(peer, "user-list", "success", format!("{} user(s)", users.len()))
                .await;
            Json(users.iter().map(user_json).collect::<Vec<_>>()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// A tenant's role (a tenant administrator cannot make anyone an operator).
fn parse_role(text: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == text)
        .ok_or_else(|| format!("unknown role {text:?}: admin, reader, referrer or uploader"))
}

fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!("a password has at least {MIN_PASSWORD_LEN} characters"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    role: String,
}

/// `POST /api/users` `{username, password, role}`: 201, 400 (what is wrong), 409 (exists).
pub(crate) async fn add_user(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    bytes: Bytes,
) -> Response {
    const EVENT: &str = "user-add";
    let checked = body::<NewUser>(&bytes).and_then(|u| {
        check_username(&u.username)?;
        check_password(&u.password)?;
        Ok((parse_role(&u.role)?, u))
    });
    let (role, new) = match checked {
        Ok(c) => c,
        Err(why) => return state.refuse(peer, EVENT, StatusCode::BAD_REQUEST, why).await,
    };
    match state.archive.index().user(&new.username).await {
        Ok(Some(_)) => {
            let why = format!("user {:?} already exists", new.username);
            return state.refuse(peer, EVENT, StatusCode::CONFLICT, why).await;
        }
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let password_hash = match state.auth.credentials.hash(&new.password).await {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let write = AccountWrite::AddUser {
        username: new.username.clone(),
        password_hash,
        role,
    };
    if let Err(e) = state.archive.index().write_accounts(write).await {
        return internal(e);
    }
    let detail = format!("{} ({})", new.username, role.as_str());
    state.admin_audit(peer, EVENT, "success", detail).await;
    let created = state.tenant_user(&new.username).await.ok().flatten();
    (
        StatusCode::CREATED,
        Json(
            created
                .as_ref()
                .map(user_json)
                .unwrap_or_else(|| json!({ "username": new.username, "role": role.as_str() })),
        ),
    )
        .into_response()
}

/// Whether taking `user`'s administrator role away would leave the tenant without one.
async fn is_last_admin(state: &WebState, user: &UserAccount) -> Result<bool, ApiError> {
    if user.role != Role::Admin {
        return Ok(false);
    }
    let users = state.tenant_users().await?;
    Ok(users.iter().filter(|u| u.role == Role::Admin).count() <= 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    role: String,
}

/// `PUT /api/users/{username}/role` `{role}`.
pub(crate) async fn set_role(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(username): Path<String>,
    bytes: Bytes,
) -> Response {
    const EVENT: &str = "user-role";
    let role = match body::<RoleChange>(&bytes).and_then(|c| parse_role(&c.role)) {
        Ok(r) => r,
        Err(why) => return state.refuse(peer, EVENT, StatusCode::BAD_REQUEST, why).await,
    };
    let user = match state.existing_user(peer, EVENT, &username).await {
        Ok(u) => u,
        Err(refused) => return refused,
    };
    match is_last_admin(&state, &user).await {
        Ok(true) if role != Role::Admin => {
            let why = format!("{username} is the last administrator: make another one first");
            return state.refuse(peer, EVENT, StatusCode::CONFLICT, why).await;
        }
        Ok(_) => {}
        Err(e) => return e.into_response(),
    }
    let write = AccountWrite::SetRole {
        username: username.clone(),
        role,
    };
    if let Err(refused) = state.write_user(peer, EVENT, &username, write).await {
        return refused;
    }
    let detail = format!("{username} ({})", role.as_str());
    state.admin_audit(peer, EVENT, "success", detail).await;
    Json(json!({ "username": username, "role": role.as_str() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PasswordChange {
    password: String,
    /// Also revoke the user's API tokens (when the password may have leaked with them).
    #[serde(default, alias = "revoke_tokens")]
    revoke_tokens: bool,
}

/// `PUT /api/users/{username}/password` `{password, revokeTokens?}`: ends the user's
/// sessions, and their API tokens if asked. Their cached Basic credentials stop working at
/// once (see `credentials::Credentials::check_basic`).
pub(crate) async fn set_password(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(username): Path<String>,
    bytes: Bytes,
) -> Response {
    const EVENT: &str = "user-passwd";
    let change = match body::<PasswordChange>(&bytes).and_then(|c| check_password(&c.password).map(|_| c)) {
        Ok(c) => c,
        Err(why) => return state.refuse(peer, EVENT, StatusCode::BAD_REQUEST, why).await,
    };
    if let Err(refused) = state.existing_user(peer, EVENT, &username).await {
        return refused;
    }
    let password_hash = match state.auth.credentials.hash(&change.password).await {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let write = AccountWrite::SetPassword {
        username: username.clone(),
        password_hash,
        revoke_tokens: change.revoke_tokens,
    };
    if let Err(refused) = state.write_user(peer, EVENT, &username, write).await {
        return refused;
    }
    let detail = if change.revoke_tokens {
        format!("{username} (sessions and API tokens revoked)")
    } else {
        format!("{username} (sessions ended)")
    };
    state.admin_audit(peer, EVENT, "success", detail).await;
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /api/users/{username}/unlock`: lifts a lock-out after repeated wrong passwords.
pub(crate) async fn unlock(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(username): Path<String>,
) -> Response {
    const EVENT: &str = "user-unlock";
    let user = match state.existing_user(peer, EVENT, &username).await {
        Ok(u) => u,
        Err(refused) => return refused,
    };
    let write = AccountWrite::Unlock {
        username: username.clone(),
    };
    if let Err(refused) = state.write_user(peer, EVENT, &username, write).await {
        return refused;
    }
    state.auth.credentials.throttle.forget(&username);
    let was = if user.lock.is_some() {
        "was locked"
    } else {
        "was not locked"
    };
    state
        .admin_audit(peer, EVENT, "success", format!("{username} ({was})"))
        .await;
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /api/users/{username}`: the user, their sessions and tokens.
pub(crate) async fn remove_user(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(username): Path<String>,
) -> Response {
    const EVENT: &str = "user-remove";
    let user = match state.existing_user(peer, EVENT, &username).await {
        Ok(u) => u,
        Err(refused) => return refused,
    };
    match is_last_admin(&state, &user).await {
        Ok(true) => {
            let why = format!("{username} is the last administrator: make another one first");
            return state.refuse(peer, EVENT, StatusCode::CONFLICT, why).await;
        }
        Ok(false) => {}
        Err(e) => return e.into_response(),
    }
    let write = AccountWrite::RemoveUser {
        username: username.clone(),
    };
    if let Err(refused) = state.write_user(peer, EVENT, &username, write).await {
        return refused;
    }
    state.admin_audit(peer, EVENT, "success", username).await;
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------------------
// AE table
// ---------------------------------------------------------------------------------------------

fn ae_json(entry: &AeEntry) -> serde_json::Value {
    json!({
        "aeTitle": entry.peer.ae_title,
        "host": entry.peer.host,
        "port": entry.peer.port,
        "description": entry.description,
        "source": match entry.source { AeSource::Config => "config", AeSource::Table => "table" },
        "readOnly": entry.source == AeSource::Config,
        "updatedAt": entry.updated_at,
    })
}

/// An AE title from a URL: trailing spaces are padding in DICOM, the rest must be valid.
fn ae_title(raw: &str) -> Result<String, String> {
    let title = raw.trim_end().to_string();
    pacs_model::check_ae_title(&title).map_err(|why| format!("{why} ({raw:?})"))?;
    Ok(title)
}

/// A host name or IP address: what `host:port` resolution takes, nothing that could be read
/// as something else (no spaces, slashes, brackets or control characters).
fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} is not a host name or IP address (1 to 253 letters, digits, '.', '-', '_', ':')"
        ))
    }
}

/// `GET /api/aes`: the configuration file's entries (read-only) and the table's.
pub(crate) async fn aes(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    match state.archive.aes().await {
        Ok(entries) => {
            state
                .admin_audit(peer, "ae-list", "success", format!("{} AE(s)", entries.len()))
                .await;
            Json(entries.iter().map(ae_json).collect::<Vec<_>>()).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `GET /api/aes/{aet}`.
pub(crate) async fn ae(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
) -> Response {
    let title = match ae_title(&raw) {
        Ok(t) => t,
        Err(why) => return state.refuse(peer, "ae-read", StatusCode::BAD_REQUEST, why).await,
    };
    match state.archive.aes().await {
        Ok(entries) => match entries.iter().find(|e| e.peer.ae_title == title) {
            Some(entry) => {
                state.admin_audit(peer, "ae-read", "success", title).await;
                Json(ae_json(entry)).into_response()
            }
            None => {
                let why = format!("no AE {title:?} in the AE table");
                state.refuse(peer, "ae-read", StatusCode::NOT_FOUND, why).await
            }
        },
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AeBody {
    host: String,
    /// Wider than u16 so that an out-of-range port gets its own message.
    port: i64,
    #[serde(default)]
    description: Option<String>,
}

/// `PUT /api/aes/{aet}` `{host, port, description?}`: 201 created, 200 replaced, 400 (what
/// is wrong), 409 (an entry of the configuration file).
pub(crate) async fn put_ae(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Response {
    const EVENT: &str = "ae-put";
    let checked = ae_title(&raw).and_then(|title| {
        let b = body::<AeBody>(&bytes)?;
        let host = b.host.trim().to_string();
        check_host(&host)?;
        let port = u16::try_from(b.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {} is not between 1 and 65535", b.port))?;
        let description = b
            .description
            .map(|d| {
                d.trim()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
            .filter(|d| !d.is_empty());
        Ok((
            Peer {
                ae_title: title,
                host,
                port,
            },
            description,
        ))
    });
    let (ae, description) = match checked {
        Ok(c) => c,
        Err(why) => return state.refuse(peer, EVENT, StatusCode::BAD_REQUEST, why).await,
    };
    let detail = format!("{} = {}", ae.ae_title, ae.address());
    let audit = state.admin_event(peer, EVENT, "success", detail);
    let entry = json!({
        "aeTitle": ae.ae_title, "host": ae.host, "port": ae.port, "description": description,
        "source": "table", "readOnly": false,
    });
    let title = ae.ae_title.clone();
    match state.archive.put_ae(ae, description, audit).await {
        Ok(AeChange::Created) => (StatusCode::CREATED, Json(entry)).into_response(),
        Ok(AeChange::ReadOnly) => (
            StatusCode::CONFLICT,
            format!("{title} is defined in the configuration file ([[peers]]); change it there\n"),
        )
            .into_response(),
        Ok(_) => Json(entry).into_response(),
        Err(e) => internal(e),
    }
}

/// `DELETE /api/aes/{aet}`: 204, 404, 409 (an entry of the configuration file).
pub(crate) async fn remove_ae(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
) -> Response {
    const EVENT: &str = "ae-remove";
    let title = match ae_title(&raw) {
        Ok(t) => t,
        Err(why) => return state.refuse(peer, EVENT, StatusCode::BAD_REQUEST, why).await,
    };
    let audit = state.admin_event(peer, EVENT, "success", title.clone());
    match state.archive.remove_ae(&title, audit).await {
        Ok(AeChange::Removed) => StatusCode::NO_CONTENT.into_response(),
        Ok(AeChange::ReadOnly) => (
            StatusCode::CONFLICT,
            format!("{title} is defined in the configuration file ([[peers]]); remove it there\n"),
        )
            .into_response(),
        Ok(_) => (
            StatusCode::NOT_FOUND,
            format!("no AE {title:?} in the AE table\n"),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/aes/{aet}/echo`: a C-ECHO to the AE from our AE title; 200 with the outcome
/// (`success`, `status`, `error`, `milliseconds`), 404 when the title is unknown.
pub(crate) async fn echo(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(raw): Path<String>,
) -> Response {
    const EVENT: &str = "echo";
    let title = match ae_title(&raw) {
        Ok(t) => t,
        Err(why) => return state.refuse(peer, EVENT, StatusCode::BAD_REQUEST, why).await,
    };
    let Some(outcome) = state.archive.echo(&title).await else {
        let why = format!("no AE {title:?} in the AE table");
        return state.refuse(peer, EVENT, StatusCode::NOT_FOUND, why).await;
    };
    let success = outcome.status == Some(0);
    let milliseconds = outcome.elapsed.as_secs_f64() * 1000.0;
    let detail = match (&outcome.status, &outcome.error) {
        (Some(status), _) => format!("{title} at {}: status 0x{status:04X}", outcome.address),
        (None, Some(error)) => format!("{title} at {}: {error}", outcome.address),
        (None, None) => format!("{title} at {}", outcome.address),
    };
    state
        .admin_audit(peer, EVENT, if success { "success" } else { "failure" }, detail)
        .await;
    Json(json!({
        "aeTitle": title,
        "address": outcome.address,
        "success": success,
        "status": outcome.status,
        "error": outcome.error,
        "milliseconds": (milliseconds * 10.0).round() / 10.0,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------

/// A day (`2024-05-01`) or a UTC instant (`2024-05-01T08:00:00.000Z`) as the index writes
/// them, so that text comparison is time comparison.
fn audit_time(name: &str, value: &str) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let day = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let rest_ok = value.len() <= 30
        && bytes[10.min(bytes.len())..]
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'T' | b':' | b'.' | b'Z'));
    if day && rest_ok && (bytes.len() == 10 || bytes[10] == b'T') {
        Ok(value.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} {value:?} is not a date (YYYY-MM-DD) or UTC time (YYYY-MM-DDTHH:MM:SSZ)"
        )))
    }
}

fn audit_filter(params: &[(String, String)]) -> Result<AuditFilter, ApiError> {
    let mut f = AuditFilter {
        limit: DEFAULT_AUDIT_LIMIT,
        ..AuditFilter::default()
    };
    let number = |name: &str, value: &str| {
        value
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("{name} {value:?} is not a number")))
    };
    let text = |value: &str| Some(value.trim().to_string()).filter(|v| !v.is_empty());
    for (name, value) in params {
        match name.as_str() {
            "after" => f.after = Some(number(name, value)?),
            "before" => f.before = Some(number(name, value)?),
            "limit" => f.limit = number(name, value)?.clamp(1, i64::from(MAX_AUDIT_LIMIT)) as u32,
            "user" => f.actor = text(value),
            "patient" => f.patient_id = text(value),
            "event" => f.event = text(value),
            "outcome" => f.outcome = text(value),
            "from" => f.from = text(value).map(|v| audit_time(name, &v)).transpose()?,
            "to" => f.to = text(value).map(|v| audit_time(name, &v)).transpose()?,
            "order" => {
                f.newest_first = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "order {other:?} is not asc or desc"
                        )))
                    }
                }
            }
            other => return Err(ApiError::BadRequest(format!("unknown audit parameter {other:?}"))),
        }
    }
    Ok(f)
}

/// `GET /api/audit`: the tenant's audit log, oldest first after `after` (default), or newest
/// first (`order=desc`) before `before`; filtered by `user`, `patient`, `event`, `outcome`,
/// `from` and `to`; at most `limit` (100, up to 1000) records.
pub(crate) async fn audit(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let filter = match audit_filter(&params) {
        Ok(f) => f,
        Err(ApiError::BadRequest(why)) => {
            return state
                .refuse(peer, "audit-read", StatusCode::BAD_REQUEST, why)
                .await
        }
        Err(e) => return e.into_response(),
    };
    let found = state.archive.index().audit_search(&filter).await;
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let outcome = if found.is_ok() { "success" } else { "failure" };
    state
        .admin_audit(peer, "audit-read", outcome, query.join("&"))
        .await;
    match found {
        Ok(page) => Json(
            page.iter()
                .map(|r| {
                    let e = &r.event;
                    json!({
                        "id": r.pk, "at": r.at, "event": e.event, "actor": e.actor, "peer": e.peer,
                        "patientId": e.patient_id, "studyInstanceUid": e.study_uid,
                        "outcome": e.outcome, "detail": e.detail,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_times_are_days_or_utc_instants_only() {
        for good in ["2024-05-01", "2024-05-01T08:00:00Z", "2024-05-01T08:00:00.123Z"] {
            assert_eq!(audit_time("from", good).unwrap(), good);
        }
        for bad in [
            "",
            "2024-5-1",
            "yesterday",
            "2024-05-01 08:00",
            "2024-05-01' OR 1=1",
            "2024-05-01T08:00:00+02:00",
        ] {
            assert!(audit_time("from", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ae_table_input_is_checked() {
        assert_eq!(ae_title("STORESCP  ").unwrap(), "STORESCP");
        assert!(ae_title("MUCH_TOO_LONG_AE_TITLE").is_err());
        assert!(ae_title("BACK\\SLASH").is_err());
        assert!(check_host("pacs.example.org").is_ok());
        assert!(check_host("::1").is_ok());
        assert!(check_host("10.0.0.1").is_ok());
        for bad in ["", "a host", "host/path", "[::1]", "h\u{0}"] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }
}
