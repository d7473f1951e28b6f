use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use reqwest::header::HeaderValue;

use super::Entry;
use super::store::SpoolStore;
use crate::checkpoint::{Checkpoint, Targets};
use crate::config::Config;
use crate::database::Database;
use crate::delivery::{Event, Webhook};
use crate::lsn::Lsn;
use crate::memory::MemoryBudget;

/// Entries for webhook "a", each change given as (id, lead, position, payload).
fn entries(changes: &[(&'static str, u64, i64, &str)]) -> Vec<Entry> {
    let config = Config::from_toml(
        "[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\nname = \"a\"\nurl = \"http://h/\"\n",
    )
    .unwrap();
    let transport = crate::delivery::clients::Clients::default()
        .transport(&config.webhooks[0])
        .unwrap();
    let hook = Arc::new(Webhook::new(
        &config.webhooks[0],
        &Default::default(),
        transport,
    ));
    let checkpoint = Checkpoint::for_outbox(1);
    let budget = MemoryBudget::new(1 << 20);
    changes
        .iter()
        .map(|&(id, key, position, payload)| Entry {
            index: 0,
            hook: hook.clone(),
            event: Arc::new(Event {
                id: HeaderValue::from_static(id),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
                memory: budget.none(),
                key,
                tx: checkpoint.begin(Lsn(1)),
                position: (position, 0),
                targets: Targets::default(),
                commit_time: 0,
            }),
            tried: None,
            written: Arc::new(AtomicU64::new(0)),
        })
        .collect()
}

async fn spool() -> (leadhook_testkit::cluster::Cluster, SpoolStore) {
    let cluster = leadhook_testkit::cluster::Cluster::start(Default::default()).expect("a cluster");
    let db = Database::from_url(&format!("{}?sslmode=disable", cluster.url("postgres"))).unwrap();
    let sql = db.sql().await.unwrap();
    sql.batch_execute(&format!(
        "CREATE SCHEMA leadhook; {}",
        crate::setup::objects::spool_statement("leadhook")
    ))
    .await
    .unwrap();
    (cluster, SpoolStore::new(db, "leadhook"))
}

#[tokio::test]
async fn a_change_streamed_again_is_neither_doubled_nor_queued_behind_a_later_change_of_its_lead() {
    let (_cluster, store) = spool().await;
    // K2 (lead 7) is in the spool: K1, its lead's earlier change, was
    // handled before it was spooled.
    let added = store
        .insert(&entries(&[("k2", 7, 20, "{}")]))
        .await
        .unwrap();
    assert_eq!(added.get("a"), Some(&1));
    // After a restart the stream sends K1, L1 (another lead) and K2 again.
    let again = entries(&[
        ("k1", 7, 10, "{}"),
        ("l1", 8, 15, "{}"),
        ("k2", 7, 20, "{}"),
    ]);
    let added = store.insert(&again).await.unwrap();
    assert_eq!(added.get("a"), Some(&1), "only L1 is new");
    let rows = store.fetch("a", 0, 100, 1 << 20).await.unwrap();
    let ids: Vec<_> = rows
        .iter()
        .map(|r| r.id.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["k2", "l1"]);
}

#[tokio::test]
async fn a_look_at_the_spool_reads_whole_rows_up_to_its_byte_limit_oldest_first() {
    let (_cluster, store) = spool().await;
    let big = "x".repeat(1000);
    let big = big.as_str();
    store
        .insert(&entries(&[
            ("r1", 1, 1, big),
            ("r2", 2, 2, big),
            ("r3", 3, 3, big),
        ]))
        .await
        .unwrap();
    let ids = |rows: Vec<super::store::SpooledChange>| -> Vec<String> {
        rows.iter()
            .map(|r| r.id.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(store.fetch("a", 0, 100, 1500).await.unwrap()),
        ["r1", "r2"]
    );
    assert_eq!(
        ids(store.fetch("a", 0, 100, 1).await.unwrap()),
        ["r1"],
        "always one"
    );
    let first = store.fetch("a", 0, 1, 1 << 20).await.unwrap();
    assert_eq!(
        ids(store.fetch("a", first[0].row, 100, 1 << 20).await.unwrap()),
        ["r2", "r3"]
    );
    assert_eq!(
        store.payload("a", first[0].row).await.unwrap().as_deref(),
        Some(big.as_bytes())
    );
}
