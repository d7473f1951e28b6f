//! `<schema>.webhook_status`: what the running sidecar reports of each
//! webhook, refreshed every few seconds, so `leadhook webhooks list` works
//! from any host that can reach the database. A refresh replaces the whole
//! set in one transaction; `updated_at` tells a reader whether a sidecar
//! is still writing it.

use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use crate::setup::objects::status_table as table;

/// How often the running sidecar refreshes the table.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// A status older than this was not written by a running sidecar.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(15);

/// One webhook as the sidecar sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusRow {
    pub(crate) name: String,
    pub(crate) origin: &'static str,
    pub(crate) enabled: bool,
    pub(crate) paused: bool,
    /// healthy, failing, open, spooling, paused, disabled or invalid.
    pub(crate) state: &'static str,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) last_failure: Option<(SystemTime, String)>,
    pub(crate) in_flight: i32,
    /// Why an invalid registry row is skipped.
    pub(crate) problem: Option<String>,
}

/// Replaces the table's rows with `rows`, in one transaction.
pub(crate) async fn refresh(
    sql: &mut Client,
    schema: &str,
    rows: &[StatusRow],
) -> Result<(), tokio_postgres::Error> {
    let t = table(schema);
    let column = |f: fn(&StatusRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let names = column(|r| r.name.clone());
    let origins = column(|r| r.origin.to_owned());
    let states = column(|r| r.state.to_owned());
    let enabled: Vec<bool> = rows.iter().map(|r| r.enabled).collect();
    let paused: Vec<bool> = rows.iter().map(|r| r.paused).collect();
    let successes: Vec<Option<SystemTime>> = rows.iter().map(|r| r.last_success).collect();
    let failed_at: Vec<Option<SystemTime>> = rows
        .iter()
        .map(|r| r.last_failure.as_ref().map(|f| f.0))
        .collect();
    let failures: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.last_failure.as_ref().map(|f| f.1.as_str()))
        .collect();
    let in_flight: Vec<i32> = rows.iter().map(|r| r.in_flight).collect();
    let problems: Vec<Option<&str>> = rows.iter().map(|r| r.problem.as_deref()).collect();
    let tx = sql.transaction().await?;
    tx.execute(&format!("DELETE FROM {t} WHERE name <> ALL($1)"), &[&names])
        .await?;
    tx.execute(
        &format!(
            "INSERT INTO {t} (name, origin, enabled, paused, state, last_success_at, last_failure_at, last_failure, in_flight, problem, updated_at)
             SELECT *, now() FROM unnest($1::text[], $2::text[], $3::bool[], $4::bool[], $5::text[],
                                         $6::timestamptz[], $7::timestamptz[], $8::text[], $9::int4[], $10::text[])
             ON CONFLICT (name) DO UPDATE SET origin = EXCLUDED.origin, enabled = EXCLUDED.enabled,
                 paused = EXCLUDED.paused, state = EXCLUDED.state, last_success_at = EXCLUDED.last_success_at,
                 last_failure_at = EXCLUDED.last_failure_at, last_failure = EXCLUDED.last_failure,
                 in_flight = EXCLUDED.in_flight, problem = EXCLUDED.problem, updated_at = EXCLUDED.updated_at"
        ),
        &[
            &names, &origins, &enabled, &paused, &states, &successes, &failed_at, &failures,
            &in_flight, &problems,
        ],
    )
    .await?;
    tx.commit().await
}
