//! Queries and ingest at index sizes of 10 k, 100 k, 1 M instances (openpacs only).
//!
//! The index is filled with real instances through the real ingest code: small 64×64 images
//! generated in chunks and loaded with `openpacs import` (the same `Archive` ingest as
//! C-STORE: blob fdatasync and rename, directory fsync, index commit) while the server is
//! stopped, then the server is started again on the same data directory and measured: C-FIND
//! and QIDO-RS latencies, and the C-STORE rate of a fixed probe set compared with the rate
//! on the empty index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use dicom_core::VR;
use dicom_dictionary_std::tags;
use pacs_testkit::{write_study, Modality, PatientSpec, StudySpec};
use serde::Serialize;

use crate::dimse::{study_return_keys, FindKeys, FindScu};
use crate::http::{encode_query_value, BaseUrl, Client};
use crate::scenarios::{latencies, stored_instances, Context};
use crate::targets::{self, Kind, RssSampler, Target};

/// How the index is filled.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleSettings {
    /// Index sizes (instances) at which queries and ingest are measured.
    pub levels: Vec<u64>,
    /// Instances per generated study (one series).
    pub per_study: u32,
    /// Instances generated and imported at a time (bounds the disk used by source files).
    pub chunk: u64,
    /// `openpacs import --jobs`.
    pub jobs: usize,
    /// Small instances sent with C-STORE (4 associations) to measure the ingest rate.
    pub probe: u32,
}

/// One query's latencies at one index size.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub matches: f64,
}

/// Everything measured at one index size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScaleLevel {
    /// Instances in the index when the queries ran.
    pub indexed: u64,
    /// Instances imported to reach this level, and how long the import took (generation of
    /// the source files excluded).
    pub imported: u64,
    pub import_s: f64,
    pub generate_s: f64,
    /// Peak RSS of the `openpacs import` processes (sampled every 50 ms), MiB.
    pub import_peak_rss_mib: f64,
    /// DICOM bytes imported to reach this level.
    pub imported_bytes: u64,
    pub queries: BTreeMap<String, Latency>,
    /// C-STORE rate of the probe set (4 associations) after the queries, instances/s.
    pub ingest_per_s: Option<f64>,
    /// Server peak RSS during the probe ingest, MiB.
    pub ingest_peak_rss_mib: Option<f64>,
    /// Bytes allocated under the data directory (blobs and index).
    pub data_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ScaleReport {
    pub settings: Option<ScaleSettings>,
    /// C-STORE rate of the probe set on the empty index, instances/s.
    pub empty_ingest_per_s: Option<f64>,
    pub empty_ingest_peak_rss_mib: Option<f64>,
    pub levels: Vec<ScaleLevel>,
    pub error: Option<String>,
    /// What was queried (values taken from the generated data).
    pub queries: Vec<(String, String)>,
}

/// The query ids, in report order, with a human title.
pub const QUERIES: &[(&str, &str)] = &[
    ("cfind_patient_id", "C-FIND studies, PatientID exact"),
    ("cfind_patient_name", "C-FIND studies, PatientName wildcard"),
    (
        "cfind_date_modality",
        "C-FIND studies, StudyDate range (one month) + ModalitiesInStudy",
    ),
    ("cfind_study_series", "C-FIND series of one study"),
    ("qido_patient_id", "QIDO-RS studies, PatientID exact"),
    ("qido_patient_name", "QIDO-RS studies, PatientName wildcard"),
    (
        "qido_date_modality",
        "QIDO-RS studies, StudyDate range (one month) + ModalitiesInStudy",
    ),
    ("qido_study_series", "QIDO-RS series of one study"),
    ("qido_study_list", "QIDO-RS study list, limit=100"),
];

const SYLLABLES: &[&str] = &[
    "BER", "NAR", "DO", "LU", "MON", "TAL", "RI", "VE", "SAN", "CHE", "GAR", "PI", "LE", "ROU", "MA", "FON",
];
const GIVEN: &[&str] = &[
    "JEAN", "MARIE", "PAUL", "ANNE", "LUC", "CLAIRE", "HUGO", "LEA", "NOAH", "EMMA",
];

