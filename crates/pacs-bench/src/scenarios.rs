//! The scenarios: what each one does to a target, and how one repetition is measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use dicom_core::VR;
use dicom_dictionary_std::tags;
use serde::Serialize;

use crate::dimse::{study_return_keys, Dcmtk, FindKeys, FindScu};
use crate::http::{encode_query_value, BaseUrl, Client};
use crate::targets::{self, Kind, Peer, Programs, Target};

/// What a scenario reports, and which of its figures is compared between targets.
pub struct ScenarioDef {
    pub id: &'static str,
    pub title: &'static str,
    /// Key of the figure compared across targets.
    pub primary: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// The scenario whose openpacs figure this one's baselines are compared with: itself, but
    /// for a baseline-only variant of another scenario.
    pub ours_in: &'static str,
}

pub const SCENARIOS: &[ScenarioDef] = &[
    def(
        "cstore_ct_1",
        "C-STORE CT series, 1 association",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "cstore_ct_4",
        "C-STORE CT series, 4 associations",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "cstore_ct_8",
        "C-STORE CT series, 8 associations",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "cstore_ct_1_nagle",
        "C-STORE CT series, 1 association, storescu with Nagle on (Debian default)",
        "instances_per_s",
        "inst/s",
        true,
    ),
    ScenarioDef {
        ours_in: "cstore_ct_1_nagle",
        ..def(
            "cstore_ct_1_nagle_shipped",
            "Same client, Orthanc started as the Debian service does (no TCP_NODELAY in its environment); ratio to openpacs's figure above",
            "instances_per_s",
            "inst/s",
            true,
        )
    },
    def(
        "cstore_small_1",
        "C-STORE small 64×64 images, 1 association",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "cstore_small_4",
        "C-STORE small 64×64 images, 4 associations",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "stow_ct",
        "STOW-RS CT series, 50 per request, 4 connections",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "wado_series",
        "WADO-RS series retrieval",
        "mb_per_s",
        "MB/s",
        true,
    ),
    def(
        "wado_series_ttfb",
        "WADO-RS series, time to first byte",
        "ttfb_ms",
        "ms",
        false,
    ),
    def("metadata_series", "WADO-RS series metadata", "ms", "ms", false),
    def(
        "wado_frame",
        "WADO-RS frame of a CT instance, stored syntax (mean per frame)",
        "ms_per_frame",
        "ms",
        false,
    ),
    def(
        "wado_rendered",
        "WADO-RS rendered frame of a CT instance, JPEG (mean per frame)",
        "ms_per_frame",
        "ms",
        false,
    ),
    def(
        "qido_patient_id",
        "QIDO-RS studies, PatientID exact (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "qido_patient_name",
        "QIDO-RS studies, PatientName wildcard (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "qido_date_modality",
        "QIDO-RS studies, StudyDate range + ModalitiesInStudy (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "qido_study_list",
        "QIDO-RS study list, limit=100 (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "cfind_patient_id",
        "C-FIND studies, PatientID exact (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "cfind_patient_name",
        "C-FIND studies, PatientName wildcard (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "cfind_date_modality",
        "C-FIND studies, StudyDate range + ModalitiesInStudy (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "cfind_study_list",
        "C-FIND all studies (p95)",
        "p95_ms",
        "ms",
        false,
    ),
    def(
        "cget_series",
        "C-GET CT series (getscu --ignore: received and discarded)",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "cmove_series",
        "C-MOVE CT series to storescp --ignore (received and discarded)",
        "instances_per_s",
        "inst/s",
        true,
    ),
    def(
        "zip_study",
        "Study ZIP download (DICOM bytes delivered per second)",
        "mb_per_s",
        "MB/s",
        true,
    ),
];

const fn def(
    id: &'static str,
    title: &'static str,
    primary: &'static str,
    unit: &'static str,
    higher_is_better: bool,
) -> ScenarioDef {
    ScenarioDef {
        id,
        title,
        primary,
        unit,
        higher_is_better,
        ours_in: id,
    }
}

