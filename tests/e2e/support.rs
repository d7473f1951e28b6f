//! The end-to-end tests' view of the test kit (`leadhook-testkit`): every
//! part of it, plus the `leadhook` binary this package built.

use std::path::PathBuf;

pub use leadhook_testkit::cluster::{Cluster, ClusterOptions, WalLevel};
pub use leadhook_testkit::config::{Column, SidecarConfig, Webhook};
pub use leadhook_testkit::database::{
    LEADS_TABLE, TestDb, connect, insert_leads, slot_confirmed_past, slot_is_streaming,
    wal_insert_lsn,
};
pub use leadhook_testkit::metrics::{Sample, metric, scrape, value};
pub use leadhook_testkit::payload::{
    data, ids_of, scores_of, wait_for_scores, wait_for_these_scores,
};
pub use leadhook_testkit::receiver::{ReceivedRequest, Receiver, Reply};
pub use leadhook_testkit::scenario::{
    DELIVERING_FROM_OUTBOX, Running, Scenario, shared_cluster, shared_replica_cluster,
    start_cluster, wait_or_diagnose,
};
pub use leadhook_testkit::sidecar::{Finished, Leadhook, Sidecar};
pub use leadhook_testkit::wait::{WAIT, eventually, eventually_within};

/// The `leadhook` binary of this build.
pub fn leadhook() -> Leadhook {
    Leadhook::at(env!("CARGO_BIN_EXE_leadhook"))
}

/// A file of this repository, e.g. `sql/setup.sql`.
pub fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// reqwest (built without a default provider, like leadhook) needs one.
pub fn leadhook_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
