//! Authentication and authorization for everything served over HTTP.
//!
//! One middleware sees every request. It takes what the request needs from the route axum
//! matched (the rule the route table of [`crate::routes`] gives that route), finds who is asking (session cookie, bearer token, or HTTP Basic when
//! enabled), checks the caller's role, audits every refusal, and runs the handler with the
//! caller's name in a task-local so that the handler's own audit lines name the user.
//!
//! Secrets never rest in clear: passwords as argon2id PHC strings, sessions and tokens as the
//! SHA-256 of the random secret handed to the client. Passwords are checked (throttled,
//! hashed on a bounded pool, cached for Basic) in [`crate::credentials`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use pacs_store::{AccountWrite, AuditEvent, CredentialKind, Role, UserAccount};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{ApiError, WebState};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "openpacs_session";
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Whether requests must authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request to patient data needs a user.
    Required,
    /// Every caller acts as an anonymous administrator (`http_auth = "off"`). The binary
    /// allows this only on a loopback address unless explicitly told otherwise.
    Open,
    /// Open while no account exists; from the first account on (created with `openpacs
    /// user add`, even while the server runs), exactly like `Required`.
    OpenUntilAccounts,
}

/// Authentication settings the binary passes in.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Accept `Authorization: Basic` (for DICOMweb clients that know nothing else).
    pub basic: bool,
    /// Lifetime of a browser session.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (set when serving over TLS).
    pub secure_cookies: bool,
    /// Throttling and lock-out of password guesses.
    pub throttle: crate::throttle::ThrottleConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Required,
            basic: true,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            throttle: crate::throttle::ThrottleConfig::default(),
        }
    }
}

/// What a request asks to do; roles grant permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Find patients, studies, series, instances (QIDO-RS, REST search).
    Search,
    /// Original objects and everything derived losslessly from them: WADO-RS, metadata,
    /// bulk data, frames, WADO-URI `application/dicom`, study download.
    Retrieve,
    /// Rendered previews and thumbnails (display only).
    Render,
    /// STOW-RS.
    Store,
    /// Deleting, users, audit log.
    Admin,
    /// Managing the platform's tenants and reading their usage (the operator's only).
    Operate,
}

/// Whether `role` grants `permission`. Readers (radiologists) may also store: importing a
/// patient's outside CD is part of their work. Referrers see previews, never originals.
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => permission != Operate,
        Role::Operator => permission == Operate,
        Role::Reader => matches!(permission, Search | Retrieve | Render | Store),
        Role::Referrer => matches!(permission, Search | Render),
        Role::Uploader => matches!(permission, Store),
    }
}

/// What a request needs before it reaches its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health, metrics, the log-in endpoints, the UI's static files.
    Public,
    /// Any logged-in user (e.g. "who am I").
    AnyUser,
    Need(Permission),
}

/// Who is making the request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub username: String,
    pub role: Role,
    pub tenant: i64,
}

impl Principal {
    fn anonymous(tenant: i64) -> Principal {
        Principal {
            username: "anonymous".into(),
            role: Role::Admin,
            tenant,
        }
    }

    fn of(user: &UserAccount) -> Principal {
        Principal {
            username: user.username.clone(),
            role: user.role,
            tenant: user.tenant,
        }
    }
}

tokio::task_local! {
    static CALLER: String;
}

/// The audit actor of the request being handled: `http:<username>`.
pub(crate) fn current_actor() -> String {
    CALLER
        .try_with(|c| c.clone())
        .unwrap_or_else(|_| "http:anonymous".into())
}

/// Checks a new user name: 1 to 64 letters, digits, '.', '-', '_' or '@' (nothing that HTTP
/// Basic's ':' or an audit line could misread).
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?}: 1 to 64 letters, digits, '.', '-', '_' or '@'"
        ))
    }
}

/// A new random secret for a session or token, and the SHA-256 (hex) the index keeps.
pub fn new_secret(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!("{prefix}{}", hex::encode(bytes));
    let digest = secret_digest(&secret);
    (secret, digest)
}