/// One repetition's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rep {
    pub metrics: BTreeMap<String, f64>,
    /// Peak resident set of the server during the repetition, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Server CPU seconds (user + system) spent during the repetition.
    pub cpu_s: Option<f64>,
    /// Bytes allocated on disk by the server per byte of DICOM stored (ingest only).
    pub disk_per_byte: Option<f64>,
}

/// All repetitions of one scenario against one target.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub scenario: String,
    pub target: Kind,
    pub reps: Vec<Rep>,
    /// Set when a repetition failed: the error instead of a number.
    pub error: Option<String>,
    pub notes: Vec<String>,
}

/// The data sets, generated once.
pub struct Data {
    pub ct_files: Vec<PathBuf>,
    pub ct_bytes: u64,
    pub ct_study: String,
    pub ct_series: String,
    /// SOP Instance UIDs of the CT series, in order.
    pub ct_instances: Vec<String>,
    pub small_files: Vec<PathBuf>,
    pub small_bytes: u64,
    pub small_studies: usize,
    /// Query values taken from the generated studies.
    pub patient_id: String,
    pub patient_name_pattern: String,
    pub date_range: String,
    pub modality: String,
}

/// Everything a scenario needs besides its target.
pub struct Context<'a> {
    pub programs: &'a Programs,
    pub dcmtk: &'a Dcmtk,
    pub data: &'a Data,
    pub work: &'a Path,
    pub reps: usize,
    pub query_iterations: usize,
    pub ticks: f64,
    pub associations: &'a [usize],
    pub nagle: bool,
    /// Drop the page cache before each ingest repetition (see [`crate::sys::settle_filesystem`]).
    pub drop_caches: bool,
    pub log: &'a dyn Fn(&str),
}

/// Runs `f` while watching the server's memory and CPU.
fn measured(target: &Target, ticks: f64, f: impl FnOnce() -> Result<BTreeMap<String, f64>>) -> Result<Rep> {
    let pid = target.pid();
    let hwm_reset = targets::reset_peak_rss(pid);
    let sampler = targets::RssSampler::start(pid, target.kind == Kind::Storescp);
    let cpu0 = targets::cpu_seconds(pid, ticks);
    let result = f();
    if target.kind == Kind::Storescp {
        // Give storescp a moment to reap the per-association children, whose CPU time is
        // counted only once they have been waited for.
        std::thread::sleep(Duration::from_millis(300));
    }
    let cpu1 = targets::cpu_seconds(pid, ticks);
    let sampled = sampler.finish();
    let metrics = result?;
    let hwm = if hwm_reset {
        targets::peak_rss_kb(pid)
    } else {
        None
    };
    let peak_kb = hwm.unwrap_or(0).max(sampled);
    Ok(Rep {
        metrics,
        peak_rss_mib: (peak_kb > 0).then(|| peak_kb as f64 / 1024.0),
        cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        disk_per_byte: None,
    })
}

/// Instances the target holds now.
pub fn stored_instances(target: &Target) -> Result<u64> {
    match target.kind {
        Kind::Storescp => Ok(targets::disk_usage(&target.data_dir).1),
        Kind::Openpacs => {
            let base = BaseUrl::parse(target.http_root.as_deref().unwrap_or_default())?;
            let r = Client::new(&base).get("/api/stats", "application/json", true)?;
            ensure!(r.status == 200, "/api/stats answered {}", r.status);
            r.json()?["instances"]
                .as_u64()
                .context("no instance count in /api/stats")
        }
        Kind::Orthanc => {
            let base = BaseUrl::parse(target.http_root.as_deref().unwrap_or_default())?;
            let r = Client::new(&base).get("/statistics", "application/json", true)?;
            ensure!(r.status == 200, "/statistics answered {}", r.status);
            r.json()?["CountInstances"]
                .as_u64()
                .context("no CountInstances in /statistics")
        }
    }
}

fn throughput(n: usize, bytes: u64, elapsed: Duration) -> BTreeMap<String, f64> {
    let s = elapsed.as_secs_f64();
    BTreeMap::from([
        ("seconds".to_string(), s),
        ("instances_per_s".to_string(), n as f64 / s),
        ("mb_per_s".to_string(), bytes as f64 / 1e6 / s),
    ])
}

