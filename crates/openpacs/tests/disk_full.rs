//! A full disk refuses stores with A700, leaves nothing half-written, and ingest works again
//! as soon as space returns, without a restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pacs_testkit::server::{dcmtk, ServerOptions, TestServer};
use pacs_testkit::{write_study, StudySpec};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_openpacs"))
}

/// A tmpfs mount that is unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    /// Keeps the mount point alive; removed after the unmount.
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test needs to mount a small tmpfs (run as root)"
        );
        Tmpfs { path, _dir: dir }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn storescu(server: &TestServer, files: &[PathBuf]) -> Output {
    dcmtk("storescu")
        .args([
            "-v",
            "-nh",
            "-aec",
            "OPENPACS",
            "127.0.0.1",
            &server.dicom_port.to_string(),
        ])
        .args(files)
        .output()
        .unwrap()
}

fn image_count(server: &TestServer) -> usize {
    let out = dcmtk("findscu")
        .args([
            "-S",
            "-v",
            "-aec",
            "OPENPACS",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            "SOPInstanceUID",
        ])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).matches("(Pending)").count()
}

#[test]
fn disk_full_gives_a700_then_ingest_resumes_when_space_returns() {
    let mount = Tmpfs::mount("6m");
    let mut server = TestServer::start(
        binary(),
        ServerOptions {
            data_dir: Some(mount.path.join("data")),
            ..ServerOptions::default()
        },
    );
    let source = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = write_study(&StudySpec::ct(7, 24), source.path())
        .unwrap()
        .into_iter()
        .map(|g| g.path)
        .collect();

    let out = storescu(&server, &files);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let stored = log.matches("Received Store Response (Success)").count();
    let refused = log
        .matches("Received Store Response (Refused: OutOfResources")
        .count();
    assert!(
        stored > 0 && refused > 0,
        "some stores fit, later ones are refused with A7xx:\n{log}"
    );
    assert_eq!(
        stored + refused,
        files.len(),
        "every store got an answer and the association survived:\n{log}"
    );
    assert!(server.is_running());
    let leftovers: Vec<_> = std::fs::read_dir(mount.path.join("data/tmp")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "nothing half-written stays behind: {leftovers:?}"
    );
    assert_eq!(
        image_count(&server),
        stored,
        "the index lists exactly the acknowledged instances"
    );

    mount.resize("64m");
    let out = storescu(&server, &files);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(image_count(&server), files.len());
    assert!(server.stop().success());
}