/// What the index keeps of a session or token secret.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a request could not be tied to a user.
enum Identified {
    User(Principal),
    /// No credentials at all.
    Nobody,
    /// Credentials that did not check out.
    Invalid(&'static str),
}

async fn identify(state: &WebState, headers: &HeaderMap, peer: SocketAddr) -> Result<Identified, ApiError> {
    // A session or token names its user, whichever tenant that is: looking it up is the one
    // cross-tenant read here, and the user's tenant is the request's.
    let system = state.platform.system();
    let internal = ApiError::from;
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let user = system
                .credential_user(CredentialKind::Token, &secret_digest(credentials))
                .await
                .map_err(internal)?;
            return Ok(user.map_or(Identified::Invalid("unknown or expired token"), |u| {
                Identified::User(Principal::of(&u))
            }));
        }
        if scheme.eq_ignore_ascii_case("basic") && state.auth.config.basic {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Ok(Identified::Invalid("malformed Basic credentials"));
            };
            let (tenant, username) = state.login_tenant(username);
            let checked = state
                .auth
                .credentials
                .check_basic(&tenant, peer, &username, password);
            return Ok(match checked.await? {
                Some(user) => Identified::User(Principal::of(&user)),
                None => Identified::Invalid("wrong user name or password"),
            });
        }
        return Ok(Identified::Invalid("unsupported authorization scheme"));
    }
    if let Some(session) = cookie_value(headers, SESSION_COOKIE) {
        let user = system
            .credential_user(CredentialKind::Session, &secret_digest(session))
            .await
            .map_err(internal)?;
        return Ok(user.map_or(Identified::Invalid("session expired"), |u| {
            Identified::User(Principal::of(&u))
        }));
    }
    Ok(Identified::Nobody)
}

/// Per-server authentication state.
pub(crate) struct AuthState {
    pub(crate) config: AuthConfig,
    pub(crate) credentials: crate::credentials::Credentials,
    /// Set once an account has been seen (accounts are never all removed back to "open").
    accounts_seen: std::sync::atomic::AtomicBool,
}

