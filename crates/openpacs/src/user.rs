//! `openpacs user …`: local accounts and their API tokens. Works while the server runs (the
//! index is shared); every change is audited.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context};
use pacs_store::{AccountWrite, AuditEvent, CredentialKind, Role};
use pacs_web::auth::{new_secret, MIN_PASSWORD_LEN};
use pacs_web::password::hash_password;

use crate::config::Config;

#[derive(clap::Args)]
pub struct UserArgs {
    /// The tenant the accounts belong to (default: the default tenant). A user logs in as
    /// NAME@TENANT, or as NAME under the tenant's prefix /t/TENANT/. `platform` holds the
    /// platform operators (role operator), who log in as NAME@platform.
    #[arg(long, global = true)]
    tenant: Option<String>,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is asked on the terminal, or read from standard input.
    Add {
        username: String,
        /// admin, reader (radiologist), referrer (previews and reports), uploader (STOW only).
        #[arg(long)]
        role: String,
    },
    /// List users and their roles.
    List,
    /// Remove a user, with their sessions and tokens.
    Remove { username: String },
    /// Change a user's password (ends their browser sessions; a running server refuses the
    /// old one at once, cached Basic credentials included).
    Passwd {
        username: String,
        /// Also revoke the user's API tokens.
        #[arg(long)]
        revoke_tokens: bool,
    },
    /// Lift a lock-out after repeated wrong passwords.
    Unlock { username: String },
    /// Change a user's role.
    Role { username: String, role: String },
    /// Create an API token for a user and print it (shown once: it is not stored).
    Token {
        username: String,
        /// A label to recognise the token by (e.g. the viewer or script using it).
        #[arg(long)]
        name: Option<String>,
        /// Days until the token expires (default: never).
        #[arg(long)]
        days: Option<u32>,
    },
    /// List a user's API tokens (their labels and dates, never the secrets).
    Tokens { username: String },
    /// Revoke one API token by the id `tokens` shows.
    Revoke { username: String, id: i64 },
}

pub async fn run(config: Config, args: UserArgs) -> anyhow::Result<ExitCode> {
    let archive = crate::tenant::open_archive(&config, args.tenant.as_deref()).await?;
    let command = args.command;
    let index = archive.index();
    let audit = |event: &str, detail: String| AuditEvent {
        event: event.into(),
        actor: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        peer: "local".into(),
        outcome: "success".into(),
        detail: Some(detail),
        ..AuditEvent::default()
    };
    match command {
        UserCommand::Add { username, role } => {
            validate_username(&username)?;
            let role = parse_role(&role, &archive)?;
            if index.user(&username).await?.is_some() {
                bail!("user {username:?} already exists");
            }
            let password = read_new_password(&username)?;
            let password_hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            index
                .write_accounts(AccountWrite::AddUser {
                    username: username.clone(),
                    password_hash,
                    role,
                })
                .await?;
            archive
                .record(audit("user-add", format!("{username} ({})", role.as_str())))
                .await;
            println!("user {username} added with role {}", role.as_str());
        }
        UserCommand::List => {
            for user in index.users().await? {
                println!("{}\t{}\t{}", user.username, user.role.as_str(), user.created_at);
            }
        }
        UserCommand::Remove { username } => {
            require_changed(
                index
                    .write_accounts(AccountWrite::RemoveUser {
                        username: username.clone(),
                    })
                    .await?,
                &username,
            )?;
            archive.record(audit("user-remove", username.clone())).await;
            println!("user {username} removed");
        }
        UserCommand::Passwd {
            username,
            revoke_tokens,
        } => {
            if index.user(&username).await?.is_none() {
                bail!("no user {username:?}");
            }
            let password = read_new_password(&username)?;
            let password_hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            index
                .write_accounts(AccountWrite::SetPassword {
                    username: username.clone(),
                    password_hash,
                    revoke_tokens,
                })
                .await?;
            let (detail, ended) = if revoke_tokens {
                (
                    "sessions and API tokens revoked",
                    "their sessions and API tokens are revoked",
                )
            } else {
                ("sessions ended", "their sessions are closed")
            };
            archive
                .record(audit("user-passwd", format!("{username} ({detail})")))
                .await;
            println!("password of {username} changed; {ended}");
        }
        UserCommand::Unlock { username } => {
            let Some(user) = index.user(&username).await? else {
                bail!("no user {username:?}");
            };
            index
                .write_accounts(AccountWrite::Unlock {
                    username: username.clone(),
                })
                .await?;
            let was = if user.lock.is_some() {
                "was locked"
            } else {
                "was not locked"
            };
            archive
                .record(audit("user-unlock", format!("{username} ({was})")))
                .await;
            println!("{username} unlocked ({was})");
        }
        UserCommand::Role { username, role } => {
            let role = parse_role(&role, &archive)?;
            require_changed(
                index
                    .write_accounts(AccountWrite::SetRole {
                        username: username.clone(),
                        role,
                    })
                    .await?,
                &username,
            )?;
            archive
                .record(audit("user-role", format!("{username} ({})", role.as_str())))
                .await;
            println!("user {username} now has role {}", role.as_str());
        }
        UserCommand::Token { username, name, days } => {
            if index.user(&username).await?.is_none() {
                bail!("no user {username:?}");
            }
            let (secret, digest) = new_secret("opk_");
            index
                .write_accounts(AccountWrite::AddCredential {
                    username: username.clone(),
                    kind: CredentialKind::Token,
                    secret_sha256: digest,
                    name: name.clone(),
                    ttl_secs: days.map(|d| i64::from(d) * 86_400),
                })
                .await?;
            archive
                .record(audit(
                    "token-add",
                    format!("{username} {}", name.as_deref().unwrap_or("")),
                ))
                .await;
            println!("{secret}");
        }
        UserCommand::Tokens { username } => {
            for token in index.tokens(&username).await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    token.pk,
                    token.name.as_deref().unwrap_or(""),
                    token.created_at,
                    token.expires_at.as_deref().unwrap_or("never")
                );
            }
        }
        UserCommand::Revoke { username, id } => {
            let removed = index
                .write_accounts(AccountWrite::RevokeToken {
                    username: username.clone(),
                    pk: id,
                })
                .await?;
            if removed == 0 {
                bail!("user {username:?} has no token {id}");
            }
            archive
                .record(audit("token-revoke", format!("{username} {id}")))
                .await;
            println!("token {id} of {username} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn require_changed(rows: u64, username: &str) -> anyhow::Result<()> {
    if rows == 0 {
        bail!("no user {username:?}");
    }
    Ok(())
}

/// A role for an account of `archive`'s tenant: operator for the platform's, and only there.
fn parse_role(text: &str, archive: &pacs_archive::Archive) -> anyhow::Result<Role> {
    let role = Role::parse(text).with_context(|| {
        format!("unknown role {text:?}: choose admin, reader, referrer or uploader (operator for --tenant platform)")
    })?;
    let platform = archive.tenant() == pacs_model::TenantId::PLATFORM;
    if platform != (role == Role::Operator) {
        bail!("the role operator is the platform's, and the platform's only role: use --tenant platform --role operator");
    }
    Ok(role)
}

fn validate_username(name: &str) -> anyhow::Result<()> {
    pacs_web::auth::check_username(name).map_err(anyhow::Error::msg)
}

/// The new password: asked twice on a terminal (not echoed), else the first line of stdin.
fn read_new_password(username: &str) -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("new password for {username}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < MIN_PASSWORD_LEN {
        bail!("a password has at least {MIN_PASSWORD_LEN} characters");
    }
    Ok(password)
}