#[derive(Clone, Copy)]
enum Ingest {
    Cstore { associations: usize, nodelay: bool },
    Stow { batch: usize, connections: usize },
}

/// Multipart/related bodies of `batch` instances each, built before the clock starts.
fn stow_bodies(files: &[PathBuf], batch: usize) -> Result<Vec<Vec<u8>>> {
    files
        .chunks(batch)
        .map(|chunk| {
            let mut body = Vec::new();
            for f in chunk {
                body.extend_from_slice(
                    format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(&std::fs::read(f)?);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
            Ok(body)
        })
        .collect()
}

const BOUNDARY: &str = "openpacs-bench-5f3a9c";

fn stow(dicomweb: &str, bodies: &[Vec<u8>], connections: usize) -> Result<()> {
    let base = BaseUrl::parse(dicomweb)?;
    let next = AtomicUsize::new(0);
    let content_type = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut client = Client::new(&base);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else {
                            return Ok(());
                        };
                        let r = client.request(
                            "POST",
                            &base.path("/studies"),
                            &[
                                ("Content-Type", &content_type),
                                ("Accept", "application/dicom+json"),
                            ],
                            body,
                            true,
                        )?;
                        if r.status != 200 {
                            bail!(
                                "STOW-RS answered {}: {}",
                                r.status,
                                r.text().chars().take(400).collect::<String>()
                            );
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("STOW-RS worker panicked"))??;
        }
        Ok(())
    })
}

/// One ingest repetition on a fresh target.
fn ingest_rep(ctx: &Context, kind: Kind, files: &[PathBuf], bytes: u64, how: Ingest) -> Result<Rep> {
    crate::sys::settle_filesystem(ctx.drop_caches, files)?;
    let target = Target::start(kind, ctx.programs, ctx.work, &[])?;
    let bodies = match how {
        Ingest::Stow { batch, .. } => stow_bodies(files, batch)?,
        Ingest::Cstore { .. } => Vec::new(),
    };
    let result = measured(&target, ctx.ticks, || {
        let start = Instant::now();
        match how {
            Ingest::Cstore {
                associations,
                nodelay,
            } => ctx.dcmtk.store(
                &target.host,
                target.dicom_port,
                &target.ae_title,
                files,
                associations,
                nodelay,
            )?,
            Ingest::Stow { connections, .. } => stow(
                target.dicomweb.as_deref().context("no DICOMweb")?,
                &bodies,
                connections,
            )?,
        }
        let elapsed = start.elapsed();
        let stored = stored_instances(&target)?;
        ensure!(
            stored == files.len() as u64,
            "{stored} of {} instances stored",
            files.len()
        );
        Ok(throughput(files.len(), bytes, elapsed))
    });
    let result = result.map(|mut rep| {
        rep.disk_per_byte = Some(targets::disk_usage(&target.data_dir).0 as f64 / bytes as f64);
        rep
    });
    let result = result.map_err(|e| e.context(format!("server log: {}", target.log_tail())));
    target.stop();
    result
}

fn repeat(ctx: &Context, scenario: &str, kind: Kind, mut one: impl FnMut() -> Result<Rep>) -> Run {
    let mut run = Run {
        scenario: scenario.to_string(),
        target: kind,
        reps: Vec::new(),
        error: None,
        notes: Vec::new(),
    };
    for i in 0..ctx.reps {
        (ctx.log)(&format!(
            "  {scenario} on {} (repetition {}/{})",
            kind.name(),
            i + 1,
            ctx.reps
        ));
        match one() {
            Ok(rep) => run.reps.push(rep),
            Err(e) => {
                let msg = format!("{e:#}");
                (ctx.log)(&format!(
                    "    FAILED: {}",
                    msg.chars().take(300).collect::<String>()
                ));
                run.error = Some(msg);
                break;
            }
        }
    }
    run
}

