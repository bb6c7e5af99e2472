//! The reports: JSON with every repetition, and a markdown table with medians and ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::scale::{ScaleReport, QUERIES};
use crate::scenarios::{Run, ScenarioDef, SCENARIOS};
use crate::sys::{DiskBandwidth, DurableCreates, Machine};
use crate::targets::Kind;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(values: &[f64]) -> Option<Stat> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    })
}

/// Medians (with min and max) of every figure of a run.
pub fn summarize(run: &Run) -> BTreeMap<String, Stat> {
    let mut out = BTreeMap::new();
    let mut keys: Vec<&String> = run.reps.iter().flat_map(|r| r.metrics.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let vals: Vec<f64> = run
            .reps
            .iter()
            .filter_map(|r| r.metrics.get(k).copied())
            .collect();
        if let Some(s) = stat(&vals) {
            out.insert(k.clone(), s);
        }
    }
    let extra: [(&str, Vec<f64>); 3] = [
        (
            "peak_rss_mib",
            run.reps.iter().filter_map(|r| r.peak_rss_mib).collect(),
        ),
        ("cpu_s", run.reps.iter().filter_map(|r| r.cpu_s).collect()),
        (
            "disk_per_byte",
            run.reps.iter().filter_map(|r| r.disk_per_byte).collect(),
        ),
    ];
    for (k, vals) in extra {
        if let Some(s) = stat(&vals) {
            out.insert(k.to_string(), s);
        }
    }
    out
}

#[derive(Debug, Serialize)]
pub struct Versions {
    pub openpacs: String,
    pub storescu: String,
    pub storescp: String,
    pub orthanc: String,
    pub orthanc_dicomweb: String,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub ct_instances: usize,
    pub ct_bytes: u64,
    pub small_instances: usize,
    pub small_studies: usize,
    pub small_bytes: u64,
    pub repetitions: usize,
    pub query_iterations: usize,
    pub targets: Vec<Kind>,
    pub skipped_targets: Vec<String>,
    /// How the servers' sockets were set up (Nagle on or off on each side).
    pub network: String,
    /// What was done to the filesystem between ingest repetitions.
    pub filesystem: String,
    /// Where openpacs kept its blobs: `files` or `s3` (a local single-node Garage).
    pub blobs: String,
    /// Where openpacs kept its index: `sqlite` or `postgres` (a database on this machine's
    /// server).
    #[serde(default)]
    pub index: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub started: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub disk: Option<DiskBandwidth>,
    pub disk_error: Option<String>,
    /// Durable file creations (write, fdatasync, rename, directory fsync) at each object size.
    pub durable: Vec<DurableCreates>,
    pub versions: Versions,
    pub settings: Settings,
    pub runs: Vec<RunReport>,
    /// Each figure of ours divided by the baseline's (for "lower is better" figures the
    /// baseline's divided by ours): above 1 means openpacs did better.
    pub ratios: Vec<Ratio>,
    /// Queries and ingest at index sizes up to 1 M instances (openpacs only), when run.
    pub scale: Option<ScaleReport>,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub run: Run,
    pub summary: BTreeMap<String, Stat>,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub scenario: String,
    pub metric: String,
    pub baseline: Kind,
    pub openpacs: f64,
    pub baseline_value: f64,
    pub advantage: f64,
}

impl Report {
    pub fn median(&self, scenario: &str, target: Kind, metric: &str) -> Option<f64> {
        self.runs
            .iter()
            .find(|r| r.run.scenario == scenario && r.run.target == target)
            .and_then(|r| r.summary.get(metric))
            .map(|s| s.median)
    }

    fn run(&self, scenario: &str, target: Kind) -> Option<&RunReport> {
        self.runs
            .iter()
            .find(|r| r.run.scenario == scenario && r.run.target == target)
    }

    pub fn compute_ratios(&mut self) {
        let mut ratios = Vec::new();
        for def in SCENARIOS {
            let Some(ours) = self.median(def.ours_in, Kind::Openpacs, def.primary) else {
                continue;
            };
            for base in [Kind::Orthanc, Kind::Storescp] {
                if let Some(theirs) = self.median(def.id, base, def.primary) {
                    ratios.push(Ratio {
                        scenario: def.id.into(),
                        metric: def.primary.into(),
                        baseline: base,
                        openpacs: ours,
                        baseline_value: theirs,
                        advantage: advantage(def, ours, theirs),
                    });
                }
            }
        }
        self.ratios = ratios;
    }
}

