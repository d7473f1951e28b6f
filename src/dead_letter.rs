//! Dead letters: changes a webhook did not accept within its attempts (or
//! answered with a status listed as final). They are kept in
//! `<schema>.dead_letters` in the same database, so the stream can move on
//! without losing them; `leadhook dead-letters` lists and replays them.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_postgres::Client;

use crate::config::Config;
use crate::database::{Database, DatabaseError};
use crate::delivery::{Webhook, request};
use postgres_protocol::escape::escape_identifier;

/// The table and its schema; `sql/setup.sql` carries the same statements.
pub(crate) fn create_statements(schema: &str) -> String {
    let schema = escape_identifier(schema);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
    id               bigserial   PRIMARY KEY,
    webhook          text        NOT NULL,
    webhook_id       text        NOT NULL,
    payload          text        NOT NULL,
    attempts         integer     NOT NULL,
    last_status      integer,
    last_error       text        NOT NULL,
    first_attempt_at timestamptz NOT NULL,
    last_attempt_at  timestamptz NOT NULL,
    UNIQUE (webhook, webhook_id)
);"
    )
}

pub(crate) fn table(schema: &str) -> String {
    format!("{}.dead_letters", escape_identifier(schema))
}

/// One change a webhook gave up on.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) webhook: String,
    pub(crate) webhook_id: String,
    /// Exactly the body that was sent (text, so key order survives).
    pub(crate) payload: Bytes,
    pub(crate) attempts: u32,
    pub(crate) last_status: Option<u16>,
    pub(crate) last_error: String,
    pub(crate) first_attempt: SystemTime,
    pub(crate) last_attempt: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{0}")]
    Sql(#[from] tokio_postgres::Error),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "there is no dead-letter table {0} yet: `leadhook run` creates it at startup (or see sql/setup.sql)"
    )]
    NoTable(String),
}

