//! Failover slots (PostgreSQL 17 and later): whether the slot is to be
//! one, and what a standby needs to keep a copy of it that a promotion
//! can resume from. `source::slot` creates and alters the slot.

use tokio_postgres::Client;

use super::Inspection;
use crate::config::Config;

/// The first server version with failover slots (`server_version_num`).
const FAILOVER_SINCE: i32 = 170_000;

/// Whether the slot is to be a failover slot: `[source] failover`, by
/// default on wherever the server has them.
pub(crate) fn wanted(config: &Config, server_version: i32) -> bool {
    server_version >= FAILOVER_SINCE && config.source.failover.unwrap_or(true)
}

pub(crate) async fn server_version(sql: &Client) -> Result<i32, tokio_postgres::Error> {
    let row = sql
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await?;
    Ok(row.get(0))
}

/// What `check` says of failover: the standby's settings on 17 and later,
/// what a failover costs before.
pub(super) async fn check(
    sql: &Client,
    config: &Config,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let version = server_version(sql).await?;
    let slot = &config.source.slot;
    if version < FAILOVER_SINCE {
        match config.source.failover {
            Some(true) => report.problems.push(format!(
                "source.failover = true: failover slots need PostgreSQL 17 or later (this server is {}); remove the key",
                version / 10_000
            )),
            _ => report.warnings.push(
                "no failover slots before PostgreSQL 17: after a failover the slot is lost and re-created (the gap is reported; see [source] on_slot_lost and changed_at)".into(),
            ),
        }
        return Ok(());
    }
    if !wanted(config, version) {
        report.warnings.push(format!(
            "source.failover = false: after a failover slot {slot:?} is lost and re-created (the gap is reported)"
        ));
        return Ok(());
    }
    report.found.push(format!(
        "slot {slot:?} is a failover slot: a standby keeps a copy it resumes from after promotion when it has \
         sync_replication_slots = on, hot_standby_feedback = on, primary_slot_name = '<its physical slot>' and dbname=... in primary_conninfo"
    ));
    let row = sql
        .query_one(
            "SELECT current_setting('synchronized_standby_slots'),
                    (SELECT coalesce((to_jsonb(s) ->> 'failover')::boolean, false)
                     FROM pg_replication_slots s WHERE slot_name = $1)",
            &[slot],
        )
        .await?;
    let (standby_slots, is_failover): (String, Option<bool>) = (row.get(0), row.get(1));
    if standby_slots.is_empty() {
        report.warnings.push(
            "synchronized_standby_slots is empty: set it to the standbys' physical slots (ALTER SYSTEM SET synchronized_standby_slots = '<slot>'; SELECT pg_reload_conf();) so the sidecar is never sent changes a standby has not received, which a failover would lose".into(),
        );
    } else {
        report.found.push(format!(
            "synchronized_standby_slots = {standby_slots:?}: changes reach the sidecar only once those standbys have them"
        ));
    }
    if is_failover == Some(false) {
        report.found.push(format!(
            "slot {slot:?} is not a failover slot yet: the sidecar makes it one when it starts"
        ));
    }
    Ok(())
}
