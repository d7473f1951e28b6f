//! `leadhook webhooks test`, `pause` and `resume`: commands that name one
//! webhook, from the config file or the registry table.

use std::io::Write;

use crate::config::{Config, WebhookConfig};
use crate::database::{Database, DatabaseError};
use crate::dead_letter::DeadLetterError;
use crate::delivery::probe::{self, ProbeError};
use crate::delivery::replay::{ReplayReport, Targets};

use super::{pauses, read_rows, table};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("registry row {name:?} is not a valid webhook: {}", .problems.join("; "))]
    InvalidRow { name: String, problems: Vec<String> },
    #[error(transparent)]
    Connect(#[from] DatabaseError),
    #[error(transparent)]
    Table(#[from] table::TableError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
}

/// `leadhook webhooks test NAME`: sends one sample event (see `delivery::probe`).
pub async fn test(config: &Config, name: &str, out: &mut impl Write) -> Result<bool, WebhookError> {
    let hook = find(config, name).await?;
    Ok(probe::send(&hook, out).await?)
}

/// `leadhook webhooks pause NAME` (`paused`) or `resume NAME`: durable, in
/// the database; the running sidecar (and a standby taking over) follows.
pub async fn pause(
    config: &Config,
    name: &str,
    paused: bool,
    out: &mut impl Write,
) -> Result<(), WebhookError> {
    find(config, name).await?;
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    let changed = pauses::set(&sql, &config.database.schema, name, paused).await?;
    let (now, already) = match paused {
        true => (
            "paused: its changes wait in the spool until it is resumed",
            "was already paused",
        ),
        false => (
            "resumed: what waited in the spool is delivered, in order",
            "was not paused",
        ),
    };
    match changed {
        true => writeln!(out, "webhook {name:?} {now}")?,
        false => writeln!(out, "webhook {name:?} {already}")?,
    }
    Ok(())
}

/// `leadhook dead-letters replay`, to the file's webhooks and the registry
/// table's, skipping paused ones (see `delivery::replay`).
pub async fn replay(
    config: &Config,
    webhook: Option<&str>,
    id: Option<&str>,
    out: &mut impl Write,
) -> Result<ReplayReport, WebhookError> {
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    let (rows, _) = read_rows(&sql, config, None).await?;
    let paused = pauses::read(&sql, &config.database.schema).await?;
    let targets = Targets { rows, paused };
    Ok(crate::delivery::replay::replay(config, &targets, webhook, id, out).await?)
}

/// The webhook called `name`: the file's, else a registry row (read now).
async fn find(config: &Config, name: &str) -> Result<WebhookConfig, WebhookError> {
    let in_file = match probe::find(config, name) {
        Ok(hook) => return Ok(hook.clone()),
        Err(e) => e,
    };
    if config.registry.is_none() {
        return Err(in_file.into());
    }
    let db = Database::from_url(config.database.url.expose())?;
    let sql = db.sql().await?;
    let (valid, mut invalid) = read_rows(&sql, config, None).await?;
    if let Some(problems) = invalid.remove(name) {
        return Err(WebhookError::InvalidRow {
            name: name.to_owned(),
            problems,
        });
    }
    valid
        .into_iter()
        .find(|h| h.name == name)
        .ok_or(in_file.into())
}
