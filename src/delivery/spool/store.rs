//! The spool table's SQL, over a connection of its own that is opened when
//! first needed and again after it broke. Every write commits with
//! `synchronous_commit = on` (see `Database::sql`), so a row the position
//! was moved past survives a crash of the server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::HeaderValue;
use tokio_postgres::Client;

use super::Entry;
use crate::database::{Database, DatabaseError};
use crate::lsn::PG_EPOCH_OFFSET_MICROS;
use crate::setup::objects::spool_table;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error(transparent)]
    Connect(#[from] DatabaseError),
    #[error("{}", explain(.0))]
    Sql(#[from] tokio_postgres::Error),
}

impl SpoolError {
    /// The server is shutting down (or starting up, or crashed): retrying
    /// within this session would hold the replication stream, and a
    /// PostgreSQL fast shutdown waits for its walsender until the stream's
    /// client lets go. Only a new session can write again.
    pub(crate) fn is_server_going_away(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let code = match self {
            SpoolError::Sql(e) => e.code(),
            SpoolError::Connect(crate::database::DatabaseError::Connect { source, .. }) => {
                source.code()
            }
            SpoolError::Connect(_) => None,
        };
        code.is_some_and(|code| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code)
        })
    }

    /// The spool table does not exist (no webhook ever spooled here).
    pub(crate) fn is_missing_table(&self) -> bool {
        matches!(self, SpoolError::Sql(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE))
    }
}

/// Says what to do about the failures a person must fix.
fn explain(e: &tokio_postgres::Error) -> String {
    use tokio_postgres::error::SqlState;
    let text = crate::database::with_causes(e);
    match e.code() {
        Some(&SqlState::INSUFFICIENT_PRIVILEGE) => format!(
            "{text}: GRANT SELECT, INSERT, UPDATE, DELETE ON the spool and USAGE ON its id sequence to leadhook's role (see sql/setup.sql)"
        ),
        Some(&SqlState::UNDEFINED_TABLE) => format!(
            "{text}: `leadhook run` creates the spool at startup when it may (or see sql/setup.sql)"
        ),
        _ => text,
    }
}

/// A row read back for delivery.
#[derive(Debug)]
pub(super) struct SpooledChange {
    pub(super) row: i64,
    pub(super) id: HeaderValue,
    pub(super) payload: Bytes,
    pub(super) key: u64,
    /// µs since 2000-01-01, like [`crate::delivery::Event::commit_time`].
    pub(super) commit_time: i64,
    /// Its first attempt, or when it was spooled if it never had one.
    pub(super) first_attempt: SystemTime,
    /// Attempts made before it was spooled.
    pub(super) attempts: u32,
}

pub(crate) struct SpoolStore {
    db: Database,
    table: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// A shard's rows are kept under `<webhook> [shard K/N]`: each shard's
    /// instance drains only its own leads, in their order.
    suffix: String,
}

impl SpoolStore {
    pub(crate) fn new(db: Database, schema: &str) -> Self {
        SpoolStore {
            db,
            table: spool_table(schema),
            client: tokio::sync::Mutex::new(None),
            suffix: String::new(),
        }
    }

    /// The spool of shard `shard`'s instance (`None` or one shard: all of it).
    pub(crate) fn for_shard(mut self, shard: Option<crate::config::Shard>) -> Self {
        self.suffix = shard
            .filter(|s| s.count > 1)
            .map(|s| format!(" [shard {}/{}]", s.index, s.count))
            .unwrap_or_default();
        self
    }

    /// The `webhook` column of `webhook`'s rows.
    fn key(&self, webhook: &str) -> String {
        format!("{webhook}{}", self.suffix)
    }

    /// The webhook a `webhook` column names, if it is this instance's.
    fn webhook_of(&self, key: String) -> Option<String> {
        key.strip_suffix(self.suffix.as_str()).map(str::to_owned)
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    async fn client(&self) -> Result<Arc<Client>, SpoolError> {
        let mut client = self.client.lock().await;
        if let Some(open) = client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(open.clone());
        }
        let open = Arc::new(self.db.sql().await?);
        *client = Some(open.clone());
        Ok(open)
    }

