//! `[database]` and `[source]`: where changes come from.

use std::time::Duration;

use serde::Deserialize;

use super::{Secret, duration};
use crate::lead::field::ColumnMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style URL; may hold a password, so it is only ever shown redacted.
    pub url: Secret,
    /// Where the sidecar keeps objects of its own (dead letters, outbox).
    #[serde(default = "default_schema")]
    pub schema: String,
}

/// `[source]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    pub mode: SourceMode,
    /// `schema.table`, or just `table` for `public`.
    pub table: String,
    pub slot: String,
    pub publication: String,
    /// Create the publication and slot when missing (needs table ownership).
    pub create: bool,
    /// `[source.columns]`: payload field → column (see [`ColumnMap`]).
    pub(crate) columns: ColumnMap,
    /// Notify mode: how often the outbox is read even without a notification.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            mode: SourceMode::default(),
            table: "public.leads".into(),
            slot: "leadhook".into(),
            publication: "leadhook_leads".into(),
            create: true,
            columns: ColumnMap::default(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    #[default]
    Replication,
    /// A trigger outbox and LISTEN/NOTIFY, for databases without logical replication.
    Notify,
}

/// A schema-qualified table name, as written in `source.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `"schema"."name"`, ready for SQL.
    pub(crate) fn quoted(&self) -> String {
        use postgres_protocol::escape::escape_identifier;
        format!(
            "{}.{}",
            escape_identifier(&self.schema),
            escape_identifier(&self.name)
        )
    }

    pub(super) fn parse(text: &str) -> Result<TableName, String> {
        let (schema, name) = text.split_once('.').unwrap_or(("public", text));
        check_identifier(schema)?;
        check_identifier(name)?;
        Ok(TableName {
            schema: schema.into(),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Names are quoted wherever they reach SQL, so any non-empty name Postgres
/// could store is fine; this only rejects what it could not.
pub(super) fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if name.len() > 63 {
        Err(format!(
            "{name:?} is longer than PostgreSQL's 63-byte name limit"
        ))
    } else if name.contains('\0') {
        Err("must not contain NUL".into())
    } else {
        Ok(())
    }
}

fn default_schema() -> String {
    "leadhook".into()
}