fn advantage(def: &ScenarioDef, ours: f64, theirs: f64) -> f64 {
    if def.higher_is_better {
        ours / theirs
    } else {
        theirs / ours
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(run: Option<&RunReport>, metric: &str) -> String {
    match run {
        None => "–".into(),
        Some(r) if r.run.reps.is_empty() => match &r.run.error {
            Some(_) => "failed".into(),
            None => "–".into(),
        },
        Some(r) => {
            let failed = if r.run.error.is_some() {
                " (then failed)"
            } else {
                ""
            };
            match r.summary.get(metric) {
                Some(s) if s.n > 1 => format!(
                    "{} ({}–{}){failed}",
                    fmt_num(s.median),
                    fmt_num(s.min),
                    fmt_num(s.max)
                ),
                Some(s) => format!("{}{failed}", fmt_num(s.median)),
                None => "–".into(),
            }
        }
    }
}

fn ratio_cell(report: &Report, def: &ScenarioDef, base: Kind) -> String {
    match (
        report.median(def.ours_in, Kind::Openpacs, def.primary),
        report.median(def.id, base, def.primary),
    ) {
        (Some(a), Some(b)) => format!("{:.2}×", advantage(def, a, b)),
        _ => "–".into(),
    }
}

fn small_cell(run: Option<&RunReport>, metric: &str, digits: usize) -> String {
    run.and_then(|r| r.summary.get(metric))
        .map(|s| format!("{:.*}", digits, s.median))
        .unwrap_or_else(|| "–".into())
}

/// The markdown report.
pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let m = &report.machine;
    let v = &report.versions;
    let s = &report.settings;
    let _ = writeln!(md, "## Machine and versions\n");
    let _ = writeln!(
        md,
        "- Run started {} and took {:.0} s",
        report.started, report.duration_s
    );
    let _ = writeln!(
        md,
        "- CPU: {} × {}; RAM {} GiB; kernel {}",
        m.cores, m.cpu_model, m.ram_gib, m.kernel
    );
    let _ = writeln!(md, "- Disk: {}; {}", m.disk, m.filesystem);
    match (&report.disk, &report.disk_error) {
        (Some(d), _) => {
            let _ = writeln!(
                md,
                "- Disk sequential bandwidth (same run, {} MiB): write {:.0} MB/s, read {:.0} MB/s ({})",
                d.bytes >> 20,
                d.write_mb_per_s,
                d.read_mb_per_s,
                d.method
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(md, "- Disk bandwidth: failed ({e})");
        }
        (None, None) => {
            let _ = writeln!(md, "- Disk bandwidth: not measured");
        }
    }
    if !report.durable.is_empty() {
        let figures: Vec<String> = report
            .durable
            .iter()
            .map(|d| {
                format!(
                    "{} KB × {} on {} thread(s): {:.0} files/s ({:.2} ms each, {} CPU ms per file)",
                    d.bytes_per_file / 1000,
                    d.files,
                    d.threads,
                    d.files_per_s,
                    d.ms_per_file,
                    d.cpu_ms_per_file
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "–".into())
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "- Durable file creation, the floor under a durable acknowledgement (same run; write to a temporary name, fdatasync, rename, directory fsync; no network, parsing or index): {}",
            figures.join("; ")
        );
    }
    let _ = writeln!(md, "- openpacs: {}", v.openpacs);
    let _ = writeln!(md, "- DCMTK: {} / {}", v.storescu, v.storescp);
    let _ = writeln!(
        md,
        "- Orthanc: {}; DICOMweb plugin {}",
        v.orthanc, v.orthanc_dicomweb
    );
    let _ = writeln!(
        md,
        "- Data: CT series of {} instances ({:.0} MB), {} small 64×64 instances in {} studies ({:.1} MB); {} repetitions; {} queries per latency repetition",
        s.ct_instances,
        s.ct_bytes as f64 / 1e6,
        s.small_instances,
        s.small_studies,
        s.small_bytes as f64 / 1e6,
        s.repetitions,
        s.query_iterations
    );
    let _ = writeln!(md, "- Sockets: {}", s.network);
    let _ = writeln!(
        md,
        "- openpacs's blobs: {}",
        if s.blobs == "s3" {
            "in an S3 bucket of a single-node Garage 2.5.0 on this machine (metadata_fsync, data_fsync); the disk cost then counts the index only"
        } else {
            "files in its data directory"
        }
    );
    let _ = writeln!(
        md,
        "- openpacs's index: {}",
        if s.index == "postgres" {
            "PostgreSQL on this machine, a database per server (the disk cost then counts the blobs only)"
        } else {
            "the embedded SQLite file in its data directory"
        }
    );
    let _ = writeln!(md, "- Between repetitions: {}", s.filesystem);
    for t in &s.skipped_targets {
        let _ = writeln!(md, "- Skipped: {t}");
    }

    let _ = writeln!(md, "\n## Results\n");
    let _ = writeln!(
        md,
        "Medians over the repetitions, (min–max). Ratios: openpacs's advantage (its figure over the baseline's for rates, the baseline's over its for times; above 1 is better for openpacs)."
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| Scenario | unit | openpacs | Orthanc | storescp | × Orthanc | × storescp | peak RSS MiB (ours / Orthanc / storescp) | CPU s (ours / Orthanc / storescp) | disk bytes per byte (ours / Orthanc / storescp) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for def in SCENARIOS {
        let runs: Vec<Option<&RunReport>> = [Kind::Openpacs, Kind::Orthanc, Kind::Storescp]
            .iter()
            .map(|k| report.run(def.id, *k))
            .collect();
        if runs.iter().all(Option::is_none) {
            continue;
        }
        let triple = |metric: &str, digits: usize| {
            runs.iter()
                .map(|r| small_cell(*r, metric, digits))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            def.title,
            def.unit,
            cell(runs[0], def.primary),
            cell(runs[1], def.primary),
            cell(runs[2], def.primary),
            ratio_cell(report, def, Kind::Orthanc),
            ratio_cell(report, def, Kind::Storescp),
            triple("peak_rss_mib", 0),
            triple("cpu_s", 2),
            triple("disk_per_byte", 2),
        );
    }

    // Secondary figures worth seeing next to the primary ones.
    let _ = writeln!(md, "\n### Other figures (medians)\n");
    let _ = writeln!(md, "| Scenario | target | figures |");
    let _ = writeln!(md, "|---|---|---|");
    for r in &report.runs {
        let def = SCENARIOS.iter().find(|d| d.id == r.run.scenario);
        if r.run.scenario == "wado_series_ttfb" {
            continue;
        }
        let figures: Vec<String> = r
            .summary
            .iter()
            .filter(|(k, _)| !["peak_rss_mib", "cpu_s", "disk_per_byte"].contains(&k.as_str()))
            .filter(|(k, _)| def.is_none_or(|d| d.primary != k.as_str()) || k.ends_with("_ms"))
            .map(|(k, s)| format!("{k} {}", fmt_num(s.median)))
            .collect();
        let mut text = figures.join(", ");
        if let Some(e) = &r.run.error {
            let short: String = e.chars().take(300).collect();
            text.push_str(&format!(
                "; **failed**: {}",
                short.replace('|', "/").replace('\n', " ")
            ));
        }
        for n in &r.run.notes {
            text.push_str(&format!("; {n}"));
        }
        let _ = writeln!(md, "| {} | {} | {} |", r.run.scenario, r.run.target.name(), text);
    }

    if let Some(sc) = &report.scale {
        scale_markdown(&mut md, sc, report.settings.query_iterations);
    }

    let _ = writeln!(md, "\n## Targets (issue 6)\n");
    let _ = writeln!(md, "| Target | measured | met? |");
    let _ = writeln!(md, "|---|---|---|");
    for (name, measured, met) in targets(report) {
        let _ = writeln!(md, "| {name} | {measured} | {met} |");
    }
    md
}

fn verdict(v: Option<bool>) -> String {
    match v {
        Some(true) => "met".into(),
        Some(false) => "**not met**".into(),
        None => "not measured".into(),
    }
}

/// The targets, each with what this run measured.
pub fn targets(report: &Report) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let ratio = |id: &str, base: Kind| -> Option<f64> {
        let def = SCENARIOS.iter().find(|d| d.id == id)?;
        Some(advantage(
            def,
            report.median(def.ours_in, Kind::Openpacs, def.primary)?,
            report.median(id, base, def.primary)?,
        ))
    };
    let show = |r: Option<f64>| r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into());
    for n in [1, 4] {
        let id = format!("cstore_ct_{n}");
        let (o, s) = (ratio(&id, Kind::Orthanc), ratio(&id, Kind::Storescp));
        out.push((
            format!("C-STORE CT, {n} association(s): ≥ 3× Orthanc, ≥ 1.0× storescp"),
            format!("{} Orthanc, {} storescp", show(o), show(s)),
            verdict(o.zip(s).map(|(o, s)| o >= 3.0 && s >= 1.0)),
        ));
    }
    for n in [1, 4] {
        let id = format!("cstore_small_{n}");
        let o = ratio(&id, Kind::Orthanc);
        out.push((
            format!("C-STORE small images, {n} association(s): ≥ 3× Orthanc"),
            show(o),
            verdict(o.map(|o| o >= 3.0)),
        ));
    }
    let o = ratio("stow_ct", Kind::Orthanc);
    out.push((
        "STOW-RS, 50 per request, 4 connections: ≥ 3× Orthanc".into(),
        show(o),
        verdict(o.map(|o| o >= 3.0)),
    ));
    let ids = [
        "cfind_patient_id",
        "cfind_patient_name",
        "cfind_date_modality",
        "qido_patient_id",
        "qido_patient_name",
        "qido_date_modality",
    ];
    let p95: Vec<(String, f64)> = ids
        .iter()
        .filter_map(|id| {
            report
                .median(id, Kind::Openpacs, "p95_ms")
                .map(|v| (id.to_string(), v))
        })
        .collect();
    let worst = p95
        .iter()
        .map(|(_, v)| *v)
        .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
    let indexed = report.settings.ct_instances + report.settings.small_instances;
    out.push((
        format!(
            "C-FIND and QIDO-RS p95 ≤ 20 ms with 1 M instances (measured with {indexed} instances indexed)"
        ),
        p95.iter()
            .map(|(k, v)| format!("{k} {v:.1} ms"))
            .collect::<Vec<_>>()
            .join(", "),
        match worst {
            Some(w) if w <= 20.0 => "met at this index size; 1 M not measured".into(),
            Some(_) => "**not met** (even at this index size)".into(),
            None => "not measured".into(),
        },
    ));
    let list = report.median("qido_study_list", Kind::Openpacs, "p95_ms");
    out.push((
        format!("Study list limit=100 ≤ 20 ms with 1 M instances (measured with {indexed})"),
        list.map(|v| format!("p95 {v:.1} ms"))
            .unwrap_or_else(|| "–".into()),
        match list {
            Some(v) if v <= 20.0 => "met at this index size; 1 M not measured".into(),
            Some(_) => "**not met**".into(),
            None => "not measured".into(),
        },
    ));
    let o = ratio("metadata_series", Kind::Orthanc);
    out.push((
        "Series metadata: ≥ 10× faster than Orthanc".into(),
        show(o),
        verdict(o.map(|o| o >= 10.0)),
    ));
    let o = ratio("wado_series", Kind::Orthanc);
    out.push((
        "WADO-RS series retrieval: ≥ 1.2× Orthanc MB/s".into(),
        show(o),
        verdict(o.map(|o| o >= 1.2)),
    ));
    for (id, name) in [("cmove_series", "C-MOVE"), ("cget_series", "C-GET")] {
        let o = ratio(id, Kind::Orthanc);
        out.push((
            format!("{name} of the series: ≥ 1.5× Orthanc"),
            show(o),
            verdict(o.map(|o| o >= 1.5)),
        ));
    }
    let o = ratio("zip_study", Kind::Orthanc);
    out.push((
        "Study ZIP: ≥ 20× Orthanc".into(),
        show(o),
        verdict(o.map(|o| o >= 20.0)),
    ));
    // Peak RSS during ingest: the worst (highest) median of ours against Orthanc's worst.
    let ingest_ids: Vec<&str> = SCENARIOS
        .iter()
        .map(|d| d.id)
        .filter(|id| id.starts_with("cstore") || *id == "stow_ct")
        .collect();
    let worst_rss = |k: Kind| {
        ingest_ids
            .iter()
            .filter_map(|id| report.median(id, k, "peak_rss_mib"))
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    };
    let (ours, theirs) = (worst_rss(Kind::Openpacs), worst_rss(Kind::Orthanc));
    out.push((
        "Peak RSS during any ingest ≤ half of Orthanc's".into(),
        format!(
            "ours {} MiB, Orthanc {} MiB",
            ours.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into()),
            theirs.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
        ),
        verdict(ours.zip(theirs).map(|(a, b)| a <= b / 2.0)),
    ));
    scale_targets(report, &mut out);
    // The baseline for this client: Orthanc as Debian starts it (the same client,
    // Nagle then on at both ends); the Orthanc given TCP_NODELAY=1 is shown beside it.
    let shipped = ratio("cstore_ct_1_nagle_shipped", Kind::Orthanc);
    let tuned = ratio("cstore_ct_1_nagle", Kind::Orthanc);
    out.push((
        "C-STORE from Debian's default storescu (Nagle on): ≥ 10× Orthanc".into(),
        format!(
            "{} Orthanc as Debian starts it, {} Orthanc given TCP_NODELAY=1",
            show(shipped),
            show(tuned)
        ),
        verdict(shipped.map(|o| o >= 10.0)),
    ));
    out
}

fn scale_markdown(md: &mut String, sc: &ScaleReport, iterations: usize) {
    let _ = writeln!(md, "\n## Index at scale (openpacs)\n");
    if let Some(st) = &sc.settings {
        let _ = writeln!(
            md,
            "Filled with 64×64 instances in studies of {} (one series, about three studies per patient) through `openpacs import --jobs {}` (the C-STORE ingest code: fdatasync, rename, directory fsync, index commit), {} at a time, server stopped during the import; then C-FIND (one association) and QIDO-RS (one connection), warm-up then {} queries each; then C-STORE of {} new small instances on 4 associations (the probe), compared with the same on the empty index.",
            st.per_study, st.jobs, st.chunk, iterations, st.probe
        );
    }
    if !sc.queries.is_empty() {
        let q: Vec<String> = sc.queries.iter().map(|(k, v)| format!("{k} `{v}`")).collect();
        let _ = writeln!(md, "\nQuery values: {}.", q.join(", "));
    }
    if let Some(e) = &sc.error {
        let short: String = e.chars().take(400).collect();
        let _ = writeln!(md, "\n**Failed**: {}", short.replace('\n', " "));
    }
    if sc.levels.is_empty() {
        return;
    }
    let _ = write!(md, "\n| query (p50 / p95 / p99 ms, matches) |");
    for l in &sc.levels {
        let _ = write!(md, " {} indexed |", l.indexed);
    }
    let _ = write!(md, "\n|---|");
    for _ in &sc.levels {
        let _ = write!(md, "---|");
    }
    let _ = writeln!(md);
    for (id, title) in QUERIES {
        let _ = write!(md, "| {title} |");
        for l in &sc.levels {
            match l.queries.get(*id) {
                Some(q) => {
                    let _ = write!(
                        md,
                        " {} / **{}** / {} ({}) |",
                        fmt_num(q.p50_ms),
                        fmt_num(q.p95_ms),
                        fmt_num(q.p99_ms),
                        q.matches
                    );
                }
                None => {
                    let _ = write!(md, " – |");
                }
            }
        }
        let _ = writeln!(md);
    }
    let empty = sc.empty_ingest_per_s;
    let _ = write!(
        md,
        "| C-STORE probe, inst/s (× empty index{}) |",
        empty.map(|e| format!(": {}/s", fmt_num(e))).unwrap_or_default()
    );
    for l in &sc.levels {
        let _ = write!(
            md,
            " {} |",
            match (l.ingest_per_s, empty) {
                (Some(r), Some(e)) => format!("{} ({:.2}×)", fmt_num(r), r / e),
                (Some(r), None) => fmt_num(r),
                _ => "–".into(),
            }
        );
    }
    let _ = writeln!(md);
    let _ = write!(md, "| server peak RSS during the probe, MiB |");
    for l in &sc.levels {
        let _ = write!(
            md,
            " {} |",
            l.ingest_peak_rss_mib
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "–".into())
        );
    }
    let _ = writeln!(md);
    let _ = write!(
        md,
        "| import to reach this level: instances, GB, s (inst/s), peak RSS MiB |"
    );
    for l in &sc.levels {
        let _ = write!(
            md,
            " {}, {:.2} GB, {:.0} s ({:.0}/s), {:.0} MiB |",
            l.imported,
            l.imported_bytes as f64 / 1e9,
            l.import_s,
            if l.import_s > 0.0 {
                l.imported as f64 / l.import_s
            } else {
                0.0
            },
            l.import_peak_rss_mib
        );
    }
    let _ = writeln!(md);
    let _ = write!(md, "| data directory on disk, GB |");
    for l in &sc.levels {
        let _ = write!(md, " {:.2} |", l.data_bytes as f64 / 1e9);
    }
    let _ = writeln!(md);
}

