//! The end-to-end tests' view of the test kit (`leadhook-testkit`): every
//! part of it, plus the `leadhook` binary this package built.

use std::path::PathBuf;

pub(crate) use leadhook_testkit::cluster::{Cluster, ClusterOptions, WalLevel};
pub(crate) use leadhook_testkit::config::{Column, Log, SidecarConfig, Webhook};
pub(crate) use leadhook_testkit::database::{
    TestDb, connect, insert_leads, insert_leads_in_one_transaction, slot_confirmed_past,
    try_connect, wal_insert_lsn,
};
pub(crate) use leadhook_testkit::install_crypto_provider;
pub(crate) use leadhook_testkit::metrics::{metric, scrape, value};
pub(crate) use leadhook_testkit::payload::{
    data, ids_of, scores_of, wait_for_scores, wait_for_these_scores,
};
pub(crate) use leadhook_testkit::receiver::{ReceivedRequest, Receiver, Reply};
pub(crate) use leadhook_testkit::scenario::{
    DELIVERING_FROM_OUTBOX, Running, Scenario, shared_cluster, shared_replica_cluster,
    start_cluster, wait_or_diagnose,
};
pub(crate) use leadhook_testkit::sidecar::{Finished, Leadhook};
pub(crate) use leadhook_testkit::wait::{WAIT, eventually, eventually_within};

/// The `leadhook` binary of this build.
pub(crate) fn leadhook() -> Leadhook {
    Leadhook::at(env!("CARGO_BIN_EXE_leadhook"))
}

/// A file of this repository, e.g. `sql/setup.sql`.
pub(crate) fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Checks `request`'s Standard Webhooks signature with `key`, by an HMAC
/// independent of leadhook's, and that its timestamp is the sending time.
pub(crate) fn assert_signed(request: &ReceivedRequest, key: &[u8]) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let sent: i64 = timestamp.parse().expect("a Unix time");
    assert!((now - sent).abs() < 60, "timestamp is the sending time");
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), &signed);
    assert_eq!(
        request.header("webhook-signature"),
        Some(format!("v1,{}", STANDARD.encode(tag.as_ref())).as_str())
    );
}

/// Short backoff, so a recovered endpoint is noticed within a second.
pub(crate) fn quick_retries(w: &mut Webhook) {
    w.delivery.initial_backoff = Some(std::time::Duration::from_millis(100));
    w.delivery.max_backoff = Some(std::time::Duration::from_millis(500));
}

/// The receiver answers `status` at `path` and 200 everywhere else.
pub(crate) fn fails_at(receiver: &Receiver, path: &'static str, status: u16) {
    receiver.set_responder(move |request, _| match request.path == path {
        true => Reply::status(status),
        false => Reply::ok(),
    });
}

/// `leadhook ARGS --config <config>` to its end, off the test's runtime
/// (which must go on serving the receiver meanwhile).
pub(crate) async fn run_command(config: &SidecarConfig, args: &[&str]) -> Finished {
    let config = config.to_toml();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        leadhook().run(&config, &args, &[])
    })
    .await
    .expect("the command ran")
}

/// Each lead's scores in arrival order at `path`, by email.
pub(crate) fn scores_by_lead(
    receiver: &Receiver,
    path: &str,
) -> std::collections::BTreeMap<String, Vec<i64>> {
    let mut leads = std::collections::BTreeMap::<String, Vec<i64>>::new();
    for request in receiver.requests_to(path) {
        let lead = data(&request);
        let email = lead["email"].as_str().expect("email").to_owned();
        leads
            .entry(email)
            .or_default()
            .push(lead["score"].as_i64().expect("score"));
    }
    leads
}

/// Attempts of webhook `hook` that did not succeed, of every kind.
pub(crate) async fn failed_attempts(sidecar: &leadhook_testkit::sidecar::Sidecar) -> f64 {
    let admin = sidecar.admin_url().await;
    let mut failed = 0.0;
    for result in ["http_error", "timeout", "connect_error"] {
        let labels = [("webhook", "hook"), ("result", result)];
        failed += metric(&admin, "leadhook_delivery_attempts_total", &labels).await;
    }
    failed
}
