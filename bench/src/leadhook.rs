//! The sidecar under test: finding the binary, starting, setting up and
//! stopping it, through the test kit's child-process wrapper.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use leadhook_testkit::sidecar::{Leadhook, Sidecar};

/// The `leadhook` binary: `--leadhook PATH`, or the one `cargo build
/// --release` put beside this benchmark (the benchmark does not build it).
pub(crate) fn leadhook_binary(explicit: Option<PathBuf>) -> anyhow::Result<Leadhook> {
    let path = match explicit {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("leadhook"),
    };
    if !path.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --release`, or `cargo build` for a \
             debug benchmark) or pass --leadhook PATH",
            path.display()
        );
    }
    eprintln!("benchmarking {}", path.display());
    Ok(Leadhook::at(path))
}

/// `leadhook run` with only warnings logged.
pub(crate) fn start(binary: &Leadhook, config: &str) -> anyhow::Result<Sidecar> {
    binary
        .spawn(config, &[("RUST_LOG", "warn")])
        .with_context(|| format!("starting {}", binary.binary().display()))
}

/// [`start`], also logging the startup lines that name the admin address;
/// returns the sidecar and its admin URL (for `/metrics`).
pub(crate) async fn start_observed(
    binary: &Leadhook,
    config: &str,
) -> anyhow::Result<(Sidecar, String)> {
    let sidecar = binary
        .spawn(config, &[("RUST_LOG", "warn,leadhook::sidecar=info")])
        .with_context(|| format!("starting {}", binary.binary().display()))?;
    let admin = sidecar.admin_url().await;
    Ok((sidecar, admin))
}

/// `leadhook setup --apply` (installs notify mode's outbox).
pub(crate) fn setup(binary: &Leadhook, config: &str) -> anyhow::Result<()> {
    let finished = binary.run(config, &["setup", "--apply"], &[]);
    if finished.code != Some(0) {
        bail!("leadhook setup --apply failed: {}", finished.stderr);
    }
    Ok(())
}

/// SIGTERM, and wait until it has exited.
pub(crate) async fn stop(sidecar: Sidecar) {
    sidecar.terminate();
    sidecar.wait_exit(Duration::from_secs(60)).await;
}

pub(crate) fn check_running(sidecar: &Sidecar) -> anyhow::Result<()> {
    if let Some(status) = sidecar.exit_status() {
        bail!("leadhook exited with {status}:\n{}", sidecar.log());
    }
    Ok(())
}
