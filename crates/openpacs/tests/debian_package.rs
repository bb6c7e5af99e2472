//! The Debian package (issue 15 §8), as an administrator gets it: built with cargo-deb from
//! the binary this `cargo test` built, installed with `dpkg -i`, its unit's command run by
//! hand as the unit's user, answering DCMTK's C-ECHO, then purged without touching the
//! archive.
//!
//! It changes the system (a package, a system user, /var/lib/openpacs): it needs root, and
//! it refuses to run where openpacs is already installed. Everything it adds is removed by a
//! guard, also when it fails. Without root it fails, unless PACS_SKIP_ROOT_TESTS=1.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pacs_testkit::server::{dcmtk, free_port, repo_root};

const BINARY: &str = "/usr/bin/openpacs";
const CONFIG: &str = "/etc/openpacs/openpacs.toml";
const UNIT: &str = "/usr/lib/systemd/system/openpacs.service";
const DATA: &str = "/var/lib/openpacs";
/// The PATH systemd gives services.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/openpacs.service";

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// dpkg, waiting (up to 5 minutes) while another process (apt) holds its lock.
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = run("dpkg", args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("lock") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The `openpacs` entry of the user database: name, password, uid, gid, gecos, home, shell.
fn passwd_entry() -> Option<Vec<String>> {
    let out = run("getent", &["passwd", "openpacs"]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .split(':')
            .map(str::to_string)
            .collect()
    })
}

/// What the test added to the system, taken away again whatever happens.
struct Cleanup {
    server: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            for pid in children(child.id()) {
                let _ = run("kill", &["-KILL", &pid.to_string()]);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if run("dpkg", &["-s", "openpacs"]).status.success() {
            let _ = dpkg(&["--purge", "openpacs"]);
        }
        let _ = fs::remove_dir_all(DATA);
        if passwd_entry().is_some() {
            let _ = run("userdel", &["openpacs"]);
        }
        if run("getent", &["group", "openpacs"]).status.success() {
            let _ = run("groupdel", &["openpacs"]);
        }
    }
}

/// The child processes of `pid` (runuser forks the command it runs).
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A `Key=` line's value in the unit file (the last one wins, as for systemd).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// The directory cargo puts the test's binary in, and the profile it stands for.
fn target_dir_and_profile() -> (PathBuf, String) {
    let binary = Path::new(env!("CARGO_BIN_EXE_openpacs"));
    let profile_dir = binary.parent().expect("profile directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(name) => name.to_string(),
        None => panic!("unexpected binary path {}", binary.display()),
    };
    (
        profile_dir.parent().expect("target directory").to_path_buf(),
        profile,
    )
}

