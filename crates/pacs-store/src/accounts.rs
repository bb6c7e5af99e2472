//! Local user accounts and their credentials (browser sessions, API tokens).
//!
//! The store keeps only what cannot be used to log in: argon2 PHC strings for passwords (the
//! hashing itself is the web layer's job) and the SHA-256 of each session or token secret.
//! Writes go through the index's single writer like every other write.

use crate::sql::{self, Conn, Dialect};

use crate::IndexError;

/// The roles a user can hold. What each may do is decided by the web layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Reader,
    Referrer,
    Uploader,
    /// The platform operator: a user of the platform itself (`TenantId::PLATFORM`), outside
    /// every tenant, who manages tenants and reads usage, never patient data.
    Operator,
}

impl Role {
    /// The roles a tenant's users hold (the operator is the platform's alone).
    pub const ALL: [Role; 4] = [Role::Admin, Role::Reader, Role::Referrer, Role::Uploader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Referrer => "referrer",
            Role::Uploader => "uploader",
            Role::Operator => "operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .chain([Role::Operator])
            .find(|r| r.as_str() == text)
    }
}

/// Sessions come from logging in; tokens are created for scripts and viewers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    Session,
    Token,
}

impl CredentialKind {
    fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Session => "session",
            CredentialKind::Token => "token",
        }
    }
}

/// A user as stored.
#[derive(Clone, Debug)]
pub struct UserAccount {
    pub pk: i64,
    pub tenant: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: String,
    /// Set while the account is locked out (a lock that has run out reads as none).
    pub lock: Option<AccountLock>,
}

/// A temporary lock-out after repeated wrong passwords: password log-ins are refused until
/// `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLock {
    pub until: String,
    /// Seconds left, rounded up.
    pub remaining_secs: u64,
}

/// An API token's public description (never its secret).
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub pk: i64,
    pub name: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// Changes to accounts, applied by the index writer.
#[derive(Clone, Debug)]
pub enum AccountWrite {
    AddUser {
        username: String,
        password_hash: String,
        role: Role,
    },
    /// Changing a password also ends the user's sessions, and their API tokens if asked.
    SetPassword {
        username: String,
        password_hash: String,
        revoke_tokens: bool,
    },
    /// Refuses the user's password log-ins for `secs` seconds from now.
    Lock {
        username: String,
        secs: i64,
    },
    /// Lifts a lock-out.
    Unlock {
        username: String,
    },
    SetRole {
        username: String,
        role: Role,
    },
    RemoveUser {
        username: String,
    },
    AddCredential {
        username: String,
        kind: CredentialKind,
        secret_sha256: String,
        name: Option<String>,
        /// Lifetime in seconds from now, or None for a token that does not expire.
        ttl_secs: Option<i64>,
    },
    RemoveCredential {
        secret_sha256: String,
    },
    RevokeToken {
        username: String,
        pk: i64,
    },
    /// Drops sessions and tokens whose expiry has passed.
    PurgeExpired,
}

/// What an account write changed: rows affected (0 means the user or credential was not found).
pub type AccountOutcome = u64;

