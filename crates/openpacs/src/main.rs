//! `openpacs`: the one binary. Reads configuration, installs logging and metrics, handles
//! signals, and runs the libraries' entry points.

mod config;
mod import;
mod send;
mod serve;
mod user;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

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
    Serve,
    /// Import DICOM Part 10 files and folders (recursively) into the archive.
    Import {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Files imported at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
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
    /// Manage user accounts and API tokens for the HTTP API.
    #[command(subcommand)]
    User(user::UserCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("openpacs: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("openpacs: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::Import { paths, jobs } => import::run(config, paths, jobs).await,
            Command::Send {
                to,
                calling_ae,
                paths,
            } => send::run(config, to, calling_ae, paths).await,
            Command::Verify => verify::run(config).await,
            Command::Audit => verify::audit(config).await,
            Command::User(command) => user::run(config, command).await,
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

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("OPENPACS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
        "{what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    )) {
        bar.set_style(style);
    }
    bar
}
