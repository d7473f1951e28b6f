//! A database of a test's own with the leads table, and the questions tests
//! ask the server about WAL and slots.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, NoTls};

use crate::cluster::{Cluster, PASSWORD, SUPERUSER};
use crate::config::SidecarConfig;
use crate::sidecar::Sidecar;

/// The leads table as the product documents it, plus a key and a timestamp.
/// The one definition the tests, the benchmark and the demo use.
pub const LEADS_TABLE: &str = "CREATE TABLE leads (
    id          bigserial PRIMARY KEY,
    email       text,
    company     text,
    first_name  text,
    last_name   text,
    phone       text,
    website     text,
    position    text,
    twitter     text,
    linkedin    text,
    notes       text,
    score       integer,
    updated_at  timestamptz DEFAULT now()
)";

/// Whether a walsender holds the slot named `$1`, i.e. streams from it
/// (asked through [`slot_is_streaming`]).
/// Not `pg_replication_slots.active`: that is also true while the slot is
/// still being created, before its consistent point, when changes committed
/// are not captured.
const SLOT_IS_STREAMING: &str = "SELECT EXISTS (SELECT 1 FROM pg_replication_slots s
    JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)";

/// A database of its own on a cluster, with the leads table; its name
/// doubles as the slot and publication name.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub sql: Client,
}

impl TestDb {
    /// `CREATE DATABASE <prefix>_<pid>_<n>` with the leads table in it.
    pub async fn create(cluster: &Cluster, prefix: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        connect(&cluster.url("postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = cluster.url(&name);
        let sql = connect(&url).await;
        sql.batch_execute(LEADS_TABLE)
            .await
            .expect("create leads table");
        TestDb { name, url, sql }
    }

    /// A config for this database: its slot and publication, an admin
    /// endpoint on a free port, a 2 s delivery timeout, no webhooks yet.
    pub fn config(&self) -> SidecarConfig {
        SidecarConfig::new(format!("{}?sslmode=disable", self.url)).slot(&self.name)
    }

    /// [`Self::config`], connecting as `role` (with `password`) instead of
    /// the superuser: for the tests of what a least-privileged role may do.
    pub fn config_as(&self, role: &str, password: &str) -> SidecarConfig {
        let url = self.url.replacen(
            &format!("{SUPERUSER}:{PASSWORD}@"),
            &format!("{role}:{password}@"),
            1,
        );
        SidecarConfig::new(format!("{url}?sslmode=disable")).slot(&self.name)
    }

    /// Rows in the notify-mode outbox (schema `leadhook`).
    pub async fn outbox_rows(&self) -> i64 {
        self.sql
            .query_one("SELECT count(*) FROM leadhook.outbox", &[])
            .await
            .expect("count outbox rows")
            .get(0)
    }

    /// Rows waiting in the spool (schema `leadhook`) for `webhook`.
    pub async fn spool_rows(&self, webhook: &str) -> i64 {
        self.sql
            .query_one(
                "SELECT count(*) FROM leadhook.spool WHERE webhook = $1",
                &[&webhook],
            )
            .await
            .expect("count spool rows")
            .get(0)
    }

    /// Waits until the sidecar streams from this database's slot: every
    /// change committed from then on is captured.
    pub async fn wait_streaming(&self, sidecar: &Sidecar) {
        sidecar.wait_streaming(&self.sql, &self.name).await;
    }

    /// Commits one lead per score, each in its own transaction.
    pub async fn insert_leads(&self, scores: RangeInclusive<i32>) {
        insert_leads(&self.sql, scores).await;
    }

    /// The leads [`Self::insert_leads`] commits, in one transaction.
    pub async fn insert_leads_in_one_transaction(&self, scores: RangeInclusive<i32>) {
        insert_leads_in_one_transaction(&self.sql, scores).await;
    }

    /// The end of everything written so far.
    pub async fn insert_lsn(&self) -> String {
        wal_insert_lsn(&self.sql).await
    }

    /// Whether this database's slot has confirmed everything up to `lsn`.
    pub async fn confirmed_past(&self, lsn: &str) -> bool {
        slot_confirmed_past(&self.sql, &self.name, lsn).await
    }

    /// Waits until the slot has confirmed everything committed so far (what
    /// `sidecar` is to have done, as `what` says if it does not).
    pub async fn wait_confirmed(&self, what: &str, sidecar: &Sidecar) {
        let lsn = self.insert_lsn().await;
        crate::wait::eventually(
            what,
            || sidecar.log(),
            async || self.confirmed_past(&lsn).await,
        )
        .await;
    }

    /// WAL the slot still retains: the server's position minus the confirmed one.
    pub async fn retained_wal(&self) -> i64 {
        self.sql
            .query_one(
                "SELECT (pg_current_wal_insert_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.name],
            )
            .await
            .expect("query slot")
            .get(0)
    }
}

/// A connection for the test's own SQL; panics with the URL if it fails.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// [`connect`] for callers that report errors rather than panic.
pub async fn try_connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Commits one lead per score, `lead<score>@example.com`, each in its own
/// transaction (tests number leads by score).
pub async fn insert_leads(sql: &Client, scores: RangeInclusive<i32>) {
    for score in scores {
        sql.execute(
            "INSERT INTO leads (email, score) VALUES ('lead' || $1::int || '@example.com', $1)",
            &[&score],
        )
        .await
        .expect("insert lead");
    }
}

/// The leads [`insert_leads`] commits, in one transaction (one statement):
/// for tests of large transactions, or of a backlog that arrives at once.
pub async fn insert_leads_in_one_transaction(sql: &Client, scores: RangeInclusive<i32>) {
    sql.execute(
        "INSERT INTO leads (email, score)
         SELECT 'lead' || i || '@example.com', i FROM generate_series($1::int, $2::int) i",
        &[scores.start(), scores.end()],
    )
    .await
    .expect("insert leads");
}

/// The server's WAL insert position (with `synchronous_commit = off` the
/// write position can trail a commit).
pub async fn wal_insert_lsn(sql: &Client) -> String {
    sql.query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0)
}

/// Whether `slot` on the server behind `sql` has confirmed everything up to `lsn`.
pub async fn slot_confirmed_past(sql: &Client, slot: &str, lsn: &str) -> bool {
    sql.query_one(
        "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot, &lsn],
    )
    .await
    .expect("query slots")
    .get(0)
}

/// Whether a walsender streams from `slot` ([`SLOT_IS_STREAMING`]).
pub async fn slot_is_streaming(sql: &Client, slot: &str) -> bool {
    try_slot_is_streaming(sql, slot).await.expect("query slots")
}

/// [`slot_is_streaming`] for callers that report errors rather than panic.
pub async fn try_slot_is_streaming(
    sql: &Client,
    slot: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(sql.query_one(SLOT_IS_STREAMING, &[&slot]).await?.get(0))
}