/// Applies `write` to the accounts of `tenant` only: every statement names the tenant.
pub(crate) async fn apply(
    conn: &mut dyn Conn,
    tenant: i64,
    write: &AccountWrite,
) -> Result<AccountOutcome, IndexError> {
    let now = conn.dialect().now();
    let done = match write {
        AccountWrite::AddUser {
            username,
            password_hash,
            role,
        } => {
            sql::query(&format!(
                "INSERT INTO user_account (tenant_pk, username, password_hash, role, created_at,
                 password_changed_at) VALUES (?, ?, ?, ?, {now}, {now})"
            ))
            .bind(tenant)
            .bind(username)
            .bind(password_hash)
            .bind(role.as_str())
            .execute(&mut *conn)
            .await?
        }
        AccountWrite::SetPassword {
            username,
            password_hash,
            revoke_tokens,
        } => {
            let changed = sql::query(&format!(
                "UPDATE user_account SET password_hash = ?, password_changed_at = {now}
                 WHERE username = ? AND tenant_pk = ?"
            ))
            .bind(password_hash)
            .bind(username)
            .bind(tenant)
            .execute(&mut *conn)
            .await?;
            sql::query(
                "DELETE FROM credential WHERE (kind = 'session' OR ? <> 0)
                 AND user_pk = (SELECT pk FROM user_account WHERE username = ? AND tenant_pk = ?)",
            )
            .bind(revoke_tokens)
            .bind(username)
            .bind(tenant)
            .execute(&mut *conn)
            .await?;
            changed
        }
        AccountWrite::Lock { username, secs } => {
            sql::query(&format!(
                "UPDATE user_account SET locked_until = {}
                 WHERE username = ? AND tenant_pk = ?",
                conn.dialect().now_plus_secs("?")
            ))
            .bind((*secs).max(0))
            .bind(username)
            .bind(tenant)
            .execute(&mut *conn)
            .await?
        }
        AccountWrite::Unlock { username } => {
            sql::query("UPDATE user_account SET locked_until = NULL WHERE username = ? AND tenant_pk = ?")
                .bind(username)
                .bind(tenant)
                .execute(&mut *conn)
                .await?
        }
        AccountWrite::SetRole { username, role } => {
            sql::query("UPDATE user_account SET role = ? WHERE username = ? AND tenant_pk = ?")
                .bind(role.as_str())
                .bind(username)
                .bind(tenant)
                .execute(&mut *conn)
                .await?
        }
        AccountWrite::RemoveUser { username } => {
            sql::query("DELETE FROM user_account WHERE username = ? AND tenant_pk = ?")
                .bind(username)
                .bind(tenant)
                .execute(&mut *conn)
                .await?
        }
        AccountWrite::AddCredential {
            username,
            kind,
            secret_sha256,
            name,
            ttl_secs,
        } => {
            // Same text format as NOW, so expiry compares as strings.
            let expiry = conn.dialect().now_plus_secs("?");
            sql::query(&format!(
                "INSERT INTO credential (user_pk, kind, secret_sha256, name, created_at, expires_at)
                 SELECT pk, ?, ?, ?, {now},
                 CASE WHEN CAST(? AS BIGINT) IS NULL THEN NULL
                      ELSE COALESCE({expiry}, {now}) END
                 FROM user_account WHERE username = ? AND tenant_pk = ?"
            ))
            .bind(kind.as_str())
            .bind(secret_sha256)
            .bind(name)
            // A negative lifetime would not parse as a modifier: it means "already expired".
            .bind(ttl_secs.map(|t| t.max(0)))
            .bind(ttl_secs.map(|t| t.max(0)))
            .bind(username)
            .bind(tenant)
            .execute(&mut *conn)
            .await?
        }
        AccountWrite::RemoveCredential { secret_sha256 } => {
            sql::query(
                "DELETE FROM credential WHERE secret_sha256 = ?
                 AND user_pk IN (SELECT pk FROM user_account WHERE tenant_pk = ?)",
            )
            .bind(secret_sha256)
            .bind(tenant)
            .execute(&mut *conn)
            .await?
        }
        AccountWrite::RevokeToken { username, pk } => {
            sql::query(
                "DELETE FROM credential WHERE pk = ? AND kind = 'token'
                 AND user_pk = (SELECT pk FROM user_account WHERE username = ? AND tenant_pk = ?)",
            )
            .bind(pk)
            .bind(username)
            .bind(tenant)
            .execute(&mut *conn)
            .await?
        }
        AccountWrite::PurgeExpired => {
            sql::query(&format!(
                "DELETE FROM credential WHERE expires_at IS NOT NULL AND expires_at < {now}
                 AND user_pk IN (SELECT pk FROM user_account WHERE tenant_pk = ?)"
            ))
            .bind(tenant)
            .execute(&mut *conn)
            .await?
        }
    };
    Ok(done)
}

