//! The replication slot over its life: created once (waiting, visibly, for
//! the transactions open at that moment), followed for months, and
//! sometimes lost: dropped by a DBA, absent on a promoted standby
//! (PostgreSQL 15 has no failover slots), gone with a restore.
//!
//! A lost slot is a data-loss event for the changes committed while it was
//! missing: they were never decoded and never will be. It is logged as an
//! ERROR naming the slot and the WAL range that can no longer be read,
//! counted (`leadhook_slot_recreated_total`), and the slot is re-created at
//! once, so that no more is lost while a person reacts.
//!
//! What leadhook knows of each slot is kept in `<schema>.slots`, so a slot
//! that vanished while the sidecar was stopped, or on the old primary of a
//! failover (the row reaches the standby with the rest of the WAL), is
//! noticed too.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::admin::Health;
use crate::checkpoint::{Checkpoint, SlotStart};
use crate::config::Config;
use crate::database::{Database, DatabaseError};
use crate::lsn::Lsn;
use crate::setup::objects::slots_table as table;

use crate::history::ServerIdentity;

/// Slot creation waiting longer than this is reported, with what it waits for.
const CREATION_WARNING: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum SlotError {
    #[error("replication slot: {}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(
        "replication slot {0:?} does not exist and source.create = false: create it (sql/setup.sql) or set source.create = true"
    )]
    Missing(String),
    #[error("the server answered {0:?} where a WAL position was expected")]
    BadLsn(String),
}

/// What `<schema>.slots` says of a slot.
#[derive(Debug)]
struct Record {
    system_identifier: String,
    /// When leadhook created the slot (or first saw it), UTC.
    created_at: String,
    confirmed_lsn: Lsn,
    /// When `confirmed_lsn` was recorded, UTC.
    confirmed_at: String,
}

/// Makes sure the configured slot exists, re-creating a lost one, and says
/// where it resumes. `streamed_before` is the last position this process
/// confirmed to a slot of that name, if it streamed from one.
pub(crate) async fn open(
    sql: &Client,
    db: &Database,
    config: &Config,
    server: &ServerIdentity,
    streamed_before: Option<Lsn>,
    health: &Health,
) -> Result<SlotStart, SlotError> {
    let (name, schema) = (&config.source.slot, &config.database.schema);
    let record = read_record(sql, schema, name).await?;
    if let Some(confirmed) = confirmed_flush(sql, name).await? {
        if record.is_none() {
            write_record(sql, schema, name, server, confirmed).await?;
        }
        return Ok(SlotStart {
            confirmed,
            created: false,
        });
    }
    if !config.source.create {
        return Err(SlotError::Missing(name.clone()));
    }
    let lost = record.is_some() || streamed_before.is_some();
    let created = create(sql, db, name, health).await?;
    write_record(sql, schema, name, server, created).await?;
    if lost {
        metrics::counter!("leadhook_slot_recreated_total").increment(1);
        report_loss(name, record.as_ref(), streamed_before, created, server);
    } else {
        tracing::info!(slot = %name, at = %created, "created replication slot: changes committed from here on are captured (earlier ones are not)");
    }
    Ok(SlotStart {
        confirmed: created,
        created: true,
    })
}

/// The ERROR a person must act on: what was lost, and how to recover it.
fn report_loss(
    name: &str,
    record: Option<&Record>,
    streamed_before: Option<Lsn>,
    created: Lsn,
    server: &ServerIdentity,
) {
    let from = record
        .map(|r| r.confirmed_lsn)
        .max(streamed_before)
        .unwrap_or(Lsn::ZERO);
    let since = record.map_or("unknown", |r| r.confirmed_at.as_str());
    let known_since = record.map_or("unknown", |r| r.created_at.as_str());
    let elsewhere = record
        .filter(|r| r.system_identifier != server.system_id.to_string())
        .map(|r| {
            format!(
                " (it was recorded on database system {}, this is {})",
                r.system_identifier, server.system_id
            )
        })
        .unwrap_or_default();
    tracing::error!(
        slot = %name,
        lost_from = %from,
        lost_to = %created,
        last_confirmed_at = %since,
        "DATA LOSS: replication slot {name:?} (known since {known_since}) has vanished{elsewhere}: it was dropped, or the server was failed over or restored. \
         Changes committed between WAL {from} and {created} (from {since} until now) were never decoded and will not be delivered. \
         The slot was re-created at {created} so that nothing more is lost; deliver the missed leads again by re-saving (or backfilling) the leads changed since {since}"
    );
}