/// The ingest scenarios, each repetition on a fresh target.
pub fn ingest(ctx: &Context, kind: Kind) -> Vec<Run> {
    let d = ctx.data;
    let mut runs = Vec::new();
    for &n in ctx.associations {
        let id = format!("cstore_ct_{n}");
        let how = Ingest::Cstore {
            associations: n,
            nodelay: true,
        };
        runs.push(repeat(ctx, &id, kind, || {
            ingest_rep(ctx, kind, &d.ct_files, d.ct_bytes, how)
        }));
    }
    if ctx.nagle {
        let how = Ingest::Cstore {
            associations: 1,
            nodelay: false,
        };
        runs.push(repeat(ctx, "cstore_ct_1_nagle", kind, || {
            ingest_rep(ctx, kind, &d.ct_files, d.ct_bytes, how)
        }));
        // The baseline for this client is Orthanc as Debian runs it, whose own side
        // then has Nagle on as well; the tuned Orthanc above is measured too.
        if kind == Kind::Orthanc && !ctx.programs.orthanc_nagle {
            let shipped = Programs {
                orthanc_nagle: true,
                ..ctx.programs.clone()
            };
            let ctx = Context {
                programs: &shipped,
                ..*ctx
            };
            runs.push(repeat(&ctx, "cstore_ct_1_nagle_shipped", kind, || {
                ingest_rep(&ctx, kind, &d.ct_files, d.ct_bytes, how)
            }));
        }
    }
    if !d.small_files.is_empty() {
        for n in [1, 4] {
            let id = format!("cstore_small_{n}");
            let how = Ingest::Cstore {
                associations: n,
                nodelay: true,
            };
            runs.push(repeat(ctx, &id, kind, || {
                ingest_rep(ctx, kind, &d.small_files, d.small_bytes, how)
            }));
        }
    }
    if kind.has_web() {
        let how = Ingest::Stow {
            batch: 50,
            connections: 4,
        };
        runs.push(repeat(ctx, "stow_ct", kind, || {
            ingest_rep(ctx, kind, &d.ct_files, d.ct_bytes, how)
        }));
    }
    runs
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Times one request per path (after one request not timed): mean, p50 and p95 per request.
fn per_request(
    paths: &[String],
    mut one: impl FnMut(&str) -> Result<Duration>,
) -> Result<BTreeMap<String, f64>> {
    let first = paths.first().context("no request to time")?;
    one(first)?; // warm-up, not timed
    let mut ms = Vec::with_capacity(paths.len());
    for path in paths {
        ms.push(one(path)?.as_secs_f64() * 1000.0);
    }
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    ms.sort_by(f64::total_cmp);
    Ok(BTreeMap::from([
        ("ms_per_frame".to_string(), mean),
        ("p50_ms".to_string(), percentile(&ms, 50.0)),
        ("p95_ms".to_string(), percentile(&ms, 95.0)),
        ("frames".to_string(), ms.len() as f64),
    ]))
}

pub fn latencies(iterations: usize, mut one: impl FnMut() -> Result<usize>) -> Result<BTreeMap<String, f64>> {
    let matches = one()? as f64; // warm-up, not timed
    let mut ms = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        one()?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(BTreeMap::from([
        ("p50_ms".to_string(), percentile(&ms, 50.0)),
        ("p95_ms".to_string(), percentile(&ms, 95.0)),
        ("p99_ms".to_string(), percentile(&ms, 99.0)),
        ("matches".to_string(), matches),
    ]))
}

/// Retrieval and query scenarios on one target loaded with all the data.
pub fn loaded(ctx: &Context, kind: Kind) -> Vec<Run> {
    let d = ctx.data;
    let fail_all = |msg: String| -> Vec<Run> {
        SCENARIOS
            .iter()
            .filter(|s| !s.id.starts_with("cstore") && s.id != "stow_ct")
            .map(|s| Run {
                scenario: s.id.to_string(),
                target: kind,
                reps: Vec::new(),
                error: Some(msg.clone()),
                notes: Vec::new(),
            })
            .collect()
    };
    let dest = match Target::start_sink(ctx.programs, ctx.work) {
        Ok(t) => t,
        Err(e) => return fail_all(format!("C-MOVE destination: {e:#}")),
    };
    let peer = Peer {
        ae_title: dest.ae_title.clone(),
        port: dest.dicom_port,
    };
    let target = match Target::start(kind, ctx.programs, ctx.work, std::slice::from_ref(&peer)) {
        Ok(t) => t,
        Err(e) => {
            dest.stop();
            return fail_all(format!("{e:#}"));
        }
    };
    (ctx.log)(&format!(
        "  loading {} ({} + {} instances)",
        kind.name(),
        d.ct_files.len(),
        d.small_files.len()
    ));
    let loaded = ctx
        .dcmtk
        .store(
            &target.host,
            target.dicom_port,
            &target.ae_title,
            &d.ct_files,
            4,
            true,
        )
        .and_then(|()| {
            if d.small_files.is_empty() {
                Ok(())
            } else {
                ctx.dcmtk.store(
                    &target.host,
                    target.dicom_port,
                    &target.ae_title,
                    &d.small_files,
                    4,
                    true,
                )
            }
        })
        .and_then(|()| {
            let n = stored_instances(&target)?;
            let want = (d.ct_files.len() + d.small_files.len()) as u64;
            ensure!(n == want, "{n} of {want} instances stored");
            Ok(n)
        });
    let indexed = match loaded {
        Ok(n) => n,
        Err(e) => {
            let msg = format!("loading failed: {e:#}; server log: {}", target.log_tail());
            target.stop();
            dest.stop();
            return fail_all(msg);
        }
    };
    let mut runs = Vec::new();
    let web = BaseUrl::parse(target.dicomweb.as_deref().unwrap_or_default());
    let root = BaseUrl::parse(target.http_root.as_deref().unwrap_or_default());
    let (Ok(web), Ok(root)) = (web, root) else {
        target.stop();
        dest.stop();
        return fail_all("no HTTP address".into());
    };
    let note_index = format!("index holds {indexed} instances");

    // WADO-RS series retrieval, in the stored transfer syntax.
    let series_path = web.path(&format!("/studies/{}/series/{}", d.ct_study, d.ct_series));
    let mut accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*".to_string();
    let mut notes = Vec::new();
    let mut client = Client::new(&web);
    let mut wado = repeat(ctx, "wado_series", kind, || {
        measured(&target, ctx.ticks, || {
            let mut r = client.get(&series_path, &accept, false)?;
            if r.status == 406 || r.status == 400 {
                notes.push(format!(
                    "transfer-syntax=* answered {}; retried without it",
                    r.status
                ));
                accept = "multipart/related; type=\"application/dicom\"".into();
                r = client.get(&series_path, &accept, false)?;
            }
            ensure!(r.status == 200, "WADO-RS answered {}", r.status);
            ensure!(
                r.body_len >= d.ct_bytes * 9 / 10,
                "WADO-RS returned {} bytes for {} bytes stored",
                r.body_len,
                d.ct_bytes
            );
            let s = r.total.as_secs_f64();
            Ok(BTreeMap::from([
                ("mb_per_s".to_string(), r.body_len as f64 / 1e6 / s),
                ("ttfb_ms".to_string(), r.first_byte.as_secs_f64() * 1000.0),
                ("seconds".to_string(), s),
            ]))
        })
    });
    wado.notes.extend(notes);
    let mut ttfb = wado.clone();
    ttfb.scenario = "wado_series_ttfb".into();
    runs.push(wado);
    runs.push(ttfb);

    let meta_path = format!("{series_path}/metadata");
    runs.push(repeat(ctx, "metadata_series", kind, || {
        measured(&target, ctx.ticks, || {
            let r = client.get(&meta_path, "application/dicom+json", true)?;
            ensure!(r.status == 200, "metadata answered {}", r.status);
            let n = r.json()?.as_array().map(|a| a.len()).unwrap_or(0);
            ensure!(
                n == d.ct_files.len(),
                "metadata listed {n} of {} instances",
                d.ct_files.len()
            );
            Ok(BTreeMap::from([(
                "ms".to_string(),
                r.total.as_secs_f64() * 1000.0,
            )]))
        })
    }));

    // Single frames, as a viewer asks for them while scrolling: one request per frame, taken
    // across the series, on one kept-alive connection (after one request not timed).
    let frames: Vec<String> = {
        let n = d.ct_instances.len().max(1);
        let step = (n / ctx.query_iterations.max(1)).max(1);
        (0..ctx.query_iterations)
            .filter_map(|i| d.ct_instances.get((i * step) % n))
            .map(|sop| format!("{series_path}/instances/{sop}/frames/1"))
            .collect()
    };
    // A raw frame is nearly the whole file (the header is a few hundred bytes).
    let frame_bytes = d.ct_bytes / d.ct_files.len().max(1) as u64 * 9 / 10;
    let mut frame_accept =
        "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*".to_string();
    let mut notes = Vec::new();
    let mut run = repeat(ctx, "wado_frame", kind, || {
        measured(&target, ctx.ticks, || {
            per_request(&frames, |path| {
                let mut r = client.get(path, &frame_accept, false)?;
                if r.status == 406 || r.status == 400 {
                    notes.push(format!(
                        "transfer-syntax=* answered {}; retried without it",
                        r.status
                    ));
                    frame_accept = "multipart/related; type=\"application/octet-stream\"".into();
                    r = client.get(path, &frame_accept, false)?;
                }
                ensure!(r.status == 200, "frame answered {}", r.status);
                ensure!(
                    r.body_len >= frame_bytes,
                    "frame of {} bytes, {frame_bytes} expected",
                    r.body_len
                );
                Ok(r.total)
            })
        })
    });
    notes.dedup();
    run.notes.extend(notes);
    runs.push(run);
    let rendered: Vec<String> = frames.iter().map(|f| format!("{f}/rendered")).collect();
    runs.push(repeat(ctx, "wado_rendered", kind, || {
        measured(&target, ctx.ticks, || {
            per_request(&rendered, |path| {
                let r = client.get(path, "image/jpeg", true)?;
                ensure!(r.status == 200, "rendered frame answered {}", r.status);
                ensure!(
                    r.body.starts_with(&[0xFF, 0xD8]),
                    "rendered frame is not a JPEG ({} bytes)",
                    r.body.len()
                );
                Ok(r.total)
            })
        })
    }));

    // QIDO-RS and C-FIND: the same four questions.
    let qido: [(&str, String); 4] = [
        (
            "qido_patient_id",
            format!("/studies?PatientID={}", encode_query_value(&d.patient_id)),
        ),
        (
            "qido_patient_name",
            format!(
                "/studies?PatientName={}",
                encode_query_value(&d.patient_name_pattern)
            ),
        ),
        (
            "qido_date_modality",
            format!(
                "/studies?StudyDate={}&ModalitiesInStudy={}",
                d.date_range, d.modality
            ),
        ),
        ("qido_study_list", "/studies?limit=100".to_string()),
    ];
    for (id, query) in &qido {
        let path = web.path(query);
        let mut run = repeat(ctx, id, kind, || {
            measured(&target, ctx.ticks, || {
                latencies(ctx.query_iterations, || {
                    let r = client.get(&path, "application/dicom+json", true)?;
                    ensure!(
                        r.status == 200 || r.status == 204,
                        "QIDO-RS answered {}",
                        r.status
                    );
                    Ok(if r.status == 204 {
                        0
                    } else {
                        r.json()?.as_array().map(|a| a.len()).unwrap_or(0)
                    })
                })
            })
        });
        run.notes.push(note_index.clone());
        runs.push(run);
    }
    let cfind: [(&str, FindKeys); 4] = [
        (
            "cfind_patient_id",
            vec![(tags::PATIENT_ID, VR::LO, d.patient_id.as_str())],
        ),
        (
            "cfind_patient_name",
            vec![(tags::PATIENT_NAME, VR::PN, d.patient_name_pattern.as_str())],
        ),
        (
            "cfind_date_modality",
            vec![
                (tags::STUDY_DATE, VR::DA, d.date_range.as_str()),
                (tags::MODALITIES_IN_STUDY, VR::CS, d.modality.as_str()),
            ],
        ),
        ("cfind_study_list", vec![]),
    ];
    for (id, overrides) in &cfind {
        let mut keys = study_return_keys();
        for o in overrides {
            match keys.iter_mut().find(|k| k.0 == o.0) {
                Some(k) => *k = *o,
                None => keys.push(*o),
            }
        }
        let mut run = repeat(ctx, id, kind, || {
            let mut scu = FindScu::connect(&target.host, target.dicom_port, &target.ae_title)?;
            let rep = measured(&target, ctx.ticks, || {
                latencies(ctx.query_iterations, || scu.find(&keys))
            });
            scu.release();
            rep
        });
        run.notes.push(note_index.clone());
        run.notes
            .push("one association per repetition, queries sent one after another on it".into());
        runs.push(run);
    }

    // C-GET and C-MOVE of the CT series.
    let t = (target.host.as_str(), target.dicom_port, target.ae_title.as_str());
    runs.push(repeat(ctx, "cget_series", kind, || {
        measured(&target, ctx.ticks, || {
            let start = Instant::now();
            let got = ctx.dcmtk.get_series(t, &d.ct_study, &d.ct_series, None)?;
            let elapsed = start.elapsed();
            ensure!(
                got == d.ct_files.len(),
                "C-GET delivered {got} of {} instances",
                d.ct_files.len()
            );
            Ok(throughput(got, d.ct_bytes, elapsed))
        })
    }));
    runs.push(repeat(ctx, "cmove_series", kind, || {
        measured(&target, ctx.ticks, || {
            let start = Instant::now();
            let got = ctx
                .dcmtk
                .move_series(t, &d.ct_study, &d.ct_series, &peer.ae_title)?;
            let elapsed = start.elapsed();
            ensure!(
                got == d.ct_files.len(),
                "C-MOVE delivered {got} of {} instances",
                d.ct_files.len()
            );
            Ok(throughput(got, d.ct_bytes, elapsed))
        })
    }));

    // The study as a ZIP file through each server's own REST API.
    let mut zip_notes = Vec::new();
    let zip_path = match kind {
        Kind::Orthanc => Client::new(&root)
            .request("POST", "/tools/lookup", &[], d.ct_study.as_bytes(), true)
            .and_then(|r| {
                let v = r.json()?;
                let id = v
                    .as_array()
                    .and_then(|a| a.iter().find(|e| e["Type"] == "Study"))
                    .and_then(|e| e["ID"].as_str())
                    .context("study not found by /tools/lookup")?
                    .to_string();
                zip_notes.push("GET /studies/{orthanc id}/archive".to_string());
                Ok(format!("/studies/{id}/archive"))
            }),
        _ => {
            zip_notes.push("GET /api/studies/{study uid}/archive".to_string());
            Ok(format!("/api/studies/{}/archive", d.ct_study))
        }
    };
    let mut zip = match zip_path {
        Ok(path) => {
            let mut client = Client::new(&root);
            repeat(ctx, "zip_study", kind, || {
                measured(&target, ctx.ticks, || {
                    let r = client.get(&path, "application/zip", false)?;
                    ensure!(r.status == 200, "archive answered {}", r.status);
                    ensure!(r.body_len > 0, "empty archive");
                    let s = r.total.as_secs_f64();
                    Ok(BTreeMap::from([
                        ("mb_per_s".to_string(), d.ct_bytes as f64 / 1e6 / s),
                        ("zip_mb".to_string(), r.body_len as f64 / 1e6),
                        ("ttfb_ms".to_string(), r.first_byte.as_secs_f64() * 1000.0),
                        ("seconds".to_string(), s),
                    ]))
                })
            })
        }
        Err(e) => Run {
            scenario: "zip_study".into(),
            target: kind,
            reps: Vec::new(),
            error: Some(format!("{e:#}")),
            notes: Vec::new(),
        },
    };
    zip.notes.extend(zip_notes);
    runs.push(zip);

    target.stop();
    dest.stop();
    runs
}
