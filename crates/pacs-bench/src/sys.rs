//! The machine the numbers come from, and its disk's sequential bandwidth.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub ram_gib: f64,
    pub kernel: String,
    pub disk: String,
    pub filesystem: String,
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| {
            l.split_once(':')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        })
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

pub fn machine(work_dir: &Path) -> Machine {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let ram_kb: f64 = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let dir = work_dir.display().to_string();
    // The block device under the work directory, its model and whether it spins.
    let source = command_line("findmnt", &["-n", "-o", "SOURCE", "--target", &dir]).unwrap_or_default();
    let fstype = command_line("findmnt", &["-n", "-o", "FSTYPE", "--target", &dir]).unwrap_or_default();
    let device = source.rsplit('/').next().unwrap_or("").to_string();
    let model = command_line("lsblk", &["-dn", "-o", "MODEL", &source])
        .or_else(|| std::fs::read_to_string(format!("/sys/block/{device}/device/model")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let rotational = std::fs::read_to_string(format!("/sys/block/{device}/queue/rotational"))
        .map(|s| {
            if s.trim() == "0" {
                "non-rotational"
            } else {
                "rotational"
            }
        })
        .unwrap_or("unknown");
    let size = command_line("lsblk", &["-dn", "-o", "SIZE", &source]).unwrap_or_default();
    let disk = format!(
        "{source} ({}, {rotational}, {size})",
        model.unwrap_or_else(|| "model not reported (virtual disk)".into())
    );
    Machine {
        cores,
        cpu_model: first_line_with("/proc/cpuinfo", "model name").unwrap_or_default(),
        ram_gib: (ram_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel,
        disk,
        filesystem: format!("{fstype} at {}", work_dir.display()),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DiskBandwidth {
    pub bytes: u64,
    /// Buffered writes of 4 MiB, then one fsync; the time includes the fsync.
    pub write_mb_per_s: f64,
    /// O_DIRECT reads of 4 MiB (the page cache is bypassed, nothing is dropped).
    pub read_mb_per_s: f64,
    pub method: String,
}

const O_DIRECT: i32 = 0o40000; // Linux, x86_64 and aarch64

/// Writes `bytes` to a file in `dir` with one fsync at the end, then reads it back with
/// O_DIRECT, and removes it.
pub fn disk_bandwidth(dir: &Path, bytes: u64) -> Result<DiskBandwidth> {
    const BLOCK: usize = 4 << 20;
    let path = dir.join("disk-bandwidth.tmp");
    // Incompressible, deterministic content.
    let mut block = vec![0u8; BLOCK];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let blocks = bytes.div_ceil(BLOCK as u64);
    let total = blocks * BLOCK as u64;
    let start = Instant::now();
    {
        let mut f = std::fs::File::create(&path).context("creating the bandwidth test file")?;
        for _ in 0..blocks {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    let write_s = start.elapsed().as_secs_f64();

    // O_DIRECT needs a buffer aligned to the logical block size: take an aligned window.
    let mut raw = vec![0u8; BLOCK + 4096];
    let offset = (4096 - (raw.as_ptr() as usize % 4096)) % 4096;
    let buf = &mut raw[offset..offset + BLOCK];
    let start = Instant::now();
    let mut read = 0u64;
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(&path);
    let method;
    match direct {
        Ok(mut f) => {
            method = "write: 4 MiB buffered writes + fsync; read: 4 MiB O_DIRECT reads".to_string();
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                read += n as u64;
            }
        }
        Err(_) => {
            method = "write: 4 MiB buffered writes + fsync; read: buffered (O_DIRECT refused, page cache may serve it)"
                .to_string();
            let mut f = std::fs::File::open(&path)?;
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                read += n as u64;
            }
        }
    }
    let read_s = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(DiskBandwidth {
        bytes: total,
        write_mb_per_s: total as f64 / 1e6 / write_s,
        read_mb_per_s: read as f64 / 1e6 / read_s,
        method,
    })
}

/// The floor under a durable acknowledgement: files of one object's size created the way a
/// durable store must (write to a temporary name, fdatasync, rename into place, fsync the
/// directory), nothing else (no network, no parsing, no index).
#[derive(Clone, Debug, Serialize)]
pub struct DurableCreates {
    pub bytes_per_file: u64,
    pub files: usize,
    pub threads: usize,
    pub files_per_s: f64,
    /// Mean time one thread took per file.
    pub ms_per_file: f64,
    /// CPU (user + system, nearly all system) the harness spent per file: what the kernel
    /// costs a durable store before any server work. `None` when /proc could not tell.
    pub cpu_ms_per_file: Option<f64>,
}

/// Creates `files` durable files of `bytes_per_file` in `dir`, spread over `threads` threads,
/// and removes them.
pub fn durable_creates(
    dir: &Path,
    bytes_per_file: u64,
    files: usize,
    threads: usize,
) -> Result<DurableCreates> {
    let root = tempfile::Builder::new().prefix("durable-").tempdir_in(dir)?;
    let (tmp, dest) = (root.path().join("tmp"), root.path().join("dest"));
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&dest)?;
    let content: Vec<u8> = (0..bytes_per_file)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let threads = threads.max(1);
    let cpu = || crate::targets::cpu_seconds(std::process::id(), crate::targets::clock_ticks());
    let cpu_before = cpu();
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (tmp, dest, content) = (&tmp, &dest, &content);
                s.spawn(move || -> Result<()> {
                    let dest_dir = std::fs::File::open(dest)?;
                    for i in (t..files).step_by(threads) {
                        let name = format!("{i:08}");
                        let mut f = std::fs::File::create(tmp.join(&name))?;
                        f.write_all(content)?;
                        f.sync_data()?;
                        std::fs::rename(tmp.join(&name), dest.join(&name))?;
                        dest_dir.sync_all()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("durable-create thread panicked"))??;
        }
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = cpu().zip(cpu_before).map(|(after, before)| after - before);
    Ok(DurableCreates {
        cpu_ms_per_file: cpu_s.map(|s| s * 1000.0 / files as f64),
        bytes_per_file,
        files,
        threads,
        files_per_s: files as f64 / seconds,
        ms_per_file: seconds * 1000.0 * threads as f64 / files as f64,
    })
}

/// Whether [`settle_filesystem`] can drop the page cache (it needs root).
pub fn can_drop_caches() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .is_ok()
}

/// Run before each ingest repetition, so that what earlier repetitions deleted does not slow
/// the next one down. On ext4 without a journal (the disks here), allocating an inode skips
/// every inode of the group deleted less than 60 s ago (300 s while its inode table block is
/// dirty) whose block is still cached (`recently_deleted` in ext4's `ialloc.c`): after the
/// previous repetition's thousands of files were removed, each file a server created scanned
/// past them, and small-image ingest measured 350–390/s instead of 580–640/s (openpacs, one
/// association). So: write everything out, drop the clean page cache (which holds those
/// blocks), then read the repetition's input files again so that the clients do not read them
/// from disk. Without root the cache stays and the report says so.
pub fn settle_filesystem(drop_caches: bool, inputs: &[PathBuf]) -> Result<()> {
    let _ = Command::new("sync").status();
    if !drop_caches {
        return Ok(());
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1").context("dropping the page cache")?;
    let mut buf = vec![0u8; 1 << 20];
    for path in inputs {
        let mut file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        while file.read(&mut buf)? > 0 {}
    }
    Ok(())
}
