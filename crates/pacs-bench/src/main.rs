//! `pacs-bench`: generates deterministic data, starts openpacs, DCMTK storescp and Orthanc on
//! 127.0.0.1 with fresh directories, runs the same scenarios with the same clients against
//! each, and writes `report.md` and `report.json` with every figure of ours and its ratio to
//! each baseline measured in the same run.

mod dimse;
mod http;
mod report;
mod scale;
mod scenarios;
mod sys;
mod targets;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use pacs_testkit::{write_study, Modality, StudySpec};

use crate::dimse::Dcmtk;
use crate::report::{Report, RunReport, Settings, Versions};
use crate::scenarios::{Context, Data};
use crate::targets::{Kind, Programs};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks openpacs side by side with DCMTK storescp and Orthanc")]
struct Args {
    /// Directory for report.md and report.json (created if needed).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Instances in the 512×512 16-bit CT series.
    #[arg(long, default_value_t = 1000)]
    ct: u32,
    /// Small 64×64 instances (spread over studies of --small-per-study); 0 skips them.
    #[arg(long, default_value_t = 5000)]
    small: u32,
    #[arg(long, default_value_t = 50)]
    small_per_study: u32,
    /// Repetitions of every scenario (median, min and max are reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Queries per latency repetition (p50, p95 and p99 are taken over these).
    #[arg(long, default_value_t = 100)]
    query_iterations: usize,
    /// Targets to run, among openpacs, storescp and orthanc.
    #[arg(long, value_delimiter = ',', default_value = "openpacs,orthanc,storescp")]
    targets: Vec<String>,
    /// Parallel associations for the CT C-STORE scenarios.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    associations: Vec<usize>,
    /// Skip the run with storescu's default Nagle setting.
    #[arg(long)]
    no_nagle: bool,
    /// Size of the disk bandwidth test in MiB (0 skips it).
    #[arg(long, default_value_t = 1024)]
    disk_mib: u64,
    /// The openpacs binary (default: target/release/openpacs of this workspace).
    #[arg(long)]
    openpacs_bin: Option<PathBuf>,
    /// How to name the openpacs build in the report (default: the workspace's git commit).
    #[arg(long)]
    openpacs_label: Option<String>,
    /// Directory of DCMTK's tools (called by absolute path).
    #[arg(long, default_value = "/usr/bin")]
    dcmtk_dir: PathBuf,
    /// Start Orthanc as the Debian service does, without TCP_NODELAY=1 in its environment
    /// (its DICOM responses then wait for delayed ACKs).
    #[arg(long)]
    orthanc_nagle: bool,
    #[arg(long, default_value = "/usr/sbin/Orthanc")]
    orthanc_bin: PathBuf,
    /// Orthanc's DICOMweb plugin (default: from `dpkg -L orthanc-dicomweb`).
    #[arg(long)]
    dicomweb_plugin: Option<PathBuf>,
    /// Index sizes (instances) at which openpacs's queries and ingest rate are measured, e.g.
    /// 10000,100000,1000000 (filled with small images through `openpacs import`; empty: skipped).
    #[arg(long, value_delimiter = ',')]
    scale: Vec<u64>,
    /// Instances per study in the scale fill.
    #[arg(long, default_value_t = 20)]
    scale_per_study: u32,
    /// Instances generated and imported at a time during the scale fill.
    #[arg(long, default_value_t = 20000)]
    scale_chunk: u64,
    /// `openpacs import --jobs` for the scale fill.
    #[arg(long, default_value_t = 16)]
    scale_jobs: usize,
    /// Small instances sent by C-STORE at each scale level to measure the ingest rate.
    #[arg(long, default_value_t = 2000)]
    scale_probe: u32,
    /// Skip the retrieval and query scenarios (ingest only, e.g. for A/B runs of two builds).
    #[arg(long)]
    ingest_only: bool,
    /// Skip every scenario except the scale one.
    #[arg(long)]
    scale_only: bool,
    /// Where data and servers' directories go (default: a new temporary directory, removed
    /// at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where openpacs keeps its blobs: `files` (its data directory) or `s3` (a bucket of a
    /// single-node Garage the harness starts, `garage` 2.5.0 on PATH).
    #[arg(long, default_value = "files", value_parser = ["files", "s3"])]
    blobs: String,
    /// Where openpacs keeps its index: `sqlite` (the embedded file) or `postgres` (a database
    /// of its own per server, created on --postgres, and dropped by the next run).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    index: String,
    /// The PostgreSQL server for `--index postgres`, as its administrative database.
    #[arg(
        long,
        env = "PACS_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
}

