//! The servers under test, each started by the harness on 127.0.0.1 with a fresh directory
//! and free ports, and what the kernel says about their memory and CPU.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::http::{BaseUrl, Client};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Openpacs,
    Storescp,
    Orthanc,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Openpacs => "openpacs",
            Kind::Storescp => "storescp",
            Kind::Orthanc => "orthanc",
        }
    }

    pub fn has_web(self) -> bool {
        self != Kind::Storescp
    }
}

/// How to start each kind of target.
#[derive(Clone, Debug)]
pub struct Programs {
    pub openpacs: PathBuf,
    pub storescp: PathBuf,
    pub orthanc: PathBuf,
    pub dicomweb_plugin: Option<PathBuf>,
    /// Start Orthanc without TCP_NODELAY in its environment (as the Debian service does).
    pub orthanc_nagle: bool,
    /// Appended to openpacs's configuration (`[blobs]` in a bucket), `{target}` replaced by
    /// the name of the target's directory: each server its own prefix, as each has its own
    /// data directory (recovery would index another's objects as its own orphans).
    pub openpacs_extra_toml: String,
    /// `--index postgres`: the PostgreSQL server (its administrative database) on which each
    /// openpacs server gets a database of its own, named after its directory.
    pub openpacs_postgres: Option<String>,
}

/// Databases of openpacs servers are named with this prefix, and dropped at the next run.
const BENCH_DATABASE_PREFIX: &str = "pacs_bench_";

/// Drops the databases an earlier run left.
pub fn drop_bench_databases(server: &str) {
    let list = Command::new("psql")
        .args([server, "-Atc"])
        .arg(format!(
            "SELECT datname FROM pg_database WHERE datname LIKE '{BENCH_DATABASE_PREFIX}%'"
        ))
        .output();
    let Ok(list) = list else { return };
    for name in String::from_utf8_lossy(&list.stdout).lines() {
        let _ = Command::new("psql")
            .args([server, "-qc", &format!("DROP DATABASE IF EXISTS \"{name}\"")])
            .status();
    }
}

