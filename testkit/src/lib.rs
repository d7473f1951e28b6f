//! What leadhook's end-to-end tests, its benchmark and `leadhook demo` run
//! against: real parts, started and torn down by the process that uses them.
//!
//! # Layout
//!
//! - [`cluster`]: a private PostgreSQL (initdb'd once per process, copied per
//!   cluster, random port, removed at exit; as root it runs as `postgres`).
//! - [`database`]: a database of a test's own with the leads table, and the
//!   WAL and slot questions tests ask of the server.
//! - [`receiver`]: a recording (or only counting) webhook receiver that can
//!   fail, stall, pause, go down and come back.
//! - [`config`]: a typed builder for `sidecar.toml`, written as a user writes it.
//! - [`sidecar`]: the real `leadhook` binary as a child process: logs,
//!   signals, kill -9, restarts, memory and CPU.
//! - [`scenario`]: the clusters tests share and the usual start of a test
//!   (a database, a receiver, a sidecar streaming to it).
//! - [`wait`]: the one timeout and the one way to wait for something.
//! - [`payload`] and [`metrics`]: reading what arrived and what `/metrics` says.
//! - [`prometheus`]: a real Prometheus scraping the sidecars, and `promtool`.
//! - [`browser`]: headless Chromium, loading a page as a person would.
//! - [`pki`]: a CA and a server certificate, for TLS servers in tests.
//!
//! It knows leadhook only from the outside (SQL, HTTP, the config file, the
//! process), so the product can use it for its demo without a cycle.

pub mod browser;
pub mod cluster;
pub mod config;
pub mod database;
pub mod metrics;
pub mod payload;
pub mod pki;
pub mod prometheus;
pub mod receiver;
pub mod scenario;
pub mod sidecar;
pub mod wait;

/// reqwest, built (like leadhook) without a default TLS provider, needs
/// the process-wide one before its first client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `name` in a directory of PATH, if there is one.
pub(crate) fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