/// The slot's `confirmed_flush_lsn`, or `None` if there is no such slot.
async fn confirmed_flush(sql: &Client, name: &str) -> Result<Option<Lsn>, SlotError> {
    let row = sql
        .query_opt(
            "SELECT coalesce(confirmed_flush_lsn, restart_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await?;
    row.map(|r| parse_lsn(r.get(0))).transpose()
}

fn parse_lsn(text: String) -> Result<Lsn, SlotError> {
    text.parse().map_err(|_| SlotError::BadLsn(text))
}

async fn read_record(sql: &Client, schema: &str, name: &str) -> Result<Option<Record>, SlotError> {
    const UTC: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let query = format!(
        "SELECT system_identifier, to_char(created_at AT TIME ZONE 'UTC', {UTC}),
                confirmed_lsn::text, to_char(confirmed_at AT TIME ZONE 'UTC', {UTC})
         FROM {} WHERE slot_name = $1",
        table(schema)
    );
    let Some(row) = sql.query_opt(&query, &[&name]).await? else {
        return Ok(None);
    };
    Ok(Some(Record {
        system_identifier: row.get(0),
        created_at: row.get(1),
        confirmed_lsn: parse_lsn(row.get(2))?,
        confirmed_at: row.get(3),
    }))
}

/// Records a slot leadhook created, or saw for the first time, at `at`.
async fn write_record(
    sql: &Client,
    schema: &str,
    name: &str,
    server: &ServerIdentity,
    at: Lsn,
) -> Result<(), SlotError> {
    let statement = format!(
        "INSERT INTO {} (slot_name, system_identifier, created_at, created_lsn, confirmed_lsn, confirmed_at)
         VALUES ($1, $2, now(), $3::text::pg_lsn, $3::text::pg_lsn, now())
         ON CONFLICT (slot_name) DO UPDATE SET system_identifier = EXCLUDED.system_identifier,
            created_at = EXCLUDED.created_at, created_lsn = EXCLUDED.created_lsn,
            confirmed_lsn = EXCLUDED.confirmed_lsn, confirmed_at = EXCLUDED.confirmed_at",
        table(schema)
    );
    let (system, at) = (server.system_id.to_string(), at.to_string());
    sql.execute(&statement, &[&name, &system, &at]).await?;
    Ok(())
}

/// Records that everything before `lsn` was handled: where a loss of the
/// slot would start.
async fn record_confirmed(
    sql: &Client,
    schema: &str,
    name: &str,
    lsn: Lsn,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "UPDATE {} SET confirmed_lsn = $2::text::pg_lsn, confirmed_at = now()
         WHERE slot_name = $1 AND confirmed_lsn < $2::text::pg_lsn",
        table(schema)
    );
    sql.execute(&statement, &[&name, &lsn.to_string()]).await?;
    Ok(())
}

/// Creates the slot; returns its consistent point. The server waits for
/// every transaction open anywhere in the cluster to end first; past
/// [`CREATION_WARNING`] that wait is logged with the sessions it waits for,
/// and `/readyz` says so.
async fn create(
    sql: &Client,
    db: &Database,
    name: &str,
    health: &Health,
) -> Result<Lsn, SlotError> {
    let pid: i32 = sql.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
    let creating = sql.query_one(
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
        &params,
    );
    tokio::pin!(creating);
    let started = tokio::time::Instant::now();
    let mut warn = tokio::time::interval_at(started + CREATION_WARNING, CREATION_WARNING);
    loop {
        tokio::select! {
            row = &mut creating => return parse_lsn(row?.get(0)),
            _ = warn.tick() => {
                let blockers = blocking_sessions(db, pid).await.unwrap_or_else(|e| format!("(cannot list them: {e})"));
                tracing::warn!(slot = %name, waited = ?started.elapsed(), blocking = %blockers,
                    "creating the replication slot is waiting for transactions that were open when it began; it completes when they end (commit or roll them back, or end those sessions)");
                health.not_ready(format!("creating replication slot {name:?}: waiting for open transactions to end: {blockers}"));
            }
        }
    }
}

/// The sessions whose transactions began before the slot creation in
/// session `creator`: what it waits for.
async fn blocking_sessions(db: &Database, creator: i32) -> Result<String, SlotError> {
    let sql = db.sql().await?;
    let rows = sql
        .query(
            "SELECT format('pid %s (%s, %s, transaction open since %s)', pid, coalesce(state, '?'),
                           coalesce(datname::text, '?'), coalesce(xact_start::text, '?'))
             FROM pg_stat_activity
             WHERE pid <> $1 AND backend_type = 'client backend' AND xact_start IS NOT NULL
               AND xact_start <= (SELECT xact_start FROM pg_stat_activity WHERE pid = $1)
             ORDER BY xact_start LIMIT 10",
            &[&creator],
        )
        .await?;
    let sessions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(if sessions.is_empty() {
        "none visible to this role (pg_read_all_stats shows every session)".to_owned()
    } else {
        sessions.join("; ")
    })
}

/// Runs beside a session: every heartbeat, sets
/// `leadhook_replication_lag_bytes` (the server's WAL position minus the
/// confirmed one, asked over SQL so it stays right while the stream is
/// paused by backpressure), reads the slot's `safe_wal_size` (which caps
/// `max_retained_wal`), and records in `<schema>.slots` how far the
/// handled lead transactions reach. Keepalives alone never cause a write,
/// so an idle database stays idle.
pub(crate) async fn monitor(
    sql: Arc<Client>,
    checkpoint: Arc<Checkpoint>,
    every: Duration,
    schema: String,
    slot: String,
) {
    let gauge = metrics::gauge!("leadhook_replication_lag_bytes");
    let mut recorded = checkpoint.confirmed_commit();
    loop {
        match sql
            .query_one(
                "SELECT pg_current_wal_lsn()::text,
                        (SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
        {
            Ok(row) => {
                if let Ok(current) = row.get::<_, String>(0).parse::<Lsn>() {
                    gauge.set(current.0.saturating_sub(checkpoint.confirmed().0) as f64);
                }
                let safe: Option<i64> = row.get(1);
                checkpoint.set_safe_wal(safe.map(|b| u64::try_from(b).unwrap_or(0)));
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the server's WAL position"),
        }
        let commit = checkpoint.confirmed_commit();
        if commit > recorded {
            match record_confirmed(&sql, &schema, &slot, commit).await {
                Ok(()) => recorded = commit,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot record the slot's confirmed position")
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}
