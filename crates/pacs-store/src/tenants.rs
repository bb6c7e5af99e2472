//! The tenants of an installation: the establishments a shared platform hosts, each with the
//! called AE titles and HL7 receiving facilities that route traffic to it. Managing them is a
//! platform operation (it spans tenants by nature), reached through [`crate::SystemIndex`].
//!
//! Writes go through the index writer with their audit line in the same transaction.

use crate::index::insert_audit;
use crate::sql::{self, Conn};
use crate::{AuditEvent, IndexError};

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantRecord {
    pub pk: i64,
    pub name: String,
    pub title: String,
    pub disabled: bool,
    pub quota_bytes: Option<u64>,
    /// The tenant's patient identifier domain (empty: the installation's configured one for
    /// the default tenant, none for the others).
    pub issuer_of_patient_id: String,
    /// Called AE titles that select this tenant, sorted.
    pub ae_titles: Vec<String>,
    /// HL7 receiving facilities (MSH-6.1) that select this tenant, sorted.
    pub hl7_facilities: Vec<String>,
    pub created_at: String,
}

/// The settings `add` and `set` take; `None` leaves a field as it is (`set`) or empty (`add`).
#[derive(Clone, Debug, Default)]
pub struct TenantFields {
    pub title: Option<String>,
    pub ae_titles: Option<Vec<String>>,
    pub hl7_facilities: Option<Vec<String>>,
    pub issuer_of_patient_id: Option<String>,
    /// `Some(None)` removes the quota.
    pub quota_bytes: Option<Option<u64>>,
}

/// The name of the platform's own row ([`pacs_model::TenantId::PLATFORM`]).
pub const PLATFORM_NAME: &str = "platform";

/// Changes to the tenant table.
#[derive(Clone, Debug)]
pub enum TenantWrite {
    Add {
        name: String,
        fields: TenantFields,
    },
    Set {
        name: String,
        fields: TenantFields,
    },
    /// Refuses new stores and log-ins; keeps the data.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Break-glass: `operator` (a user of the platform) may read the tenant's data for
    /// `secs`, for `reason`. Audited in the tenant's own log (and the platform's).
    GrantAccess {
        name: String,
        operator: String,
        reason: String,
        secs: u64,
    },
    /// Ends `operator`'s grants on the tenant at once.
    RevokeAccess {
        name: String,
        operator: String,
    },
}

impl TenantWrite {
    pub fn name(&self) -> &str {
        match self {
            TenantWrite::Add { name, .. }
            | TenantWrite::Set { name, .. }
            | TenantWrite::Disable { name }
            | TenantWrite::Enable { name }
            | TenantWrite::GrantAccess { name, .. }
            | TenantWrite::RevokeAccess { name, .. } => name,
        }
    }
}

/// What a tenant write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantOutcome {
    /// Added (its key) or changed.
    Done {
        pk: i64,
    },
    NotFound,
    /// The name, or an AE title or facility, belongs to a tenant already: nothing was written.
    Conflict(String),
}

/// Checks a tenant name: 1 to 32 of `a-z`, `0-9` and `-` (it appears in URLs, `/t/{name}/`,
/// and in log-in names, `user@name`); `platform` is the platform's own.
pub fn check_name(name: &str) -> Result<(), String> {
    if name == PLATFORM_NAME {
        return Err(format!("tenant name {name:?} is the platform's own"));
    }
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant name {name:?}: 1 to 32 lower-case letters, digits or '-'"
        ))
    }
}

/// Checks an AE title a tenant is called by: 1 to 16 characters of the default repertoire,
/// no backslash or control character, not only spaces (PS3.5 AE VR).
pub fn check_ae_title(ae: &str) -> Result<(), String> {
    let ok = !ae.trim().is_empty()
        && ae.len() <= 16
        && ae.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\');
    if ok && ae == ae.trim() {
        Ok(())
    } else {
        Err(format!(
            "AE title {ae:?}: 1 to 16 printable ASCII characters, no backslash, no leading or trailing space"
        ))
    }
}

