//! The session stage that runs backfills: in the instance that holds the
//! slot, next to the stream it merges into. One run at a time, oldest
//! first; one batch at a time, each between two watermarks (see the
//! module's doc), recorded once every webhook has handled it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::query::{BATCH_BYTES, ChunkQuery, row_id};
use super::runs::{self, Request, Run};
use crate::change::backfill::{BackfillRow, Chunk, Handoff, Mark, Outcome, PREFIX, Watermark};
use crate::checkpoint::{Checkpoint, Targets};
use crate::database::{Database, DatabaseError};
use crate::lsn::Lsn;
use crate::memory::MemoryBudget;

/// Leads per batch unless the run says otherwise.
pub(crate) const DEFAULT_BATCH: i32 = 1000;
/// After a failure (the database away), the reader starts again after this.
const RETRY: Duration = Duration::from_secs(2);
/// Without its tables, it looks again this often.
const MISSING_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackfillError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
}

impl BackfillError {
    fn is_missing_table(&self) -> bool {
        matches!(self, BackfillError::Sql(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE))
    }
}

/// What a session gives its backfill stage.
pub(crate) struct Reader {
    pub(crate) db: Database,
    pub(crate) schema: String,
    pub(crate) query: ChunkQuery,
    pub(crate) handoff: Arc<Handoff>,
    pub(crate) checkpoint: Arc<Checkpoint>,
    /// The session's webhooks, in its order: name, and `backfill = true`.
    pub(crate) webhooks: Vec<(String, bool)>,
    pub(crate) budget: MemoryBudget,
    /// This instance's shard and how many there are (0 of 1 unsharded).
    pub(crate) shard: (u32, u32),
    /// How often the runs are looked at while there is none.
    pub(crate) poll: Duration,
    /// Tells this session's watermarks from any other's.
    pub(crate) session: u64,
}