/// The database of the openpacs server in `dir` (created the first time), as its URL.
fn bench_database(server: &str, dir: &Path) -> Result<String> {
    let name: String = format!(
        "{BENCH_DATABASE_PREFIX}{}",
        dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    })
    .collect();
    let exists = Command::new("psql")
        .args([server, "-Atc"])
        .arg(format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"))
        .output()
        .context("psql (the PostgreSQL client) is needed for --index postgres")?;
    if String::from_utf8_lossy(&exists.stdout).trim() != "1" {
        let created = Command::new("psql")
            .args([server, "-qc", &format!("CREATE DATABASE {name}")])
            .status()?;
        if !created.success() {
            bail!("cannot create the database {name} on {server}");
        }
    }
    let base = server.rsplit_once('/').map_or(server, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// A C-MOVE destination the target must know.
#[derive(Clone, Debug)]
pub struct Peer {
    pub ae_title: String,
    pub port: u16,
}

/// A running server.
pub struct Target {
    pub kind: Kind,
    pub host: String,
    pub dicom_port: u16,
    pub ae_title: String,
    /// DICOMweb root, e.g. `http://127.0.0.1:8080/dicom-web`.
    pub dicomweb: Option<String>,
    /// The server's own HTTP root (REST API), e.g. `http://127.0.0.1:8080`.
    pub http_root: Option<String>,
    /// Everything the server writes (index and blobs); its size is the disk cost.
    pub data_dir: PathBuf,
    pub dir: PathBuf,
    child: Child,
}

/// Ports below Linux's ephemeral range, so that no outgoing connection takes one between the
/// check and the server's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(7919, Ordering::Relaxed).wrapping_add(seed);
        let port = 20_000 + (n % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

fn log_file(dir: &Path) -> Result<(Stdio, Stdio)> {
    let log = std::fs::File::create(dir.join("server.log"))?;
    Ok((Stdio::from(log.try_clone()?), Stdio::from(log)))
}

impl Target {
    /// Starts `kind` in a new directory under `parent`.
    pub fn start(kind: Kind, programs: &Programs, parent: &Path, peers: &[Peer]) -> Result<Target> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", kind.name()))
            .tempdir_in(parent)?
            .keep();
        Self::start_in(kind, programs, dir, peers)
    }

    /// Starts `kind` in `dir`, keeping what an earlier run left there (see [`Target::suspend`]).
    pub fn start_in(kind: Kind, programs: &Programs, dir: PathBuf, peers: &[Peer]) -> Result<Target> {
        let dicom_port = free_port();
        let (out, err) = log_file(&dir)?;
        let mut target = match kind {
            Kind::Openpacs => {
                let http_port = free_port();
                let data_dir = dir.join("data");
                // Its own HL7 port too, so that several servers can run side by side.
                let hl7_port = free_port();
                let mut toml = format!(
                    "data_dir = {:?}\ndicom_port = {dicom_port}\nhttp_port = {http_port}\nhl7_port = {hl7_port}\nidle_timeout_secs = 600\n",
                    data_dir.display().to_string()
                );
                if let Some(server) = &programs.openpacs_postgres {
                    toml.push_str(&format!("index_url = {:?}\n", bench_database(server, &dir)?));
                }
                for p in peers {
                    toml.push_str(&format!(
                        "[[peers]]\nae_title = {:?}\nhost = \"127.0.0.1\"\nport = {}\n",
                        p.ae_title, p.port
                    ));
                }
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                toml.push_str(
                    &programs
                        .openpacs_extra_toml
                        .replace("{target}", &name.unwrap_or_default()),
                );
                std::fs::write(dir.join("openpacs.toml"), toml)?;
                let child = Command::new(&programs.openpacs)
                    .arg("serve")
                    .current_dir(&dir)
                    .env_remove("TCP_NODELAY")
                    .env("OPENPACS_LOG", "warn")
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .with_context(|| format!("starting {}", programs.openpacs.display()))?;
                Target {
                    kind,
                    host: "127.0.0.1".into(),
                    dicom_port,
                    ae_title: "OPENPACS".into(),
                    dicomweb: Some(format!("http://127.0.0.1:{http_port}/dicom-web")),
                    http_root: Some(format!("http://127.0.0.1:{http_port}")),
                    data_dir,
                    dir,
                    child,
                }
            }
            Kind::Storescp => {
                let data_dir = dir.join("received");
                std::fs::create_dir_all(&data_dir)?;
                // The near-physical limit: one process per association, Nagle off on its side.
                let child = Command::new(&programs.storescp)
                    .args(["--fork", "-aet", "STORESCP", "-od"])
                    .arg(&data_dir)
                    .arg(dicom_port.to_string())
                    .env("TCP_NODELAY", "1")
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .with_context(|| format!("starting {}", programs.storescp.display()))?;
                Target {
                    kind,
                    host: "127.0.0.1".into(),
                    dicom_port,
                    ae_title: "STORESCP".into(),
                    dicomweb: None,
                    http_root: None,
                    data_dir,
                    dir,
                    child,
                }
            }
            Kind::Orthanc => {
                let http_port = free_port();
                let data_dir = dir.join("db");
                let mut modalities = serde_json::Map::new();
                modalities.insert("BENCH".into(), serde_json::json!(["BENCH", "127.0.0.1", 104]));
                for p in peers {
                    modalities.insert(
                        p.ae_title.clone(),
                        serde_json::json!([p.ae_title, "127.0.0.1", p.port]),
                    );
                }
                let plugins: Vec<String> = programs
                    .dicomweb_plugin
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let config = serde_json::json!({
                    "Name": "bench",
                    "StorageDirectory": data_dir.join("storage"),
                    "IndexDirectory": data_dir.join("index"),
                    "HttpPort": http_port,
                    "DicomPort": dicom_port,
                    "DicomAet": "ORTHANC",
                    "RemoteAccessAllowed": false,
                    "AuthenticationEnabled": false,
                    "Plugins": plugins,
                    "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
                    "DicomModalities": modalities,
                });
                std::fs::write(dir.join("orthanc.json"), serde_json::to_vec_pretty(&config)?)?;
                // Orthanc's DICOM side is DCMTK, built by Debian with Nagle's algorithm on: with
                // it, every response waits for a delayed ACK (~40 ms). TCP_NODELAY=1 in its
                // environment turns that off, the best case for it (and the figures).
                let mut command = Command::new(&programs.orthanc);
                if programs.orthanc_nagle {
                    command.env_remove("TCP_NODELAY");
                } else {
                    command.env("TCP_NODELAY", "1");
                }
                let child = command
                    .arg(dir.join("orthanc.json"))
                    .current_dir(&dir)
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .with_context(|| format!("starting {}", programs.orthanc.display()))?;
                Target {
                    kind,
                    host: "127.0.0.1".into(),
                    dicom_port,
                    ae_title: "ORTHANC".into(),
                    dicomweb: Some(format!("http://127.0.0.1:{http_port}/dicom-web")),
                    http_root: Some(format!("http://127.0.0.1:{http_port}")),
                    data_dir,
                    dir,
                    child,
                }
            }
        };
        target.wait_ready()?;
        Ok(target)
    }

    /// A C-MOVE destination that receives and discards (`storescp --ignore`, logging nothing:
    /// its `-v` log cost it a fifth of its rate): the retrieval is then measured without a
    /// receiver writing files. What arrived is counted from the C-MOVE's final response.
    pub fn start_sink(programs: &Programs, parent: &Path) -> Result<Target> {
        let dir = tempfile::Builder::new()
            .prefix("sink-")
            .tempdir_in(parent)?
            .keep();
        let dicom_port = free_port();
        let (out, err) = log_file(&dir)?;
        let child = Command::new(&programs.storescp)
            .args(["--fork", "--ignore", "-aet", "SINK"])
            .arg(dicom_port.to_string())
            .env("TCP_NODELAY", "1")
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", programs.storescp.display()))?;
        let mut target = Target {
            kind: Kind::Storescp,
            host: "127.0.0.1".into(),
            dicom_port,
            ae_title: "SINK".into(),
            dicomweb: None,
            http_root: None,
            data_dir: dir.join("received"),
            dir,
            child,
        };
        target.wait_ready()?;
        Ok(target)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}): {}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            let dicom = TcpStream::connect((self.host.as_str(), self.dicom_port)).is_ok();
            let http = match &self.http_root {
                None => true,
                Some(root) => {
                    let health = if self.kind == Kind::Orthanc {
                        "/system"
                    } else {
                        "/healthz"
                    };
                    BaseUrl::parse(root)
                        .ok()
                        .and_then(|b| Client::new(&b).get(health, "*/*", false).ok())
                        .is_some_and(|r| r.status == 200)
                }
            };
            if dicom && http {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within 60 s: {}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(2000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_string()
    }

    /// SIGTERM, then SIGKILL after 30 s; the directory is removed.
    pub fn stop(self) {
        let dir = self.suspend();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Stops the server like [`Target::stop`] but keeps its directory, which is returned.
    pub fn suspend(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.dir.clone()
    }
}

/// Clock ticks per second for /proc/<pid>/stat times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of `pid`, including its children that have been waited for
/// (storescp forks one per association).
pub fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. indexes 11..=14 here.
    let sum: f64 = f.get(11..15)?.iter().filter_map(|v| v.parse::<f64>().ok()).sum();
    Some(sum / ticks)
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets the peak RSS (VmHWM) of `pid` (Linux ≥ 4.0, needs the right to write clear_refs).
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// Children (recursively) of `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((child, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Samples the resident set of a process (and, if asked, of its children) every 50 ms.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32, with_children: bool) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0u64;
            loop {
                let mut total = status_kb(pid, "VmRSS:").unwrap_or(0);
                if with_children {
                    total += descendants(pid)
                        .into_iter()
                        .filter_map(|c| status_kb(c, "VmRSS:"))
                        .sum::<u64>();
                }
                peak = peak.max(total);
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { stop, handle }
    }

    /// Peak sampled RSS in KiB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}

/// Bytes allocated on disk under `dir` (st_blocks × 512), and the number of regular files.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.blocks() * 512;
                if m.is_file() {
                    files += 1;
                }
            }
        }
    }
    (bytes, files)
}
