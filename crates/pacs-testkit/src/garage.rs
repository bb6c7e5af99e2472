//! A real single-node Garage (the S3-compatible store) for tests: the `garage` binary
//! (`cargo install garage --version 2.5.0 --locked`, done by `scripts/test.sh`) started on
//! 127.0.0.1 in a temporary directory, with a layout, a key and a bucket. Nothing is installed
//! here: without the binary the test fails and says how to get it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// The Garage release the tests are written against.
pub const GARAGE_VERSION: &str = "2.5.0";

/// A running Garage and what a client needs to use its bucket.
pub struct Garage {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// RPC and S3 API ports.
    ports: (u16, u16),
}

impl Garage {
    /// Starts Garage with `metadata_fsync` and `data_fsync` on (both default to off: without
    /// them an acknowledged object can be lost on power failure) and waits until its bucket
    /// accepts requests.
    pub fn start() -> Garage {
        check_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) as u8)).collect();
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
metadata_fsync = true
data_fsync = true
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "test-admin-token"
"#,
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .expect("write garage.toml");
        let mut garage = Garage {
            child: None,
            dir,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: "openpacs".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            ports: (rpc, s3),
        };
        garage.spawn();
        let node = garage.cli_ok(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap_or_default().to_string();
        garage.cli_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.cli_ok(&["layout", "apply", "--version", "1"]);
        let key = garage.cli_ok(&["key", "create", "openpacs-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name:?} in `garage key create`'s output:\n{key}"))
        };
        garage.access_key_id = field("Key ID:");
        garage.secret_access_key = field("Secret key:");
        garage.cli_ok(&["bucket", "create", "openpacs"]);
        garage.cli_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "openpacs",
            "--key",
            "openpacs-test",
        ]);
        garage
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("garage log");
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        self.child = Some(child);
        let (rpc, s3) = self.ports;
        self.wait_listening(rpc);
        self.wait_listening(s3);
    }

    /// Kills the server (its data stays): the store becomes unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop garage first");
        self.spawn();
    }

    /// Lines for `openpacs.toml` pointing `[blobs]` at this bucket under `prefix`, with the
    /// credentials in a file of their own (mode 0600) written in `dir`.
    pub fn openpacs_toml(&self, dir: &Path, prefix: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let credentials = dir.join("s3-credentials.toml");
        std::fs::write(
            &credentials,
            format!(
                "access_key_id = {:?}\nsecret_access_key = {:?}\n",
                self.access_key_id, self.secret_access_key
            ),
        )
        .expect("write credentials");
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        format!(
            "[blobs]\nurl = \"s3://{}/{prefix}\"\nendpoint = {:?}\nregion = {:?}\ncredentials_file = {:?}\n",
            self.bucket,
            self.endpoint,
            self.region,
            credentials.display().to_string()
        )
    }

    /// Garage's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Runs `garage -c CONFIG ARGS…` (retried while the new layout settles); its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} failed: {}\n{}\n--- garage log ---\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run garage")
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("garage exited during start-up ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "garage did not listen on {port} within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fails with the way out when `garage` is not on PATH or is another release.
fn check_binary() {
    let out = Command::new("garage").arg("--version").output();
    let version = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => panic!(
            "the S3 tests need Garage {GARAGE_VERSION}'s `garage` binary on PATH: \
             cargo install garage --version {GARAGE_VERSION} --locked (scripts/test.sh does it)"
        ),
    };
    assert!(
        version.contains(GARAGE_VERSION),
        "the S3 tests are written for Garage {GARAGE_VERSION}, `garage --version` says {}: \
         cargo install garage --version {GARAGE_VERSION} --locked",
        version.trim()
    );
}