impl Reader {
    /// Runs until the session aborts it; failures are logged and retried.
    pub(crate) async fn run(self) {
        let mut chunks = 0;
        let mut told_missing = false;
        loop {
            let Err(e) = self.serve(&mut chunks).await;
            self.handoff.clear();
            if e.is_missing_table() {
                // `check` says so too; once in the log is enough.
                if !std::mem::replace(&mut told_missing, true) {
                    tracing::warn!(error = %e, "backfills are unavailable until a DBA creates leadhook's backfill tables (sql/setup.sql)");
                }
                tokio::time::sleep(MISSING_RETRY).await;
                continue;
            }
            tracing::warn!(error = %e, retry_in = ?RETRY, "backfill: cannot go on; trying again");
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn serve(&self, chunks: &mut u64) -> Result<std::convert::Infallible, BackfillError> {
        let mut sql = self.db.sql().await?;
        self.file_for_new_webhooks(&sql).await?;
        loop {
            match runs::next(&sql, &self.schema, self.shard()).await? {
                Some(run) => self.backfill(&mut sql, run, chunks).await?,
                None => tokio::time::sleep(self.poll).await,
            }
        }
    }

    /// A webhook with `backfill = true` gets every existing lead once: the
    /// first time an active instance runs with it.
    async fn file_for_new_webhooks(&self, sql: &Client) -> Result<(), BackfillError> {
        for (name, _) in self.webhooks.iter().filter(|(_, backfill)| *backfill) {
            let request = Request {
                webhooks: Some(vec![name.clone()]),
                batch: DEFAULT_BATCH,
                shards: self.shard.1 as i32,
                reason: format!("new webhook {name:?} (backfill = true)"),
                auto_for: Some(name.clone()),
                ..Request::default()
            };
            if let Some(id) = runs::file(sql, &self.schema, &request).await? {
                tracing::info!(run = id, webhook = %name, "filed a backfill run: the new webhook gets every existing lead");
            }
        }
        Ok(())
    }

    /// The webhooks of this session a run is for (`None`: every one).
    fn targets(&self, webhooks: Option<&[String]>) -> Targets {
        let mut targets = Targets::default();
        for (i, (name, _)) in self.webhooks.iter().enumerate() {
            if webhooks.is_none_or(|names| names.contains(name)) {
                targets.insert(i);
            }
        }
        targets
    }

    /// Runs `run` to its end (done, failed, cancelled) from where it got to.
    async fn backfill(
        &self,
        sql: &mut Client,
        run: Run,
        chunks: &mut u64,
    ) -> Result<(), BackfillError> {
        let (schema, shard) = (&self.schema, self.shard());
        let request = &run.request;
        let targets = self.targets(request.webhooks.as_deref());
        if targets.is_empty() {
            let why = match &request.webhooks {
                Some(names) => format!(
                    "no webhook of that name is configured and enabled here: {}",
                    names.join(", ")
                ),
                None => "no webhook is configured and enabled here".to_owned(),
            };
            tracing::error!(run = run.id, "backfill failed: {why}");
            return Ok(runs::finish(sql, schema, run.id, shard, Some(&why)).await?);
        }
        let where_sql = request.where_sql.as_deref();
        let total = match run.rows_total {
            Some(total) => total,
            None => match count(sql, &self.query, where_sql).await {
                Ok(total) => total,
                Err(e) if is_the_runs_fault(&e) => return self.fail(sql, &run, e).await,
                Err(e) => return Err(e.into()),
            },
        };
        runs::start(sql, schema, run.id, shard, total).await?;
        tracing::info!(run = run.id, reason = %request.reason, leads = total, done = run.rows_done, "backfill running");
        let remaining = metrics::gauge!("leadhook_backfill_remaining");
        let (mut last_key, mut done) = (run.last_key.clone(), run.rows_done);
        let started = Instant::now();
        loop {
            remaining.set((total - done).max(0) as f64);
            if runs::is_cancelled(sql, schema, run.id).await? {
                tracing::warn!(run = run.id, done, "backfill cancelled");
                remaining.set(0.0);
                return Ok(());
            }
            let began = Instant::now();
            let batch = match self
                .chunk(
                    sql,
                    (chunks, &targets),
                    run.id,
                    request,
                    last_key.as_deref(),
                )
                .await?
            {
                Ok(batch) => batch,
                Err(e) => return self.fail(sql, &run, e).await,
            };
            let Some((key, rows)) = batch else {
                runs::finish(sql, schema, run.id, shard, None).await?;
                remaining.set(0.0);
                tracing::info!(run = run.id, leads = done, took = ?started.elapsed(), "backfill done");
                return Ok(());
            };
            runs::record(sql, schema, run.id, shard, &key, rows).await?;
            (last_key, done) = (Some(key), done + rows);
            if let Some(rate) = request.rate.filter(|r| *r > 0) {
                let least = Duration::from_secs_f64(rows as f64 / f64::from(rate));
                tokio::time::sleep(least.saturating_sub(began.elapsed())).await;
            }
        }
    }

    /// One batch after `after`, between its watermarks, handled by every
    /// webhook: its last key and size; `None` when no lead is left. The
    /// inner error is the run's own (its `where` is not valid SQL...).
    async fn chunk(
        &self,
        sql: &mut Client,
        (chunks, targets): (&mut u64, &Targets),
        run: i64,
        request: &Request,
        after: Option<&[String]>,
    ) -> Result<Result<Option<(Vec<String>, i64)>, tokio_postgres::Error>, BackfillError> {
        loop {
            // A new chunk each attempt: an old one's reports are final.
            *chunks += 1;
            let chunk = Chunk::new(self.session, *chunks, targets.clone());
            // Backpressure: the rows below reserve without waiting (a wait
            // while holding earlier rows of the batch could take the whole
            // budget), so wait here while the budget is nearly spent.
            while self.budget.is_nearly_spent() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.handoff.expect(chunk.clone());
            emit(sql, chunk.watermark(Mark::Low)).await?;
            let rows = match read_batch(sql, &self.query, request, after).await {
                Ok(rows) => rows,
                Err(e) if is_the_runs_fault(&e) => {
                    self.handoff.clear();
                    return Ok(Err(e));
                }
                Err(e) => return Err(e.into()),
            };
            let Some(last) = rows.last().map(|r| r.0.clone()) else {
                self.handoff.clear();
                return Ok(Ok(None));
            };
            let count = rows.len() as i64;
            let mut leads = Vec::with_capacity(rows.len());
            for (key, lead, other_columns) in rows {
                let bytes = lead.len() + other_columns.as_ref().map_or(0, String::len);
                leads.push(BackfillRow {
                    id: row_id(run, &key),
                    key: crate::change::lead_key(key.iter().map(|k| Some(k.as_bytes()))),
                    lead,
                    other_columns,
                    memory: self
                        .budget
                        .try_reserve(bytes)
                        .unwrap_or_else(|| self.budget.none()),
                });
            }
            chunk.fill(leads);
            emit(sql, chunk.watermark(Mark::High)).await?;
            let outcome = chunk.outcome().await;
            self.handoff.clear();
            match outcome {
                Outcome::Merged { end } => {
                    self.handled(end).await;
                    return Ok(Ok(Some((last, count))));
                }
                Outcome::Unsafe => {
                    tracing::warn!(
                        "backfill: a batch could not be merged with the stream; reading it again"
                    );
                }
            }
        }
    }

    /// Until every webhook has handled the stream up to `end`.
    async fn handled(&self, end: Lsn) {
        while self.checkpoint.confirmed() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn fail(
        &self,
        sql: &Client,
        run: &Run,
        error: tokio_postgres::Error,
    ) -> Result<(), BackfillError> {
        let why = crate::database::with_causes(&error);
        tracing::error!(run = run.id, error = %why, "backfill failed");
        metrics::gauge!("leadhook_backfill_remaining").set(0.0);
        Ok(runs::finish(sql, &self.schema, run.id, self.shard(), Some(&why)).await?)
    }

    /// This instance's shard, as the progress table keeps it.
    fn shard(&self) -> i32 {
        i32::try_from(self.shard.0).unwrap_or(i32::MAX)
    }
}

/// The leads a run covers, counted read-only (the condition is the run's).
async fn count(
    sql: &mut Client,
    query: &ChunkQuery,
    where_sql: Option<&str>,
) -> Result<i64, tokio_postgres::Error> {
    let tx = sql.build_transaction().read_only(true).start().await?;
    let total = tx.query_one(&query.count(where_sql), &[]).await?.get(0);
    tx.commit().await?;
    Ok(total)
}

/// Writes a watermark into the WAL, in a transaction of its own.
async fn emit(sql: &Client, watermark: Watermark) -> Result<(), tokio_postgres::Error> {
    sql.execute(
        "SELECT pg_logical_emit_message(true, $1::text, $2::text)",
        &[&PREFIX, &watermark.encode()],
    )
    .await?;
    Ok(())
}

/// One batch, read in a read-only transaction (a run's `where` runs as
/// the sidecar's role: it may read, never write).
async fn read_batch(
    sql: &mut Client,
    query: &ChunkQuery,
    request: &Request,
    after: Option<&[String]>,
) -> Result<Vec<(Vec<String>, String, Option<String>)>, tokio_postgres::Error> {
    let statement = query.batch(request.where_sql.as_deref(), after.is_some());
    let tx = sql.build_transaction().read_only(true).start().await?;
    let limit = i64::from(request.batch.max(1));
    let rows = tx
        .query(&statement, &[&after, &limit, &BATCH_BYTES])
        .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Errors of the run's own making (its condition), which fail the run;
/// anything else (the server away) is retried.
fn is_the_runs_fault(error: &tokio_postgres::Error) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    let class = &code.code()[..2];
    // 42: syntax or access rule, 22: data exception, 25: read-only
    // transaction (the condition tried to write), 2B/0A: other refusals.
    matches!(class, "42" | "22" | "25" | "0A" | "2B")
}
