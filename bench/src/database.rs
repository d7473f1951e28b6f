//! The benchmark's data: a leads table whose `notes` records the commit time
//! (µs since the epoch), committed in transactions of a chosen size.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use leadhook_testkit::cluster::Cluster;
use leadhook_testkit::config::{SidecarConfig, Webhook};
use leadhook_testkit::database::{LEADS_TABLE, try_connect, try_slot_is_streaming};
use tokio_postgres::Client;

/// Each lead's `notes` records when it was written, for commit→arrival latency.
const NOTES_ARE_COMMIT_TIMES: &str = "ALTER TABLE leads ALTER COLUMN notes
    SET DEFAULT ((extract(epoch FROM clock_timestamp()) * 1000000)::bigint)::text";

/// One database of the run: its own table, publication and slots.
pub(crate) struct BenchDb {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) sql: Client,
}

pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
    try_connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

impl BenchDb {
    /// A fresh database with the table, the publication `bench` and the
    /// given logical slots, all created before any lead is written.
    pub(crate) async fn create(
        cluster: &Cluster,
        name: &str,
        slots: &[&str],
    ) -> anyhow::Result<BenchDb> {
        connect(&cluster.url("postgres"))
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = cluster.url(name);
        let sql = connect(&url).await?;
        sql.batch_execute(LEADS_TABLE).await?;
        sql.batch_execute(NOTES_ARE_COMMIT_TIMES).await?;
        sql.batch_execute("CREATE PUBLICATION bench FOR TABLE leads")
            .await?;
        for slot in slots {
            sql.execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[slot],
            )
            .await?;
        }
        Ok(BenchDb {
            name: name.to_owned(),
            url,
            sql,
        })
    }

    /// The same database over a connection of its own (for a sampler that
    /// must not queue behind the load's statements).
    pub(crate) async fn another_connection(&self) -> anyhow::Result<BenchDb> {
        Ok(BenchDb {
            name: self.name.clone(),
            url: self.url.clone(),
            sql: connect(&self.url).await?,
        })
    }

    /// Commits `count` leads in transactions of `batch` rows; returns the
    /// WAL position after the last commit.
    pub(crate) async fn insert(&self, count: u64, batch: u64) -> anyhow::Result<String> {
        let mut next = 1u64;
        while next <= count {
            let last = (next + batch.max(1) - 1).min(count);
            self.sql
                .execute(
                    "INSERT INTO leads (email, company, first_name, last_name, website, position, score)
                     SELECT 'lead' || i || '@example.com', 'Company ' || i, 'Ada', 'Lovelace',
                            'https://example.com/' || i, 'Engineer', (i % 100)::int
                     FROM generate_series($1::int8, $2::int8) i",
                    &[&(next as i64), &(last as i64)],
                )
                .await?;
            next = last + 1;
        }
        self.lsn().await
    }

    pub(crate) async fn lsn(&self) -> anyhow::Result<String> {
        Ok(self
            .sql
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0))
    }

    /// Waits until a walsender streams from `slot`.
    pub(crate) async fn wait_active(&self, slot: &str) -> anyhow::Result<()> {
        for _ in 0..600 {
            if try_slot_is_streaming(&self.sql, slot).await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("slot {slot} never became active")
    }

    /// The sidecar's config for this database, delivering to `urls`.
    pub(crate) fn sidecar_config(&self, slot: &str, urls: &[String]) -> String {
        self.config_for("replication", slot, urls)
    }

    /// The same for notify mode (trigger outbox).
    pub(crate) fn notify_config(&self, urls: &[String]) -> String {
        self.config_for("notify", &self.name, urls)
    }

    fn config_for(&self, mode: &str, slot: &str, urls: &[String]) -> String {
        let mut config = self
            .config(slot)
            .with(|c| c.source.mode = Some(mode.to_owned()));
        for (i, url) in urls.iter().enumerate() {
            config = config.webhook(Webhook::new(format!("hook{i}"), url.as_str()));
        }
        config.to_toml()
    }

    /// A replication-mode config for this database and `slot`, no webhooks
    /// yet, for phases that configure their webhooks themselves.
    pub(crate) fn config(&self, slot: &str) -> SidecarConfig {
        SidecarConfig::new(format!("{}?sslmode=disable", self.url)).with(|c| {
            c.source.slot = Some(slot.to_owned());
            c.source.publication = Some("bench".to_owned());
            // leadhook's own default timeout, not the tests' short one.
            c.delivery.timeout = None;
        })
    }

    /// Rows in the spool (`leadhook.spool`) per webhook; none before the
    /// sidecar made the table.
    pub(crate) async fn spool_rows(&self) -> anyhow::Result<HashMap<String, i64>> {
        let exists: bool = self
            .sql
            .query_one("SELECT to_regclass('leadhook.spool') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(HashMap::new());
        }
        let rows = self
            .sql
            .query(
                "SELECT webhook, count(*) FROM leadhook.spool GROUP BY webhook",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// WAL the slot holds: from its `restart_lsn` (what the server keeps)
    /// and from its `confirmed_flush_lsn` (what the consumer has not
    /// confirmed), in bytes.
    pub(crate) async fn retained_wal(&self, slot: &str) -> anyhow::Result<(f64, f64)> {
        let row = self
            .sql
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        Ok((
            row.get::<_, Option<f64>>(0).unwrap_or(0.0),
            row.get::<_, Option<f64>>(1).unwrap_or(0.0),
        ))
    }
}