/// A patient for fill study `seed`: about three studies per patient, family names from
/// 4,096 syllable combinations (a real archive has many names; the generator's own list is
/// short, which would make every name search match a large part of the archive).
fn fill_patient(seed: u64) -> PatientSpec {
    let p = seed / 3;
    let h = p.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let s = |i: u32| SYLLABLES[((h >> (8 * i)) & 15) as usize];
    PatientSpec {
        patient_id: format!("S{p:09}"),
        patient_name: format!(
            "{}{}{}^{}",
            s(0),
            s(1),
            s(2),
            GIVEN[((h >> 40) % GIVEN.len() as u64) as usize]
        ),
        birth_date: format!(
            "{:04}{:02}{:02}",
            1935 + (h >> 44) % 70,
            1 + (h >> 52) % 12,
            1 + (h >> 56) % 28
        ),
        sex: if h & 1 == 0 { "F" } else { "M" }.into(),
    }
}

/// Writes `count` instances as studies of `per_study`, seeds from `*seed` on.
fn generate(
    dir: &Path,
    seed: &mut u64,
    count: u64,
    per_study: u32,
) -> Result<(Vec<pacs_testkit::GeneratedInstance>, u64)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut left = count;
    while left > 0 {
        let n = left.min(u64::from(per_study.max(1))) as u32;
        let modality = if *seed % 2 == 0 {
            Modality::Ct
        } else {
            Modality::Mr
        };
        let spec = StudySpec {
            instances_per_series: n,
            rows: 64,
            columns: 64,
            patient: Some(fill_patient(*seed)),
            ..StudySpec::new(*seed, modality)
        };
        for i in write_study(&spec, &dir.join(seed.to_string()))? {
            bytes += i.size;
            out.push(i);
        }
        left -= u64::from(n);
        *seed += 1;
    }
    Ok((out, bytes))
}

/// `openpacs import` of `dir` into the stopped target's directory; returns the seconds taken
/// and the import process's peak RSS in KiB.
fn import(ctx: &Context, target_dir: &Path, dir: &Path, jobs: usize) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut child = Command::new(&ctx.programs.openpacs)
        .arg("import")
        .arg("--jobs")
        .arg(jobs.to_string())
        .arg(dir)
        .current_dir(target_dir)
        .env("OPENPACS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting openpacs import")?;
    let sampler = RssSampler::start(child.id(), false);
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait()?;
    let peak = sampler.finish();
    if !status.success() {
        bail!("openpacs import failed ({status}): {stdout} {stderr}");
    }
    Ok((start.elapsed().as_secs_f64(), peak))
}

/// The probe: C-STORE of `files` with 4 associations; instances/s and server peak RSS (MiB).
fn probe(ctx: &Context, target: &Target, files: &[PathBuf]) -> Result<(f64, f64)> {
    // The fill's generated files were just deleted: without this, the probe's file creations
    // would scan past them (see `settle_filesystem`), and more so at larger levels.
    crate::sys::settle_filesystem(ctx.drop_caches, files)?;
    let before = stored_instances(target)?;
    let sampler = RssSampler::start(target.pid(), false);
    let start = Instant::now();
    ctx.dcmtk
        .store(&target.host, target.dicom_port, &target.ae_title, files, 4, true)?;
    let s = start.elapsed().as_secs_f64();
    let peak = sampler.finish();
    let after = stored_instances(target)?;
    ensure!(
        after == before + files.len() as u64,
        "probe: {} of {} instances stored",
        after - before,
        files.len()
    );
    Ok((files.len() as f64 / s, peak as f64 / 1024.0))
}

