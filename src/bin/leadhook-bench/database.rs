//! The benchmark's data: a leads table whose `notes` records the commit time
//! (µs since the epoch), committed in transactions of a chosen size.

use std::time::Duration;

use anyhow::Context;
use leadhook::throwaway::Cluster;
use tokio_postgres::{Client, NoTls};

const TABLE: &str = "CREATE TABLE leads (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,
    company    text, first_name text, last_name text, phone text, website text,
    position   text, twitter text, linkedin text,
    notes      text DEFAULT ((extract(epoch FROM clock_timestamp()) * 1000000)::bigint)::text,
    score      integer NOT NULL DEFAULT 0
)";

/// One database of the run: its own table, publication and slots.
pub struct BenchDb {
    pub name: String,
    pub url: String,
    pub sql: Client,
}

pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

impl BenchDb {
    /// A fresh database with the table, the publication `bench` and the
    /// given logical slots, all created before any lead is written.
    pub async fn create(cluster: &Cluster, name: &str, slots: &[&str]) -> anyhow::Result<BenchDb> {
        connect(&cluster.url("postgres"))
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = cluster.url(name);
        let sql = connect(&url).await?;
        sql.batch_execute(TABLE).await?;
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

    /// Commits `count` leads in transactions of `batch` rows; returns the
    /// WAL position after the last commit.
    pub async fn insert(&self, count: u64, batch: u64) -> anyhow::Result<String> {
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

    pub async fn lsn(&self) -> anyhow::Result<String> {
        Ok(self
            .sql
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0))
    }

    /// Waits until a walsender streams from `slot`.
    pub async fn wait_active(&self, slot: &str) -> anyhow::Result<()> {
        for _ in 0..600 {
            let row = self
                .sql
                .query_one(leadhook::throwaway::SLOT_IS_STREAMING, &[&slot])
                .await?;
            if row.get::<_, bool>(0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("slot {slot} never became active")
    }

    /// The sidecar's config for this database, delivering to `urls`.
    pub fn sidecar_config(&self, slot: &str, urls: &[String]) -> String {
        self.config_for("replication", slot, urls)
    }

    /// The same for notify mode (trigger outbox).
    pub fn notify_config(&self, urls: &[String]) -> String {
        self.config_for("notify", &self.name, urls)
    }

    fn config_for(&self, mode: &str, slot: &str, urls: &[String]) -> String {
        let mut config = format!(
            "[database]\nurl = \"{}?sslmode=disable\"\n[source]\nmode = \"{mode}\"\nslot = \"{slot}\"\npublication = \"bench\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            self.url
        );
        for (i, url) in urls.iter().enumerate() {
            config.push_str(&format!(
                "[[webhooks]]\nname = \"hook{i}\"\nurl = \"{url}\"\n"
            ));
        }
        config
    }
}
