//! Spawning the real `openpacs` binary and driving it with peer programs, for tests.
//!
//! The peers are programs nobody here wrote: DCMTK (always called by absolute path, because
//! pynetdicom installs scripts with the same names) and pynetdicom through
//! `tests/interop/peer.py`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Root of the repository (where `tests/fixtures` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A port nobody listens on right now, chosen below Linux's ephemeral range (32768–60999):
/// a port handed out by `bind(0)` can be taken again as the source port of any outgoing
/// connection before the test listens on it, which made parallel tests flaky.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
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

/// Options for a test server.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Extra lines appended to the generated `openpacs.toml`.
    pub extra_toml: String,
    /// Use this data directory instead of a fresh one (e.g. a tmpfs mount).
    pub data_dir: Option<PathBuf>,
    /// Accounts created with `openpacs user add` before the server starts:
    /// (user name, role, password). With any, HTTP requires authentication.
    pub users: Vec<(String, String, String)>,
}

impl ServerOptions {
    /// Options with one C-MOVE destination in the AE table.
    pub fn with_peer(ae_title: &str, port: u16) -> ServerOptions {
        ServerOptions {
            extra_toml: format!("[[peers]]\nae_title = {ae_title:?}\nhost = \"127.0.0.1\"\nport = {port}\n"),
            ..ServerOptions::default()
        }
    }
}

/// A running `openpacs serve` with its own data directory and ports.
pub struct TestServer {
    binary: PathBuf,
    child: Option<Child>,
    /// Holds the temporary directory alive for the server's lifetime.
    _dir: tempfile::TempDir,
    pub work_dir: PathBuf,
    pub data_dir: PathBuf,
    pub dicom_port: u16,
    pub http_port: u16,
    pub hl7_port: u16,
    pub ae_title: String,
    log: PathBuf,
    /// The bucket of a server on the scaled engines (see [`ENGINES_VARIABLE`]).
    _garage: Option<crate::garage::Garage>,
}

/// `PACS_TEST_ENGINES=postgres-garage` runs every test server that does not choose its own
/// engines on a fresh PostgreSQL database and its own Garage bucket instead of the embedded
/// defaults: the test command runs the interop suites (DCMTK, DICOMweb, OHIF) once so. The
/// `[blobs]` table ends the configuration file, so a test that appends settings to the file
/// itself (duplicates.rs) cannot run so.
pub const ENGINES_VARIABLE: &str = "PACS_TEST_ENGINES";

