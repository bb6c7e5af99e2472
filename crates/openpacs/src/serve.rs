//! `openpacs serve`: linear start-up, top to bottom, then wait for a signal.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pacs_archive::dimse_router::DimseRouter;
use pacs_archive::hl7_outbox::{JobOutbox, RisNotifier, RisOutbox};
use pacs_archive::hl7_router::Hl7Router;
use pacs_archive::{Archive, ArchiveConfig, Peer, Platform};
use pacs_web::auth::{AuthConfig, AuthMode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let recorder = crate::scrape::install()?;

    let platform = Platform::open(&archive_config(&config)?)
        .await
        .with_context(|| format!("cannot open the archive in {}", config.data_dir.display()))?;
    // The default tenant's: the one tenant of a one-hospital install, the one the web front
    // end, the RIS link and the commands without --tenant serve.
    let archive = platform.default_archive();
    let report = platform.recover().await.context("recovery failed")?;
    tracing::info!(
        temp_removed = report.temp_removed,
        orphans_reindexed = report.orphans_reindexed,
        orphans_quarantined = report.orphans_quarantined,
        duplicates_removed = report.duplicates_removed,
        missing_blobs = report.missing_blobs.len(),
        "recovery done"
    );
    if !report.missing_blobs.is_empty() {
        tracing::error!(
            count = report.missing_blobs.len(),
            "index rows point to missing blobs; run `openpacs verify`"
        );
    }

    let any_account = archive
        .system()
        .any_user()
        .await
        .context("cannot read user accounts")?;
    let auth_mode = auth_mode(&config, any_account)?;

    let dicom_addr = SocketAddr::new(config.dicom_addr, config.dicom_port);
    let dicom_listener = TcpListener::bind(dicom_addr)
        .await
        .with_context(|| format!("cannot listen for DICOM on {dicom_addr}"))?;
    let http_addr = SocketAddr::new(config.http_addr, config.http_port);
    let http_listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;

    let hl7_addr = SocketAddr::new(config.hl7_addr, config.hl7_port);
    let hl7_listener = TcpListener::bind(hl7_addr)
        .await
        .with_context(|| format!("cannot listen for HL7 on {hl7_addr}"))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let dimse_config = Arc::new(pacs_dimse::ServerConfig {
        ae_title: config.ae_title.clone(),
        max_pdu: config.max_pdu,
        max_associations: config.max_associations,
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        artim_timeout: Duration::from_secs(config.artim_timeout_secs),
        max_pending: config.max_pending_associations,
        max_pending_per_source: config.max_pending_per_source,
        refusal_report_interval: Duration::from_secs(config.refusal_audit_secs),
        allowed_calling_aes: (!config.allowed_calling_aes.is_empty())
            .then(|| config.allowed_calling_aes.iter().cloned().collect::<HashSet<_>>()),
        accept_unknown_sop_classes: config.accept_unknown_sop_classes,
        check_called_ae_title: config.check_called_ae_title,
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
    });
    let services = Arc::new(DimseRouter::new(
        platform.clone(),
        if config.commitment_on_new_association {
            pacs_dimse::CommitmentDelivery::NewAssociation
        } else {
            pacs_dimse::CommitmentDelivery::SameAssociation
        },
    ));
    let dimse = tokio::spawn(pacs_dimse::serve(
        dicom_listener,
        dimse_config,
        services,
        shutdown_rx.clone(),
    ));
    // Versions before the job table kept outbound HL7 messages as files: moved, once.
    let file_queue = config.data_dir.join("outbox").join("ris");
    if let Some((count, renamed)) = pacs_archive::hl7_outbox::import_file_queue(&archive, &file_queue)
        .await
        .context("cannot move the old outbound HL7 file queue into the job table")?
    {
        tracing::info!(
            messages = count,
            from = %file_queue.display(),
            renamed_to = %renamed.display(),
            "pending outbound HL7 messages of the old file queue moved into the job table; the directory was renamed (messages the RIS had refused stay in its rejected/)"
        );
    }
    let lease = Duration::from_secs(config.job_lease_secs);
    let ris_outbox = config.ris_address.as_ref().map(|ris| {
        Arc::new(RisOutbox::new(
            JobOutbox::new(archive.clone(), lease),
            pacs_hl7::OutboxConfig {
                keep_every: lease / 3,
                ..pacs_hl7::OutboxConfig::new(ris.clone())
            },
        ))
    });
    let scrape = crate::scrape::Scrape::new(
        recorder,
        archive.clone(),
        ris_outbox.clone(),
        Duration::from_secs(config.metrics_count_secs),
    );
    let render: pacs_web::MetricsRender = Arc::new(move || {
        let scrape = scrape.clone();
        Box::pin(async move { scrape.render().await })
    });
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(pacs_web::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    if config.http_addr.is_unspecified()
        && config.public_base_url.is_none()
        && config.allowed_hosts.is_empty()
    {
        tracing::warn!(http_addr = %config.http_addr, "no public_base_url nor allowed_hosts: RetrieveURLs and BulkDataURIs will name the listen address, which clients cannot reach; set public_base_url");
    }
    let http = tokio::spawn(pacs_web::serve(
        http_listener,
        pacs_web::router(
            platform.clone(),
            pacs_web::WebConfig {
                stow_max_part_bytes: config.stow_max_part_bytes,
                stow_max_request_bytes: config.stow_max_request_bytes,
                auth: AuthConfig {
                    mode: auth_mode,
                    basic: config.http_basic_auth,
                    session_ttl: Duration::from_secs(config.session_hours * 3600),
                    secure_cookies: tls.is_some(),
                    throttle: pacs_web::throttle::ThrottleConfig {
                        lockout_failures: config.login_lockout_failures,
                        window: Duration::from_secs(config.login_lockout_window_secs),
                        lockout: Duration::from_secs(config.login_lockout_secs),
                        delay: Duration::from_millis(config.login_failure_delay_ms),
                    },
                },
                cors_allowed_origins: config.cors_allowed_origins.clone(),
                public_base_url: config.public_base_url.clone(),
                allowed_hosts: config.allowed_hosts.clone(),
                listen: http_addr,
                tls: tls.is_some(),
            },
            render,
        ),
        shutdown_rx.clone(),
        pacs_web::ServeConfig {
            tls: tls.clone(),
            header_timeout: Duration::from_secs(config.http_header_timeout_secs),
            max_connections: config.http_max_connections,
            body_rate: pacs_web::BodyRate {
                window: Duration::from_secs(config.http_body_window_secs),
                min_bytes: config.http_body_min_bytes,
            },
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        },
    ));
    let hl7 = tokio::spawn(pacs_hl7::serve(
        hl7_listener,
        Arc::new(Hl7Router::new(platform.clone())),
        pacs_hl7::ServerConfig {
            max_connections: config.hl7_max_connections,
            max_connections_per_source: config.hl7_max_connections_per_source,
            idle_timeout: Duration::from_secs(config.hl7_idle_timeout_secs),
            message_timeout: Duration::from_secs(config.hl7_message_timeout_secs),
            refusal_report_interval: Duration::from_secs(config.refusal_audit_secs),
            ..pacs_hl7::ServerConfig::default()
        },
        shutdown_rx.clone(),
    ));
    let mut background = Vec::new();
    // Other nodes on the same index (or the command line) change the tenants and AE tables.
    background.push(tokio::spawn(platform.clone().keep_current(shutdown_rx.clone())));
    // Storage commitment reports no requester took, sent again by whichever node is up.
    background.push(tokio::spawn(platform.clone().retry_commitment_reports(
        pacs_archive::commitment_retry::ReportRetry {
            max_pdu: config.max_pdu,
            timeout: Duration::from_secs(config.idle_timeout_secs),
            lease,
            poll: Duration::from_secs(2),
        },
        shutdown_rx.clone(),
    )));
    if let Some(outbox) = ris_outbox {
        let runner = outbox.clone();
        let stop = shutdown_rx.clone();
        background.push(tokio::spawn(async move { runner.run(stop).await }));
        archive.set_exam_listener(Arc::new(RisNotifier::new(
            outbox.waker(),
            config.ae_title.clone(),
        )));
        if config.study_stable_secs > 0 {
            background.push(tokio::spawn(stable_study_timer(
                archive.clone(),
                config.study_stable_secs,
                shutdown_rx.clone(),
            )));
        }
    }
    tracing::info!(%dicom_addr, %http_addr, %hl7_addr, https = tls.is_some(), auth = ?auth_mode, ae_title = %config.ae_title, data_dir = %config.data_dir.display(), node = archive.node(), "openpacs ready");

    wait_for_signal().await;
    tracing::info!("shutting down: no new associations, finishing transfers in flight");
    let _ = shutdown_tx.send(true);
    dimse
        .await
        .context("DICOM listener task")?
        .context("DICOM listener")?;
    http.await
        .context("HTTP listener task")?
        .context("HTTP listener")?;
    hl7.await.context("HL7 listener task")?.context("HL7 listener")?;
    for task in background {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Whether HTTP requests must authenticate. Secure by default: with `http_auth = "auto"`, an
/// installation without accounts is open only on a loopback address; once an account exists
/// (`openpacs user add`), every request needs one.
fn auth_mode(config: &Config, has_accounts: bool) -> anyhow::Result<AuthMode> {
    let loopback = config.http_addr.is_loopback();
    match config.http_auth.as_str() {
        "off" => Ok(AuthMode::Open),
        "required" => {
            if !has_accounts {
                tracing::warn!("http_auth = \"required\" but no user account exists: nobody can use the HTTP API until one is created with `openpacs user add`");
            }
            Ok(AuthMode::Required)
        }
        _ if has_accounts => Ok(AuthMode::Required),
        _ if loopback || config.http_open_without_auth => {
            tracing::warn!(
                http_addr = %config.http_addr,
                "no user account exists: HTTP is open to every local caller with full rights until one is created with `openpacs user add NAME --role admin`"
            );
            Ok(AuthMode::OpenUntilAccounts)
        }
        _ => anyhow::bail!(
            "refusing to serve HTTP on {} without authentication: no user account exists. Create one with \
             `openpacs user add NAME --role admin` (then logins are required), or set \
             http_open_without_auth = true to serve it open anyway",
            config.http_addr
        ),
    }
}

/// Reports studies that stayed quiet (no MPPS) to the RIS, checking a few times per period.
async fn stable_study_timer(archive: Arc<Archive>, quiet_secs: u64, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_secs((quiet_secs / 4).clamp(1, 30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(e) = archive.notify_stable_studies(quiet_secs).await {
            tracing::error!(error = %e, "stable-study check failed");
        }
    }
}

/// The archive's settings; reads the bucket's credentials (environment or their file).
pub fn archive_config(config: &Config) -> anyhow::Result<ArchiveConfig> {
    Ok(ArchiveConfig {
        data_dir: config.data_dir.clone(),
        index_url: config.index_url.clone(),
        ae_title: config.ae_title.clone(),
        peers: config
            .peers
            .iter()
            .map(|p| Peer {
                ae_title: p.ae_title.clone(),
                host: p.host.clone(),
                port: p.port,
            })
            .collect(),
        correct_from_orders: config.reconciliation == "correct",
        issuer_of_patient_id: config.issuer_of_patient_id.clone(),
        hl7_facilities: config.hl7_facilities.clone(),
        duplicate_policy: if config.duplicate_policy == "replace" {
            pacs_archive::duplicates::DuplicatePolicy::Replace
        } else {
            pacs_archive::duplicates::DuplicatePolicy::KeepFirst
        },
        limits: pacs_dimse::dataset_check::Limits {
            max_inflated: config.max_inflated_bytes,
            max_header: config.max_header_bytes,
        },
        blobs: config.blobs.location()?,
        index_options: pacs_store::IndexOptions {
            write_deadline: Duration::from_secs(config.index_write_timeout_secs),
        },
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
