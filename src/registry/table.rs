//! Reading the registry table (`[registry] table`): webhooks as rows, which
//! the product's settings page writes with plain SQL. Its DDL and triggers
//! are in `setup::registry`.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::config::{TableName, WebhookRow};

/// Why the table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "the registry table {0} does not exist: run `leadhook setup --apply` (or sql/registry.sql)"
    )]
    Missing(String),
    #[error("reading the registry table {table}: {}", crate::database::with_causes(.source))]
    Sql {
        table: String,
        source: tokio_postgres::Error,
    },
}

/// Every row, by name, as stored: one row's bad JSON is reported as that
/// row's problem (see [`RawRow::parse`]), never as a failed read.
pub(crate) async fn read(sql: &Client, table: &TableName) -> Result<Vec<RawRow>, TableError> {
    let query = format!(
        "SELECT name::text, url::text, method::text, headers::text, enabled::boolean, secret::text, filter::text,
                (to_jsonb(t) ->> 'backfill')::boolean
         FROM {} t ORDER BY name",
        table.quoted()
    );
    let rows = sql.query(&query, &[]).await.map_err(|source| {
        if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            TableError::Missing(table.to_string())
        } else {
            TableError::Sql {
                table: table.to_string(),
                source,
            }
        }
    })?;
    Ok(rows
        .iter()
        .map(|row| {
            // A table the product made itself may allow NULLs the checks
            // then report (never a panic that would stop the watcher).
            let text = |i| row.try_get::<_, Option<String>>(i).ok().flatten();
            RawRow {
                name: text(0).unwrap_or_default(),
                url: text(1).unwrap_or_default(),
                method: text(2).unwrap_or_else(|| "POST".into()),
                headers: text(3).unwrap_or_else(|| "{}".into()),
                enabled: row
                    .try_get::<_, Option<bool>>(4)
                    .ok()
                    .flatten()
                    .unwrap_or(false),
                secret: text(5),
                filter: text(6),
                // Tables made before the column existed have none.
                backfill: row
                    .try_get::<_, Option<bool>>(7)
                    .ok()
                    .flatten()
                    .unwrap_or(false),
            }
        })
        .collect())
}

/// A row as stored: its JSON columns still text, so that one row's bad JSON
/// is that row's problem only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRow {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) headers: String,
    pub(crate) enabled: bool,
    pub(crate) secret: Option<String>,
    pub(crate) filter: Option<String>,
    pub(crate) backfill: bool,
}

impl RawRow {
    /// The row as the config's checks take it, or why its JSON is not
    /// what a webhook needs.
    pub(crate) fn parse(&self) -> Result<WebhookRow, String> {
        let headers: BTreeMap<String, String> = serde_json::from_str(&self.headers)
            .map_err(|_| "headers: must be a JSON object of strings, e.g. {\"Authorization\": \"Bearer ${LEADHOOK_WEBHOOK_TOKEN}\"}".to_owned())?;
        let filter = match &self.filter {
            Some(text) => Some(serde_json::from_str(text).map_err(|_| {
                "filter: must be a JSON object, e.g. {\"account_id\": 42}".to_owned()
            })?),
            None => None,
        };
        Ok(WebhookRow {
            name: self.name.clone(),
            url: self.url.clone(),
            method: Some(self.method.clone()),
            headers,
            enabled: self.enabled,
            secret: self.secret.clone(),
            filter,
            backfill: self.backfill,
        })
    }
}