struct Probe {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

/// A fresh probe set (new studies, so that every instance is new to the index).
fn probe_set(ctx: &Context, seed: &mut u64, n: u32, per_study: u32) -> Result<Probe> {
    let dir = ctx.work.join("scale-probe");
    let _ = std::fs::remove_dir_all(&dir);
    let (files, _) = generate(&dir, seed, u64::from(n), per_study)?;
    Ok(Probe {
        dir,
        files: files.into_iter().map(|i| i.path).collect(),
    })
}

struct Questions {
    patient_id: String,
    name_pattern: String,
    study: String,
    date_range: String,
}

fn measure_queries(ctx: &Context, target: &Target, q: &Questions) -> Result<BTreeMap<String, Latency>> {
    let mut out = BTreeMap::new();
    let web = BaseUrl::parse(target.dicomweb.as_deref().context("no DICOMweb")?)?;
    let mut client = Client::new(&web);
    let qido = [
        (
            "qido_patient_id",
            format!("/studies?PatientID={}", encode_query_value(&q.patient_id)),
        ),
        (
            "qido_patient_name",
            format!("/studies?PatientName={}", encode_query_value(&q.name_pattern)),
        ),
        (
            "qido_date_modality",
            format!("/studies?StudyDate={}&ModalitiesInStudy=CT", q.date_range),
        ),
        ("qido_study_series", format!("/studies/{}/series", q.study)),
        ("qido_study_list", "/studies?limit=100".to_string()),
    ];
    for (id, query) in &qido {
        let path = web.path(query);
        let m = latencies(ctx.query_iterations, || {
            let r = client.get(&path, "application/dicom+json", true)?;
            ensure!(
                r.status == 200 || r.status == 204,
                "QIDO-RS {query} answered {}",
                r.status
            );
            Ok(if r.status == 204 {
                0
            } else {
                r.json()?.as_array().map(|a| a.len()).unwrap_or(0)
            })
        })?;
        out.insert(id.to_string(), latency(&m));
    }
    let series_keys: FindKeys = vec![
        (tags::QUERY_RETRIEVE_LEVEL, VR::CS, "SERIES"),
        (tags::STUDY_INSTANCE_UID, VR::UI, q.study.as_str()),
        (tags::SERIES_INSTANCE_UID, VR::UI, ""),
        (tags::MODALITY, VR::CS, ""),
        (tags::SERIES_NUMBER, VR::IS, ""),
        (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""),
    ];
    let cfind: [(&str, FindKeys); 4] = [
        (
            "cfind_patient_id",
            vec![(tags::PATIENT_ID, VR::LO, q.patient_id.as_str())],
        ),
        (
            "cfind_patient_name",
            vec![(tags::PATIENT_NAME, VR::PN, q.name_pattern.as_str())],
        ),
        (
            "cfind_date_modality",
            vec![
                (tags::STUDY_DATE, VR::DA, q.date_range.as_str()),
                (tags::MODALITIES_IN_STUDY, VR::CS, "CT"),
            ],
        ),
        ("cfind_study_series", Vec::new()),
    ];
    let mut scu = FindScu::connect(&target.host, target.dicom_port, &target.ae_title)?;
    for (id, overrides) in &cfind {
        let keys = if *id == "cfind_study_series" {
            series_keys.clone()
        } else {
            let mut keys = study_return_keys();
            for o in overrides {
                match keys.iter_mut().find(|k| k.0 == o.0) {
                    Some(k) => *k = *o,
                    None => keys.push(*o),
                }
            }
            keys
        };
        let m = latencies(ctx.query_iterations, || scu.find(&keys))?;
        out.insert(id.to_string(), latency(&m));
    }
    scu.release();
    Ok(out)
}

fn latency(m: &BTreeMap<String, f64>) -> Latency {
    let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    Latency {
        p50_ms: g("p50_ms"),
        p95_ms: g("p95_ms"),
        p99_ms: g("p99_ms"),
        matches: g("matches"),
    }
}

/// Runs the scale scenario; errors end it and are recorded in the report.
pub fn run(ctx: &Context, settings: ScaleSettings) -> ScaleReport {
    let mut report = ScaleReport {
        settings: Some(settings.clone()),
        ..ScaleReport::default()
    };
    if let Err(e) = run_inner(ctx, &settings, &mut report) {
        (ctx.log)(&format!("  scale: FAILED: {e:#}"));
        report.error = Some(format!("{e:#}"));
    }
    let _ = std::fs::remove_dir_all(ctx.work.join("scale-probe"));
    let _ = std::fs::remove_dir_all(ctx.work.join("scale-fill"));
    report
}

fn run_inner(ctx: &Context, settings: &ScaleSettings, report: &mut ScaleReport) -> Result<()> {
    let mut levels = settings.levels.clone();
    levels.sort_unstable();
    let mut slot = Some(Target::start(Kind::Openpacs, ctx.programs, ctx.work, &[])?);
    // Fill seeds and probe seeds never meet.
    let mut fill_seed: u64 = 10_000_000;
    let mut probe_seed: u64 = 900_000_000;
    let per_study = settings.per_study.max(1);
    let result = (|| -> Result<()> {
        let target = slot.as_ref().context("no server")?;
        if settings.probe > 0 {
            let p = probe_set(ctx, &mut probe_seed, settings.probe, per_study)?;
            (ctx.log)(&format!(
                "  scale: probe C-STORE of {} instances on the empty index",
                p.files.len()
            ));
            let (rate, rss) = probe(ctx, target, &p.files)?;
            let _ = std::fs::remove_dir_all(&p.dir);
            report.empty_ingest_per_s = Some(rate);
            report.empty_ingest_peak_rss_mib = Some(rss);
        }
        let mut questions: Option<Questions> = None;
        for &level in &levels {
            let have = stored_instances(slot.as_ref().context("no server")?)?;
            let mut row = ScaleLevel::default();
            if level > have {
                let dir = slot.take().context("no server")?.suspend();
                let mut import_rss = 0u64;
                let mut left = level - have;
                (ctx.log)(&format!(
                    "  scale: filling to {level} instances ({left} to import, chunks of {})",
                    settings.chunk
                ));
                while left > 0 {
                    let n = left.min(settings.chunk.max(1));
                    let chunk_dir = ctx.work.join("scale-fill");
                    let _ = std::fs::remove_dir_all(&chunk_dir);
                    let g0 = Instant::now();
                    let (files, bytes) = generate(&chunk_dir, &mut fill_seed, n, per_study)?;
                    row.generate_s += g0.elapsed().as_secs_f64();
                    if questions.is_none() {
                        let first = files.first().context("no instance generated")?;
                        let patient = fill_patient(10_000_000);
                        let family = patient.patient_name.split('^').next().unwrap_or("");
                        questions = Some(Questions {
                            patient_id: patient.patient_id.clone(),
                            name_pattern: format!("{}*", &family[..family.len().min(5)]),
                            study: first.study_instance_uid.clone(),
                            date_range: "20200101-20200131".into(),
                        });
                    }
                    let (s, rss) = import(ctx, &dir, &chunk_dir, settings.jobs)?;
                    let _ = std::fs::remove_dir_all(&chunk_dir);
                    row.import_s += s;
                    row.imported += n;
                    row.imported_bytes += bytes;
                    import_rss = import_rss.max(rss);
                    left -= n;
                    (ctx.log)(&format!(
                        "    imported {} of {} ({:.0}/s)",
                        row.imported,
                        level - have,
                        row.imported as f64 / row.import_s
                    ));
                }
                row.import_peak_rss_mib = import_rss as f64 / 1024.0;
                slot = Some(Target::start_in(Kind::Openpacs, ctx.programs, dir, &[])?);
            }
            let target = slot.as_ref().context("no server")?;
            row.indexed = stored_instances(target)?;
            row.data_bytes = targets::disk_usage(&target.data_dir).0;
            if let Some(q) = &questions {
                (ctx.log)(&format!(
                    "  scale: queries with {} instances indexed",
                    row.indexed
                ));
                row.queries = measure_queries(ctx, target, q)?;
            }
            if settings.probe > 0 {
                let p = probe_set(ctx, &mut probe_seed, settings.probe, per_study)?;
                (ctx.log)(&format!(
                    "  scale: probe C-STORE of {} instances with {} indexed",
                    p.files.len(),
                    row.indexed
                ));
                let (rate, rss) = probe(ctx, target, &p.files)?;
                let _ = std::fs::remove_dir_all(&p.dir);
                row.ingest_per_s = Some(rate);
                row.ingest_peak_rss_mib = Some(rss);
            }
            (ctx.log)(&format!(
                "  scale: level done: {}",
                serde_json::to_string(&row).unwrap_or_default()
            ));
            report.levels.push(row);
        }
        if let Some(q) = questions {
            report.queries = vec![
                ("PatientID".into(), q.patient_id),
                ("PatientName".into(), q.name_pattern),
                ("StudyDate".into(), q.date_range),
                ("ModalitiesInStudy".into(), "CT".into()),
                ("StudyInstanceUID (series of one study)".into(), q.study),
            ];
        }
        Ok(())
    })();
    match slot {
        Some(target) => {
            let result = result.map_err(|e| e.context(format!("server log: {}", target.log_tail())));
            target.stop();
            result
        }
        None => result,
    }
}