impl AuthState {
    pub(crate) fn new(config: AuthConfig) -> AuthState {
        AuthState {
            credentials: crate::credentials::Credentials::new(config.throttle.clone()),
            config,
            accounts_seen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether any account exists; once one has, the answer stays yes for this process (so
    /// removing every account does not silently reopen the server).
    /// Whether any account exists. An index that cannot say fails closed: the request is
    /// answered 503 (an engine out of reach) or 500, never let in.
    async fn accounts_exist(&self, state: &WebState) -> Result<bool, ApiError> {
        use std::sync::atomic::Ordering;
        if self.accounts_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let exist = state.archive.system().any_user().await?;
        if exist {
            self.accounts_seen.store(true, Ordering::Relaxed);
        }
        Ok(exist)
    }
}

/// The middleware: identify, choose the tenant, authorize, audit refusals, run the handler as
/// the caller with its tenant's [`WebState`] in the request's extensions.
///
/// The tenant is the caller's own: the owner of the session, token or Basic credentials (a
/// log-in name `user@tenant` names it), the prefix `/t/{name}` only confirming it. A prefix
/// naming another tenant answers 404, exactly as one naming no tenant does (which tenants
/// exist is not for callers to learn), and is audited as a refusal in the caller's own log.
/// Public routes (health, metrics, log-in, the UI's files) answer the same whatever prefix.
pub(crate) async fn middleware(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    // From the route axum matched (the route table's rule), never from the path's words.
    let matched = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let needed = state
        .rules
        .needed(request.method(), matched, request.uri().query());
    let requested = request
        .extensions()
        .get::<crate::tenant_prefix::RequestedTenant>()
        .map(|t| t.0.clone());
    let prefix = requested.as_ref().map(|name| format!("/t/{name}"));
    if needed == Access::Public {
        // The log-in names its tenant itself (`user@tenant`, or the prefix: see `login`).
        let state = WebState {
            prefix,
            ..state.clone()
        };
        request.extensions_mut().insert(state);
        return next.run(request).await;
    }
    // What refusals audit; the request itself (not Sync) cannot be held across awaits.
    let target = format!(
        "{} {}{}",
        request.method(),
        prefix.as_deref().unwrap_or(""),
        request.uri()
    );
    let basic_challenge =
        state.auth.config.basic && wants_basic_challenge(request.headers(), request.uri().path());
    let open = match state.auth.config.mode {
        AuthMode::Open => true,
        AuthMode::Required => false,
        AuthMode::OpenUntilAccounts => match state.auth.accounts_exist(&state).await {
            Ok(exist) => !exist,
            Err(e) => return e.into_response(),
        },
    };
    let principal = if open {
        // No accounts: the anonymous administrator of the tenant the prefix names, or of the
        // default one.
        let tenant = requested
            .as_deref()
            .and_then(|name| state.platform.by_name(name))
            .map_or(state.archive.tenant(), |a| a.tenant());
        Principal::anonymous(tenant.0)
    } else {
        let asking = WebState {
            prefix: prefix.clone(),
            ..state.clone()
        };
        match identify(&asking, request.headers(), peer).await {
            Ok(Identified::User(p)) => p,
            Ok(Identified::Nobody) => {
                return refuse(
                    &state,
                    peer,
                    basic_challenge,
                    &target,
                    "anonymous",
                    "unauthenticated",
                    "credentials required",
                )
                .await
            }
            Ok(Identified::Invalid(why)) => {
                return refuse(
                    &state,
                    peer,
                    basic_challenge,
                    &target,
                    "anonymous",
                    "unauthenticated",
                    why,
                )
                .await
            }
            Err(e) => return e.into_response(),
        }
    };
    let Some(archive) = state.platform.archive(pacs_model::TenantId(principal.tenant)) else {
        return refuse(
            &state,
            peer,
            basic_challenge,
            &target,
            &principal.username,
            "unauthenticated",
            "the account's tenant no longer exists",
        )
        .await;
    };
    let mut own = state.for_tenant(archive);
    let mut principal = principal;
    let mut break_glass = false;
    if let Some(name) = &requested {
        if *name != own.archive.tenant_name() {
            match break_glass_grant(&state, &principal, name).await {
                // An operator's time-limited read access to this tenant: every request is in
                // the tenant's own log.
                Some((tenant, until)) => {
                    principal = Principal {
                        username: format!("{}@{}", principal.username, own.archive.tenant_name()),
                        role: Role::Reader,
                        tenant: tenant.tenant().0,
                    };
                    own = state.for_tenant(tenant);
                    break_glass = true;
                    own.archive
                        .record(AuditEvent {
                            event: "break-glass".into(),
                            actor: format!("http:{}", principal.username),
                            peer: peer.to_string(),
                            outcome: "success".into(),
                            detail: Some(format!("{target} (access granted until {until})")),
                            ..AuditEvent::default()
                        })
                        .await;
                }
                None => {
                    own.archive
                        .record(AuditEvent {
                            event: "http-access".into(),
                            actor: format!("http:{}", principal.username),
                            peer: peer.to_string(),
                            outcome: "forbidden".into(),
                            detail: Some(format!("{target}: the prefix names another tenant or none")),
                            ..AuditEvent::default()
                        })
                        .await;
                    return (StatusCode::NOT_FOUND, "not found\n").into_response();
                }
            }
        }
    }
    if state
        .platform
        .record(own.archive.tenant())
        .is_some_and(|t| t.disabled)
    {
        return refuse(
            &own,
            peer,
            false,
            &target,
            &principal.username,
            "forbidden",
            "the tenant is disabled",
        )
        .await;
    }
    let permitted = match needed {
        // Break-glass reads; it never stores.
        Access::Need(p) => allows(principal.role, p) && !(break_glass && p == Permission::Store),
        _ => true,
    };
    if !permitted {
        let why = match needed {
            Access::Need(p) => format!("role {} lacks {p:?}", principal.role.as_str()),
            _ => "not permitted".into(),
        };
        return refuse(
            &own,
            peer,
            basic_challenge,
            &target,
            &principal.username,
            "forbidden",
            &why,
        )
        .await;
    }
    let actor = format!("http:{}", principal.username);
    request.extensions_mut().insert(principal);
    request.extensions_mut().insert(WebState { prefix, ..own });
    CALLER.scope(actor, next.run(request)).await
}

/// The tenant named `name` and when the grant ends, when `principal` is a platform operator
/// with a live break-glass grant on it (`openpacs tenant grant-access`).
async fn break_glass_grant(
    state: &WebState,
    principal: &Principal,
    name: &str,
) -> Option<(Arc<pacs_archive::Archive>, String)> {
    if principal.role != Role::Operator {
        return None;
    }
    let tenant = state.platform.by_name(name)?;
    match state
        .platform
        .system()
        .access_grant(tenant.tenant(), &principal.username)
        .await
    {
        Ok(until) => until.map(|until| (tenant, until)),
        Err(e) => {
            tracing::error!(error = %e, "cannot read break-glass grants");
            None
        }
    }
}

/// Whether a 401 should invite HTTP Basic. Not for the REST API (the UI logs in with its own
/// form) nor for a browser's script or image requests (`Sec-Fetch-Mode` other than
/// `navigate`): the browser would answer with its own password dialog instead of letting the
/// page handle the 401. DICOMweb clients (which send Basic credentials pre-emptively, and no
/// Sec-Fetch-Mode) and a browser opening a DICOMweb URL still get the Basic challenge.
fn wants_basic_challenge(headers: &HeaderMap, path: &str) -> bool {
    let browser_script = headers
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|mode| mode != "navigate");
    !browser_script && !path.starts_with("/api/") && path != "/api"
}

async fn refuse(
    state: &WebState,
    peer: SocketAddr,
    basic_challenge: bool,
    target: &str,
    username: &str,
    outcome: &str,
    why: &str,
) -> Response {
    state
        .archive
        .record(AuditEvent {
            event: "http-access".into(),
            actor: format!("http:{username}"),
            peer: peer.to_string(),
            outcome: outcome.into(),
            detail: Some(format!("{target}: {why}")),
            ..AuditEvent::default()
        })
        .await;
    if outcome == "forbidden" {
        return (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response();
    }
    let challenge = if basic_challenge {
        "Basic realm=\"openpacs\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"openpacs\""
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        format!("authentication required: {why}\n"),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    username: String,
    password: String,
}

fn me_json(principal: &Principal, tenant: &str) -> serde_json::Value {
    serde_json::json!({
        "username": principal.username,
        "role": principal.role.as_str(),
        "tenant": tenant,
    })
}

/// `POST /api/login` with a JSON or form body `{username, password}`: sets the session cookie.
pub(crate) async fn login(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let form: Option<LoginForm> = if is_json {
        serde_json::from_slice(&body).ok()
    } else {
        serde_urlencoded_form(&body)
    };
    let Some(form) = form else {
        return ApiError::BadRequest("expected username and password (JSON or form)".into()).into_response();
    };
    let (state, username) = state.login_tenant(&form.username);
    let checked = state
        .auth
        .credentials
        .check_password(&state, peer, &username, &form.password);
    let user = match checked.await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let audit = |outcome: &str| AuditEvent {
        event: "login".into(),
        actor: format!("http:{username}"),
        peer: peer.to_string(),
        outcome: outcome.into(),
        ..AuditEvent::default()
    };
    let Some(user) = user else {
        state.archive.record(audit("failure")).await;
        return (StatusCode::UNAUTHORIZED, "wrong user name or password\n").into_response();
    };
    if state.tenant_disabled() {
        state.archive.record(audit("refused")).await;
        return (StatusCode::FORBIDDEN, "this establishment's access is disabled\n").into_response();
    }
    let (secret, digest) = new_secret("ops_");
    let ttl = state.auth.config.session_ttl.as_secs();
    let written = state
        .archive
        .index()
        .write_accounts(AccountWrite::AddCredential {
            username: user.username.clone(),
            kind: CredentialKind::Session,
            secret_sha256: digest,
            name: None,
            ttl_secs: Some(ttl as i64),
        })
        .await;
    if let Err(e) = written {
        return ApiError::from(e).into_response();
    }
    state.archive.record(audit("success")).await;
    let secure = if state.auth.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}{secure}");
    let mut response = Json(me_json(&Principal::of(&user), state.archive.tenant_name())).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn serde_urlencoded_form(body: &[u8]) -> Option<LoginForm> {
    let text = std::str::from_utf8(body).ok()?;
    let mut username = None;
    let mut password = None;
    for (k, v) in form_pairs(text) {
        match k.as_str() {
            "username" => username = Some(v),
            "password" => password = Some(v),
            _ => {}
        }
    }
    Some(LoginForm {
        username: username?,
        password: password?,
    })
}

/// `application/x-www-form-urlencoded` pairs (also query strings), percent- and plus-decoded.
pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let escaped = (bytes[i] == b'%')
                .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
                .flatten();
            match (bytes[i], escaped) {
                (_, Some(b)) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                (b'+', _) => out.push(b' '),
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `POST /api/logout`: ends the session and clears the cookie.
pub(crate) async fn logout(
    axum::Extension(state): axum::Extension<WebState>,
    headers: HeaderMap,
) -> Response {
    if let Some(session) = cookie_value(&headers, SESSION_COOKIE) {
        let _ = state
            .archive
            .index()
            .write_accounts(AccountWrite::RemoveCredential {
                secret_sha256: secret_digest(session),
            })
            .await;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("openpacs_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// `GET /api/me`: the caller's name, role and tenant.
pub(crate) async fn me(
    axum::Extension(principal): axum::Extension<Principal>,
    axum::Extension(state): axum::Extension<WebState>,
) -> Response {
    Json(me_json(&principal, state.archive.tenant_name())).into_response()
}

/// Builds the shared state for [`middleware`].
pub(crate) fn state(config: AuthConfig) -> Arc<AuthState> {
    Arc::new(AuthState::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_their_work_needs() {
        use Permission::*;
        assert!(Role::ALL
            .iter()
            .all(|r| allows(*r, Search) != (*r == Role::Uploader)));
        assert!(allows(Role::Reader, Retrieve) && !allows(Role::Reader, Admin));
        assert!(allows(Role::Referrer, Render) && !allows(Role::Referrer, Retrieve));
        assert!(!allows(Role::Referrer, Store));
        assert!(allows(Role::Uploader, Store) && !allows(Role::Uploader, Render));
    }

    #[test]
    fn secrets_are_never_kept_in_clear() {
        let (a, da) = new_secret("opk_");
        let (b, _) = new_secret("opk_");
        assert_ne!(a, b);
        assert_eq!(da, secret_digest(&a));
        assert!(!da.contains(&a[4..]));
    }

    #[test]
    fn browsers_script_requests_and_the_api_get_no_basic_challenge() {
        let mut fetch = HeaderMap::new();
        fetch.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
        let mut navigate = HeaderMap::new();
        navigate.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(wants_basic_challenge(&HeaderMap::new(), "/dicom-web/studies"));
        assert!(wants_basic_challenge(&navigate, "/dicom-web/studies"));
        assert!(!wants_basic_challenge(&fetch, "/dicom-web/studies"));
        assert!(!wants_basic_challenge(&HeaderMap::new(), "/api/me"));
    }

    #[test]
    fn form_bodies_decode() {
        let pairs = form_pairs("username=ren%C3%A9&password=a+b%26c");
        assert_eq!(pairs[0], ("username".into(), "rené".into()));
        assert_eq!(pairs[1], ("password".into(), "a b&c".into()));
        // A truncated or non-hex escape is kept literally rather than panicking.
        assert_eq!(form_pairs("x=%4")[0].1, "%4");
        assert_eq!(form_pairs("x=%zé%")[0].1, "%zé%");
    }
}
