//! The backfill runs, as `<schema>.backfills` and `<schema>.backfill_progress`
//! keep them: a run is filed by `leadhook backfill` (or by leadhook itself:
//! a new `backfill = true` webhook, a lost slot), and each shard's active
//! instance records its progress through it, batch by batch.

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::setup::objects::{backfill_progress_table, backfills_table};

/// A run as filed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    /// `None`: every webhook.
    pub(crate) webhooks: Option<Vec<String>>,
    /// A condition on the leads table, as SQL.
    pub(crate) where_sql: Option<String>,
    pub(crate) batch: i32,
    /// Rows per second, at most.
    pub(crate) rate: Option<i32>,
    pub(crate) shards: i32,
    /// Only this shard's leads (a lost slot's gap); `None`: every shard's.
    pub(crate) only_shard: Option<i32>,
    /// Why it was filed, in words (`requested`, `new webhook "x"`, ...).
    pub(crate) reason: String,
    /// The webhook a `backfill = true` run is for (filed once per name).
    pub(crate) auto_for: Option<String>,
}

/// A run one shard still has to do, with where it got to.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) id: i64,
    pub(crate) request: Request,
    /// The primary key (as text) of the last row of the last recorded batch.
    pub(crate) last_key: Option<Vec<String>>,
    pub(crate) rows_done: i64,
    pub(crate) rows_total: Option<i64>,
}

/// A run and every shard's progress, for `leadhook backfill status`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct RunStatus {
    pub(crate) id: i64,
    /// `pending`, `running`, `done`, `failed` or `cancelled`.
    pub(crate) state: String,
    pub(crate) reason: String,
    /// Empty: every webhook.
    pub(crate) webhooks: Vec<String>,
    pub(crate) where_sql: Option<String>,
    pub(crate) rows_done: i64,
    /// The leads to do, counted when the run started (`None` before).
    pub(crate) rows_total: Option<i64>,
    pub(crate) requested_at: String,
    pub(crate) updated_at: Option<String>,
    pub(crate) error: Option<String>,
}

/// Files a run; returns its id, or `None` for an `auto_for` run that was
/// filed before.
pub(crate) async fn file(
    sql: &Client,
    schema: &str,
    request: &Request,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let statement = format!(
        // NOT EXISTS first, so that a run filed before uses no id.
        "INSERT INTO {runs} (webhooks, where_sql, batch, rate, shards, reason, auto_for, shard)
         SELECT $1, $2, $3, $4, $5, $6, $7::text, $8
         WHERE $7 IS NULL OR NOT EXISTS (SELECT 1 FROM {runs} WHERE auto_for = $7)
         ON CONFLICT (auto_for) WHERE auto_for IS NOT NULL DO NOTHING
         RETURNING id",
        runs = backfills_table(schema)
    );
    let r = request;
    let params: [&(dyn ToSql + Sync); 8] = [
        &r.webhooks,
        &r.where_sql,
        &r.batch,
        &r.rate,
        &r.shards,
        &r.reason,
        &r.auto_for,
        &r.only_shard,
    ];
    let row = sql.query_opt(&statement, &params).await?;
    Ok(row.map(|r| r.get(0)))
}

/// The oldest run `shard` has not finished and nobody cancelled.
pub(crate) async fn next(
    sql: &Client,
    schema: &str,
    shard: i32,
) -> Result<Option<Run>, tokio_postgres::Error> {
    let query = format!(
        "SELECT b.id, b.webhooks, b.where_sql, b.batch, b.rate, b.shards, b.reason, b.auto_for,
                p.last_key, coalesce(p.rows_done, 0), p.rows_total, b.shard
         FROM {runs} b LEFT JOIN {progress} p ON p.run = b.id AND p.shard = $1
         WHERE b.cancelled_at IS NULL AND coalesce(p.state, 'pending') IN ('pending', 'running')
           AND (b.shard IS NULL OR b.shard = $1)
         ORDER BY b.id LIMIT 1",
        runs = backfills_table(schema),
        progress = backfill_progress_table(schema),
    );
    let Some(row) = sql.query_opt(&query, &[&shard]).await? else {
        return Ok(None);
    };
    Ok(Some(Run {
        id: row.get(0),
        request: Request {
            webhooks: row.get(1),
            where_sql: row.get(2),
            batch: row.get(3),
            rate: row.get(4),
            shards: row.get(5),
            reason: row.get(6),
            auto_for: row.get(7),
            only_shard: row.get(11),
        },
        last_key: row.get(8),
        rows_done: row.get(9),
        rows_total: row.get(10),
    }))
}