/// Checks an HL7 receiving facility (MSH-6.1): 1 to 64 printable characters, none of HL7's
/// delimiters.
pub fn check_facility(facility: &str) -> Result<(), String> {
    let ok = !facility.trim().is_empty()
        && facility.chars().count() <= 64
        && facility == facility.trim()
        && !facility.chars().any(|c| c.is_control() || "|^~\\&".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "HL7 facility {facility:?}: 1 to 64 characters, none of | ^ ~ \\ &"
        ))
    }
}

pub(crate) async fn apply(
    conn: &mut dyn Conn,
    write: &TenantWrite,
    audit: &AuditEvent,
) -> Result<TenantOutcome, IndexError> {
    let name = write.name();
    let existing: Option<i64> = sql::query_scalar("SELECT pk FROM tenant WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    let fields = match write {
        TenantWrite::Add { fields, .. } | TenantWrite::Set { fields, .. } => Some(fields),
        _ => None,
    };
    // Conflicts are found before anything is written, so a refused write leaves only its
    // audit line.
    let conflict = match (write, fields) {
        (TenantWrite::Add { .. }, _) if existing.is_some() => Some(format!("tenant {name} exists")),
        (_, Some(fields)) => route_conflict(conn, existing.unwrap_or(-1), fields).await?,
        _ => None,
    };
    if existing == Some(pacs_model::TenantId::PLATFORM.0) {
        return Err(IndexError::Schema(
            "the platform is not a tenant to change".into(),
        ));
    }
    let outcome = match (write, existing) {
        _ if conflict.is_some() => TenantOutcome::Conflict(conflict.unwrap_or_default()),
        (TenantWrite::Add { .. }, Some(_)) => TenantOutcome::Conflict(format!("tenant {name} exists")),
        (TenantWrite::Add { fields, .. }, None) => {
            let now = conn.dialect().now();
            let pk: i64 = sql::query_scalar("SELECT COALESCE(max(pk), 0) + 1 FROM tenant")
                .fetch_one(&mut *conn)
                .await?;
            sql::query(&format!(
                "INSERT INTO tenant (pk, name, title, disabled, quota_bytes, issuer_of_patient_id, created_at)
                 VALUES (?, ?, ?, 0, ?, ?, {now})"
            ))
            .bind(pk)
            .bind(name)
            .bind(fields.title.clone().unwrap_or_default())
            .bind(fields.quota_bytes.flatten().map(|q| q as i64))
            .bind(fields.issuer_of_patient_id.clone().unwrap_or_default())
            .execute(&mut *conn)
            .await?;
            set_routes(conn, pk, fields).await?;
            TenantOutcome::Done { pk }
        }
        (_, None) => TenantOutcome::NotFound,
        (TenantWrite::Set { fields, .. }, Some(pk)) => {
            if let Some(title) = &fields.title {
                sql::query("UPDATE tenant SET title = ? WHERE pk = ?")
                    .bind(title)
                    .bind(pk)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(quota) = fields.quota_bytes {
                sql::query("UPDATE tenant SET quota_bytes = ? WHERE pk = ?")
                    .bind(quota.map(|q| q as i64))
                    .bind(pk)
                    .execute(&mut *conn)
                    .await?;
            }
            if let Some(issuer) = &fields.issuer_of_patient_id {
                sql::query("UPDATE tenant SET issuer_of_patient_id = ? WHERE pk = ?")
                    .bind(issuer)
                    .bind(pk)
                    .execute(&mut *conn)
                    .await?;
            }
            set_routes(conn, pk, fields).await?;
            TenantOutcome::Done { pk }
        }
        (
            TenantWrite::GrantAccess {
                operator,
                reason,
                secs,
                ..
            },
            Some(pk),
        ) => {
            let (now, until) = (conn.dialect().now(), conn.dialect().now_plus_secs("?"));
            sql::query(&format!(
                "INSERT INTO access_grant (tenant_pk, operator, reason, granted_at, expires_at)
                 VALUES (?, ?, ?, {now}, {until})"
            ))
            .bind(pk)
            .bind(operator)
            .bind(reason)
            .bind(i64::try_from(*secs).unwrap_or(i64::MAX))
            .execute(&mut *conn)
            .await?;
            TenantOutcome::Done { pk }
        }
        (TenantWrite::RevokeAccess { operator, .. }, Some(pk)) => {
            let now = conn.dialect().now();
            sql::query(&format!(
                "UPDATE access_grant SET expires_at = {now} WHERE tenant_pk = ? AND operator = ? AND expires_at > {now}"
            ))
            .bind(pk)
            .bind(operator)
            .execute(&mut *conn)
            .await?;
            TenantOutcome::Done { pk }
        }
        (TenantWrite::Disable { .. } | TenantWrite::Enable { .. }, Some(pk)) => {
            let disabled = matches!(write, TenantWrite::Disable { .. });
            sql::query("UPDATE tenant SET disabled = ? WHERE pk = ?")
                .bind(i64::from(disabled))
                .bind(pk)
                .execute(&mut *conn)
                .await?;
            TenantOutcome::Done { pk }
        }
    };
    // Tenant changes are the platform's events, whoever asked; a break-glass grant or its
    // revocation is also the tenant's, in its own log.
    let mut audit = AuditEvent {
        tenant: pacs_model::TenantId::PLATFORM.0,
        ..audit.clone()
    };
    if let (TenantWrite::GrantAccess { .. } | TenantWrite::RevokeAccess { .. }, TenantOutcome::Done { pk }) =
        (write, &outcome)
    {
        insert_audit(
            conn,
            &AuditEvent {
                tenant: *pk,
                ..audit.clone()
            },
        )
        .await?;
    }
    match &outcome {
        TenantOutcome::Done { .. } => {}
        TenantOutcome::NotFound => audit.outcome = "not found".into(),
        TenantOutcome::Conflict(why) => {
            audit.outcome = "refused".into();
            audit.detail = Some(match audit.detail.take() {
                Some(detail) => format!("{detail}: {why}"),
                None => why.clone(),
            });
        }
    }
    insert_audit(conn, &audit).await?;
    Ok(outcome)
}

const ROUTES: [(&str, &str, &str); 2] = [
    ("tenant_ae", "ae_title", "AE title"),
    ("tenant_hl7_facility", "facility", "HL7 facility"),
];

fn route_values(fields: &TenantFields) -> [&Option<Vec<String>>; 2] {
    [&fields.ae_titles, &fields.hl7_facilities]
}

/// An AE title or facility of `fields` that another tenant than `pk` holds.
async fn route_conflict(
    conn: &mut dyn Conn,
    pk: i64,
    fields: &TenantFields,
) -> Result<Option<String>, IndexError> {
    for ((table, column, what), values) in ROUTES.into_iter().zip(route_values(fields)) {
        for value in values.iter().flatten() {
            let owner: Option<String> = sql::query_scalar(&format!(
                "SELECT t.name FROM {table} r JOIN tenant t ON t.pk = r.tenant_pk
                 WHERE r.{column} = ? AND r.tenant_pk <> ?"
            ))
            .bind(value)
            .bind(pk)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(owner) = owner {
                return Ok(Some(format!("{what} {value} belongs to tenant {owner}")));
            }
        }
    }
    Ok(None)
}

/// Replaces the AE titles and facilities `fields` names (after [`route_conflict`]).
async fn set_routes(conn: &mut dyn Conn, pk: i64, fields: &TenantFields) -> Result<(), IndexError> {
    for ((table, column, _), values) in ROUTES.into_iter().zip(route_values(fields)) {
        let Some(values) = values else { continue };
        sql::query(&format!("DELETE FROM {table} WHERE tenant_pk = ?"))
            .bind(pk)
            .execute(&mut *conn)
            .await?;
        for value in values {
            sql::query(&format!(
                "INSERT INTO {table} ({column}, tenant_pk) VALUES (?, ?) ON CONFLICT ({column}) DO NOTHING"
            ))
            .bind(value)
            .bind(pk)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// When `operator`'s live break-glass grant on `tenant` ends, if it has one.
pub(crate) async fn access_grant(
    conn: &mut dyn Conn,
    tenant: i64,
    operator: &str,
) -> Result<Option<String>, IndexError> {
    let now = conn.dialect().now();
    Ok(sql::query_scalar(&format!(
        "SELECT max(expires_at) FROM access_grant WHERE tenant_pk = ? AND operator = ? AND expires_at > {now}"
    ))
    .bind(tenant)
    .bind(operator)
    .fetch_one(&mut *conn)
    .await?)
}

/// Every tenant, by key, with its routes (not the platform's own row).
pub(crate) async fn list(conn: &mut dyn Conn) -> Result<Vec<TenantRecord>, IndexError> {
    let rows = sql::query(
        "SELECT pk, name, title, disabled, quota_bytes, issuer_of_patient_id, created_at FROM tenant WHERE pk > 0
         ORDER BY pk",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut tenants = Vec::with_capacity(rows.len());
    for r in &rows {
        let disabled: i64 = r.try_get(3)?;
        let quota: Option<i64> = r.try_get(4)?;
        tenants.push(TenantRecord {
            pk: r.try_get(0)?,
            name: r.try_get(1)?,
            title: r.try_get(2)?,
            disabled: disabled != 0,
            quota_bytes: quota.map(|q| q.max(0) as u64),
            issuer_of_patient_id: r.try_get(5)?,
            ae_titles: Vec::new(),
            hl7_facilities: Vec::new(),
            created_at: r.try_get(6)?,
        });
    }
    for (table, column) in [("tenant_ae", "ae_title"), ("tenant_hl7_facility", "facility")] {
        let rows = sql::query(&format!(
            "SELECT tenant_pk, {column} FROM {table} ORDER BY tenant_pk, {column}"
        ))
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            let pk: i64 = r.try_get(0)?;
            let value: String = r.try_get(1)?;
            if let Some(tenant) = tenants.iter_mut().find(|t| t.pk == pk) {
                if table == "tenant_ae" {
                    tenant.ae_titles.push(value);
                } else {
                    tenant.hl7_facilities.push(value);
                }
            }
        }
    }
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditFilter, Index};
    use pacs_model::TenantId;

    fn audit(detail: &str) -> AuditEvent {
        AuditEvent {
            event: "tenant".into(),
            actor: "cli:root".into(),
            outcome: "success".into(),
            detail: Some(detail.into()),
            ..AuditEvent::default()
        }
    }

    fn fields(aes: &[&str], facilities: &[&str]) -> TenantFields {
        TenantFields {
            title: Some("CH de Montélimar".into()),
            ae_titles: Some(aes.iter().map(|s| s.to_string()).collect()),
            hl7_facilities: Some(facilities.iter().map(|s| s.to_string()).collect()),
            issuer_of_patient_id: Some("CHM".into()),
            quota_bytes: Some(Some(1 << 30)),
        }
    }

    /// Tenants are added with their routes, an AE title or facility never serves two, a
    /// refused write changes nothing, and each change is audited in the tenant's own log.
    #[tokio::test]
    async fn tenants_own_their_routes_and_every_change_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let add = |name: &str, f| TenantWrite::Add {
            name: name.into(),
            fields: f,
        };
        let Ok(TenantOutcome::Done { pk }) = index
            .write_tenant(
                add("montelimar", fields(&["MONTEL", "MONTEL_CT"], &["CHM"])),
                audit("add"),
            )
            .await
        else {
            panic!("not added")
        };
        assert_eq!(pk, 2, "after the default tenant");
        // Another tenant cannot take an AE title or a facility that is taken, nor the name.
        let taken = index
            .write_tenant(
                add("valence", fields(&["VALENCE", "MONTEL"], &["CHV"])),
                audit("add"),
            )
            .await
            .unwrap();
        assert_eq!(
            taken,
            TenantOutcome::Conflict("AE title MONTEL belongs to tenant montelimar".into())
        );
        let taken = index
            .write_tenant(add("valence", fields(&["VALENCE"], &["CHM"])), audit("add"))
            .await
            .unwrap();
        assert_eq!(
            taken,
            TenantOutcome::Conflict("HL7 facility CHM belongs to tenant montelimar".into())
        );
        assert!(matches!(
            index
                .write_tenant(add("montelimar", TenantFields::default()), audit("add"))
                .await
                .unwrap(),
            TenantOutcome::Conflict(_)
        ));
        let tenants = index.tenants().await.unwrap();
        assert_eq!(
            tenants.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["default", "montelimar"],
            "refused writes added nothing"
        );
        let montelimar = &tenants[1];
        assert_eq!(montelimar.ae_titles, ["MONTEL", "MONTEL_CT"]);
        assert_eq!(montelimar.hl7_facilities, ["CHM"]);
        assert_eq!(montelimar.quota_bytes, Some(1 << 30));
        assert_eq!(montelimar.issuer_of_patient_id, "CHM");
        assert_eq!(montelimar.title, "CH de Montélimar");
        assert!(!montelimar.disabled);

        // `set` changes only what it names; the AE list is replaced whole.
        let set = TenantWrite::Set {
            name: "montelimar".into(),
            fields: TenantFields {
                ae_titles: Some(vec!["MONTEL_MR".into()]),
                quota_bytes: Some(None),
                ..TenantFields::default()
            },
        };
        assert_eq!(
            index.write_tenant(set, audit("set")).await.unwrap(),
            TenantOutcome::Done { pk: 2 }
        );
        let disable = TenantWrite::Disable {
            name: "montelimar".into(),
        };
        index.write_tenant(disable, audit("disable")).await.unwrap();
        let unknown = TenantWrite::Disable {
            name: "nowhere".into(),
        };
        assert_eq!(
            index.write_tenant(unknown, audit("disable")).await.unwrap(),
            TenantOutcome::NotFound
        );
        let montelimar = index.tenants().await.unwrap().remove(1);
        assert_eq!(montelimar.ae_titles, ["MONTEL_MR"]);
        assert_eq!(montelimar.hl7_facilities, ["CHM"], "not named, kept");
        assert_eq!(montelimar.quota_bytes, None);
        assert_eq!(montelimar.title, "CH de Montélimar");
        assert!(montelimar.disabled);
        // The freed AE title can now be another tenant's.
        assert!(matches!(
            index
                .write_tenant(add("valence", fields(&["MONTEL"], &["CHV"])), audit("add"))
                .await
                .unwrap(),
            TenantOutcome::Done { pk: 3 }
        ));

        // Every change and refusal is in the platform's log, none in a tenant's.
        let tenant_events = |tenant| {
            let index = &index;
            async move {
                let filter = AuditFilter {
                    event: Some("tenant".into()),
                    limit: 20,
                    ..AuditFilter::default()
                };
                let mut lines: Vec<String> = index
                    .audit_search(tenant, &filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| format!("{} {}", r.event.outcome, r.event.detail.unwrap_or_default()))
                    .collect();
                lines.sort();
                lines
            }
        };
        assert_eq!(
            tenant_events(TenantId::PLATFORM).await,
            [
                "not found disable",
                "refused add: AE title MONTEL belongs to tenant montelimar",
                "refused add: HL7 facility CHM belongs to tenant montelimar",
                "refused add: tenant montelimar exists",
                "success add",
                "success add",
                "success disable",
                "success set",
            ]
        );
        for tenant in [TenantId::DEFAULT, TenantId(2), TenantId(3)] {
            assert!(tenant_events(tenant).await.is_empty());
        }
    }

    #[test]
    fn names_and_routes_are_checked() {
        assert!(check_name("ch-montelimar-2").is_ok());
        for bad in ["", "Montelimar", "a_b", "a.b", "platform", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_ae_title("MONTEL_CT").is_ok());
        for bad in ["", "   ", " LEAD", "A\\B", &"A".repeat(17)] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
        assert!(check_facility("CH MONTELIMAR").is_ok());
        for bad in ["", "A|B", "A^B", "A&B"] {
            assert!(check_facility(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod upgrade_tests {
    use sqlx::{Connection, SqliteConnection};

    use crate::{CredentialKind, Index, SqlIndex};
    use pacs_model::TenantId;

    /// An index of version 7 (before tenants) keeps its accounts and their live tokens through
    /// the rebuild of the account tables; user names then repeat across tenants.
    #[tokio::test]
    async fn accounts_and_tokens_survive_the_migration_to_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut conn = SqliteConnection::connect_with(&crate::index::connect_options(&path))
            .await
            .unwrap();
        for (i, sql) in crate::index::SQLITE_MIGRATIONS[..7].iter().enumerate() {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO user_account (pk, tenant_pk, username, password_hash, role, created_at,
                                       password_changed_at)
             VALUES (7, 1, 'alice', '$argon2id$x', 'admin', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
             INSERT INTO credential (user_pk, kind, secret_sha256, name, created_at)
             VALUES (7, 'token', 'feed', 'viewer', '2026-01-01T00:00:00.000Z');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        drop(conn);

        let index = SqlIndex::open(&path).await.unwrap();
        assert_eq!(SqlIndex::schema_version(&path).await.unwrap(), 8);
        let owner = index
            .credential_user(CredentialKind::Token, "feed")
            .await
            .unwrap()
            .expect("the token still names its user");
        assert_eq!((owner.pk, owner.username.as_str()), (7, "alice"));
        // A second tenant may now have its own alice.
        crate::index::tests::add_tenant(&index, 2, "valence").await;
        let add = crate::AccountWrite::AddUser {
            username: "alice".into(),
            password_hash: "$argon2id$y".into(),
            role: crate::Role::Reader,
        };
        assert_eq!(index.write_accounts(TenantId(2), add).await.unwrap(), 1);
        assert_eq!(
            index.user(TenantId(1), "alice").await.unwrap().unwrap().role,
            crate::Role::Admin
        );
        assert_eq!(
            index.user(TenantId(2), "alice").await.unwrap().unwrap().role,
            crate::Role::Reader
        );
        // Removing a user still removes their credentials (the rebuilt foreign key).
        let remove = crate::AccountWrite::RemoveUser {
            username: "alice".into(),
        };
        index.write_accounts(TenantId(1), remove).await.unwrap();
        assert!(index
            .credential_user(CredentialKind::Token, "feed")
            .await
            .unwrap()
            .is_none());
    }
}

#[cfg(test)]
mod quota_tests {
    use crate::index::tests::{instance, test_index};
    use crate::{AuditEvent, DeleteScope, Index, IndexOutcome, TenantFields, TenantWrite};
    use pacs_model::TenantId;

    /// Usage is the bytes of every row the tenant holds, kept in the transaction of each
    /// change; a store past the quota writes nothing; the other tenant is not counted.
    #[tokio::test]
    async fn a_store_past_the_quota_writes_nothing_and_usage_stays_exact() {
        let dir = tempfile::tempdir().unwrap();
        let index = test_index(dir.path()).await;
        let add = TenantWrite::Add {
            name: "clinique".into(),
            fields: TenantFields {
                quota_bytes: Some(Some(25)),
                ..TenantFields::default()
            },
        };
        index.write_tenant(add, AuditEvent::default()).await.unwrap();
        let store = |sop: &str, sha: &str, tenant: i64| {
            let mut object = instance(sop, sha);
            object.tenant = tenant;
            object.audit = None;
            object.check_quota = tenant == 2;
            index.add_instance(object)
        };
        assert!(matches!(
            store("1.1", "aa", 2).await.unwrap(),
            IndexOutcome::Stored { .. }
        ));
        assert!(matches!(
            store("1.2", "bb", 2).await.unwrap(),
            IndexOutcome::Stored { .. }
        ));
        assert_eq!(
            store("1.3", "cc", 2).await.unwrap(),
            IndexOutcome::QuotaExceeded {
                quota: 25,
                stored: 20
            }
        );
        // A duplicate costs nothing and is still recognised.
        assert!(matches!(
            store("1.1", "aa", 2).await.unwrap(),
            IndexOutcome::Duplicate { .. }
        ));
        for sop in ["2.1", "2.2", "2.3"] {
            assert!(matches!(
                store(sop, "dd", 1).await.unwrap(),
                IndexOutcome::Stored { .. }
            ));
        }
        assert_eq!(index.tenant_usage().await.unwrap(), [(1, 30), (2, 20)]);
        assert_eq!(
            index.stats(TenantId(2)).await.unwrap().instances,
            2,
            "nothing of 1.3"
        );
        // Freed space can be used again.
        let scope = DeleteScope {
            tenant: 2,
            study_uid: "1.2.3".into(),
            series_uid: None,
            sop_uid: Some("1.2".into()),
        };
        index.delete(scope, AuditEvent::default()).await.unwrap();
        assert_eq!(index.tenant_usage().await.unwrap(), [(1, 30), (2, 10)]);
        assert!(matches!(
            store("1.3", "cc", 2).await.unwrap(),
            IndexOutcome::Stored { .. }
        ));
    }
}