impl TestServer {
    pub fn start(binary: &Path, options: ServerOptions) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let work_dir = dir.path().to_path_buf();
        let data_dir = options.data_dir.clone().unwrap_or_else(|| work_dir.join("data"));
        let chooses_engines =
            options.extra_toml.contains("index_url") || options.extra_toml.contains("[blobs]");
        let mut extra_toml = options.extra_toml.clone();
        let mut garage = None;
        if std::env::var(ENGINES_VARIABLE).as_deref() == Ok("postgres-garage") && !chooses_engines {
            let bucket = crate::garage::Garage::start();
            let url = crate::postgres::fresh_database("engines");
            // Settings first, tables ([blobs]) last, so that the test's own keys stay top-level.
            extra_toml = format!(
                "index_url = {url:?}\n{extra_toml}\n{}",
                bucket.openpacs_toml(&work_dir, "archive")
            );
            garage = Some(bucket);
        }
        let mut server = TestServer {
            binary: binary.to_path_buf(),
            child: None,
            _dir: dir,
            work_dir: work_dir.clone(),
            data_dir,
            dicom_port: 0,
            http_port: 0,
            hl7_port: 0,
            ae_title: "OPENPACS".into(),
            log: work_dir.join("server.log"),
            _garage: garage,
        };
        server.choose_ports(&extra_toml);
        for (name, role, password) in &options.users {
            let added = server.cli_stdin(&["user", "add", name, "--role", role], password);
            assert!(
                added.status.success(),
                "user add {name}: {}",
                String::from_utf8_lossy(&added.stderr)
            );
        }
        // Another process on this machine may take a port between our check and the server's
        // bind (tests of other checkouts run side by side): new ports, a few times.
        for _ in 0..4 {
            match server.spawn_once() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => {
                    let _ = std::fs::remove_file(&server.log);
                    server.choose_ports(&extra_toml);
                }
                Err(log) => panic!("openpacs exited during start-up:\n{log}"),
            }
        }
        server.spawn();
        server
    }

    /// Free ports, written with the data directory and `extra_toml` to `openpacs.toml`.
    fn choose_ports(&mut self, extra_toml: &str) {
        self.dicom_port = free_port();
        self.http_port = free_port();
        self.hl7_port = free_port();
        let config = format!(
            "data_dir = {:?}\ndicom_port = {}\nhttp_port = {}\nhl7_port = {}\nidle_timeout_secs = 30\nshutdown_grace_secs = 20\n{extra_toml}\n",
            self.data_dir.display().to_string(),
            self.dicom_port,
            self.http_port,
            self.hl7_port,
        );
        std::fs::write(self.work_dir.join("openpacs.toml"), config).expect("write config");
    }

    fn spawn(&mut self) {
        if let Err(log) = self.spawn_once() {
            panic!("openpacs exited during start-up:\n{log}");
        }
    }

    /// Starts the server and waits until it listens; its log when it exits first.
    fn spawn_once(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.binary)
            .arg("serve")
            .current_dir(&self.work_dir)
            .env("OPENPACS_LOG", "info,pacs_dimse=debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn openpacs");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("({status})\n{}", self.log()));
            }
            if TcpStream::connect(("127.0.0.1", self.dicom_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.http_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.hl7_port)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("openpacs did not start within 60 s:\n{}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// The server's resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// The server's peak resident memory since it started (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait for the exit status (at most 60 s).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("openpacs did not stop within 60 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.spawn();
    }

    /// Runs an `openpacs` subcommand with this server's configuration.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .current_dir(&self.work_dir)
            .output()
            .expect("run openpacs")
    }

    /// Runs an `openpacs` subcommand with `input` (plus a newline) on its standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.binary)
            .args(args)
            .current_dir(&self.work_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openpacs");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{input}");
        }
        child.wait_with_output().expect("wait for openpacs")
    }

    /// Runs an `openpacs` subcommand that must succeed; returns its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "openpacs {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `openpacs user add NAME --tenant TENANT --role ROLE` with `password` on stdin.
    pub fn add_user(&self, name: &str, tenant: &str, role: &str, password: &str) -> Output {
        self.cli_stdin(
            &["user", "add", name, "--tenant", tenant, "--role", role],
            password,
        )
    }

    /// Waits until the server has read a tenant table with several tenants (it does every
    /// 2 s): until then it has one tenant, which any called AE title reaches, so an AE title
    /// no tenant has is rejected only from then on.
    pub fn wait_for_tenants(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = self.dicom_port.to_string();
        while pynetdicom(&["echo", "--port", &port, "--aec", "NOSUCH"])["status"] == 0 {
            assert!(
                Instant::now() < deadline,
                "the server never read the tenant table"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET on the HTTP listener; returns the body.
    pub fn http_get(&self, path: &str) -> String {
        self.http(path).2
    }

    /// GET on the HTTP listener; returns status, header block and body.
    pub fn http(&self, path: &str) -> (u16, String, String) {
        let (status, head, body) = self.http_bytes(path, &[]);
        (status, head, String::from_utf8_lossy(&body).into_owned())
    }

    /// GET with extra request headers; returns status, header block and the raw body.
    pub fn http_bytes(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
        self.http_request("GET", path, headers, &[])
    }

    /// Any request; returns status, header block and the raw body.
    pub fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        use std::io::Write;
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port)).expect("connect HTTP");
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("send request");
        // The server may answer (413) before reading everything: a failed write is fine.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read response");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(response.len());
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let body = response.get(split + 4..).unwrap_or_default().to_vec();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, head, body)
    }

    /// The DICOMweb root of this server.
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http_port)
    }

    pub fn peer_address(&self) -> String {
        format!("127.0.0.1:{}", self.dicom_port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `tests/browser`, its Node tools (playwright-core, pngjs, OHIF's dist) installed: by
/// `scripts/test.sh` normally, here with `npm ci` when they are missing (the only download).
pub fn browser_tests_dir() -> PathBuf {
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run npm (is node installed?)");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    dir
}

/// What a browser script of `tests/browser` reported.
pub struct BrowserRun {
    /// The JSON summary the script prints on stdout (failures, errors, what it saw, timings).
    pub summary: serde_json::Value,
    pub status: ExitStatus,
}

impl BrowserRun {
    /// The script's own verdict: no failed check, `ok`, and a successful exit. `report` is
    /// what the assertion messages show.
    pub fn assert_passed(&self, report: &str) {
        assert_eq!(self.summary["failures"], serde_json::json!([]), "{report}");
        assert_eq!(self.summary["ok"], true, "{report}");
        assert!(self.status.success(), "exit {:?}\n{report}", self.status);
    }
}

/// Runs `node tests/browser/{script} {args}`, prints its log (stderr) with the time it took,
/// and reads the summary it prints; panics with its whole output when it printed none.
pub fn run_browser_script(script: &str, args: &[String]) -> BrowserRun {
    let started = Instant::now();
    let output = Command::new("node")
        .arg(browser_tests_dir().join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run node tests/browser/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{script} ({:.1?}):\n{stderr}", started.elapsed());
    let summary = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}); exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        )
    });
    BrowserRun {
        summary,
        status: output.status,
    }
}