/// `shard` starts `run` (or goes on with it): `total` leads to do.
pub(crate) async fn start(
    sql: &Client,
    schema: &str,
    run: i64,
    shard: i32,
    total: i64,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "INSERT INTO {} (run, shard, state, rows_total) VALUES ($1, $2, 'running', $3)
         ON CONFLICT (run, shard) DO UPDATE SET rows_total = EXCLUDED.rows_total, updated_at = now()",
        backfill_progress_table(schema)
    );
    sql.execute(&statement, &[&run, &shard, &total]).await?;
    Ok(())
}

/// A batch is handled by every webhook: the run goes on after `last_key`.
pub(crate) async fn record(
    sql: &Client,
    schema: &str,
    run: i64,
    shard: i32,
    last_key: &[String],
    rows: i64,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "UPDATE {} SET last_key = $3, rows_done = rows_done + $4, updated_at = now()
         WHERE run = $1 AND shard = $2",
        backfill_progress_table(schema)
    );
    sql.execute(&statement, &[&run, &shard, &last_key, &rows])
        .await?;
    Ok(())
}

/// `shard` is done with `run`: `done`, or `failed` with `error`.
pub(crate) async fn finish(
    sql: &Client,
    schema: &str,
    run: i64,
    shard: i32,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "INSERT INTO {} AS p (run, shard, state, error, finished_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (run, shard) DO UPDATE SET state = EXCLUDED.state, error = EXCLUDED.error,
             finished_at = now(), updated_at = now()",
        backfill_progress_table(schema)
    );
    let state = if error.is_some() { "failed" } else { "done" };
    sql.execute(&statement, &[&run, &shard, &state, &error])
        .await?;
    Ok(())
}

/// Whether `run` was cancelled (the reader asks between batches).
pub(crate) async fn is_cancelled(
    sql: &Client,
    schema: &str,
    run: i64,
) -> Result<bool, tokio_postgres::Error> {
    let query = format!(
        "SELECT cancelled_at IS NOT NULL FROM {} WHERE id = $1",
        backfills_table(schema)
    );
    let row = sql.query_opt(&query, &[&run]).await?;
    Ok(row.is_none_or(|r| r.get(0)))
}

/// Cancels `run` unless it has ended; true when it was cancelled now.
pub(crate) async fn cancel(
    sql: &Client,
    schema: &str,
    run: i64,
) -> Result<bool, tokio_postgres::Error> {
    let statement = format!(
        "UPDATE {} SET cancelled_at = now() WHERE id = $1 AND cancelled_at IS NULL",
        backfills_table(schema)
    );
    Ok(sql.execute(&statement, &[&run]).await? == 1)
}

/// Every run (or only `run`), newest first, with its shards' progress summed.
pub(crate) async fn statuses(
    sql: &Client,
    schema: &str,
    run: Option<i64>,
) -> Result<Vec<RunStatus>, tokio_postgres::Error> {
    const UTC: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS"Z"'"#;
    let query = format!(
        "SELECT b.id, b.reason, coalesce(b.webhooks, '{{}}'), b.where_sql,
                coalesce(sum(p.rows_done), 0)::int8, sum(p.rows_total)::int8,
                to_char(b.requested_at AT TIME ZONE 'UTC', {UTC}),
                to_char(max(p.updated_at) AT TIME ZONE 'UTC', {UTC}),
                CASE WHEN b.cancelled_at IS NOT NULL AND count(*) FILTER (WHERE p.state = 'done') < {shards} THEN 'cancelled'
                     WHEN count(*) FILTER (WHERE p.state = 'failed') > 0 THEN 'failed'
                     WHEN count(*) FILTER (WHERE p.state = 'done') >= {shards} THEN 'done'
                     WHEN count(p.run) > 0 THEN 'running'
                     ELSE 'pending' END,
                string_agg(p.error, '; ')
         FROM {runs} b LEFT JOIN {progress} p ON p.run = b.id
         WHERE $1::int8 IS NULL OR b.id = $1
         GROUP BY b.id ORDER BY b.id DESC",
        runs = backfills_table(schema),
        progress = backfill_progress_table(schema),
        // How many shards do the run: one, for a single shard's gap.
        shards = "CASE WHEN b.shard IS NULL THEN b.shards ELSE 1 END",
    );
    let rows = sql.query(&query, &[&run]).await?;
    Ok(rows
        .iter()
        .map(|r| RunStatus {
            id: r.get(0),
            reason: r.get(1),
            webhooks: r.get(2),
            where_sql: r.get(3),
            rows_done: r.get(4),
            rows_total: r.get(5),
            requested_at: r.get(6),
            updated_at: r.get(7),
            state: r.get(8),
            error: r.get(9),
        })
        .collect())
}
