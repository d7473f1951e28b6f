//! A lost slot's gap: what can no longer be streamed, reported as the
//! ERROR a person must act on, and (with `[source] changed_at`) recovered
//! by a backfill of the leads changed since the gap began.

use postgres_protocol::escape::{escape_identifier, escape_literal};
use tokio_postgres::Client;

use super::Record;
use crate::backfill::reader::DEFAULT_BATCH;
use crate::backfill::runs::{self, Request};
use crate::config::Config;
use crate::history::ServerIdentity;
use crate::lsn::Lsn;

/// The changes a lost slot took with it.
pub(super) struct Gap<'a> {
    record: Option<&'a Record>,
    /// The last position confirmed: the gap begins after it.
    from: Lsn,
    /// Where the new slot begins, once re-created.
    to: Option<Lsn>,
    /// Said when the record came from another server (a restore, a failover).
    elsewhere: String,
}

impl<'a> Gap<'a> {
    pub(super) fn new(
        record: Option<&'a Record>,
        streamed_before: Option<Lsn>,
        to: Option<Lsn>,
        server: &ServerIdentity,
    ) -> Gap<'a> {
        let from = record
            .map(|r| r.confirmed_lsn)
            .max(streamed_before)
            .unwrap_or(Lsn::ZERO);
        let elsewhere = record
            .filter(|r| r.system_identifier != server.system_id.to_string())
            .map(|r| {
                format!(
                    " (it was recorded on database system {}, this is {})",
                    r.system_identifier, server.system_id
                )
            })
            .unwrap_or_default();
        Gap {
            record,
            from,
            to,
            elsewhere,
        }
    }

    /// When the gap began: the last confirmed commit, else when the last
    /// position was recorded (later, so the margin matters more).
    fn since(&self) -> Option<&str> {
        let record = self.record?;
        Some(
            record
                .confirmed_commit_at
                .as_deref()
                .unwrap_or(&record.confirmed_at),
        )
    }

    /// Logs the loss, and what recovers it. `how`: what became of the slot.
    pub(super) fn report(&self, name: &str, config: &Config, how: &str) {
        let (from, since) = (self.from, self.since().unwrap_or("unknown"));
        let known_since = self.record.map_or("unknown", |r| r.created_at.as_str());
        let elsewhere = &self.elsewhere;
        let Some(to) = self.to else {
            tracing::error!(slot = %name, lost_from = %from, last_confirmed_at = %since,
                "DATA LOSS: replication slot {name:?} (known since {known_since}) {how}{elsewhere}. \
                 Changes committed after WAL {from} ({since}) can no longer be streamed. \
                 [source] on_slot_lost = \"stop\": nothing is delivered until a person acts; {}",
                self.manual(config));
            return;
        };
        let recovery = match &config.source.changed_at {
            Some(column) => format!(
                "the leads whose {column} is at or after {since} less {} are backfilled to every webhook ([source] changed_at)",
                humantime::format_duration(config.source.changed_at_margin)
            ),
            None => self.manual(config),
        };
        tracing::error!(slot = %name, lost_from = %from, lost_to = %to, last_confirmed_at = %since,
            "DATA LOSS: replication slot {name:?} (known since {known_since}) {how}{elsewhere}. \
             Changes committed between WAL {from} and {to} (from {since} until now) were never decoded and will not be streamed. \
             The slot was re-created at {to} so that nothing more is lost; {recovery}");
    }

    /// What a person runs to deliver the gap.
    fn manual(&self, config: &Config) -> String {
        let column = config
            .source
            .changed_at
            .as_deref()
            .unwrap_or("<a column your application sets on every save>");
        match self.since() {
            Some(since) => format!(
                "deliver the leads changed in the gap with: leadhook backfill --where \"{column} >= '{since}'\" \
                 (set [source] changed_at to have that done at once)"
            ),
            None => "deliver the leads changed in the gap with: leadhook backfill (the gap's start is not known)".into(),
        }
    }

    /// With `[source] changed_at`: files the backfill of the leads changed
    /// since the gap began, less the margin, for every webhook.
    pub(super) async fn recover(&self, sql: &Client, config: &Config) {
        let Some(column) = &config.source.changed_at else {
            return;
        };
        let where_sql = self.since().map(|since| {
            format!(
                "{} >= {}::timestamptz - interval '{} seconds'",
                escape_identifier(column),
                escape_literal(since),
                config.source.changed_at_margin.as_secs_f64()
            )
        });
        let request = Request {
            webhooks: None,
            where_sql,
            batch: DEFAULT_BATCH,
            rate: None,
            // Only this shard's leads were in its slot.
            shards: config.source.shard_of().1 as i32,
            only_shard: Some(config.source.shard_of().0 as i32),
            reason: format!(
                "slot {:?} lost: the changes after WAL {}",
                config.source.slot, self.from
            ),
            auto_for: None,
        };
        match runs::file(sql, &config.database.schema, &request).await {
            Ok(run) => {
                tracing::warn!(run = ?run, condition = ?request.where_sql, "filed the backfill of the leads changed in the lost slot's gap")
            }
            Err(e) => tracing::error!(error = %crate::database::with_causes(&e),
                "cannot file the backfill of the lost slot's gap; {}", self.manual(config)),
        }
    }
}