/// A DCMTK tool by absolute path, with Nagle disabled as DESIGN.md §6 asks.
pub fn dcmtk(tool: &str) -> Command {
    let mut cmd = Command::new(format!("/usr/bin/{tool}"));
    cmd.env("TCP_NODELAY", "1");
    cmd
}

/// A route template's path with its parameters filled from `values` (a parameter the caller
/// does not know fails the test: give it a value there when adding such a route).
pub fn fill_route(template: &str, values: &[(&str, &str)]) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("no value for {{{name}}} in {template}"))
                    .1
                    .to_string(),
                None => segment.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Runs `tests/interop/peer.py` (pynetdicom) and parses the JSON it prints.
pub fn pynetdicom(args: &[&str]) -> serde_json::Value {
    let script = repo_root().join("tests/interop/peer.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 peer.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "peer.py printed no JSON ({e}); exit {:?}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The parts of a multipart body: (part headers, content).
pub fn multipart_parts(content_type_header: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type_header
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary parameter")
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    // Prefix a CRLF so the first delimiter looks like the others.
    let mut data = b"\r\n".to_vec();
    data.extend_from_slice(body);
    let mut parts = Vec::new();
    let positions: Vec<usize> = data
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter.as_bytes())
        .map(|(i, _)| i)
        .collect();
    for pair in positions.windows(2) {
        let part = &data[pair[0] + delimiter.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = part
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part headers");
        parts.push((
            String::from_utf8_lossy(&part[..split]).into_owned(),
            part[split + 4..].to_vec(),
        ));
    }
    parts
}

/// The fixture manifest's entries for valid files (tests/fixtures/manifest.json).
pub fn valid_fixtures() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/manifest.json")).expect("manifest");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("manifest JSON");
    all.into_iter().filter(|f| f["valid"] == true).collect()
}

/// The absolute path of a manifest entry's file.
pub fn fixture_file(entry: &serde_json::Value) -> String {
    repo_root()
        .join("tests/fixtures")
        .join(entry["path"].as_str().expect("fixture path"))
        .display()
        .to_string()
}

impl TestServer {
    /// Stores manifest entries with pynetdicom (their bytes as they are); every one must succeed.
    pub fn store_fixtures<'a>(&self, entries: impl IntoIterator<Item = &'a serde_json::Value>) {
        let files: Vec<String> = entries.into_iter().map(fixture_file).collect();
        let port = self.dicom_port.to_string();
        let mut args = vec!["store", "--port", &port];
        args.extend(files.iter().map(String::as_str));
        let stored = pynetdicom(&args);
        let results = stored["results"].as_array().expect("pynetdicom results");
        assert!(
            results.len() == files.len() && results.iter().all(|r| r["status"] == 0),
            "{stored}"
        );
    }
}

