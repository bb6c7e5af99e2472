//! A real Garage (the S3-compatible store) for tests: the `garage` binary (`cargo install
//! garage --version 2.5.0 --locked`, done by `scripts/test.sh`) started on 127.0.0.1 in
//! temporary directories, with a layout, a key and a bucket. One node for most tests; a
//! cluster of several nodes in zones, with three copies of everything, for the fault tests.
//! Nothing is installed here: without the binary the test fails and says how to get it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// The Garage release the tests are written against.
pub const GARAGE_VERSION: &str = "2.5.0";

/// A running Garage (one node or several) and what a client needs to use its bucket.
pub struct Garage {
    nodes: Vec<Node>,
    /// `http://127.0.0.1:PORT`, the S3 API of the first node.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// One `garage server` process.
struct Node {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// RPC and S3 API ports.
    ports: (u16, u16),
}

impl Garage {
    /// One node with `metadata_fsync` and `data_fsync` on (both default to off: without them
    /// an acknowledged object can be lost on power failure), waiting until its bucket accepts
    /// requests.
    pub fn start() -> Garage {
        Garage::start_cluster(&["dc1"])
    }

    /// One node per entry of `zones`, in that zone (`["dc1", "dc1", "dc2"]`: three nodes in
    /// two data centres). With more than one node, replication factor 3: every object on three
    /// nodes spread over the zones, writes and reads needing two of them (Garage's
    /// `consistent` mode), so any one node may stop. Clients use the first node's endpoint.
    pub fn start_cluster(zones: &[&str]) -> Garage {
        check_binary();
        assert!(
            zones.len() == 1 || zones.len() >= 3,
            "one node, or three and more"
        );
        let replication = if zones.len() == 1 { 1 } else { 3 };
        let secret: String = (0..32).map(|i| format!("{:02x}", (i * 37 + 11) as u8)).collect();
        let mut nodes: Vec<Node> = zones
            .iter()
            .map(|_| Node::configure(&secret, replication))
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let ids: Vec<String> = nodes.iter().map(Node::id).collect();
        for (node, id) in nodes.iter().zip(&ids).skip(1) {
            nodes[0].cli_ok(&["node", "connect", &format!("{id}@127.0.0.1:{}", node.ports.0)]);
        }
        for (zone, id) in zones.iter().zip(&ids) {
            nodes[0].cli_ok(&["layout", "assign", "-z", zone, "-c", "1G", id]);
        }
        nodes[0].cli_ok(&["layout", "apply", "--version", "1"]);
        let key = nodes[0].cli_ok(&["key", "create", "openpacs-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name:?} in `garage key create`'s output:\n{key}"))
        };
        let (access_key_id, secret_access_key) = (field("Key ID:"), field("Secret key:"));
        nodes[0].cli_ok(&["bucket", "create", "openpacs"]);
        nodes[0].cli_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "openpacs",
            "--key",
            "openpacs-test",
        ]);
        Garage {
            endpoint: format!("http://127.0.0.1:{}", nodes[0].ports.1),
            nodes,
            region: "garage".into(),
            bucket: "openpacs".into(),
            access_key_id,
            secret_access_key,
        }
    }

    /// Kills every node (their data stays): the store becomes unreachable.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// Starts the stopped nodes again on the same ports and data.
    pub fn start_again(&mut self) {
        for node in &mut self.nodes {
            if node.child.is_none() {
                node.spawn();
            }
        }
    }

    /// Kills node `i` of a cluster (0 is the one clients talk to).
    pub fn stop_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Starts node `i` again and has the first node reconnect to it at once (Garage would
    /// retry on its own only after a while, reading with one node fewer meanwhile).
    pub fn start_node(&mut self, i: usize) {
        self.nodes[i].spawn();
        if i > 0 {
            let peer = format!("{}@127.0.0.1:{}", self.nodes[i].id(), self.nodes[i].ports.0);
            self.nodes[0].cli_ok(&["node", "connect", &peer]);
        }
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

    /// Every node's log so far.
    pub fn log(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- garage node {i} ---\n{}", n.log()))
            .collect()
    }

    /// Runs `garage -c CONFIG ARGS…` on the first node (retried while a new layout settles);
    /// its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.nodes[0].cli_ok(args)
    }
}

impl Node {
    fn configure(secret: &str, replication: u32) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
metadata_fsync = true
data_fsync = true
replication_factor = {replication}
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
        Node {
            child: None,
            dir,
            config,
            ports: (rpc, s3),
        }
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node's full id (`garage node id -q` prints `ID@ADDRESS`).
    fn id(&self) -> String {
        let id = self.cli_ok(&["node", "id", "-q"]);
        id.trim().split('@').next().unwrap_or_default().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
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

impl Drop for Node {
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