/// Writes dead letters over a connection of its own, reconnecting when it
/// breaks: a change counts as handled only once its letter is stored.
pub(crate) struct DeadLetterStore {
    db: Database,
    table: String,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl DeadLetterStore {
    pub(crate) fn new(db: Database, schema: &str) -> Self {
        DeadLetterStore {
            db,
            table: table(schema),
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// Stores `letter`, retrying until it is stored: until then the
    /// confirmed position cannot pass the change, so nothing is lost. The
    /// connection commits with `synchronous_commit = on` (see
    /// `Database::sql`), so a stored letter survives a crash of the server.
    /// The same change dead-lettered again (after a restart) adds its
    /// attempts to the letter; the payload first stored is never replaced.
    pub(crate) async fn store(&self, letter: &DeadLetter) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.try_store(letter).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(webhook = %letter.webhook, webhook_id = %letter.webhook_id, error = %e, retry_in = ?delay,
                        "cannot store a dead letter; the stream is held until it is stored");
                    *self.client.lock().await = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn try_store(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let mut client = self.client.lock().await;
        if client.is_none() {
            *client = Some(self.db.sql().await?);
        }
        let Some(sql) = client.as_ref() else {
            unreachable!("connected above")
        };
        let statement = format!(
            "INSERT INTO {t} (webhook, webhook_id, payload, attempts, last_status, last_error, first_attempt_at, last_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (webhook, webhook_id) DO UPDATE SET
                attempts = {t}.attempts + EXCLUDED.attempts, last_status = EXCLUDED.last_status,
                last_error = EXCLUDED.last_error, last_attempt_at = EXCLUDED.last_attempt_at",
            t = self.table
        );
        let payload = String::from_utf8_lossy(&letter.payload);
        let attempts = i32::try_from(letter.attempts).unwrap_or(i32::MAX);
        let status = letter.last_status.map(i32::from);
        sql.execute(
            &statement,
            &[
                &letter.webhook,
                &letter.webhook_id,
                &payload.as_ref(),
                &attempts,
                &status,
                &letter.last_error,
                &letter.first_attempt,
                &letter.last_attempt,
            ],
        )
        .await?;
        Ok(())
    }
}

/// Translates "no such table" into what to do about it.
fn explain(table: &str, e: tokio_postgres::Error) -> DeadLetterError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        DeadLetterError::NoTable(table.to_owned())
    } else {
        DeadLetterError::Sql(e)
    }
}

/// Connects and selects `columns` of the letters matching the filters, oldest first.
async fn select(
    config: &Config,
    columns: &str,
    webhook: Option<&str>,
    id: Option<&str>,
) -> Result<(Client, Vec<tokio_postgres::Row>), DeadLetterError> {
    let sql = Database::from_url(config.database.url.expose())?
        .sql()
        .await?;
    let table = table(&config.database.schema);
    let query = format!(
        "SELECT {columns} FROM {table}
         WHERE ($1::text IS NULL OR webhook = $1) AND ($2::text IS NULL OR webhook_id = $2) ORDER BY id"
    );
    let rows = sql
        .query(&query, &[&webhook, &id])
        .await
        .map_err(|e| explain(&table, e))?;
    Ok((sql, rows))
}

/// `leadhook dead-letters list`: a table a person can read. Returns the count.
pub async fn list(
    config: &Config,
    webhook: Option<&str>,
    out: &mut impl Write,
) -> Result<usize, DeadLetterError> {
    let (_, rows) = select(
        config,
        "id::text, webhook, webhook_id, attempts::text, coalesce(last_status::text, '-'),
         to_char(last_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), last_error,
         coalesce(payload::json #>> '{data,email}', '')",
        webhook,
        None,
    )
    .await?;
    let header = [
        "ID",
        "WEBHOOK",
        "WEBHOOK-ID",
        "ATTEMPTS",
        "STATUS",
        "LAST ATTEMPT (UTC)",
        "LAST ERROR",
        "EMAIL",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| (0..header.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    write_table(out, &header, &cells)?;
    Ok(rows.len())
}

fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// `leadhook dead-letters replay`: sends each matching letter once more,
/// with its original `webhook-id`, and deletes it only once delivered.
pub async fn replay(
    config: &Config,
    webhook: Option<&str>,
    id: Option<&str>,
    out: &mut impl Write,
) -> Result<ReplayReport, DeadLetterError> {
    let (sql, rows) = select(config, "id, webhook, webhook_id, payload", webhook, id).await?;
    let table = table(&config.database.schema);
    let client = crate::delivery::http_client()?;
    let mut hooks: HashMap<String, Result<Webhook, String>> = HashMap::new();
    let mut report = ReplayReport::default();
    for row in rows {
        let (row_id, name, webhook_id, payload): (i64, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let hook = hooks
            .entry(name.clone())
            .or_insert_with(|| replay_target(config, &name));
        let hook = match hook {
            Ok(hook) => hook,
            Err(why) => {
                report.skipped += 1;
                writeln!(out, "skipped    {webhook_id} for {name:?}: {why}")?;
                continue;
            }
        };
        let header = reqwest::header::HeaderValue::from_str(&webhook_id)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid"));
        match request::attempt(hook, &client, &header, &Bytes::from(payload)).await {
            Ok(()) => {
                sql.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&row_id])
                    .await?;
                report.delivered += 1;
                writeln!(out, "delivered  {webhook_id} to {name:?} (removed)")?;
            }
            Err(failure) => {
                report.failed += 1;
                writeln!(out, "failed     {webhook_id} to {name:?}: {failure} (kept)")?;
            }
        }
    }
    writeln!(
        out,
        "replayed: {} delivered and removed, {} failed and kept, {} skipped",
        report.delivered, report.failed, report.skipped
    )?;
    Ok(report)
}

/// The webhook a letter goes back to, by name, as configured now.
fn replay_target(config: &Config, name: &str) -> Result<Webhook, String> {
    let hook = config
        .webhooks
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| "no webhook of that name in the config".to_owned())?;
    if !hook.receives_save_lead() {
        return Err("the webhook is disabled or not subscribed to save_lead".to_owned());
    }
    Ok(Webhook::new(hook))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dba_script_creates_the_same_table_as_the_sidecar() {
        let script = include_str!("../sql/setup.sql");
        assert!(
            script.contains(&create_statements("leadhook")),
            "sql/setup.sql is out of date"
        );
    }

    #[tokio::test]
    async fn a_letter_stored_again_keeps_its_first_payload_and_adds_the_attempts() {
        let cluster = leadhook_testkit::cluster::Cluster::start(Default::default()).expect("a cluster");
        let db =
            Database::from_url(&format!("{}?sslmode=disable", cluster.url("postgres"))).unwrap();
        let sql = db.sql().await.unwrap();
        sql.batch_execute(&create_statements("leadhook"))
            .await
            .unwrap();
        let store = DeadLetterStore::new(db, "leadhook");
        let letter = |payload: &'static str, attempts| DeadLetter {
            webhook: "crm".into(),
            webhook_id: "6b8f3a21-0/16B3748-2e7c1f3a9b2c8-0".into(),
            payload: Bytes::from_static(payload.as_bytes()),
            attempts,
            last_status: Some(500),
            last_error: "HTTP 500".into(),
            first_attempt: SystemTime::now(),
            last_attempt: SystemTime::now(),
        };
        store
            .store(&letter(r#"{"data":{"notes":"first"}}"#, 3))
            .await;
        store
            .store(&letter(r#"{"data":{"notes":"read back later"}}"#, 2))
            .await;
        let row = sql
            .query_one("SELECT payload, attempts FROM leadhook.dead_letters", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), r#"{"data":{"notes":"first"}}"#);
        assert_eq!(row.get::<_, i32>(1), 5);
    }

    #[test]
    fn tables_are_aligned_for_reading() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["1".to_owned(), "long webhook name".to_owned()],
            vec!["22".to_owned(), "b".to_owned()],
        ];
        write_table(&mut out, &["ID", "WEBHOOK"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID  WEBHOOK\n1   long webhook name\n22  b\n"
        );
    }
}