/// Runs the `dicomweb_client` CLI (PyPI dicomweb-client) and parses the JSON it prints.
pub fn dicomweb_client(url: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new("dicomweb_client")
        .args(["--url", url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dicomweb_client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ERROR"),
        "dicomweb_client {args:?} failed: {stderr}"
    );
    if stdout.trim().is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("dicomweb_client printed no JSON ({e}): {stdout}\n{stderr}"))
}

/// A command's exit status, standard output and error, for an assertion's message.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// SHA-256 (hex) of the data set part of a Part 10 file: bytes after the file meta group.
pub fn dataset_sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file");
    let offset = part10_dataset_offset(&bytes).expect("Part 10 file");
    hex::encode(Sha256::digest(&bytes[offset..]))
}

/// Offset of the data set in Part 10 bytes, from the File Meta Information Group Length.
pub fn part10_dataset_offset(bytes: &[u8]) -> Option<usize> {
    if bytes.get(128..132)? != b"DICM" || bytes.get(132..136)? != [0x02, 0x00, 0x00, 0x00] {
        return None;
    }
    let len = u32::from_le_bytes(bytes.get(140..144)?.try_into().ok()?) as usize;
    Some(144 + len)
}

/// DCMTK `storescp` receiving into a temporary folder, bit-preserving; killed when dropped.
pub struct StoreScp {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl StoreScp {
    /// Starts `storescp -aet AE +B` with `extra` options (e.g. `+xa` to accept every transfer
    /// syntax, `+xi` for implicit VR little endian only) and waits until it listens.
    pub fn start(ae_title: &str, port: u16, extra: &[&str]) -> StoreScp {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = dcmtk("storescp")
            .args(["-aet", ae_title, "+B"])
            .args(extra)
            .arg("-od")
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn storescp");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "storescp did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        StoreScp { child, dir, port }
    }

    /// Files received so far, sorted by name.
    pub fn received(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read storescp folder")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        files
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `kB` field of `/proc/<pid>/status` (Linux), in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends HL7 messages (text with `\n` between segments) with python-hl7's MLLP client
/// (`tests/interop/hl7_peer.py`), one connection each, and returns each answer
/// (`{"code": MSA-1, "control_id", "ack", "error"}`).
pub fn send_hl7(hl7_port: u16, dir: &Path, messages: &[&str]) -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    for (i, text) in messages.iter().enumerate() {
        let path = dir.join(format!("msg{}-{hl7_port}-{i}.hl7", std::process::id()));
        std::fs::write(&path, text.replace('\n', "\r")).unwrap();
        files.push(path);
    }
    let out = Command::new("python3")
        .arg(repo_root().join("tests/interop/hl7_peer.py"))
        .args(["send", "--port", &hl7_port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// A modality's image written by pydicom: the CT fixture with the given attributes (pydicom
/// keywords; an empty value leaves the attribute present and empty) and a new Series and SOP
/// Instance UID unless given. Returns its path.
pub fn modality_image(dir: &Path, name: &str, attributes: &[(&str, &str)]) -> String {
    let out = dir.join(name);
    let script = "import sys, pydicom\n\
        from pydicom.uid import generate_uid\n\
        ds = pydicom.dcmread(sys.argv[1])\n\
        ds.SeriesInstanceUID = generate_uid()\n\
        ds.SOPInstanceUID = generate_uid()\n\
        pairs = sys.argv[3:]\n\
        for keyword, value in zip(pairs[0::2], pairs[1::2]):\n\
        \x20   setattr(ds, keyword, value)\n\
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID\n\
        ds.save_as(sys.argv[2], enforce_file_format=True)\n";
    let made = Command::new("python3")
        .args(["-c", script])
        .arg(repo_root().join("tests/fixtures/valid/ct_explicit_le.dcm"))
        .arg(&out)
        .args(attributes.iter().flat_map(|(k, v)| [*k, *v]))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    out.display().to_string()
}

/// The files DCMTK `getscu` (bit-preserving: written as received) retrieves for a study from
/// `dicom_port` with C-GET, into `into`.
pub fn getscu_study(dicom_port: u16, study: &str, into: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(into).unwrap();
    let out = dcmtk("getscu")
        .args(["-S", "+B", "-aec", "OPENPACS", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={study}"), "-od"])
        .arg(into)
        .args(["127.0.0.1", &dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "getscu: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(into)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}
