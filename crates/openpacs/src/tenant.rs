//! `openpacs tenant …`: the establishments a shared platform hosts. Works while the server
//! runs (it reads the tenant table again within seconds); every change is in the platform's
//! audit log.

use std::process::ExitCode;

use anyhow::{bail, Context};
use pacs_archive::Platform;
use pacs_store::tenants::{check_ae_title, check_facility, check_name};
use pacs_store::{AuditEvent, TenantFields, TenantOutcome, TenantRecord, TenantWrite};

use crate::config::Config;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct TenantArgs {
    /// The establishment's full name, e.g. "Centre hospitalier de Montélimar".
    #[arg(long)]
    title: Option<String>,
    /// A called AE title that leads DICOM associations to this tenant (repeat for several;
    /// `set` replaces the list).
    #[arg(long = "ae")]
    ae_titles: Vec<String>,
    /// An HL7 receiving facility (MSH-6) that leads messages to this tenant (repeat for
    /// several; `set` replaces the list).
    #[arg(long = "hl7-facility")]
    hl7_facilities: Vec<String>,
    /// The Issuer of Patient ID of the tenant's local patient identifiers (its IPP domain).
    #[arg(long)]
    issuer_of_patient_id: Option<String>,
    /// Storage quota in bytes: stores that would pass it are refused (C-STORE A700, STOW-RS
    /// failure A700), the others go on.
    #[arg(long, conflicts_with = "no_quota")]
    quota_bytes: Option<u64>,
    /// Remove the storage quota (`set`).
    #[arg(long)]
    no_quota: bool,
}

