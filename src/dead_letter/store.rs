//! The store the delivery workers hand exhausted changes to.

use std::time::Duration;

use tokio_postgres::Client;

use super::{DeadLetter, DeadLetterError, table};
use crate::database::Database;

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
pub(super) fn explain(table: &str, e: tokio_postgres::Error) -> DeadLetterError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        DeadLetterError::NoTable(table.to_owned())
    } else {
        DeadLetterError::Sql(e)
    }
}
