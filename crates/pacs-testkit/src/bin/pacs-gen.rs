//! `pacs-gen`: write a deterministic synthetic DICOM study to a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pacs_testkit::{write_study, Modality, StudySpec};

/// Generate a deterministic synthetic DICOM study (Explicit VR Little Endian
/// Part 10 files named s001_i0001.dcm, ...).
#[derive(Debug, Parser)]
#[command(name = "pacs-gen", version)]
struct Args {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Modality: ct, mr or cr.
    #[arg(long, default_value = "ct")]
    modality: Modality,
    /// Instances per series (default: 10 for CT/MR, 1 for CR).
    #[arg(long)]
    instances: Option<u32>,
    /// Number of series.
    #[arg(long, default_value_t = 1)]
    series: u32,
    /// Seed from which everything is derived.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Image rows (default depends on the modality).
    #[arg(long)]
    rows: Option<u16>,
    /// Image columns (default depends on the modality).
    #[arg(long)]
    columns: Option<u16>,
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut spec = StudySpec::new(args.seed, args.modality);
    spec.series = args.series;
    spec.instances_per_series = args.instances.unwrap_or(match args.modality {
        Modality::Cr => 1,
        Modality::Ct | Modality::Mr => 10,
    });
    if let Some(rows) = args.rows {
        spec.rows = rows;
    }
    if let Some(columns) = args.columns {
        spec.columns = columns;
    }
    let files = write_study(&spec, &args.out)?;
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    println!(
        "wrote {} instances ({:.1} MB) to {}",
        files.len(),
        bytes as f64 / 1_000_000.0,
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pacs-gen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
