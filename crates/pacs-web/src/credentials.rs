//! Checking a user name and password, for the log-in form and HTTP Basic alike: throttling
//! and lock-out first (refused without hashing anything), then one Argon2 verification on the
//! server's bounded pool, then the failure or success counted. HTTP Basic adds a cache of
//! verified credentials, each use of which is checked against the account as stored now.
//!
//! The same answer for an unknown user name as for a wrong password: the decoy hash costs the
//! same verification, and an unknown name is throttled and locked out like an account.
//! Refusals while throttled or locked are not audited one by one (they cost an attacker
//! nothing and would fill the audit log); each lock-out is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pacs_store::{AccountWrite, AuditEvent, UserAccount};
use sha2::{Digest, Sha256};

use crate::password::{decoy_hash, Busy, PasswordPool, MAX_WAIT};
use crate::throttle::{Failed, LoginThrottle, ThrottleConfig};
use crate::{ApiError, WebState};

/// Password checking state of one server.
pub(crate) struct Credentials {
    /// Every Argon2 hash and verification of the server goes through this pool.
    pub(crate) pool: PasswordPool,
    pub(crate) throttle: LoginThrottle,
    basic_cache: BasicCache,
    /// When "the pool is full" was last logged (seconds since `started`), to log it once a
    /// minute rather than once per refused request.
    busy_logged: AtomicU64,
    started: Instant,
}

impl Credentials {
    pub(crate) fn new(throttle: ThrottleConfig) -> Credentials {
        Credentials {
            pool: PasswordPool::sized_to_cores(),
            throttle: LoginThrottle::new(throttle),
            basic_cache: BasicCache::default(),
            busy_logged: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// The account whose name and password these are, or `None` (a wrong name or password,
    /// one answer for both). `TooManyAttempts` while the address or the name must wait or the
    /// account is locked, whether the password is right or not; `Busy` when the pool is full.
    pub(crate) async fn check_password(
        &self,
        state: &WebState,
        peer: SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<Option<UserAccount>, ApiError> {
        let ip = peer.ip();
        // Throttled per account: the same name in two tenants is two accounts.
        let account = format!("{username}@{}", state.archive.tenant_name());
        let account = account.as_str();
        self.throttle
            .begin(ip, account, Instant::now())
            .map_err(ApiError::TooManyAttempts)?;
        let user = match state.archive.index().user(username).await {
            Ok(user) => user,
            Err(e) => {
                self.throttle.cancel(ip, account);
                return Err(ApiError::Internal(e.to_string()));
            }
        };
        if let Some(lock) = user.as_ref().and_then(|u| u.lock.as_ref()) {
            self.throttle.cancel(ip, account);
            return Err(ApiError::TooManyAttempts(Duration::from_secs(
                lock.remaining_secs,
            )));
        }
        let phc = user.as_ref().map_or(decoy_hash(), |u| u.password_hash.as_str());
        let Ok(matched) = self.pool.verify(password, phc).await else {
            self.throttle.cancel(ip, account);
            return Err(self.busy());
        };
        if matched && user.is_some() {
            self.throttle.succeeded(ip, account);
            return Ok(user);
        }
        let failed = self.throttle.failed(account, user.is_some(), Instant::now());
        if let Failed::LockedOut(failures) = failed {
            self.lock_out(state, peer, username, user.is_some(), failures)
                .await;
        }
        Ok(None)
    }

    /// HTTP Basic: [`Self::check_password`], with verified credentials remembered for a
    /// minute. A remembered entry is used only while the account still has the password hash
    /// it was verified against and is not locked: a password change (from the API, or from
    /// `openpacs user passwd` in another process), a removal or a lock-out ends it at once,
    /// for the price of reading the account, which every request does anyway.
    pub(crate) async fn check_basic(
        &self,
        state: &WebState,
        peer: SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<Option<UserAccount>, ApiError> {
        let tenant = state.archive.tenant_name();
        let key: [u8; 32] = Sha256::digest(format!("{tenant}\n{username}:{password}").as_bytes()).into();
        if let Some(verified_hash) = self.basic_cache.get(&key) {
            let user = state
                .archive
                .index()
                .user(username)
                .await
                .map_err(ApiError::from)?;
            match user {
                Some(u) if u.password_hash == verified_hash && u.lock.is_none() => return Ok(Some(u)),
                _ => self.basic_cache.remove(&key),
            }
        }
        let user = self.check_password(state, peer, username, password).await?;
        if let Some(u) = &user {
            self.basic_cache.put(key, u.password_hash.clone());
        }
        Ok(user)
    }

    /// A new PHC string for `password`, computed on the pool.
    pub(crate) async fn hash(&self, password: &str) -> Result<String, ApiError> {
        self.pool
            .hash(password)
            .await
            .map_err(|Busy| self.busy())?
            .map_err(ApiError::Internal)
    }

    fn busy(&self) -> ApiError {
        let now = self.started.elapsed().as_secs();
        let last = self.busy_logged.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last + 60)
            && self
                .busy_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "password checks refused: every Argon2 slot busy and the queue full (a flood of log-ins?)"
            );
        }
        ApiError::Busy(MAX_WAIT)
    }

    /// Locks `username` after `failures` wrong passwords in a row: in the index for an
    /// account (the throttle keeps the lock of a name that is none), audited either way.
    async fn lock_out(
        &self,
        state: &WebState,
        peer: SocketAddr,
        username: &str,
        account: bool,
        failures: u32,
    ) {
        let secs = self.throttle.config.lockout.as_secs().max(1);
        if account {
            let write = AccountWrite::Lock {
                username: username.to_string(),
                secs: i64::try_from(secs).unwrap_or(i64::MAX),
            };
            if let Err(e) = state.archive.index().write_accounts(write).await {
                tracing::error!(error = %e, "could not record an account lock-out");
            }
        }
        let whose = if account { "" } else { " (no such account)" };
        state
            .archive
            .record(AuditEvent {
                event: "account-lockout".into(),
                actor: format!("http:{username}"),
                peer: peer.to_string(),
                outcome: "locked".into(),
                detail: Some(format!(
                    "{failures} wrong passwords in a row{whose}, the last from {}: password log-ins refused for {secs} s",
                    peer.ip()
                )),
                ..AuditEvent::default()
            })
            .await;
        tracing::warn!(username, peer = %peer.ip(), failures, secs, "account locked out after repeated wrong passwords");
    }
}

/// Verified Basic credentials, so that a viewer fetching hundreds of frames does not pay an
/// Argon2 verification per request: the SHA-256 of `user:password` maps to the password hash
/// it was verified against. Entries live a minute at most.
#[derive(Default)]
struct BasicCache {
    entries: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
const BASIC_CACHE_MAX: usize = 1024;

impl BasicCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (String, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &[u8; 32]) -> Option<String> {
        self.entries()
            .get(key)
            .filter(|(_, at)| at.elapsed() < BASIC_CACHE_TTL)
            .map(|(hash, _)| hash.clone())
    }

    fn put(&self, key: [u8; 32], password_hash: String) {
        let mut entries = self.entries();
        if entries.len() >= BASIC_CACHE_MAX {
            entries.retain(|_, (_, at)| at.elapsed() < BASIC_CACHE_TTL);
            if entries.len() >= BASIC_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(key, (password_hash, Instant::now()));
    }

    fn remove(&self, key: &[u8; 32]) {
        self.entries().remove(key);
    }
}
