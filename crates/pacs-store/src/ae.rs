//! The DICOM AE table: application entities we may open associations to (C-MOVE destinations,
//! storage commitment requesters), managed by an administrator. The configuration file's
//! peers are not stored here; the archive lists both.
//!
//! Writes go through the index writer with their audit line in the same transaction.

use crate::sql::{self, Conn};

use crate::index::insert_audit;
use crate::{AuditEvent, IndexError};

/// An application entity as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AeRecord {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Changes to the AE table.
#[derive(Clone, Debug)]
pub enum AeWrite {
    /// Creates the entry or replaces its address and description. Returns 1 when it was
    /// created, 2 when it replaced one.
    Put {
        ae_title: String,
        host: String,
        port: u16,
        description: Option<String>,
    },
    /// Returns 1 when the entry existed, 0 otherwise.
    Remove { ae_title: String },
}

pub(crate) async fn apply(
    conn: &mut dyn Conn,
    tenant: i64,
    write: &AeWrite,
    audit: &AuditEvent,
) -> Result<u64, IndexError> {
    let now = conn.dialect().now();
    let done = match write {
        AeWrite::Put {
            ae_title,
            host,
            port,
            description,
        } => {
            let existed: Option<i64> =
                sql::query_scalar("SELECT pk FROM application_entity WHERE tenant_pk = ? AND ae_title = ?")
                    .bind(tenant)
                    .bind(ae_title)
                    .fetch_optional(&mut *conn)
                    .await?;
            sql::query(&format!(
                "INSERT INTO application_entity (tenant_pk, ae_title, host, port, description, created_at,
                                                 updated_at)
                 VALUES (?, ?, ?, ?, ?, {now}, {now})
                 ON CONFLICT (tenant_pk, ae_title) DO UPDATE SET
                   host = excluded.host, port = excluded.port, description = excluded.description,
                   updated_at = excluded.updated_at"
            ))
            .bind(tenant)
            .bind(ae_title)
            .bind(host)
            .bind(i64::from(*port))
            .bind(description)
            .execute(&mut *conn)
            .await?;
            if existed.is_some() {
                2
            } else {
                1
            }
        }
        AeWrite::Remove { ae_title } => {
            sql::query("DELETE FROM application_entity WHERE tenant_pk = ? AND ae_title = ?")
                .bind(tenant)
                .bind(ae_title)
                .execute(&mut *conn)
                .await?
        }
    };
    let mut audit = audit.clone();
    if done == 0 {
        audit.outcome = "not found".into();
    }
    insert_audit(conn, &audit).await?;
    Ok(done)
}

/// The tenant's AE table, by AE title.
pub(crate) async fn list(conn: &mut dyn Conn, tenant: i64) -> Result<Vec<AeRecord>, IndexError> {
    let rows = sql::query(
        "SELECT ae_title, host, port, description, created_at, updated_at FROM application_entity
         WHERE tenant_pk = ? ORDER BY ae_title",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let port: i64 = r.try_get(2)?;
            Ok(AeRecord {
                ae_title: r.try_get(0)?,
                host: r.try_get(1)?,
                port: u16::try_from(port).map_err(|_| IndexError::Schema(format!("AE port {port}")))?,
                description: r.try_get(3)?,
                created_at: r.try_get(4)?,
                updated_at: r.try_get(5)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditFilter, Index};
    use pacs_model::TenantId;

    fn audit(event: &str, actor: &str, patient: Option<&str>) -> AuditEvent {
        AuditEvent {
            tenant: 1,
            event: event.into(),
            actor: actor.into(),
            peer: "127.0.0.1:1".into(),
            patient_id: patient.map(str::to_string),
            outcome: "success".into(),
            ..AuditEvent::default()
        }
    }

    #[tokio::test]
    async fn ae_table_is_per_tenant_and_audited_with_each_change() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        let put = |host: &str| AeWrite::Put {
            ae_title: "WS 1".into(),
            host: host.into(),
            port: 104,
            description: Some("reading room".into()),
        };
        let t1 = TenantId(1);
        assert_eq!(
            index
                .write_ae(t1, put("10.0.0.1"), audit("ae-put", "http:a", None))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            index
                .write_ae(t1, put("10.0.0.2"), audit("ae-put", "http:a", None))
                .await
                .unwrap(),
            2
        );
        let table = index.aes(t1).await.unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!((table[0].host.as_str(), table[0].port), ("10.0.0.2", 104));
        assert!(index.aes(TenantId(2)).await.unwrap().is_empty());
        let remove = |title: &str| AeWrite::Remove {
            ae_title: title.into(),
        };
        assert_eq!(
            index
                .write_ae(t1, remove("NOBODY"), audit("ae-remove", "http:a", None))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            index
                .write_ae(t1, remove("WS 1"), audit("ae-remove", "http:a", None))
                .await
                .unwrap(),
            1
        );
        assert!(index.aes(t1).await.unwrap().is_empty());
        // Each change left its line, the one that found nothing marked so.
        let lines = index.audit_page(0, 10).await.unwrap();
        let outcomes: Vec<&str> = lines.iter().map(|l| l.event.outcome.as_str()).collect();
        assert_eq!(outcomes, ["success", "success", "not found", "success"]);
    }

    #[tokio::test]
    async fn audit_search_filters_pages_and_stays_in_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::tests::test_index(dir.path()).await;
        for i in 0..5 {
            index.audit(audit("query", "http:ana", Some("P1"))).await.unwrap();
            index
                .audit(audit("store", "CT_SCANNER", Some(&format!("P{i}"))))
                .await
                .unwrap();
        }
        // A second tenant, as tenancy management will create it.
        crate::index::tests::add_tenant(&index, 2, "other").await;
        index
            .audit(AuditEvent {
                tenant: 2,
                ..audit("query", "http:ana", Some("P1"))
            })
            .await
            .unwrap();
        let search = |f: AuditFilter| {
            let index = &index;
            async move {
                index
                    .audit_search(TenantId(1), &AuditFilter { limit: 100, ..f })
                    .await
                    .unwrap()
            }
        };
        let ana = search(AuditFilter {
            actor: Some("ana".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(ana.len(), 5);
        assert!(ana
            .iter()
            .all(|r| r.event.actor == "http:ana" && r.event.tenant == 1));
        let scanner = search(AuditFilter {
            actor: Some("CT_SCANNER".into()),
            patient_id: Some("P1".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(scanner.len(), 1);
        // Newest first, page by page.
        let first = index
            .audit_search(
                TenantId(1),
                &AuditFilter {
                    newest_first: true,
                    limit: 4,
                    ..AuditFilter::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(first.len(), 4);
        assert!(first.windows(2).all(|w| w[0].pk > w[1].pk));
        let next = search(AuditFilter {
            newest_first: true,
            before: Some(first[3].pk),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(next.len(), 6);
        assert!(next[0].pk < first[3].pk);
        // Dates compare as the index's text: everything is after 2000 and before 3000.
        let dated = search(AuditFilter {
            from: Some("2000-01-01".into()),
            to: Some("3000-01-01".into()),
            outcome: Some("success".into()),
            ..AuditFilter::default()
        })
        .await;
        assert_eq!(dated.len(), 10);
        let future = search(AuditFilter {
            from: Some("3000-01-01".into()),
            ..AuditFilter::default()
        })
        .await;
        assert!(future.is_empty());
    }
}