#[derive(clap::Subcommand)]
pub enum TenantCommand {
    /// Add a tenant. NAME: 1 to 32 lower-case letters, digits or '-' (used in URLs, /t/NAME/,
    /// and log-in names, user@NAME).
    Add {
        name: String,
        #[command(flatten)]
        args: TenantArgs,
    },
    /// List the tenants with their AE titles and HL7 facilities.
    List {
        /// table (default) or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Change a tenant's title, AE titles, facilities or identifier domain (what is not given
    /// stays as it is).
    Set {
        name: String,
        #[command(flatten)]
        args: TenantArgs,
    },
    /// Refuse new stores, messages and log-ins for a tenant; its data is kept.
    Disable { name: String },
    /// Serve a disabled tenant again.
    Enable { name: String },
    /// Break-glass: let a platform operator read the tenant's data for a few hours (never
    /// store or change anything), for a stated reason; audited in the tenant's own log, as is
    /// every request the operator makes with it (under the tenant's prefix, /t/NAME/).
    GrantAccess {
        name: String,
        /// The operator's user name (a user of --tenant platform).
        #[arg(long)]
        operator: String,
        /// Why (the tenant's administrators read it in their audit log).
        #[arg(long)]
        reason: String,
        /// How long, at most a week (fractions allowed: 0.5 is half an hour).
        #[arg(long)]
        hours: f64,
    },
    /// End an operator's break-glass access to the tenant at once.
    RevokeAccess {
        name: String,
        #[arg(long)]
        operator: String,
    },
}

/// The archive of the tenant a command names (`--tenant`), or the default tenant's.
pub async fn open_archive(
    config: &Config,
    tenant: Option<&str>,
) -> anyhow::Result<std::sync::Arc<pacs_archive::Archive>> {
    let platform = Platform::open(&crate::serve::archive_config(config)?).await?;
    match tenant {
        // The platform's own accounts (its operators).
        Some(pacs_store::tenants::PLATFORM_NAME) => platform
            .archive(pacs_model::TenantId::PLATFORM)
            .context("the platform's own row is missing from the index"),
        Some(name) => platform
            .by_name(name)
            .with_context(|| format!("no tenant {name:?} (see openpacs tenant list)")),
        None => Ok(platform.default_archive()),
    }
}

fn fields(args: TenantArgs, replacing: bool) -> anyhow::Result<TenantFields> {
    for ae in &args.ae_titles {
        check_ae_title(ae).map_err(anyhow::Error::msg)?;
    }
    for facility in &args.hl7_facilities {
        check_facility(facility).map_err(anyhow::Error::msg)?;
    }
    // `add` sets every list; `set` only the ones given.
    let list = |values: Vec<String>| (!replacing || !values.is_empty()).then_some(values);
    Ok(TenantFields {
        title: args.title,
        ae_titles: list(args.ae_titles),
        hl7_facilities: list(args.hl7_facilities),
        issuer_of_patient_id: args.issuer_of_patient_id,
        quota_bytes: match (args.quota_bytes, args.no_quota) {
            (Some(bytes), _) => Some(Some(bytes)),
            (None, true) => Some(None),
            (None, false) => None,
        },
    })
}

pub async fn run(config: Config, command: TenantCommand) -> anyhow::Result<ExitCode> {
    let platform = Platform::open(&crate::serve::archive_config(&config)?).await?;
    let (write, what) = match command {
        TenantCommand::List { format } => {
            let tenants: Vec<TenantRecord> = platform
                .records()
                .iter()
                .map(|t| platform.with_routes(t))
                .collect();
            let usage: std::collections::HashMap<i64, u64> =
                platform.system().tenant_usage().await?.into_iter().collect();
            match format.as_str() {
                "json" => {
                    let listed: Vec<serde_json::Value> = tenants
                        .iter()
                        .map(|t| {
                            let mut entry = serde_json::to_value(t).unwrap_or_default();
                            entry["usageBytes"] = usage.get(&t.pk).copied().unwrap_or(0).into();
                            entry
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&listed)?)
                }
                "table" => print!("{}", table(&tenants, &usage)),
                other => bail!("unknown format {other:?}: table or json"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        TenantCommand::Add { name, args } => {
            check_name(&name).map_err(anyhow::Error::msg)?;
            let fields = fields(args, false)?;
            (TenantWrite::Add { name, fields }, "added".to_string())
        }
        TenantCommand::Set { name, args } => {
            let fields = fields(args, true)?;
            (TenantWrite::Set { name, fields }, "changed".to_string())
        }
        TenantCommand::GrantAccess {
            name,
            operator,
            reason,
            hours,
        } => {
            if !(hours > 0.0 && hours <= 168.0) {
                bail!("--hours: more than 0, at most 168 (a week)");
            }
            if reason.trim().is_empty() {
                bail!("--reason: say why the operator needs the tenant's data");
            }
            let operators = platform
                .archive(pacs_model::TenantId::PLATFORM)
                .context("the platform's own row is missing from the index")?;
            let is_operator = operators
                .index()
                .user(&operator)
                .await?
                .is_some_and(|u| u.role == pacs_store::Role::Operator);
            if !is_operator {
                bail!("no operator {operator:?} (openpacs user list --tenant platform)");
            }
            let secs = (hours * 3600.0).ceil() as u64;
            let what = format!("granted {operator} read access for {hours} h: {reason}");
            let write = TenantWrite::GrantAccess {
                name,
                operator,
                reason,
                secs,
            };
            (write, what)
        }
        TenantCommand::RevokeAccess { name, operator } => {
            let what = format!("ended {operator}'s access");
            (TenantWrite::RevokeAccess { name, operator }, what)
        }
        TenantCommand::Disable { name } => (TenantWrite::Disable { name }, "disabled".to_string()),
        TenantCommand::Enable { name } => (TenantWrite::Enable { name }, "enabled".to_string()),
    };
    let name = write.name().to_string();
    let audit = AuditEvent {
        event: "tenant".into(),
        actor: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        peer: "local".into(),
        outcome: "success".into(),
        detail: Some(format!("{name}: {what}")),
        ..AuditEvent::default()
    };
    match platform.write_tenant(write, audit).await? {
        TenantOutcome::Done { .. } => {
            println!("tenant {name} {what}");
            Ok(ExitCode::SUCCESS)
        }
        TenantOutcome::NotFound => bail!("no tenant {name:?}"),
        TenantOutcome::Conflict(why) => bail!("tenant {name} not {what}: {why}"),
    }
}

/// The tenants as a table (the default tenant's configured AE title and facilities among its
/// routes: [`Platform::with_routes`]).
fn table(tenants: &[TenantRecord], usage: &std::collections::HashMap<i64, u64>) -> String {
    let rows: Vec<[String; 7]> = tenants
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.title.clone(),
                t.ae_titles.join(","),
                t.hl7_facilities.join(","),
                size(usage.get(&t.pk).copied().unwrap_or(0)),
                t.quota_bytes.map_or("-".to_string(), size),
                if t.disabled { "disabled" } else { "enabled" }.to_string(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "TITLE",
        "AE TITLES",
        "HL7 FACILITIES",
        "USAGE",
        "QUOTA",
        "STATE",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// Bytes for a person: exact below a KiB, else with one decimal in binary units.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
