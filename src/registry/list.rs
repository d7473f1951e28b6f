//! `leadhook webhooks list`: every webhook (file and table), whether it is
//! enabled or paused, its state as the running sidecar last reported it,
//! its last success and failure, and what it holds (in flight, spooled,
//! dead letters). Reads only the database, so it works from any host that
//! can reach it, and says when no sidecar has refreshed the status lately.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde::Serialize;
use tokio_postgres::Client;

use super::status::STALE_AFTER;
use super::{pauses, read_rows, table};
use crate::config::Config;
use crate::database::{Database, DatabaseError};
use crate::setup::objects::{dead_letter_table, spool_table, status_table};

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Connect(#[from] DatabaseError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Table(#[from] table::TableError),
    #[error("writing the list: {0}")]
    Io(#[from] io::Error),
}

/// The whole answer, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Listing {
    /// True when no running sidecar refreshed the status within 15 s.
    stale: bool,
    /// Seconds since the last refresh; null if there never was one.
    refreshed_seconds_ago: Option<f64>,
    webhooks: Vec<Entry>,
}

/// One webhook.
#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    origin: String,
    enabled: bool,
    paused: bool,
    /// healthy, failing, open, spooling, paused, disabled, invalid or unknown.
    state: String,
    last_success_at: Option<String>,
    last_failure_at: Option<String>,
    last_failure: Option<String>,
    in_flight: i32,
    spooled: i64,
    dead_letters: i64,
    /// Why an invalid registry row is skipped.
    problem: Option<String>,
}

/// Prints the list (a table, or JSON with `json`).
pub async fn list(config: &Config, json: bool, out: &mut impl Write) -> Result<(), ListError> {
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    let listing = read(&sql, config).await?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &listing).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        print_table(&listing, out)?;
    }
    Ok(())
}

async fn read(sql: &Client, config: &Config) -> Result<Listing, ListError> {
    let schema = &config.database.schema;
    let status = sql
        .query(
            &format!(
                "SELECT name, origin, enabled, paused, state, {s}, {f}, last_failure, in_flight, problem,
                        extract(epoch FROM now() - updated_at)::float8
                 FROM {} ORDER BY name",
                status_table(schema),
                s = iso("last_success_at"),
                f = iso("last_failure_at"),
            ),
            &[],
        )
        .await
        .or_else(missing_is_empty)?;
    let paused = pauses::read(sql, schema).await?;
    let spooled = counts(sql, &spool_table(schema)).await?;
    let dead = counts(sql, &dead_letter_table(schema)).await?;
    let age = status.iter().map(|r| r.get::<_, f64>(10)).reduce(f64::min);
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for row in &status {
        let name: String = row.get(0);
        entries.insert(
            name.clone(),
            Entry {
                origin: row.get(1),
                enabled: row.get(2),
                paused: paused.contains(&name),
                state: row.get(4),
                last_success_at: row.get(5),
                last_failure_at: row.get(6),
                last_failure: row.get(7),
                in_flight: row.get(8),
                spooled: 0,
                dead_letters: 0,
                problem: row.get(9),
                name,
            },
        );
    }
    // Webhooks configured but not (yet) in the status: no sidecar reported them.
    for (name, origin, enabled, problem) in configured(sql, config).await? {
        entries.entry(name.clone()).or_insert_with(|| Entry {
            paused: paused.contains(&name),
            state: if problem.is_some() {
                "invalid"
            } else {
                "unknown"
            }
            .to_owned(),
            name,
            origin: origin.to_owned(),
            enabled,
            last_success_at: None,
            last_failure_at: None,
            last_failure: None,
            in_flight: 0,
            spooled: 0,
            dead_letters: 0,
            problem,
        });
    }
    for entry in entries.values_mut() {
        entry.spooled = spooled.get(&entry.name).copied().unwrap_or(0);
        entry.dead_letters = dead.get(&entry.name).copied().unwrap_or(0);
    }
    Ok(Listing {
        stale: age.is_none_or(|age| age > STALE_AFTER.as_secs_f64()),
        refreshed_seconds_ago: age,
        webhooks: entries.into_values().collect(),
    })
}

/// The webhooks the config file and the registry table name: (name,
/// origin, enabled, why it is invalid). `${VAR}` is judged by this
/// process's environment, which may not be the sidecar's: only used for
/// webhooks the status does not know.
async fn configured(
    sql: &Client,
    config: &Config,
) -> Result<Vec<(String, &'static str, bool, Option<String>)>, ListError> {
    let mut found: Vec<_> = config
        .webhooks
        .iter()
        .map(|h| (h.name.clone(), "file", h.enabled, None))
        .collect();
    let (valid, invalid) = read_rows(sql, config, None).await?;
    found.extend(
        valid
            .into_iter()
            .map(|h| (h.name, "table", h.enabled, None)),
    );
    found.extend(
        invalid
            .into_iter()
            .map(|(name, problems)| (name, "table", false, Some(problems.join("; ")))),
    );
    Ok(found)
}

/// Rows per webhook in `table` (none if it does not exist).
pub(crate) async fn counts(sql: &Client, table: &str) -> Result<HashMap<String, i64>, ListError> {
    let rows = sql
        .query(
            // Every shard's spooled rows count for the webhook (see `SpoolStore::for_shard`).
            &format!(
                "SELECT regexp_replace(webhook, ' \\[shard [0-9]+/[0-9]+\\]$', '') AS w, count(*)::int8
                 FROM {table} GROUP BY w"
            ),
            &[],
        )
        .await
        .or_else(missing_is_empty)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn iso(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
}

fn missing_is_empty<T: Default>(e: tokio_postgres::Error) -> Result<T, tokio_postgres::Error> {
    match e.code() {
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(T::default()),
        _ => Err(e),
    }
}

fn print_table(listing: &Listing, out: &mut impl Write) -> io::Result<()> {
    match listing.refreshed_seconds_ago {
        None => writeln!(
            out,
            "no sidecar has reported a status yet (is one running?): states are unknown"
        )?,
        Some(age) if listing.stale => writeln!(
            out,
            "stale: the status was last refreshed {age:.0} s ago; no sidecar seems to be running, so the states below are the last it reported"
        )?,
        Some(age) => writeln!(
            out,
            "status refreshed {age:.0} s ago by the running sidecar"
        )?,
    }
    let header = [
        "NAME",
        "ORIGIN",
        "ENABLED",
        "STATE",
        "LAST SUCCESS",
        "LAST FAILURE",
        "IN FLIGHT",
        "SPOOLED",
        "DEAD LETTERS",
    ];
    let rows: Vec<Vec<String>> = listing
        .webhooks
        .iter()
        .map(|e| {
            let failure = match (&e.last_failure_at, &e.last_failure) {
                (Some(at), Some(what)) => format!("{at} {what}"),
                _ => "-".to_owned(),
            };
            vec![
                e.name.clone(),
                e.origin.clone(),
                match (e.enabled, e.paused) {
                    (_, true) => "paused".to_owned(),
                    (true, false) => "enabled".to_owned(),
                    (false, false) => "disabled".to_owned(),
                },
                e.state.clone(),
                e.last_success_at.clone().unwrap_or_else(|| "-".into()),
                failure,
                e.in_flight.to_string(),
                e.spooled.to_string(),
                e.dead_letters.to_string(),
            ]
        })
        .collect();
    crate::dead_letter::write_table(out, &header, &rows)?;
    for e in listing.webhooks.iter().filter(|e| e.problem.is_some()) {
        writeln!(
            out,
            "invalid  {}: {}",
            e.name,
            e.problem.as_deref().unwrap_or_default()
        )?;
    }
    Ok(())
}
