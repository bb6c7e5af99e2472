//! `openpacs`: the one binary. Reads configuration, installs logging and metrics, handles
//! signals, and runs the libraries' entry points.

mod billing;
mod blobs_config;
mod config;
mod config_sources;
mod import;
mod jobs;
mod migrate;
mod migrate_index;
mod scrape;
mod send;
mod serve;
mod tenant;
mod user;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides, ServeFlags};

#[derive(Parser)]
#[command(
    name = "openpacs",
    version,
    about = "An open PACS: DICOM archive, query/retrieve, DICOMweb"
)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (DICOM and HTTP listeners).
    Serve {
        #[command(flatten)]
        flags: ServeFlags,
    },
    /// Import DICOM Part 10 files and folders (recursively) into the archive.
    Import {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Files imported at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
        /// Also write every skipped and refused file, with its reason, to this file (written
        /// anyway, as import-report-<time>.txt, when there are too many to print).
        #[arg(long)]
        report: Option<PathBuf>,
        /// The tenant to import into (default: the default tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Send DICOM files to a peer with C-STORE.
    Send {
        /// Destination as AE@HOST:PORT.
        #[arg(long)]
        to: String,
        /// Our calling AE title (default: the configured ae_title).
        #[arg(long)]
        calling_ae: Option<String>,
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Re-hash every stored object against the index; non-zero exit if any differs or is missing.
    Verify,
    /// Print the audit log (tab-separated: time, event, actor, peer, patient, study, outcome, detail).
    Audit,
    /// List the durable jobs (outbound HL7 messages…; `list` by default) and retry failed ones.
    Jobs {
        #[command(subcommand)]
        command: Option<jobs::JobsCommand>,
    },
    /// Manage user accounts and API tokens for the HTTP API.
    User(user::UserArgs),
    /// Manage the tenants (establishments) a shared platform hosts.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// What each tenant is billed for a month: exams by modality and storage, at the
    /// `[billing]` tariffs.
    Billing {
        /// YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        /// One tenant only.
        #[arg(long)]
        tenant: Option<String>,
        /// table (default), csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Copy an embedded installation (index and blobs in data_dir) to PostgreSQL and an S3
    /// bucket: blobs first, each read back and re-hashed, then the index; run it again to
    /// resume. The source is left as it was.
    Migrate(migrate::MigrateArgs),
    /// Copy the embedded SQLite index (of the data directory) into an empty PostgreSQL
    /// database, keys and audit log included; then set `index_url` to it.
    MigrateIndex {
        /// The PostgreSQL database, `postgres://user@host:port/database`; default: the
        /// configured `index_url` (OPENPACS_INDEX_URL keeps a password off the command line).
        #[arg(long)]
        to: Option<String>,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Serve { flags } = &cli.command {
        cli.overrides.listeners = flags.clone();
    }
    let config = match Config::load(&cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openpacs: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The server logs what it does; an interactive command prints its own summary and logs
    // only warnings (no schema-migration lines before an import's result).
    let default_log = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(&config, default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("openpacs: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve::run(config).await,
            Command::Import {
                paths,
                jobs,
                report,
                tenant,
            } => import::run(config, paths, jobs, report, tenant).await,
            Command::Send {
                to,
                calling_ae,
                paths,
            } => send::run(config, to, calling_ae, paths).await,
            Command::Verify => verify::run(config).await,
            Command::Audit => verify::audit(config).await,
            Command::User(command) => user::run(config, command).await,
            Command::Tenant(command) => tenant::run(config, command).await,
            Command::Billing {
                month,
                tenant,
                format,
            } => billing::run(config, month, tenant, format).await,
            Command::Jobs { command } => jobs::run(config, command.unwrap_or_default()).await,
            Command::Migrate(args) => migrate::run(config, args).await,
            Command::MigrateIndex { to } => migrate_index::run(config, to).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("openpacs: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(config: &Config, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OPENPACS_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Collects the files under `paths` (recursively), sorted for reproducible runs.
pub(crate) fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.exists() {
            anyhow::bail!("{} does not exist", path.display());
        }
        for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
            let entry = entry?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    Ok(files)
}

/// A progress bar on a terminal, nothing otherwise (logs stay structured).
pub(crate) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:40}} {{pos}}/{{len}} ({{rate}}, {{eta}} left)"
    )) {
        // A whole number of files a second: "37/s", not indicatif's "37.1834/s".
        bar.set_style(style.with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        ));
    }
    bar
}