    /// Moves every row of `webhook` to the dead letters (`dead_letters` is
    /// their table), with `reason` as the last error, in one statement: for
    /// a webhook that was removed or disabled, whose spooled changes must not
    /// vanish. Returns how many moved.
    pub(crate) async fn retire(
        &self,
        webhook: &str,
        reason: &str,
        dead_letters: &str,
    ) -> Result<u64, SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "WITH moved AS (DELETE FROM {t} WHERE webhook = $1
                            RETURNING webhook_id, payload, attempts, first_attempt_at)
             INSERT INTO {d} (webhook, webhook_id, payload, attempts, last_status, last_error, first_attempt_at, last_attempt_at)
             SELECT $3::text, webhook_id, payload, attempts, NULL, $2, coalesce(first_attempt_at, now()), now() FROM moved
             ON CONFLICT (webhook, webhook_id) DO UPDATE SET
                 last_error = EXCLUDED.last_error, last_attempt_at = EXCLUDED.last_attempt_at",
            t = self.table,
            d = dead_letters,
        );
        let moved = sql
            .execute(&statement, &[&self.key(webhook), &reason, &webhook])
            .await;
        if moved.is_err() {
            self.reset().await;
        }
        Ok(moved?)
    }

    /// Forgets the connection after an error, so the next call reconnects.
    pub(super) async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// Writes `entries` in one transaction, in order. A change already in
    /// the spool for its webhook (streamed again after a restart) keeps its
    /// row; one older than a row of its lead already there is not added:
    /// that later change was only spooled once this one was handled, so it
    /// must not be delivered again behind it. Returns how many rows each
    /// webhook gained.
    pub(super) async fn insert(
        &self,
        entries: &[Entry],
    ) -> Result<HashMap<String, u64>, SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "INSERT INTO {t} (webhook, webhook_id, lead_key, payload, committed_at, first_attempt_at, attempts, position, position_index)
             SELECT w, i, k, p, c, f, a, l, x FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::int4[], $8::int8[], $9::int4[])
                 WITH ORDINALITY AS e(w, i, k, p, c, f, a, l, x, n)
             WHERE NOT EXISTS (SELECT 1 FROM {t} s WHERE s.webhook = e.w AND s.lead_key = e.k
                               AND (s.position, s.position_index) > (e.l, e.x))
             ORDER BY n
             ON CONFLICT (webhook, webhook_id) DO NOTHING
             RETURNING webhook",
            t = self.table
        );
        let webhooks: Vec<String> = entries.iter().map(|e| self.key(&e.hook.name)).collect();
        let ids: Vec<&str> = entries
            .iter()
            .map(|e| e.event.id.to_str().unwrap_or_default())
            .collect();
        let keys: Vec<i64> = entries.iter().map(|e| e.event.key as i64).collect();
        // Payloads are JSON that leadhook serialised: always UTF-8.
        let payloads: Vec<&str> = entries
            .iter()
            .map(|e| std::str::from_utf8(&e.event.payload).unwrap_or_default())
            .collect();
        let committed: Vec<SystemTime> = entries
            .iter()
            .map(|e| from_pg_micros(e.event.commit_time))
            .collect();
        let first: Vec<Option<SystemTime>> =
            entries.iter().map(|e| e.tried.map(|(at, _)| at)).collect();
        let attempts: Vec<i32> = entries
            .iter()
            .map(|e| {
                e.tried
                    .map_or(0, |(_, n)| i32::try_from(n).unwrap_or(i32::MAX))
            })
            .collect();
        let positions: Vec<i64> = entries.iter().map(|e| e.event.position.0).collect();
        let indexes: Vec<i32> = entries.iter().map(|e| e.event.position.1).collect();
        let rows = sql
            .query(
                &statement,
                &[
                    &webhooks, &ids, &keys, &payloads, &committed, &first, &attempts, &positions,
                    &indexes,
                ],
            )
            .await?;
        let mut added: HashMap<String, u64> = HashMap::new();
        for row in rows {
            if let Some(webhook) = self.webhook_of(row.get(0)) {
                *added.entry(webhook).or_default() += 1;
            }
        }
        Ok(added)
    }

    /// Up to `limit` of `webhook`'s rows after row `after`, oldest first,
    /// and no more payload bytes than `bytes` beyond the first row.
    pub(super) async fn fetch(
        &self,
        webhook: &str,
        after: i64,
        limit: usize,
        bytes: usize,
    ) -> Result<Vec<SpooledChange>, SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "SELECT id, webhook_id, lead_key, payload, committed_at, first_attempt, attempts FROM (
                 SELECT id, webhook_id, lead_key, payload, committed_at,
                        coalesce(first_attempt_at, spooled_at) AS first_attempt, attempts,
                        sum(octet_length(payload)) OVER (ORDER BY id) - octet_length(payload) AS before
                 FROM {} WHERE webhook = $1 AND id > $2 ORDER BY id LIMIT $3) page
             WHERE before < $4::int8 ORDER BY id",
            self.table
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let rows = sql
            .query(&statement, &[&self.key(webhook), &after, &limit, &bytes])
            .await?;
        let changes = rows
            .iter()
            .filter_map(|row| {
                let id: &str = row.get(1);
                let payload: String = row.get(3);
                let attempts: i32 = row.get(6);
                Some(SpooledChange {
                    row: row.get(0),
                    // Written from a header value, so it is one.
                    id: HeaderValue::from_str(id).ok()?,
                    payload: Bytes::from(payload),
                    key: row.get::<_, i64>(2) as u64,
                    commit_time: to_pg_micros(row.get(4)),
                    first_attempt: row.get(5),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                })
            })
            .collect();
        Ok(changes)
    }

    /// The payload of one row, if it is still there.
    pub(super) async fn payload(
        &self,
        webhook: &str,
        row: i64,
    ) -> Result<Option<Bytes>, SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "SELECT payload FROM {} WHERE webhook = $1 AND id = $2",
            self.table
        );
        let row = sql
            .query_opt(&statement, &[&self.key(webhook), &row])
            .await?;
        Ok(row.map(|row| Bytes::from(row.get::<_, String>(0))))
    }

    /// Deletes rows delivered or dead-lettered.
    pub(super) async fn delete(&self, webhook: &str, rows: &[i64]) -> Result<(), SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "DELETE FROM {} WHERE webhook = $1 AND id = ANY($2)",
            self.table
        );
        sql.execute(&statement, &[&self.key(webhook), &rows])
            .await?;
        Ok(())
    }

    /// Rows per webhook, for the start of a session.
    pub(crate) async fn depths(&self) -> Result<HashMap<String, u64>, SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "SELECT webhook, count(*) FROM {} GROUP BY webhook",
            self.table
        );
        let rows = sql.query(&statement, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                let key: String = row.get(0);
                // Another shard's rows (or rows from before sharding, or
                // from another shard count) are named so that the warning
                // about rows nobody drains shows them.
                let webhook = self
                    .webhook_of(key.clone())
                    .unwrap_or_else(|| format!("{key} (not this shard's)"));
                (webhook, row.get::<_, i64>(1).unsigned_abs())
            })
            .collect())
    }

    /// How long ago the oldest change waiting for `webhook` was committed.
    pub(super) async fn oldest(&self, webhook: &str) -> Result<Option<Duration>, SpoolError> {
        let sql = self.client().await?;
        let statement = format!(
            "SELECT committed_at FROM {} WHERE webhook = $1 ORDER BY id LIMIT 1",
            self.table
        );
        let row = sql.query_opt(&statement, &[&self.key(webhook)]).await?;
        Ok(row.map(|row| {
            let at: SystemTime = row.get(0);
            SystemTime::now().duration_since(at).unwrap_or_default()
        }))
    }
}

fn from_pg_micros(micros: i64) -> SystemTime {
    let unix = micros.saturating_add(PG_EPOCH_OFFSET_MICROS);
    UNIX_EPOCH + Duration::from_micros(u64::try_from(unix).unwrap_or(0))
}

fn to_pg_micros(at: SystemTime) -> i64 {
    let unix = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    i64::try_from(unix).unwrap_or(i64::MAX) - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_times_survive_the_round_trip_through_timestamptz() {
        let micros = 786_000_123_456_789;
        assert_eq!(to_pg_micros(from_pg_micros(micros)), micros);
    }
}
