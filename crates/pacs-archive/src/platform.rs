//! The platform: every tenant of an installation, one [`Archive`] each, over one index engine
//! and one blob store, and the routes that lead traffic to exactly one of them (a called AE
//! title, an HL7 receiving facility, a tenant name).
//!
//! The edges (the DIMSE router, the HL7 router, the HTTP middleware) resolve the tenant here
//! and hand the rest of the code that tenant's archive, whose index handle is scoped to it; no
//! code below an edge chooses a tenant. With one tenant (the default, a one-hospital install)
//! every route leads to it, as before tenancy existed; once a second tenant exists, a route
//! that names no tenant leads nowhere (the association, message or request is refused).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pacs_model::TenantId;
use pacs_store::{
    AuditEvent, BlobStore, Index, SqlIndex, SystemIndex, TenantOutcome, TenantRecord, TenantWrite,
};

use crate::{index_path, Archive, ArchiveConfig, ArchiveError};

/// How often the tenant table (changed by `openpacs tenant` or another node) and each tenant's
/// AE table are read again.
const REFRESH: Duration = Duration::from_secs(2);

/// Where a called AE title leads.
pub enum Route {
    Tenant(Arc<Archive>),
    /// The tenant exists but is disabled (it keeps its data, takes nothing new).
    Disabled(String),
    /// No tenant is called so.
    Unknown,
}

/// The tenants as last read, with their routes.
struct Tenants {
    records: Vec<TenantRecord>,
    archives: HashMap<i64, Arc<Archive>>,
    by_ae: HashMap<String, i64>,
    /// Facilities upper-cased: MSH-6 is compared without regard to case.
    by_facility: HashMap<String, i64>,
    by_name: HashMap<String, i64>,
}

pub struct Platform {
    config: ArchiveConfig,
    blobs: Arc<dyn BlobStore>,
    system: SystemIndex,
    node: String,
    tenants: RwLock<Arc<Tenants>>,
    /// Held while the tenant table is read and the archives rebuilt, so that a slow reload
    /// never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
}

impl Platform {
    /// Opens the index and the blob store, and every tenant's archive.
    pub async fn open(config: &ArchiveConfig) -> Result<Arc<Platform>, ArchiveError> {
        std::fs::create_dir_all(&config.data_dir).map_err(ArchiveError::from_io)?;
        let blobs = pacs_store::blob::open(&config.data_dir, &config.blobs).map_err(ArchiveError::from_io)?;
        let engine: Arc<dyn Index> = Arc::new(match &config.index_url {
            None => SqlIndex::open(&index_path(&config.data_dir)).await?,
            Some(url) => SqlIndex::open_url_with(url, config.index_options).await?,
        });
        let platform = Arc::new(Platform {
            config: config.clone(),
            system: SystemIndex::new(engine),
            blobs,
            node: crate::node_name(),
            tenants: RwLock::new(Arc::new(Tenants {
                records: Vec::new(),
                archives: HashMap::new(),
                by_ae: HashMap::new(),
                by_facility: HashMap::new(),
                by_name: HashMap::new(),
            })),
            reloading: tokio::sync::Mutex::new(()),
        });
        platform.reload().await?;
        Ok(platform)
    }

    fn current(&self) -> Arc<Tenants> {
        self.tenants.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The default tenant's archive (the one-hospital install's only one).
    pub fn default_archive(&self) -> Arc<Archive> {
        self.archive(TenantId::DEFAULT)
            .expect("the default tenant exists in every index and is loaded at open")
    }

