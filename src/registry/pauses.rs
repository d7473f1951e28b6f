//! Paused webhooks, kept in `<schema>.webhook_pauses` so that a pause
//! survives restarts and is seen by a standby that takes over.
//! `leadhook webhooks pause NAME` adds a row and rings the registry's
//! channel; the running sidecar reads the table again (and polls it).

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::setup::objects::pauses_table as table;
use crate::setup::registry::channel;

/// The names paused now: none before the table exists (the sidecar
/// creates it with its other tables).
pub(crate) async fn read(
    sql: &Client,
    schema: &str,
) -> Result<BTreeSet<String>, tokio_postgres::Error> {
    match sql
        .query(&format!("SELECT name FROM {}", table(schema)), &[])
        .await
    {
        Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            Ok(BTreeSet::new())
        }
        Err(e) => Err(e),
    }
}

/// Pauses (`true`) or resumes `name`; false if it already was so.
pub(crate) async fn set(
    sql: &Client,
    schema: &str,
    name: &str,
    paused: bool,
) -> Result<bool, tokio_postgres::Error> {
    let changed = if paused {
        sql.execute(
            &format!(
                "INSERT INTO {} (name) VALUES ($1) ON CONFLICT DO NOTHING",
                table(schema)
            ),
            &[&name],
        )
        .await?
    } else {
        sql.execute(
            &format!("DELETE FROM {} WHERE name = $1", table(schema)),
            &[&name],
        )
        .await?
    };
    sql.execute("SELECT pg_notify($1, '')", &[&channel(schema)])
        .await?;
    Ok(changed > 0)
}