fn log(msg: &str) {
    eprintln!("[pacs-bench] {msg}");
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap_or(manifest).to_path_buf()
}

fn output_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn openpacs_version(bin: &Path, label: Option<&str>) -> String {
    if let Some(l) = label {
        return format!("{l} ({})", bin.display());
    }
    let root = workspace_root().display().to_string();
    let commit =
        output_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"]).unwrap_or("unknown".into());
    let dirty = Command::new("git")
        .args(["-C", &root, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    format!(
        "commit {commit}{} ({})",
        if dirty {
            " with uncommitted changes in the working tree"
        } else {
            ""
        },
        bin.display()
    )
}

fn dicomweb_plugin() -> Option<PathBuf> {
    let out = Command::new("dpkg")
        .args(["-L", "orthanc-dicomweb"])
        .output()
        .ok()?;
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let mut candidates: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("libOrthancDicomWeb.so"))
        .collect();
    // Prefer the plugins directory's link, as the Debian configuration does.
    candidates.sort_by_key(|l| !l.contains("/plugins/"));
    candidates.first().map(PathBuf::from).filter(|p| p.exists())
}

/// Writes the CT series and the small studies.
fn generate(args: &Args, dir: &Path) -> Result<Data> {
    let start = Instant::now();
    let ct_spec = StudySpec::ct(1, args.ct);
    let ct = write_study(&ct_spec, &dir.join("ct"))?;
    let mut small_files = Vec::new();
    let mut small_bytes = 0;
    let mut small_studies = 0;
    let mut remaining = args.small;
    let mut seed = 1000;
    while remaining > 0 {
        let n = remaining.min(args.small_per_study.max(1));
        let modality = if seed % 2 == 0 { Modality::Ct } else { Modality::Mr };
        let spec = StudySpec {
            instances_per_series: n,
            rows: 64,
            columns: 64,
            ..StudySpec::new(seed, modality)
        };
        for i in write_study(&spec, &dir.join(format!("small/{seed}")))? {
            small_bytes += i.size;
            small_files.push(i.path);
        }
        small_studies += 1;
        remaining -= n;
        seed += 1;
    }
    let patient = ct_spec.resolved_patient();
    let family = patient.patient_name.split('^').next().unwrap_or("");
    let prefix: String = family.chars().take_while(char::is_ascii).take(3).collect();
    let first = ct.first().context("the CT series needs at least one instance")?;
    log(&format!(
        "generated {} CT + {} small instances in {:.1} s",
        ct.len(),
        small_files.len(),
        start.elapsed().as_secs_f64()
    ));
    Ok(Data {
        ct_bytes: ct.iter().map(|i| i.size).sum(),
        ct_study: first.study_instance_uid.clone(),
        ct_series: first.series_instance_uid.clone(),
        ct_instances: ct.iter().map(|i| i.sop_instance_uid.clone()).collect(),
        ct_files: ct.into_iter().map(|i| i.path).collect(),
        small_files,
        small_bytes,
        small_studies,
        patient_id: patient.patient_id,
        patient_name_pattern: format!("{prefix}*"),
        date_range: "20180101-20221231".into(),
        modality: "CT".into(),
    })
}

/// Files created at least per durable-creation measurement (per size and thread count).
const DURABLE_FILES: usize = 200;

fn main() -> Result<()> {
    let args = Args::parse();
    let started_at = Instant::now();
    let started = output_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();

    let mut kinds = Vec::new();
    for t in &args.targets {
        kinds.push(match t.as_str() {
            "openpacs" => Kind::Openpacs,
            "storescp" => Kind::Storescp,
            "orthanc" => Kind::Orthanc,
            other => bail!("unknown target {other:?} (openpacs, storescp, orthanc)"),
        });
    }
    let dcmtk = Dcmtk {
        bin_dir: args.dcmtk_dir.clone(),
    };
    for tool in ["storescu", "getscu", "movescu", "storescp"] {
        if !dcmtk.tool(tool).exists() {
            bail!(
                "{} is missing: the harness drives every DIMSE server with DCMTK (apt-get install dcmtk)",
                dcmtk.tool(tool).display()
            );
        }
    }
    let openpacs = args
        .openpacs_bin
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/openpacs"));
    if kinds.contains(&Kind::Openpacs) && !openpacs.exists() {
        bail!(
            "{} is missing: build it first (cargo build --release -p openpacs) or pass --openpacs-bin",
            openpacs.display()
        );
    }
    let plugin = args.dicomweb_plugin.clone().or_else(dicomweb_plugin);
    let mut skipped = Vec::new();
    if kinds.contains(&Kind::Orthanc) {
        if !args.orthanc_bin.exists() {
            skipped.push(format!(
                "orthanc: {} not found (apt-get install orthanc orthanc-dicomweb)",
                args.orthanc_bin.display()
            ));
        } else if plugin.is_none() {
            skipped
                .push("orthanc: the DICOMweb plugin was not found (apt-get install orthanc-dicomweb)".into());
        }
        if skipped.iter().any(|s| s.starts_with("orthanc")) {
            kinds.retain(|k| *k != Kind::Orthanc);
        }
    }
    for s in &skipped {
        log(&format!("skipping {s}"));
    }
    let temp;
    let work = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("pacs-bench-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // Alive for the whole run: every openpacs target keeps its blobs in its bucket.
    let garage = (args.blobs == "s3").then(|| {
        log("starting Garage for openpacs's blobs");
        pacs_testkit::garage::Garage::start()
    });
    let postgres = (args.index == "postgres").then(|| {
        log("openpacs's index on PostgreSQL: one database per server");
        targets::drop_bench_databases(&args.postgres);
        args.postgres.clone()
    });
    let programs = Programs {
        openpacs: openpacs.clone(),
        storescp: dcmtk.tool("storescp"),
        orthanc: args.orthanc_bin.clone(),
        dicomweb_plugin: plugin.clone(),
        orthanc_nagle: args.orthanc_nagle,
        openpacs_extra_toml: garage
            .as_ref()
            .map(|g| g.openpacs_toml(&work, "{target}"))
            .unwrap_or_default(),
        openpacs_postgres: postgres,
    };
    let machine = sys::machine(&work);
    let (disk, disk_error) = if args.disk_mib > 0 {
        log(&format!("measuring the disk ({} MiB)", args.disk_mib));
        match sys::disk_bandwidth(&work, args.disk_mib << 20) {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    } else {
        (None, None)
    };
    let data = generate(&args, &work.join("data"))?;
    // What a durable acknowledgement costs on this disk before any server is involved: the
    // floor under one association's C-STORE rate.
    let mut durable = Vec::new();
    let drop_caches = sys::can_drop_caches();
    if args.disk_mib > 0 {
        let sizes = [
            (data.ct_bytes, data.ct_files.len()),
            (data.small_bytes, data.small_files.len()),
        ];
        for (bytes, files) in sizes.into_iter().filter(|(_, n)| *n > 0) {
            for threads in [1, 4] {
                let size = bytes / files as u64;
                // At least 32 MiB, so that small files take long enough for the CPU figure
                // (counted in clock ticks) to mean something.
                let count = DURABLE_FILES.max((32 << 20) / size.max(1) as usize);
                log(&format!(
                    "durable file creation: {count} × {size} bytes, {threads} thread(s)"
                ));
                // Like an ingest repetition: neither the write-back of the data just generated
                // nor the inodes just deleted (see `settle_filesystem`) may be measured too.
                sys::settle_filesystem(drop_caches, &[])?;
                match sys::durable_creates(&work, size, count, threads) {
                    Ok(d) => durable.push(d),
                    Err(e) => log(&format!("durable file creation failed: {e:#}")),
                }
            }
        }
    }

    let versions = Versions {
        openpacs: openpacs_version(&openpacs, args.openpacs_label.as_deref()),
        storescu: dcmtk.version("storescu"),
        storescp: dcmtk.version("storescp"),
        orthanc: if kinds.contains(&Kind::Orthanc) {
            output_line(&args.orthanc_bin.display().to_string(), &["--version"]).unwrap_or_default()
        } else {
            "not run".into()
        },
        orthanc_dicomweb: output_line("dpkg-query", &["-W", "-f", "${Version}", "orthanc-dicomweb"])
            .map(|v| {
                format!(
                    "{v} ({})",
                    plugin
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "not installed".into()),
    };

    if !drop_caches {
        log("cannot drop the page cache (not root): ingest repetitions may be slowed by the previous one's deleted files");
    }
    let ctx = Context {
        programs: &programs,
        dcmtk: &dcmtk,
        data: &data,
        work: &work,
        reps: args.reps.max(1),
        query_iterations: args.query_iterations.max(1),
        ticks: targets::clock_ticks(),
        associations: &args.associations,
        nagle: !args.no_nagle,
        drop_caches,
        log: &log,
    };
    let mut runs = Vec::new();
    for &kind in kinds.iter().filter(|_| !args.scale_only) {
        log(&format!("target {}", kind.name()));
        runs.extend(scenarios::ingest(&ctx, kind));
        if kind.has_web() && !args.ingest_only {
            runs.extend(scenarios::loaded(&ctx, kind));
        }
    }

    let scale = (!args.scale.is_empty() && kinds.contains(&Kind::Openpacs)).then(|| {
        log("scale: openpacs with a large index");
        scale::run(
            &ctx,
            scale::ScaleSettings {
                levels: args.scale.clone(),
                per_study: args.scale_per_study,
                chunk: args.scale_chunk,
                jobs: args.scale_jobs,
                probe: args.scale_probe,
            },
        )
    });
    let mut report = Report {
        started,
        duration_s: started_at.elapsed().as_secs_f64(),
        machine,
        disk,
        disk_error,
        durable,
        versions,
        settings: Settings {
            ct_instances: data.ct_files.len(),
            ct_bytes: data.ct_bytes,
            small_instances: data.small_files.len(),
            small_studies: data.small_studies,
            small_bytes: data.small_bytes,
            repetitions: ctx.reps,
            query_iterations: ctx.query_iterations,
            targets: kinds.clone(),
            skipped_targets: skipped,
            blobs: args.blobs.clone(),
            index: args.index.clone(),
            filesystem: if drop_caches {
                "before each ingest repetition and scale probe: sync, page cache dropped, the input files read again (so that files deleted by the previous repetition do not slow inode allocation on ext4 without a journal)".into()
            } else {
                "page cache NOT dropped between ingest repetitions (not root): on ext4 without a journal, files deleted by the previous repetition slow the next one's file creations".into()
            },
            network: format!(
                "all clients run with TCP_NODELAY=1 except the Nagle scenario; openpacs sets TCP_NODELAY itself; storescp runs with TCP_NODELAY=1; Orthanc runs {}; C-FIND and HTTP clients are the harness's own, with TCP_NODELAY set",
                if args.orthanc_nagle {
                    "without TCP_NODELAY (Debian service default: Nagle on)"
                } else {
                    "with TCP_NODELAY=1 in its environment (its best case; without it, every DICOM response waits ~40 ms for a delayed ACK)"
                }
            ),
        },
        runs: runs
            .into_iter()
            .map(|run| RunReport {
                summary: report::summarize(&run),
                run,
            })
            .collect(),
        ratios: Vec::new(),
        scale,
    };
    report.compute_ratios();
    std::fs::create_dir_all(&args.out)?;
    let md = report::markdown(&report);
    std::fs::write(args.out.join("report.md"), &md)?;
    std::fs::write(args.out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    println!("{md}");
    log(&format!("reports written to {}", args.out.display()));
    Ok(())
}
