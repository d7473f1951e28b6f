//! Watching the slot while it streams: how much WAL it may still retain
//! before the server invalidates it, and where a loss would begin.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::table;
use crate::admin::Health;
use crate::checkpoint::Checkpoint;
use crate::lsn::Lsn;

/// Below this share of `max_slot_wal_keep_size` left, a WARN says so.
const LOW_SAFE_WAL: f64 = 0.2;
/// While it stays low, the WARN is repeated this often.
const WARN_AGAIN: Duration = Duration::from_secs(300);

/// Sets `leadhook_slot_safe_wal_bytes` (`None`: the server does not limit
/// what a slot retains, so there is nothing to show).
pub(super) fn show_safe_wal(bytes: Option<i64>) {
    if let Some(bytes) = bytes {
        metrics::gauge!("leadhook_slot_safe_wal_bytes").set(bytes as f64);
    }
}

/// Runs beside a session: every heartbeat, sets
/// `leadhook_replication_lag_bytes` (the server's WAL position minus the
/// confirmed one, asked over SQL so it stays right while the stream is
/// paused by backpressure), reads the slot's `wal_status` and
/// `safe_wal_size` (which caps `max_retained_wal`, and warns when little is
/// left), and records in `<schema>.slots` how far the handled lead
/// transactions reach, and when they committed. Keepalives alone never
/// cause a write, so an idle database stays idle.
pub(crate) async fn monitor(
    sql: Arc<Client>,
    checkpoint: Arc<Checkpoint>,
    every: Duration,
    schema: String,
    slot: String,
    health: Arc<Health>,
) {
    let keep = keep_size(&sql).await;
    let mut recorded = checkpoint.confirmed_commit();
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        match sql
            .query_one(
                "SELECT pg_current_wal_lsn()::text,
                        (SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $1),
                        (SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
        {
            Ok(row) => {
                if let Ok(current) = row.get::<_, String>(0).parse::<Lsn>() {
                    health.show_lag(current.0.saturating_sub(checkpoint.confirmed().0));
                }
                let safe: Option<i64> = row.get(1);
                show_safe_wal(safe);
                checkpoint.set_safe_wal(safe.map(|b| u64::try_from(b).unwrap_or(0)));
                if row.get::<_, Option<String>>(2).as_deref() == Some("lost") {
                    health.not_ready(format!("slot invalidated: the server invalidated replication slot {slot:?} (it retained more WAL than max_slot_wal_keep_size)"));
                }
                warn_when_low(&slot, safe, keep, &mut warned);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the server's WAL position"),
        }
        let (commit, time) = checkpoint.confirmed_commit_at();
        if commit > recorded {
            match record_confirmed(&sql, &schema, &slot, commit, time).await {
                Ok(()) => recorded = commit,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot record the slot's confirmed position")
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// `max_slot_wal_keep_size` in bytes; `None` when unlimited (-1).
async fn keep_size(sql: &Client) -> Option<i64> {
    let row = sql
        .query_one(
            "SELECT setting::int8 * 1024 * 1024 FROM pg_settings WHERE name = 'max_slot_wal_keep_size'",
            &[],
        )
        .await
        .ok()?;
    let bytes: i64 = row.get(0);
    (bytes >= 0).then_some(bytes)
}

/// A WARN when less than a fifth of `max_slot_wal_keep_size` is left:
/// when it falls below, and every [`WARN_AGAIN`] while it stays there.
fn warn_when_low(
    slot: &str,
    safe: Option<i64>,
    keep: Option<i64>,
    warned: &mut Option<tokio::time::Instant>,
) {
    let (Some(safe), Some(keep)) = (safe, keep.filter(|k| *k > 0)) else {
        return;
    };
    if (safe as f64) >= keep as f64 * LOW_SAFE_WAL {
        *warned = None;
        return;
    }
    if warned.is_some_and(|at| at.elapsed() < WARN_AGAIN) {
        return;
    }
    *warned = Some(tokio::time::Instant::now());
    tracing::warn!(slot = %slot, safe_wal_bytes = safe, max_slot_wal_keep_size = keep,
        "replication slot {slot:?} is close to being invalidated: {safe} bytes of WAL left before max_slot_wal_keep_size ({keep}) is exceeded; \
         a webhook holds the slot back (see leadhook webhooks list), or the sidecar cannot keep up");
}

/// Records that everything before `lsn` was handled, and when that
/// transaction committed (`commit_time`, µs since 2000-01-01 UTC; 0 when
/// not known): where a loss of the slot would start. A table from before
/// `confirmed_commit_at` is written without it.
async fn record_confirmed(
    sql: &Client,
    schema: &str,
    name: &str,
    lsn: Lsn,
    commit_time: i64,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "UPDATE {} SET confirmed_lsn = $2::text::pg_lsn, confirmed_at = now(),
            confirmed_commit_at = CASE WHEN $3::int8 = 0 THEN confirmed_commit_at
                ELSE timestamptz '2000-01-01 00:00:00+00' + $3::int8 * interval '1 microsecond' END
         WHERE slot_name = $1 AND confirmed_lsn < $2::text::pg_lsn",
        table(schema)
    );
    let lsn = lsn.to_string();
    match sql.execute(&statement, &[&name, &lsn, &commit_time]).await {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) => {
            let statement = format!(
                "UPDATE {} SET confirmed_lsn = $2::text::pg_lsn, confirmed_at = now()
                 WHERE slot_name = $1 AND confirmed_lsn < $2::text::pg_lsn",
                table(schema)
            );
            sql.execute(&statement, &[&name, &lsn]).await.map(drop)
        }
        other => other.map(drop),
    }
}
