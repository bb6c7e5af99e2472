//! The harness at tiny sizes against openpacs only: every scenario must produce numbers, so
//! that the benchmark never rots between full runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The debug `openpacs` binary beside this crate's own binary, built if it is missing (it is
/// always there under `cargo test --workspace`, which builds every binary first).
fn openpacs_binary() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_pacs-bench"));
    let bin = bench.with_file_name("openpacs");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "openpacs"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p openpacs");
        assert!(status.success(), "cargo build -p openpacs failed");
    }
    assert!(bin.exists(), "{} is missing", bin.display());
    bin
}

const OPENPACS_SCENARIOS: &[(&str, &str)] = &[
    ("cstore_ct_1", "instances_per_s"),
    ("cstore_ct_4", "instances_per_s"),
    ("cstore_ct_8", "instances_per_s"),
    ("cstore_ct_1_nagle", "instances_per_s"),
    ("cstore_small_1", "instances_per_s"),
    ("cstore_small_4", "instances_per_s"),
    ("stow_ct", "instances_per_s"),
    ("wado_series", "mb_per_s"),
    ("wado_series_ttfb", "ttfb_ms"),
    ("metadata_series", "ms"),
    ("wado_frame", "ms_per_frame"),
    ("wado_rendered", "ms_per_frame"),
    ("qido_patient_id", "p95_ms"),
    ("qido_patient_name", "p95_ms"),
    ("qido_date_modality", "p95_ms"),
    ("qido_study_list", "p95_ms"),
    ("cfind_patient_id", "p95_ms"),
    ("cfind_patient_name", "p95_ms"),
    ("cfind_date_modality", "p95_ms"),
    ("cfind_study_list", "p95_ms"),
    ("cget_series", "instances_per_s"),
    ("cmove_series", "instances_per_s"),
    ("zip_study", "mb_per_s"),
];

/// Runs pacs-bench with `args` (openpacs only, tiny data, a work and an output directory of its
/// own):
/// its JSON report, its Markdown report and its stderr.
fn run_bench(args: &[&str]) -> (serde_json::Value, String, String) {
    let openpacs = openpacs_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("results");
    let run = Command::new(env!("CARGO_BIN_EXE_pacs-bench"))
        .args(args)
        .args(["--targets", "openpacs", "--reps", "1"])
        // A CT series of 3, two small studies of 2.
        .args(["--ct", "3", "--small", "4", "--small-per-study", "2"])
        .arg("--openpacs-bin")
        .arg(&openpacs)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run pacs-bench");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "pacs-bench failed: {stderr}");
    let json =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("JSON");
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    (json, md, stderr)
}