/// The account's columns; a lock that has run out reads as NULL.
fn user_fields(dialect: Dialect) -> String {
    format!(
        "u.pk, u.tenant_pk, u.username, u.password_hash, u.role, u.created_at,
         CASE WHEN u.locked_until > {} THEN u.locked_until END, {} + 1",
        dialect.now(),
        dialect.secs_until("u.locked_until")
    )
}

fn user(row: &sql::DbRow) -> Result<UserAccount, IndexError> {
    let role: String = row.try_get(4)?;
    let locked_until: Option<String> = row.try_get(6)?;
    let remaining: Option<i64> = row.try_get(7)?;
    Ok(UserAccount {
        lock: locked_until.map(|until| AccountLock {
            until,
            remaining_secs: remaining.unwrap_or(1).max(1) as u64,
        }),
        pk: row.try_get(0)?,
        tenant: row.try_get(1)?,
        username: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        role: Role::parse(&role).ok_or_else(|| IndexError::Schema(format!("unknown role {role:?}")))?,
        created_at: row.try_get(5)?,
    })
}

pub(crate) async fn user_by_name(
    conn: &mut dyn Conn,
    tenant: i64,
    username: &str,
) -> Result<Option<UserAccount>, IndexError> {
    let fields = user_fields(conn.dialect());
    let row = sql::query(&format!(
        "SELECT {fields} FROM user_account u WHERE u.username = ? AND u.tenant_pk = ?"
    ))
    .bind(username)
    .bind(tenant)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(user).transpose()
}

/// The user a live (unexpired) credential belongs to.
pub(crate) async fn credential_user(
    conn: &mut dyn Conn,
    kind: CredentialKind,
    secret_sha256: &str,
) -> Result<Option<UserAccount>, IndexError> {
    let now = conn.dialect().now();
    let fields = user_fields(conn.dialect());
    let row = sql::query(&format!(
        "SELECT {fields} FROM credential c JOIN user_account u ON u.pk = c.user_pk
         WHERE c.secret_sha256 = ? AND c.kind = ? AND (c.expires_at IS NULL OR c.expires_at > {now})"
    ))
    .bind(secret_sha256)
    .bind(kind.as_str())
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(user).transpose()
}

pub(crate) async fn users(conn: &mut dyn Conn, tenant: i64) -> Result<Vec<UserAccount>, IndexError> {
    let fields = user_fields(conn.dialect());
    let rows = sql::query(&format!(
        "SELECT {fields} FROM user_account u WHERE u.tenant_pk = ? ORDER BY u.username"
    ))
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.iter().map(user).collect()
}

