//! The real `leadhook` binary as a child, with its memory and CPU sampled
//! from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

/// Finds (building it if needed) the `leadhook` binary of the same profile.
pub fn leadhook_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let sibling = std::env::current_exe()?.with_file_name("leadhook");
    if let Ok(cargo) = std::env::var("CARGO") {
        // Under `cargo run`, make sure the sidecar is built from the same sources.
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--bin", "leadhook"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build
            .status()
            .context("running cargo build --bin leadhook")?;
        if !status.success() {
            bail!("cargo build --bin leadhook failed");
        }
    }
    if !sibling.is_file() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --leadhook PATH",
            sibling.display()
        );
    }
    Ok(sibling)
}

/// Runs `leadhook setup --apply` on a config (installs notify mode's outbox).
pub fn setup(binary: &Path, config: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, config)?;
    let output = Command::new(binary)
        .args(["setup", "--apply", "--config"])
        .arg(&path)
        .output()?;
    if !output.status.success() {
        bail!(
            "leadhook setup --apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A running sidecar.
pub struct Sidecar {
    child: Child,
    pid: u32,
    /// Highest VmRSS seen by the sampler, in KiB.
    peak_rss_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn start(binary: &Path, config: &str) -> anyhow::Result<Sidecar> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sidecar.toml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.path().join("leadhook.log"))?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_rss_kib.clone();
        let sampler = tokio::spawn(async move {
            loop {
                if let Some(rss) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(Sidecar {
            child,
            pid,
            peak_rss_kib,
            sampler,
            _dir: dir,
        })
    }

    pub fn rss_mib(&self) -> f64 {
        status_kib(self.pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// The peak resident memory: the kernel's high-water mark, or what the sampler saw.
    pub fn peak_rss_mib(&self) -> f64 {
        let sampled = self.peak_rss_kib.load(Ordering::Relaxed);
        status_kib(self.pid, "VmHWM:").unwrap_or(0).max(sampled) as f64 / 1024.0
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return 0.0;
        };
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / per_second.max(1.0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("leadhook.log")).unwrap_or_default()
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("leadhook exited with {status}:\n{}", self.log());
        }
        Ok(())
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        self.sampler.abort();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