#[test]
fn harness_reports_a_number_for_every_openpacs_scenario() {
    let (json, md, stderr) = run_bench(&[
        "--query-iterations",
        "3",
        "--associations",
        "1,4,8",
        "--disk-mib",
        "8",
        "--openpacs-label",
        "smoke",
        "--scale",
        "8,16",
        "--scale-chunk",
        "5",
        "--scale-per-study",
        "3",
        "--scale-probe",
        "2",
        "--scale-jobs",
        "2",
    ]);
    let runs = json["runs"].as_array().expect("runs");
    for (scenario, metric) in OPENPACS_SCENARIOS {
        let run = runs
            .iter()
            .find(|r| r["scenario"] == *scenario && r["target"] == "openpacs")
            .unwrap_or_else(|| panic!("no run of {scenario} in the report"));
        assert!(
            run["error"].is_null(),
            "{scenario} failed: {}\n{stderr}",
            run["error"]
        );
        let median = run["summary"][metric]["median"]
            .as_f64()
            .unwrap_or_else(|| panic!("{scenario} has no {metric}: {run}"));
        assert!(
            median.is_finite() && median > 0.0,
            "{scenario}: {metric} = {median}"
        );
        let rep = &run["reps"][0];
        assert!(rep["cpu_s"].as_f64().is_some(), "{scenario}: no CPU time");
        assert!(
            rep["peak_rss_mib"].as_f64().is_some_and(|v| v > 1.0),
            "{scenario}: no peak RSS"
        );
        if scenario.starts_with("cstore") || *scenario == "stow_ct" {
            assert!(
                rep["disk_per_byte"].as_f64().is_some_and(|v| v > 0.5),
                "{scenario}: no disk usage"
            );
        }
    }
    // The durable-creation floor was measured at both object sizes.
    let durable = json["durable"].as_array().expect("durable");
    assert_eq!(
        durable.len(),
        4,
        "CT and small sizes, 1 and 4 threads: {durable:?}"
    );
    assert!(durable
        .iter()
        .all(|d| d["files_per_s"].as_f64().is_some_and(|v| v > 0.0)));
    // The queries found what the generated data holds.
    let matches = |s: &str| {
        runs.iter().find(|r| r["scenario"] == s).expect("run")["summary"]["matches"]["median"]
            .as_f64()
            .unwrap_or(0.0)
    };
    assert!(matches("qido_patient_id") >= 1.0 && matches("cfind_patient_id") >= 1.0);
    assert_eq!(matches("qido_study_list"), 3.0, "one CT study and two small ones");
    assert_eq!(matches("cfind_study_list"), 3.0);

    assert!(
        md.contains("| C-STORE CT series, 1 association | inst/s |"),
        "{md}"
    );
    assert!(md.contains("## Targets (issue 6)"), "{md}");
    // The index at scale: both levels measured, every query answered, the probe ingested.
    let scale = &json["scale"];
    assert!(scale["error"].is_null(), "scale failed: {}", scale["error"]);
    assert!(scale["empty_ingest_per_s"].as_f64().is_some_and(|v| v > 0.0));
    let levels = scale["levels"].as_array().expect("scale levels");
    assert_eq!(levels.len(), 2, "{scale}");
    // 2 probe instances, then the fill up to 8; 2 more probe instances, then up to 16.
    assert_eq!(levels[0]["indexed"], 8);
    assert_eq!(levels[1]["indexed"], 16);
    for level in levels {
        assert!(level["ingest_per_s"].as_f64().is_some_and(|v| v > 0.0));
        let queries = level["queries"].as_object().expect("queries");
        assert_eq!(queries.len(), 9, "{level}");
        for (id, q) in queries {
            assert!(q["p95_ms"].as_f64().is_some_and(|v| v > 0.0), "{id}: {q}");
            if id != "cfind_date_modality" && id != "qido_date_modality" {
                assert!(
                    q["matches"].as_f64().is_some_and(|v| v >= 1.0),
                    "{id} found nothing: {q}"
                );
            }
        }
    }
    assert!(md.contains("## Index at scale (openpacs)"), "{md}");
    assert!(json["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(json["disk"]["write_mb_per_s"].as_f64().is_some_and(|v| v > 0.0));
}

/// `--index postgres --blobs s3`: openpacs on the machine's PostgreSQL and a Garage the
/// harness starts, ingest measured and reported as such.
#[test]
fn harness_runs_openpacs_on_postgresql_and_garage() {
    let (json, md, stderr) = run_bench(&[
        "--associations",
        "1",
        "--disk-mib",
        "0",
        "--ingest-only",
        "--index",
        "postgres",
        "--blobs",
        "s3",
    ]);
    assert_eq!(json["settings"]["index"], "postgres");
    assert_eq!(json["settings"]["blobs"], "s3");
    let ingest = json["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .find(|r| r["scenario"] == "cstore_ct_1" && r["target"] == "openpacs")
        .expect("cstore_ct_1");
    assert!(ingest["error"].is_null(), "{}\n{stderr}", ingest["error"]);
    let rate = ingest["summary"]["instances_per_s"]["median"].as_f64();
    assert!(rate.is_some_and(|r| r > 0.0), "{ingest}");
    assert!(md.contains("openpacs's index: PostgreSQL"), "{md}");
}