    /// A tenant's archive; [`TenantId::PLATFORM`]'s is the platform's own (its operators'
    /// accounts and audit trail, no patient data), which no route leads to.
    pub fn archive(&self, tenant: TenantId) -> Option<Arc<Archive>> {
        self.current().archives.get(&tenant.0).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Archive>> {
        let tenants = self.current();
        tenants
            .by_name
            .get(name)
            .and_then(|pk| tenants.archives.get(pk))
            .cloned()
    }

    /// Every tenant as last read.
    pub fn records(&self) -> Vec<TenantRecord> {
        self.current().records.clone()
    }

    /// A tenant's record with the routes it answers by: the default tenant's include the
    /// configured `ae_title` and `hl7_facilities`.
    pub fn with_routes(&self, record: &TenantRecord) -> TenantRecord {
        let mut record = record.clone();
        if record.pk == TenantId::DEFAULT.0 {
            record.ae_titles.insert(0, self.config.ae_title.clone());
            record
                .hl7_facilities
                .extend(self.config.hl7_facilities.iter().cloned());
        }
        record
    }

    pub fn record(&self, tenant: TenantId) -> Option<TenantRecord> {
        self.current().records.iter().find(|r| r.pk == tenant.0).cloned()
    }

    /// Whether more than one tenant exists: routes must then name theirs.
    pub fn is_shared(&self) -> bool {
        self.current().records.len() > 1
    }

    /// The tenant a DIMSE association calling `called_ae` is for.
    pub fn by_called_ae(&self, called_ae: &str) -> Route {
        let tenants = self.current();
        let pk = match tenants.by_ae.get(called_ae) {
            Some(pk) => *pk,
            None if tenants.records.len() <= 1 => TenantId::DEFAULT.0,
            None => return Route::Unknown,
        };
        route(&tenants, pk)
    }

    /// The tenant an HL7 message for receiving facility `facility` (MSH-6.1) is for.
    pub fn by_facility(&self, facility: &str) -> Route {
        let tenants = self.current();
        let pk = match tenants.by_facility.get(&facility.trim().to_uppercase()) {
            Some(pk) => *pk,
            None if tenants.records.len() <= 1 => TenantId::DEFAULT.0,
            None => return Route::Unknown,
        };
        route(&tenants, pk)
    }

    /// The operations across tenants.
    pub fn system(&self) -> &SystemIndex {
        &self.system
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Brings the data directory back to a consistent state after a crash (see
    /// [`Archive::recover`]).
    pub async fn recover(&self) -> Result<crate::maintenance::RecoveryReport, ArchiveError> {
        let default = self.default_archive();
        default.recover_orphans_as(&default, !self.is_shared()).await
    }

    /// Adds or changes a tenant (audited in the platform's log) and reloads the routes.
    pub async fn write_tenant(
        &self,
        write: TenantWrite,
        audit: AuditEvent,
    ) -> Result<TenantOutcome, ArchiveError> {
        // The installation's own AE title is the default tenant's.
        if let TenantWrite::Add { fields, .. } | TenantWrite::Set { fields, .. } = &write {
            let own = &self.config.ae_title;
            let default_name = self.record(TenantId::DEFAULT).map(|r| r.name).unwrap_or_default();
            if write.name() != default_name && fields.ae_titles.iter().flatten().any(|ae| ae == own) {
                let why = format!("AE title {own} belongs to tenant {default_name}");
                let refused = AuditEvent {
                    outcome: "refused".into(),
                    detail: Some(format!("{}: {why}", audit.detail.clone().unwrap_or_default())),
                    tenant: TenantId::PLATFORM.0,
                    ..audit
                };
                self.system.audit_platform(refused).await?;
                return Ok(TenantOutcome::Conflict(why));
            }
        }
        let outcome = self.system.write_tenant(write, audit).await?;
        self.reload().await?;
        Ok(outcome)
    }

    /// Reads the tenant table again; archives of unchanged tenants are kept as they are.
    pub async fn reload(&self) -> Result<(), ArchiveError> {
        let _one = self.reloading.lock().await;
        let records = self.system.tenants().await?;
        let before = self.current();
        let mut archives = HashMap::new();
        for record in &records {
            let unchanged = before
                .records
                .iter()
                .find(|r| r.pk == record.pk)
                .is_some_and(|r| r == record);
            let archive = match before.archives.get(&record.pk) {
                Some(archive) if unchanged => archive.clone(),
                _ => self.build(record).await?,
            };
            archives.insert(record.pk, archive);
        }
        // The platform's own archive (its operators' accounts and audit trail), which no
        // route leads to and which holds no patient data.
        let own = match before.archives.get(&TenantId::PLATFORM.0) {
            Some(archive) => archive.clone(),
            None => self.build(&platform_record()).await?,
        };
        archives.insert(TenantId::PLATFORM.0, own);
        let mut by_ae = HashMap::new();
        let mut by_facility = HashMap::new();
        let mut by_name = HashMap::new();
        for record in &records {
            for ae in &record.ae_titles {
                by_ae.insert(ae.clone(), record.pk);
            }
            for facility in &record.hl7_facilities {
                by_facility.insert(facility.trim().to_uppercase(), record.pk);
            }
            by_name.insert(record.name.clone(), record.pk);
        }
        // The configuration's AE title and facilities are the default tenant's.
        by_ae.insert(self.config.ae_title.clone(), TenantId::DEFAULT.0);
        for facility in &self.config.hl7_facilities {
            by_facility
                .entry(facility.trim().to_uppercase())
                .or_insert(TenantId::DEFAULT.0);
        }
        if before.records != records && !before.records.is_empty() {
            tracing::info!(tenants = records.len(), "tenant table changed");
        }
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Tenants {
            records,
            archives,
            by_ae,
            by_facility,
            by_name,
        });
        Ok(())
    }

    /// One tenant's archive, sharing the engine, the blob store and this node's name.
    async fn build(&self, record: &TenantRecord) -> Result<Arc<Archive>, ArchiveError> {
        let tenant = TenantId(record.pk);
        let default = tenant == TenantId::DEFAULT;
        let config = &self.config;
        let mut facilities = record.hl7_facilities.clone();
        let issuer = if default && record.issuer_of_patient_id.is_empty() {
            config.issuer_of_patient_id.clone()
        } else {
            record.issuer_of_patient_id.clone()
        };
        let ae_title = if default {
            facilities.extend(config.hl7_facilities.iter().cloned());
            config.ae_title.clone()
        } else {
            record
                .ae_titles
                .first()
                .cloned()
                .unwrap_or_else(|| record.name.to_uppercase().chars().take(16).collect())
        };
        let archive = Arc::new(Archive {
            tenant,
            name: record.name.clone(),
            blobs: self.blobs.clone(),
            index: self.system.tenant(tenant),
            system: self.system.clone(),
            ae_title,
            // The configuration file's peers are the default tenant's (its one-hospital past).
            config_peers: if default {
                config
                    .peers
                    .iter()
                    .map(|p| (p.ae_title.clone(), p.clone()))
                    .collect()
            } else {
                HashMap::new()
            },
            table_peers: RwLock::new(HashMap::new()),
            ae_changes: tokio::sync::Mutex::new(()),
            correct_from_orders: config.correct_from_orders,
            limits: config.limits,
            issuer_of_patient_id: issuer,
            hl7_facilities: facilities,
            duplicate_policy: config.duplicate_policy,
            quota_bytes: record.quota_bytes,
            node: self.node.clone(),
            exam_listener: RwLock::new(None),
        });
        archive.reload_ae_table().await?;
        archive.adopt_patient_domain().await?;
        if tenant != TenantId::PLATFORM {
            crate::metrics::register_tenant(&record.name);
        }
        Ok(archive)
    }

    /// Reads the tenant table and every tenant's AE table again every few seconds, until
    /// `stop`: `openpacs tenant`, `openpacs ae` and other nodes change them.
    pub async fn keep_current(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let mut result = self.reload().await;
            if result.is_ok() {
                for archive in self.current().archives.values() {
                    let _changing = archive.ae_changes.lock().await;
                    result = result.and(archive.reload_ae_table().await);
                }
            }
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the tenant and AE tables are read from the index again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot re-read the tenant or AE tables; the last ones read stay in use");
                }
                Err(_) => {}
            }
        }
    }
}

/// The platform's own row as a tenant record (the tenant table lists establishments only).
fn platform_record() -> TenantRecord {
    TenantRecord {
        pk: TenantId::PLATFORM.0,
        name: pacs_store::tenants::PLATFORM_NAME.into(),
        title: "the platform".into(),
        disabled: false,
        quota_bytes: None,
        issuer_of_patient_id: String::new(),
        ae_titles: Vec::new(),
        hl7_facilities: Vec::new(),
        created_at: String::new(),
    }
}

fn route(tenants: &Tenants, pk: i64) -> Route {
    match (
        tenants.archives.get(&pk),
        tenants.records.iter().find(|r| r.pk == pk),
    ) {
        (Some(_), Some(record)) if record.disabled => Route::Disabled(record.name.clone()),
        (Some(archive), _) => Route::Tenant(archive.clone()),
        _ => Route::Unknown,
    }
}
