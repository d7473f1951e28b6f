//! `leadhook backfill`, `backfill status` and `backfill cancel`: the
//! command line files runs; the active sidecar does them.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio_postgres::Client;

use super::reader::DEFAULT_BATCH;
use super::runs::{self, Request, RunStatus};
use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};

/// How often a followed run's progress is read.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Without a terminal, a progress line this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BackfillCommandError {
    #[error(transparent)]
    Connect(#[from] DatabaseError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error(
        "backfill needs replication mode: in notify mode, re-save the leads instead (e.g. UPDATE {0} SET <a column> = <itself> WHERE ...), which the capture trigger delivers"
    )]
    NotifyMode(String),
    #[error("no webhook named {0:?} in the config file or the registry table")]
    UnknownWebhook(String),
    #[error("--where is not a valid condition on {table}: {error}")]
    BadCondition { table: String, error: String },
    #[error("{0} must be at least 1")]
    NotPositive(&'static str),
    #[error("no backfill run {0}")]
    UnknownRun(i64),
    /// Only a run for one webhook's `backfill = true` can meet an earlier one.
    #[error("the server filed no run")]
    NotFiled,
    #[error(transparent)]
    Registry(#[from] crate::registry::table::TableError),
}

/// What `leadhook backfill` was asked for.
#[derive(Debug, Clone, Default)]
pub struct BackfillArgs {
    /// Empty: every webhook.
    pub webhooks: Vec<String>,
    pub where_sql: Option<String>,
    pub batch: Option<i32>,
    /// Rows per second, at most.
    pub rate: Option<i32>,
    /// File the run and return, without following it.
    pub detach: bool,
}

/// Files a run and, unless detached, follows it to its end (a progress
/// bar on a terminal). True when it is done, or filed and detached.
pub async fn file_and_follow(
    config: &Config,
    args: &BackfillArgs,
    out: &mut impl Write,
) -> Result<bool, BackfillCommandError> {
    if config.source.mode == SourceMode::Notify {
        return Err(BackfillCommandError::NotifyMode(config.table().quoted()));
    }
    for (value, what) in [(args.batch, "--batch"), (args.rate, "--rate")] {
        if value.is_some_and(|v| v < 1) {
            return Err(BackfillCommandError::NotPositive(what));
        }
    }
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    check_webhooks(&sql, config, &args.webhooks).await?;
    if let Some(condition) = &args.where_sql {
        check_condition(&sql, config, condition).await?;
    }
    let request = Request {
        webhooks: (!args.webhooks.is_empty()).then(|| args.webhooks.clone()),
        where_sql: args.where_sql.clone(),
        batch: args.batch.unwrap_or(DEFAULT_BATCH),
        rate: args.rate,
        shards: config.source.shard_of().1 as i32,
        only_shard: None,
        reason: "requested".into(),
        auto_for: None,
    };
    let schema = &config.database.schema;
    let id = runs::file(&sql, schema, &request)
        .await?
        .ok_or(BackfillCommandError::NotFiled)?;
    writeln!(
        out,
        "backfill run {id} filed: the active sidecar delivers it (`leadhook backfill status {id}`)"
    )?;
    if args.detach {
        return Ok(true);
    }
    follow(&sql, schema, id, out).await
}

/// Every webhook named must exist, in the file or the registry table.
async fn check_webhooks(
    sql: &Client,
    config: &Config,
    names: &[String],
) -> Result<(), BackfillCommandError> {
    if names.is_empty() {
        return Ok(());
    }
    let (rows, invalid) = crate::registry::read_rows(sql, config, None).await?;
    let known = |name: &String| {
        config.webhooks.iter().chain(&rows).any(|h| &h.name == name) || invalid.contains_key(name)
    };
    match names.iter().find(|n| !known(n)) {
        Some(unknown) => Err(BackfillCommandError::UnknownWebhook(unknown.clone())),
        None => Ok(()),
    }
}

/// The condition must be SQL the table can be read with (the server plans it).
async fn check_condition(
    sql: &Client,
    config: &Config,
    condition: &str,
) -> Result<(), BackfillCommandError> {
    let table = config.table().quoted();
    // Prepared, so that one statement is all it can be.
    let explain = format!("EXPLAIN SELECT 1 FROM (SELECT * FROM {table} WHERE ({condition})) l");
    match sql.prepare(&explain).await {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some() => Err(BackfillCommandError::BadCondition {
            table,
            error: crate::database::with_causes(&e),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Follows run `id` until it ends: true when it is done.
async fn follow(
    sql: &Client,
    schema: &str,
    id: i64,
    out: &mut impl Write,
) -> Result<bool, BackfillCommandError> {
    let bar = std::io::stdout().is_terminal().then(progress_bar);
    let mut last_line = tokio::time::Instant::now();
    loop {
        let Some(run) = runs::statuses(sql, schema, Some(id)).await?.pop() else {
            return Err(BackfillCommandError::UnknownRun(id));
        };
        if let Some(bar) = &bar {
            if let Some(total) = run.rows_total {
                bar.set_length(total.max(0) as u64);
            }
            bar.set_position(run.rows_done.max(0) as u64);
            bar.set_message(run.state.clone());
        } else if last_line.elapsed() >= LINE_EVERY {
            writeln!(out, "{}", progress_line(&run))?;
            last_line = tokio::time::Instant::now();
        }
        if !matches!(run.state.as_str(), "pending" | "running") {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            writeln!(out, "{}", progress_line(&run))?;
            return Ok(run.state == "done");
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:8} [{bar:40}] {pos}/{len} leads  {per_sec}  eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// `run 3 running: 1200 of 5000 leads` (and the error of a failed run).
fn progress_line(run: &RunStatus) -> String {
    let total = run
        .rows_total
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    let mut line = format!(
        "run {} {}: {} of {total} leads",
        run.id, run.state, run.rows_done
    );
    if let Some(error) = &run.error {
        line.push_str(&format!(" ({error})"));
    }
    line
}

/// `leadhook backfill status [RUN]`: every run (or one), newest first.
pub async fn status(
    config: &Config,
    run: Option<i64>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), BackfillCommandError> {
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    let statuses = runs::statuses(&sql, &config.database.schema, run).await?;
    if let (Some(id), true) = (run, statuses.is_empty()) {
        return Err(BackfillCommandError::UnknownRun(id));
    }
    if json {
        let text = serde_json::to_string_pretty(&statuses).map_err(std::io::Error::other)?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    if statuses.is_empty() {
        writeln!(out, "no backfill runs yet")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>4}  {:9}  {:>9}  {:>9}  {:20}  {:14}  reason",
        "run", "state", "done", "total", "requested", "webhooks"
    )?;
    for run in &statuses {
        let webhooks = match run.webhooks.is_empty() {
            true => "all".to_owned(),
            false => run.webhooks.join(","),
        };
        let total = run
            .rows_total
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        let mut reason = run.reason.clone();
        if let Some(condition) = &run.where_sql {
            reason.push_str(&format!(" where {condition}"));
        }
        if let Some(error) = &run.error {
            reason.push_str(&format!(" (error: {error})"));
        }
        writeln!(
            out,
            "{:>4}  {:9}  {:>9}  {:>9}  {:20}  {:14}  {reason}",
            run.id, run.state, run.rows_done, total, run.requested_at, webhooks
        )?;
    }
    Ok(())
}

/// `leadhook backfill cancel RUN`: the sidecar stops it after the batch in hand.
pub async fn cancel(
    config: &Config,
    run: i64,
    out: &mut impl Write,
) -> Result<(), BackfillCommandError> {
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    if runs::statuses(&sql, &config.database.schema, Some(run))
        .await?
        .is_empty()
    {
        return Err(BackfillCommandError::UnknownRun(run));
    }
    match runs::cancel(&sql, &config.database.schema, run).await? {
        true => writeln!(
            out,
            "run {run} cancelled: the sidecar stops it after the batch in hand"
        )?,
        false => writeln!(out, "run {run} was already cancelled")?,
    }
    Ok(())
}