#[test]
fn dpkg_installs_a_service_that_answers_echo_and_purge_keeps_the_archive() {
    if std::env::var("PACS_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("debian_package: skipped (PACS_SKIP_ROOT_TESTS=1)");
        return;
    }
    let uid = fs::metadata("/proc/self").expect("/proc/self").uid();
    assert!(
        uid == 0,
        "this test installs a Debian package and a system user: run it as root, \
         or set PACS_SKIP_ROOT_TESTS=1 to skip it"
    );
    let cargo_deb = Command::new("cargo-deb").arg("--version").output();
    assert!(
        cargo_deb.as_ref().is_ok_and(|o| o.status.success()),
        "cargo-deb is not on PATH: install it with `cargo install cargo-deb --version 3.8.0 --locked`"
    );
    assert!(
        Path::new("/usr/bin/echoscu").exists(),
        "DCMTK's echoscu is missing: apt-get install dcmtk"
    );
    // Never touch a real installation (or its archive).
    assert!(
        !run("dpkg", &["-s", "openpacs"]).status.success()
            && passwd_entry().is_none()
            && !Path::new(DATA).exists()
            && !Path::new(CONFIG).exists(),
        "openpacs is installed here (package, user openpacs, {DATA} or {CONFIG}): \
         this test would change that installation, run it on another machine"
    );
    let mut cleanup = Cleanup { server: None };
    let started = Instant::now();

    // The package, from the binary `cargo test` built: no second build, fast compression.
    let out_dir = tempfile::tempdir().expect("temp dir");
    let (target_dir, profile) = target_dir_and_profile();
    let build = Command::new("cargo")
        .args([
            "deb",
            "-p",
            "openpacs",
            "--no-build",
            "--fast",
            "--profile",
            &profile,
        ])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .arg("-o")
        .arg(out_dir.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("run cargo deb");
    assert!(build.status.success(), "cargo deb failed: {}", text(&build));
    let deb = fs::read_dir(out_dir.path())
        .expect("output directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb written: {}", text(&build)));
    let deb_bytes = fs::metadata(&deb).expect("deb").len();
    let built = started.elapsed();

    let install = dpkg(&["-i", deb.to_str().expect("path")]);
    assert!(install.status.success(), "dpkg -i failed: {}", text(&install));

    let status = String::from_utf8_lossy(&run("dpkg", &["-s", "openpacs"]).stdout).to_string();
    assert!(
        status.contains("Status: install ok installed"),
        "dpkg -s:\n{status}"
    );
    let depends = status
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in dpkg -s:\n{status}"));
    for dependency in ["adduser", "libc6"] {
        assert!(depends.contains(dependency), "Depends: {depends}");
    }
    assert!(
        status.contains(&format!("Conffiles:\n {CONFIG} ")),
        "{CONFIG} is not a conffile:\n{status}"
    );
    let listed = String::from_utf8_lossy(&run("dpkg", &["-L", "openpacs"]).stdout).to_string();
    let listed: Vec<&str> = listed.lines().collect();
    for path in [BINARY, CONFIG, UNIT, "/usr/share/doc/openpacs/README.Debian"] {
        assert!(listed.contains(&path), "dpkg -L lacks {path}: {listed:?}");
    }
    // The archive is the administrator's, never the package's: dpkg must not own it.
    assert!(
        !listed.iter().any(|p| p.starts_with(DATA)),
        "dpkg -L lists {DATA}: {listed:?}"
    );
    let version = run(BINARY, &["--version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("openpacs "),
        "{BINARY} --version: {}",
        text(&version)
    );

    // A system user with no login shell, its own group, the archive as home.
    let entry = passwd_entry().expect("postinst created no user openpacs");
    let (user_uid, user_gid): (u32, u32) = (entry[2].parse().unwrap(), entry[3].parse().unwrap());
    let sys_uid_max = fs::read_to_string("/etc/login.defs")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SYS_UID_MAX")?.trim().parse::<u32>().ok())
        .unwrap_or(999);
    assert!(
        user_uid > 0 && user_uid <= sys_uid_max,
        "uid {user_uid} is not a system uid: {entry:?}"
    );
    assert_eq!(entry[5], DATA, "home: {entry:?}");
    assert!(
        [
            "/usr/sbin/nologin",
            "/sbin/nologin",
            "/bin/false",
            "/usr/bin/false"
        ]
        .contains(&entry[6].as_str()),
        "the user has a login shell: {entry:?}"
    );
    let group = String::from_utf8_lossy(&run("getent", &["group", "openpacs"]).stdout).to_string();
    assert!(
        group.starts_with(&format!("openpacs:x:{user_gid}:")),
        "group openpacs: {group:?}"
    );
    let data = fs::metadata(DATA).expect("postinst created no data directory");
    assert!(data.is_dir());
    assert_eq!((data.uid(), data.gid()), (user_uid, user_gid), "{DATA} owner");
    assert_eq!(data.permissions().mode() & 0o7777, 0o750, "{DATA} mode");

    // The unit: its user, its command, its sandbox; enabled (a link, even without systemd).
    let unit = fs::read_to_string(UNIT).expect("unit file");
    let unit_user = unit_value(&unit, "User").expect("the unit has no User=");
    assert_eq!(unit_user, "openpacs", "User= in {UNIT}");
    let exec_start = unit_value(&unit, "ExecStart").expect("the unit has no ExecStart=");
    assert_eq!(exec_start, format!("{BINARY} --config {CONFIG} serve"));
    for (key, value) in [
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
        ("StateDirectory", "openpacs"),
        ("StateDirectoryMode", "0750"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("LimitNOFILE", "65536"),
    ] {
        assert_eq!(unit_value(&unit, key), Some(value), "{key}= in {UNIT}");
    }
    // No capability: so every configured port must be unprivileged.
    let config = fs::read_to_string(CONFIG).expect("config");
    for key in ["dicom_port", "http_port", "hl7_port"] {
        let port: u16 = config
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_prefix('=')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} not set in {CONFIG}"));
        assert!(port >= 1024, "{key} = {port} needs CAP_NET_BIND_SERVICE");
    }
    assert!(config.contains(&format!("data_dir = \"{DATA}\"")), "{config}");
    let link = fs::read_link(ENABLED_LINK).unwrap_or_else(|e| panic!("{ENABLED_LINK}: {e}"));
    assert!(link.ends_with("systemd/system/openpacs.service"), "{link:?}");
    // scripts/test.sh installs systemd (for systemd-analyze) when it is missing.
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists(),
        "the unit is checked with systemd-analyze: apt-get install systemd"
    );
    {
        let verify = run("systemd-analyze", &["verify", UNIT]);
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "systemd-analyze verify: {}",
            text(&verify)
        );
        let security = run("systemd-analyze", &["security", "--offline=true", UNIT]);
        let report = String::from_utf8_lossy(&security.stdout).to_string();
        let level = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("");
        eprintln!("systemd-analyze security: {}", level.trim());
        let score: f64 = level
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("systemd-analyze security: {}", text(&security)));
        assert!(
            score <= 2.0,
            "exposure {score} (above 2.0, OK is below):\n{report}"
        );
    }

    // The unit's command, by hand, as the unit's user, on free ports (as systemd would run it:
    // clean environment, the unit's working directory).
    let (dicom, http, hl7) = (free_port(), free_port(), free_port());
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_path = log_dir.path().join("server.log");
    let log = fs::File::create(&log_path).expect("log");
    let mut command = Command::new("runuser");
    command
        .args(["-u", unit_user, "--"])
        .args(exec_start.split_whitespace())
        .args(["--dicom-port", &dicom.to_string()])
        .args(["--http-port", &http.to_string()])
        .args(["--hl7-port", &hl7.to_string()])
        .current_dir(unit_value(&unit, "WorkingDirectory").unwrap_or("/"))
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    cleanup.server = Some(command.spawn().expect("runuser"));
    let server_log = || fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let child = cleanup.server.as_mut().expect("server");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the packaged server exited ({status}):\n{}", server_log());
        }
        if [dicom, http, hl7]
            .iter()
            .all(|&p| TcpStream::connect(("127.0.0.1", p)).is_ok())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not listening after 60 s:\n{}",
            server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runuser_pid = cleanup.server.as_ref().expect("server").id();
    let server_pid = *children(runuser_pid).first().expect("runuser has no child");
    let process = fs::read_to_string(format!("/proc/{server_pid}/status")).expect("status");
    let real_uid = process
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
    assert_eq!(real_uid, Some(user_uid), "the server's uid:\n{process}");

    let echo = dcmtk("echoscu")
        .args(["-aec", "OPENPACS", "127.0.0.1", &dicom.to_string()])
        .output()
        .expect("echoscu");
    assert!(
        echo.status.success(),
        "echoscu: {}\nserver:\n{}",
        text(&echo),
        server_log()
    );

    // README.Debian's first account, while the server runs.
    let mut add = Command::new("runuser")
        .args(["-u", "openpacs", "--", BINARY, "--config", CONFIG])
        .args(["user", "add", "admin", "--role", "admin"])
        .env_clear()
        .env("PATH", SYSTEM_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("user add");
    writeln!(add.stdin.take().expect("stdin"), "a-long-enough-password").expect("password");
    let add = add.wait_with_output().expect("user add");
    assert!(add.status.success(), "user add: {}", text(&add));
    let list = run(
        "runuser",
        &["-u", "openpacs", "--", BINARY, "--config", CONFIG, "user", "list"],
    );
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("admin"),
        "user list: {}",
        text(&list)
    );

    // Every file the server and the tools created is the service user's.
    let mut created = 0;
    for entry in walkdir::WalkDir::new(DATA) {
        let entry = entry.expect("walk data directory");
        let meta = entry.metadata().expect("metadata");
        assert_eq!(
            meta.uid(),
            user_uid,
            "{} is not owned by openpacs",
            entry.path().display()
        );
        created += 1;
    }
    assert!(
        Path::new(DATA).join("index.sqlite").exists(),
        "no index in {DATA}:\n{}",
        server_log()
    );

    let _ = run("kill", &["-TERM", &server_pid.to_string()]);
    let mut child = cleanup.server.take().expect("server");
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit 60 s after SIGTERM:\n{}",
            server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "the server's exit: {exit}\n{}", server_log());

    // An upgrade (here: the same version again) finds the user and the archive and keeps them.
    let again = dpkg(&["-i", deb.to_str().expect("path")]);
    assert!(
        again.status.success(),
        "dpkg -i over the installed package: {}",
        text(&again)
    );
    assert_eq!(
        passwd_entry().expect("user"),
        entry,
        "the user changed on upgrade"
    );
    let data = fs::metadata(DATA).expect("data");
    assert_eq!(
        (data.uid(), data.mode() & 0o7777),
        (user_uid, 0o750),
        "{DATA} after upgrade"
    );
    assert!(
        Path::new(DATA).join("index.sqlite").exists(),
        "the upgrade lost the index"
    );

    // Purge: package and configuration gone, the archive and its owner kept, and said so.
    let purge = dpkg(&["--purge", "openpacs"]);
    assert!(purge.status.success(), "dpkg --purge: {}", text(&purge));
    let said = String::from_utf8_lossy(&purge.stdout);
    assert!(
        said.contains("/var/lib/openpacs was NOT deleted") && said.contains("rm -rf /var/lib/openpacs"),
        "purge does not say where the archive stays and how to delete it: {}",
        text(&purge)
    );
    for gone in [BINARY, CONFIG, "/etc/openpacs", UNIT, ENABLED_LINK] {
        assert!(
            fs::symlink_metadata(gone).is_err(),
            "{gone} is still there after dpkg --purge"
        );
    }
    assert!(
        !run("dpkg", &["-s", "openpacs"]).status.success(),
        "still installed"
    );
    assert!(
        Path::new(DATA).join("index.sqlite").exists(),
        "dpkg --purge deleted the archive"
    );
    assert_eq!(fs::metadata(DATA).expect("data").uid(), user_uid);
    assert!(
        passwd_entry().is_some(),
        "purge removed the user owning the kept archive"
    );

    eprintln!(
        "debian_package: .deb {:.1} MB built in {:.1} s; installed, served C-ECHO as uid {user_uid} \
         ({created} entries in {DATA}), purged; {:.1} s in all",
        deb_bytes as f64 / 1e6,
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(cleanup);
    assert!(
        !Path::new(DATA).exists() && passwd_entry().is_none(),
        "clean-up left traces"
    );
}