fn scale_targets(report: &Report, out: &mut Vec<(String, String, String)>) {
    let Some(sc) = report.scale.as_ref() else {
        out.push((
            "Ingest rate with 1 M instances indexed ≥ 80% of empty".into(),
            "–".into(),
            "not measured (no --scale run)".into(),
        ));
        return;
    };
    let Some(top) = sc.levels.last() else {
        out.push((
            "Index at scale".into(),
            sc.error.clone().unwrap_or_default(),
            "not measured".into(),
        ));
        return;
    };
    let at = if top.indexed >= 1_000_000 {
        String::new()
    } else {
        format!(" (largest index measured: {}; 1 M not measured)", top.indexed)
    };
    let ids = [
        "cfind_patient_id",
        "cfind_patient_name",
        "cfind_date_modality",
        "qido_patient_id",
        "qido_patient_name",
        "qido_date_modality",
    ];
    let p95: Vec<(&str, f64)> = ids
        .iter()
        .filter_map(|id| top.queries.get(*id).map(|q| (*id, q.p95_ms)))
        .collect();
    let worst = p95.iter().map(|(_, v)| *v).fold(f64::NAN, f64::max);
    out.push((
        format!(
            "Scale: C-FIND and QIDO-RS p95 ≤ 20 ms with {} instances indexed{at}",
            top.indexed
        ),
        p95.iter()
            .map(|(k, v)| format!("{k} {v:.1} ms"))
            .collect::<Vec<_>>()
            .join(", "),
        verdict((!p95.is_empty()).then_some(worst <= 20.0)),
    ));
    let list = top.queries.get("qido_study_list").map(|q| q.p95_ms);
    out.push((
        format!(
            "Scale: study list limit=100 ≤ 20 ms with {} instances indexed{at}",
            top.indexed
        ),
        list.map(|v| format!("p95 {v:.1} ms"))
            .unwrap_or_else(|| "–".into()),
        verdict(list.map(|v| v <= 20.0)),
    ));
    let r = top.ingest_per_s.zip(sc.empty_ingest_per_s).map(|(a, b)| a / b);
    out.push((
        format!(
            "Ingest rate with {} instances indexed ≥ 80% of empty{at}",
            top.indexed
        ),
        r.map(|r| {
            format!(
                "{:.0}% ({}/s against {}/s)",
                r * 100.0,
                fmt_num(top.ingest_per_s.unwrap_or(0.0)),
                fmt_num(sc.empty_ingest_per_s.unwrap_or(0.0))
            )
        })
        .unwrap_or_else(|| "–".into()),
        verdict(r.map(|r| r >= 0.8)),
    ));
    let bytes: u64 = sc.levels.iter().map(|l| l.imported_bytes).sum();
    let rss = sc
        .levels
        .iter()
        .map(|l| l.import_peak_rss_mib.max(l.ingest_peak_rss_mib.unwrap_or(0.0)))
        .fold(0.0, f64::max);
    out.push((
        "Peak RSS flat: a 10 GB ingest stays under 150 MB".into(),
        format!(
            "{:.1} GB imported, peak RSS of the ingesting process {rss:.0} MiB",
            bytes as f64 / 1e9
        ),
        if bytes >= 10_000_000_000 {
            verdict(Some(rss < 150.0))
        } else if rss < 150.0 {
            format!(
                "under 150 MiB for {:.1} GB (less than 10 GB ingested)",
                bytes as f64 / 1e9
            )
        } else {
            "**not met**".into()
        },
    ));
}
