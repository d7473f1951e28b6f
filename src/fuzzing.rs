//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz), compiled only
//! with the `fuzzing` feature: each takes bytes as they come from outside
//! the process and runs the code that meets them first. A panic, a hang, or
//! an allocation past the fuzzer's `-malloc_limit_mb` is a bug; errors are
//! the expected answer to garbage and are dropped.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::config::Config;
use crate::registry::table::RawRow;

/// The frame limit the stream target runs with: far below the default,
/// so a header announcing more must be refused, not reserved.
const FRAME_LIMIT: usize = 1024 * 1024;

/// One XLogData payload, as pgoutput sends it.
pub fn pgoutput(data: &[u8]) {
    let _ = crate::source::pgoutput::decode(Bytes::copy_from_slice(data));
}

/// Bytes as they arrive on a replication connection: frames, their
/// CopyData, XLogData and keepalives, and the pgoutput inside.
pub fn replication_stream(data: &[u8]) {
    crate::source::replication::take_stream(data, FRAME_LIMIT);
}

/// A `sidecar.toml`, and `${VAR}` expansion of its text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml(text);
    let _ = crate::config::expand::expand(text, &env);
    let _ = crate::config::expand::expand_prefixed(text, "LEADHOOK_WEBHOOK_", &env);
}

/// A row of the webhook table: its columns, NUL-separated (name, url,
/// method, headers JSON, secret, filter JSON), checked as the registry
/// checks an untrusted row.
pub fn registry_row(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut columns = text.split('\0').map(str::to_owned);
    let mut next = || columns.next().unwrap_or_default();
    let raw = RawRow {
        name: next(),
        url: next(),
        method: next(),
        headers: next(),
        enabled: data.first().is_some_and(|b| b & 1 == 1),
        secret: Some(next()).filter(|s| !s.is_empty()),
        filter: Some(next()).filter(|s| !s.is_empty()),
        backfill: false,
    };
    // As the registry checks rows: parsed, checked as a webhook, the URL's
    // literal address judged by the guard.
    let _ = crate::registry::check_rows(registry_config(), &[raw], None, &env);
}

/// An outbox row's `lead` JSON, as the notify trigger captured it.
pub fn outbox_row(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::lead::payload::captured_payload(text);
    }
}

/// What a webhook endpoint and the server answer: HTTP/1.1 answers
/// (their heads parsed, their bodies framed and skipped, arriving in
/// pieces whose size the first byte picks), a `Retry-After` value, and a
/// WAL position.
pub fn answers(data: &[u8]) {
    if let Some((&piece, rest)) = data.split_first() {
        crate::delivery::transport::read_answers(rest, usize::from(piece));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = crate::delivery::retry::parse_retry_after(text, now);
    let _ = text.parse::<crate::lsn::Lsn>();
}

/// A few variables exist, as in a real environment.
fn env(name: &str) -> Option<String> {
    name.starts_with("LEADHOOK_WEBHOOK_")
        .then(|| format!("value-of-{name}"))
}

fn registry_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_toml(
            "[database]\nurl = \"postgres://u@localhost/db\"\n[registry]\ntable = \"public.webhooks\"\n",
        )
        .unwrap_or_else(|e| panic!("the fuzz target's registry config: {e}"))
    })
}
