//! The replication slot over its life: created once (waiting, visibly, for
//! the transactions open at that moment), followed for months, and
//! sometimes lost: dropped by a DBA, absent on a promoted standby
//! (PostgreSQL 15 has no failover slots), gone with a restore.
//!
//! sometimes lost: invalidated by the server (it kept more WAL than
//! `max_slot_wal_keep_size`), dropped by a DBA, absent on a promoted
//! standby without failover slots, gone with a restore.
//!
//! A lost slot is a data-loss event for the changes committed while it was
//! missing: they were never decoded and never will be. It is logged as an
//! ERROR naming the slot and the WAL and time range that can no longer be
//! read, counted (`leadhook_slot_recreated_total`), and (with `on_slot_lost
//! = "recreate"`, the default) the slot is re-created at once, so that no
//! more is lost while a person reacts; with `[source] changed_at` the leads
//! changed in the gap are backfilled (`loss`). With `"stop"` nothing is
//! delivered and `/readyz` says why until a person acts.
//!
//! What leadhook knows of each slot is kept in `<schema>.slots`, so a slot
//! that vanished while the sidecar was stopped, or on the old primary of a
//! failover (the row reaches the standby with the rest of the WAL), is
//! noticed too. `monitor` watches the slot while it streams.

pub(crate) mod failover;
mod loss;
mod monitor;

pub(crate) use monitor::monitor;

use std::time::Duration;

use tokio_postgres::Client;

use crate::admin::Health;
use crate::checkpoint::SlotStart;
use crate::config::{Config, OnSlotLost};
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
    #[error(
        "slot invalidated: the server invalidated replication slot {0:?} (it retained more WAL than max_slot_wal_keep_size allows), so the changes since its last confirmed position can no longer be read; \
         with [source] on_slot_lost = \"stop\" (or create = false) leadhook does not re-create it: set on_slot_lost = \"recreate\", or drop it (SELECT pg_drop_replication_slot('<slot>')) and create it again (leadhook setup --apply), then backfill the gap (see the ERROR above)"
    )]
    Invalidated(String),
    #[error(
        "slot lost: replication slot {0:?} is gone (dropped, or the server was failed over or restored) and [source] on_slot_lost = \"stop\": \
         set on_slot_lost = \"recreate\", or create the slot (leadhook setup --apply), then backfill the gap (see the ERROR above)"
    )]
    Vanished(String),
    #[error("cannot make the replication slot a failover slot: {0}")]
    Failover(String),
}

impl SlotError {
    /// The slot is lost and leadhook was told not to re-create it.
    pub(crate) fn is_lost(&self) -> bool {
        matches!(self, SlotError::Invalidated(_) | SlotError::Vanished(_))
    }
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
    /// When the last confirmed transaction committed, UTC: where a gap
    /// begins in time (unknown for records older than the column).
    confirmed_commit_at: Option<String>,
}

/// The slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, Copy)]
struct SlotState {
    confirmed: Lsn,
    /// Invalidated: streaming from it fails, forever.
    invalidated: bool,
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
    let source = &config.source;
    let record = read_record(sql, schema, name).await?;
    let lost = match state(sql, name).await? {
        Some(slot) if !slot.invalidated => {
            if record.is_none() {
                write_record(sql, schema, name, server, slot.confirmed).await?;
            }
            return Ok(SlotStart {
                confirmed: slot.confirmed,
                created: false,
            });
        }
        Some(_) => {
            let error = SlotError::Invalidated(name.clone());
            health.not_ready(error.to_string());
            let gap = loss::Gap::new(record.as_ref(), streamed_before, None, server);
            if source.on_slot_lost == OnSlotLost::Stop || !source.create {
                gap.report(name, config, "was invalidated by the server");
                return Err(error);
            }
            drop_slot(sql, name).await?;
            "was invalidated by the server (it retained more WAL than max_slot_wal_keep_size allows)"
        }
        None if record.is_some() || streamed_before.is_some() => {
            if source.on_slot_lost == OnSlotLost::Stop {
                let gap = loss::Gap::new(record.as_ref(), streamed_before, None, server);
                gap.report(name, config, "has vanished");
                let error = SlotError::Vanished(name.clone());
                health.not_ready(error.to_string());
                return Err(error);
            }
            "has vanished: it was dropped, or the server was failed over or restored"
        }
        None => "",
    };
    if !source.create {
        return Err(SlotError::Missing(name.clone()));
    }
    if !lost.is_empty() {
        // Filed before the slot is made: once it exists, a crash would
        // leave nothing to tell that there was a gap.
        loss::Gap::new(record.as_ref(), streamed_before, None, server)
            .recover(sql, config)
            .await;
    }
    let failover = failover::wanted(config, failover::server_version(sql).await?);
    let created = create(sql, db, name, failover, health).await?;
    write_record(sql, schema, name, server, created).await?;
    if lost.is_empty() {
        tracing::info!(slot = %name, at = %created, "created replication slot: changes committed from here on are captured (earlier ones are not)");
    } else {
        metrics::counter!("leadhook_slot_recreated_total").increment(1);
        let gap = loss::Gap::new(record.as_ref(), streamed_before, Some(created), server);
        gap.report(name, config, lost);
    }
    Ok(SlotStart {
        confirmed: created,
        created: true,
    })
}