pub(crate) async fn tokens(
    conn: &mut dyn Conn,
    tenant: i64,
    username: &str,
) -> Result<Vec<TokenInfo>, IndexError> {
    let rows = sql::query(
        "SELECT c.pk, c.name, c.created_at, c.expires_at FROM credential c
         JOIN user_account u ON u.pk = c.user_pk
         WHERE u.username = ? AND u.tenant_pk = ? AND c.kind = 'token' ORDER BY c.pk",
    )
    .bind(username)
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TokenInfo {
                pk: r.try_get(0)?,
                name: r.try_get(1)?,
                created_at: r.try_get(2)?,
                expires_at: r.try_get(3)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Index;
    use pacs_model::TenantId;

    const T: TenantId = TenantId(1);

    #[tokio::test]
    async fn credentials_expire_and_follow_their_user() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let add = |name: &str| AccountWrite::AddUser {
            username: name.into(),
            password_hash: "$argon2id$placeholder".into(),
            role: Role::Reader,
        };
        assert_eq!(index.write_accounts(T, add("ana")).await.unwrap(), 1);
        assert!(
            index.write_accounts(T, add("ana")).await.is_err(),
            "user names are unique"
        );
        let credential = |secret: &str, kind, ttl_secs| AccountWrite::AddCredential {
            username: "ana".into(),
            kind,
            secret_sha256: secret.into(),
            name: None,
            ttl_secs,
        };
        for (secret, kind, ttl) in [
            ("forever", CredentialKind::Token, None),
            ("hour", CredentialKind::Session, Some(3600)),
            ("gone", CredentialKind::Session, Some(0)),
            ("negative", CredentialKind::Token, Some(-5)),
        ] {
            assert_eq!(
                index
                    .write_accounts(T, credential(secret, kind, ttl))
                    .await
                    .unwrap(),
                1
            );
        }
        let owner = |kind, secret: &'static str| {
            let index = &index;
            async move {
                index
                    .credential_user(kind, secret)
                    .await
                    .unwrap()
                    .map(|u| u.username)
            }
        };
        assert_eq!(
            owner(CredentialKind::Token, "forever").await.as_deref(),
            Some("ana")
        );
        assert_eq!(
            owner(CredentialKind::Session, "hour").await.as_deref(),
            Some("ana")
        );
        assert_eq!(owner(CredentialKind::Session, "gone").await, None);
        assert_eq!(owner(CredentialKind::Token, "negative").await, None);
        // A session secret is not a token and vice versa.
        assert_eq!(owner(CredentialKind::Token, "hour").await, None);
        // Changing the password ends sessions, not tokens.
        let set = AccountWrite::SetPassword {
            username: "ana".into(),
            password_hash: "$argon2id$other".into(),
            revoke_tokens: false,
        };
        assert_eq!(index.write_accounts(T, set).await.unwrap(), 1);
        assert_eq!(owner(CredentialKind::Session, "hour").await, None);
        assert_eq!(
            owner(CredentialKind::Token, "forever").await.as_deref(),
            Some("ana")
        );
        assert_eq!(index.tokens(T, "ana").await.unwrap().len(), 2);
        // Removing the user removes everything they held.
        let remove = AccountWrite::RemoveUser {
            username: "ana".into(),
        };
        assert_eq!(index.write_accounts(T, remove).await.unwrap(), 1);
        assert_eq!(owner(CredentialKind::Token, "forever").await, None);
        assert!(index.users(T).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn lockouts_run_out_or_are_lifted_and_a_password_change_can_revoke_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let write = |w: AccountWrite| {
            let index = &index;
            async move { index.write_accounts(T, w).await.unwrap() }
        };
        write(AccountWrite::AddUser {
            username: "ana".into(),
            password_hash: "$argon2id$placeholder".into(),
            role: Role::Reader,
        })
        .await;
        let lock = || async { index.user(T, "ana").await.unwrap().unwrap().lock };
        assert_eq!(lock().await, None);
        let lock_for = |secs| AccountWrite::Lock {
            username: "ana".into(),
            secs,
        };
        assert_eq!(write(lock_for(900)).await, 1);
        let held = lock().await.expect("locked");
        assert!((899..=901).contains(&held.remaining_secs), "{held:?}");
        assert!(index.users(T).await.unwrap()[0].lock.is_some());
        assert_eq!(
            write(AccountWrite::Unlock {
                username: "ana".into()
            })
            .await,
            1
        );
        assert_eq!(lock().await, None);
        write(lock_for(0)).await;
        assert_eq!(lock().await, None, "a lock that has run out is none");
        assert_eq!(write(lock_for(60)).await, 1);
        assert_eq!(
            write(AccountWrite::Unlock {
                username: "nobody".into()
            })
            .await,
            0
        );

        for (secret, kind) in [("t", CredentialKind::Token), ("s", CredentialKind::Session)] {
            write(AccountWrite::AddCredential {
                username: "ana".into(),
                kind,
                secret_sha256: secret.into(),
                name: None,
                ttl_secs: None,
            })
            .await;
        }
        write(AccountWrite::SetPassword {
            username: "ana".into(),
            password_hash: "$argon2id$new".into(),
            revoke_tokens: true,
        })
        .await;
        assert!(index
            .credential_user(CredentialKind::Token, "t")
            .await
            .unwrap()
            .is_none());
        assert!(index
            .credential_user(CredentialKind::Session, "s")
            .await
            .unwrap()
            .is_none());
        assert!(
            lock().await.is_some(),
            "a password change leaves the lock to the administrator"
        );
    }
}
