//! `[database]` and `[source]`: where changes come from.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{Secret, byte_size, checked, duration};
use crate::field::ColumnMap;

/// `[database]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct DatabaseConfig {
    /// libpq-style URL; may hold a password, so it is only ever shown
    /// redacted. Parsed when connecting: a URL that libpq would refuse
    /// stops `run` there, naming the key (see `database`).
    pub(crate) url: Secret,
    /// Where the sidecar keeps objects of its own (dead letters, outbox).
    pub(crate) schema: String,
}

/// `[database]` as written: `url` is required, so the section has no
/// `Default` and `schema` is an `Option`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DatabaseFile {
    pub(super) url: Secret,
    schema: Option<String>,
}

impl DatabaseFile {
    pub(super) fn check(self, problems: &mut Vec<String>) -> Option<DatabaseConfig> {
        let schema = self.schema.unwrap_or_else(|| "leadhook".into());
        let schema =
            checked(problems, "database.schema", check_identifier(&schema)).map(|()| schema)?;
        Some(DatabaseConfig {
            url: self.url,
            schema,
        })
    }
}

/// `[source]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SourceConfig {
    pub(crate) mode: SourceMode,
    /// `schema.table`, or just `table` for `public`.
    pub(crate) table: TableName,
    pub(crate) slot: String,
    pub(crate) publication: String,
    /// Create the publication and slot when missing (needs table ownership).
    pub(crate) create: bool,
    /// `[source.columns]`: payload field → column (see [`ColumnMap`]).
    pub(crate) columns: ColumnMap,
    /// Notify mode: how often the outbox is read even without a notification.
    #[serde(deserialize_with = "duration")]
    pub(crate) poll_interval: Duration,
    /// What to do when the slot is lost (invalidated, dropped, gone with a
    /// failover or a restore).
    pub(crate) on_slot_lost: OnSlotLost,
    /// A timestamp column the application sets on every insert and update:
    /// after a lost slot, the leads changed since the gap began (less
    /// `changed_at_margin`) are backfilled to every webhook.
    pub(crate) changed_at: Option<String>,
    /// How far before the last confirmed commit the recovery backfill
    /// reaches: a transaction sets `changed_at` when it runs, not when it
    /// commits.
    #[serde(deserialize_with = "duration")]
    pub(crate) changed_at_margin: Duration,
    /// Create the slot as a failover slot (PostgreSQL 17+), which standbys
    /// keep a copy of; unset: wherever the server has them.
    pub(crate) failover: Option<bool>,
    /// `"K/N"`: this instance follows shard K of N, with a publication and
    /// a slot of its own (`<slot>_K_of_N`, `<publication>_K_of_N`) whose
    /// row filter gives it the leads whose key hashes to K.
    pub(crate) shard: Option<Shard>,
    /// The largest replication message (frame) accepted: a bigger one is
    /// refused before any memory is reserved for it, so a corrupt or
    /// hostile stream cannot make the sidecar allocate what it announces.
    #[serde(deserialize_with = "byte_size")]
    pub(crate) max_message_size: u64,
    /// `slot` and `publication` as written, before a shard's suffix.
    #[serde(skip)]
    base_names: Option<(String, String)>,
}

/// `source.max_message_size` unless set: a lead row of 256 MiB is far past
/// any real one, and well under PostgreSQL's 1 GB per value, so no row a
/// server can send in practice is refused; a header claiming gigabytes is.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: u64 = 256 * 1024 * 1024;
/// Below this, ordinary messages (a keepalive, a relation) would be refused.
const MIN_MAX_MESSAGE_SIZE: u64 = 64 * 1024;

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: u32,
    pub(crate) count: u32,
}

impl Shard {
    fn parse(text: &str) -> Result<Shard, String> {
        let bad =
            || format!("{text:?} is not a shard: write \"K/N\", e.g. \"0/2\" for the first of two");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            index.trim().parse().map_err(|_| bad())?,
            count.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(format!(
                "{text:?}: K must be from 0 to N - 1 (shard {index} of {count} does not exist)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The suffix of this shard's slot and publication.
    fn suffix(&self) -> String {
        format!("_{}_of_{}", self.index, self.count)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Shard::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `[source] on_slot_lost`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnSlotLost {
    /// Create the slot again at once (nothing more is lost while a person
    /// reacts), log the gap as an ERROR and, with `changed_at`, backfill it.
    #[default]
    Recreate,
    /// Deliver nothing and stay not ready until a person acts.
    Stop,
}

impl SourceConfig {
    /// Names reach SQL quoted, so only what PostgreSQL could not store is
    /// refused. A shard's slot and publication get its suffix here.
    pub(super) fn check(mut self, problems: &mut Vec<String>) -> SourceConfig {
        self.base_names = Some((self.slot.clone(), self.publication.clone()));
        if let Some(shard) = self.shard.filter(|s| s.count > 1) {
            self = self.for_shard(shard.index);
        }
        self.check_names(problems);
        self
    }

    /// This config as shard `index`'s instance has it (same count).
    pub(crate) fn for_shard(&self, index: u32) -> SourceConfig {
        let Some(shard) = self.shard else {
            return self.clone();
        };
        let shard = Shard { index, ..shard };
        let (slot, publication) = self
            .base_names
            .clone()
            .unwrap_or_else(|| (self.slot.clone(), self.publication.clone()));
        SourceConfig {
            slot: format!("{slot}{}", shard.suffix()),
            publication: format!("{publication}{}", shard.suffix()),
            shard: Some(shard),
            ..self.clone()
        }
    }

    /// Shard index and count: (0, 1) unsharded.
    pub(crate) fn shard_of(&self) -> (u32, u32) {
        self.shard.map_or((0, 1), |s| (s.index, s.count))
    }

    fn check_names(&self, problems: &mut Vec<String>) {
        checked(problems, "source.slot", check_identifier(&self.slot));
        checked(
            problems,
            "source.publication",
            check_identifier(&self.publication),
        );
        checked(problems, "source.table", self.table.check());
        if self.max_message_size < MIN_MAX_MESSAGE_SIZE {
            problems.push(format!(
                "source.max_message_size: {} bytes is too small for ordinary messages; use at least 64KiB (the default is 256MiB)",
                self.max_message_size
            ));
        }
        if let Some(column) = &self.changed_at {
            checked(problems, "source.changed_at", check_identifier(column));
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            mode: SourceMode::default(),
            table: TableName::parse("public.leads"),
            slot: "leadhook".into(),
            publication: "leadhook_leads".into(),
            create: true,
            columns: ColumnMap::default(),
            poll_interval: Duration::from_secs(1),
            on_slot_lost: OnSlotLost::default(),
            changed_at: None,
            changed_at_margin: Duration::from_secs(600),
            failover: None,
            shard: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            base_names: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SourceMode {
    #[default]
    Replication,
    /// A trigger outbox and LISTEN/NOTIFY, for databases without logical replication.
    Notify,
}

/// A schema-qualified table name, split once when `source.table` is read.
/// Its parts are checked with the rest of the config (so every problem is
/// reported at once): a `TableName` in a loaded `Config` is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    pub(crate) schema: String,
    pub(crate) name: String,
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

    /// `schema.table`, or `table` in `public`.
    fn parse(text: &str) -> TableName {
        let (schema, name) = text.split_once('.').unwrap_or(("public", text));
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        check_identifier(&self.schema)?;
        check_identifier(&self.name)
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|text| TableName::parse(&text))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Names are quoted wherever they reach SQL, so any non-empty name Postgres
/// could store is fine; this only rejects what it could not.
fn check_identifier(name: &str) -> Result<(), String> {
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