/// The slot's state, or `None` if there is no such slot. Versions differ
/// in how they say a slot is invalidated (`wal_status = 'lost'`; from 16
/// `conflicting`; from 17 `invalidation_reason`): read through `to_jsonb`
/// so the query runs on each.
async fn state(sql: &Client, name: &str) -> Result<Option<SlotState>, SlotError> {
    let row = sql
        .query_opt(
            "SELECT coalesce(confirmed_flush_lsn, restart_lsn, '0/0')::text,
                    coalesce(wal_status = 'lost', false)
                    OR coalesce((to_jsonb(s) ->> 'conflicting')::boolean, false)
                    OR (to_jsonb(s) ->> 'invalidation_reason') IS NOT NULL,
                    safe_wal_size
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&name],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    monitor::show_safe_wal(row.get(2));
    Ok(Some(SlotState {
        confirmed: parse_lsn(row.get(0))?,
        invalidated: row.get(1),
    }))
}

/// Drops an invalidated slot, to create it again; only while it is so,
/// lest another instance's slot, just created, be dropped.
async fn drop_slot(sql: &Client, name: &str) -> Result<(), SlotError> {
    match sql
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name = $1 AND wal_status = 'lost'",
            &[&name],
        )
        .await
    {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => Ok(()),
        other => other.map(drop).map_err(SlotError::from),
    }
}

fn parse_lsn(text: String) -> Result<Lsn, SlotError> {
    text.parse().map_err(|_| SlotError::BadLsn(text))
}

async fn read_record(sql: &Client, schema: &str, name: &str) -> Result<Option<Record>, SlotError> {
    const UTC: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    // To the microsecond: a backfill of a lost slot's gap starts there.
    const UTC_US: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;
    // A table from before `confirmed_commit_at` has no such column.
    let query = format!(
        "SELECT system_identifier, to_char(created_at AT TIME ZONE 'UTC', {UTC}),
                confirmed_lsn::text, to_char(confirmed_at AT TIME ZONE 'UTC', {UTC}),
                to_char((to_jsonb(s) ->> 'confirmed_commit_at')::timestamptz AT TIME ZONE 'UTC', {UTC_US})
         FROM {} s WHERE slot_name = $1",
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
        confirmed_commit_at: row.get(4),
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

/// Creates the slot; returns its consistent point. The server waits for
/// every transaction open anywhere in the cluster to end first; past
/// [`CREATION_WARNING`] that wait is logged with the sessions it waits for,
/// and `/readyz` says so.
async fn create(
    sql: &Client,
    db: &Database,
    name: &str,
    failover: bool,
    health: &Health,
) -> Result<Lsn, SlotError> {
    let pid: i32 = sql.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
    // Not temporary, no two-phase decoding; FAILOVER from PostgreSQL 17.
    let statement = match failover {
        true => {
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
        }
        false => "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
    };
    let creating = sql.query_one(statement, &params);
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
