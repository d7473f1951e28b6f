//! Scale-out by shards: `[source] shard = "K/N"` gives each instance its own
//! publication (a row filter on a hash of the key) and slot, so each lead
//! belongs to one shard and is delivered once, by that shard's instance;
//! `setup --apply` creates every shard's objects, and a backfill is done by
//! each shard for its own leads.

use std::collections::BTreeMap;

use crate::support::*;

/// Shard `k` of two, with a webhook that says which instance sent it.
fn shard_config(db: &TestDb, receiver: &Receiver, k: u32) -> SidecarConfig {
    db.config()
        .with(|c| {
            c.source.shard = Some(format!("{k}/2"));
            c.source.create = Some(false);
        })
        .webhook(Webhook::to(receiver, "hook", "/leads").header("X-Shard", &k.to_string()))
}

/// Which instance delivered each score, in arrival order.
fn senders(receiver: &Receiver) -> BTreeMap<i64, Vec<String>> {
    let mut by_score: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for request in receiver.requests_to("/leads") {
        let score = data(&request)["score"].as_i64().expect("score");
        let shard = request.header("x-shard").expect("X-Shard").to_owned();
        by_score.entry(score).or_default().push(shard);
    }
    by_score
}

/// Each lead's shard as the server computes it, by score.
async fn shard_of_each_lead(db: &TestDb) -> BTreeMap<i64, String> {
    db.sql
        .query(
            "SELECT score::int8, (abs(hashint8(id)::int8) % 2)::text FROM leads",
            &[],
        )
        .await
        .expect("read the leads")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn two_shards_each_deliver_their_own_leads_once_live_and_in_a_backfill() {
    let db = TestDb::create(shared_cluster(), "shards").await;
    insert_leads_in_one_transaction(&db.sql, 1..=100).await;
    let receiver = Receiver::start(0).await.expect("a receiver");
    let configs = [
        shard_config(&db, &receiver, 0),
        shard_config(&db, &receiver, 1),
    ];

    let setup = run_command(&configs[0], &["setup", "--apply"]).await;
    setup.assert_success();
    for k in 0..2 {
        let name = format!("{}_{k}_of_2", db.name);
        let filter: Option<String> = db
            .sql
            .query_one(
                "SELECT rowfilter FROM pg_publication_tables WHERE pubname = $1",
                &[&name],
            )
            .await
            .unwrap_or_else(|e| panic!("publication {name}: {e}"))
            .get(0);
        assert!(
            filter
                .as_deref()
                .is_some_and(|f| f.contains("hashint8") && f.contains(&format!("= {k}"))),
            "shard {k}'s row filter: {filter:?}"
        );
    }

    // create = false: each instance uses what setup made for its shard.
    let sidecars = [
        leadhook().start(&configs[0].to_toml()),
        leadhook().start(&configs[1].to_toml()),
    ];
    for (k, sidecar) in sidecars.iter().enumerate() {
        sidecar
            .wait_streaming(&db.sql, &format!("{}_{k}_of_2", db.name))
            .await;
    }
    insert_leads(&db.sql, 101..=300).await;
    receiver
        .wait_for("/leads", 200, WAIT)
        .await
        .expect("the live leads");

    let backfill = run_command(
        &configs[0],
        &["backfill", "--where", "score <= 100", "--batch", "30"],
    )
    .await;
    backfill.assert_success();
    assert!(
        backfill.stdout.contains("done: 100 of 100 leads"),
        "{}",
        backfill.stdout
    );
    receiver
        .wait_for("/leads", 300, WAIT)
        .await
        .expect("the backfilled leads");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let expected = shard_of_each_lead(&db).await;
    let got = senders(&receiver);
    assert_eq!(got.len(), 300, "every lead delivered");
    for (score, shards) in &got {
        assert_eq!(
            shards,
            &vec![expected[score].clone()],
            "lead {score}: once, by the instance of its shard"
        );
    }
    let by_zero = got.values().filter(|s| s[0] == "0").count();
    assert!(
        (50..=250).contains(&by_zero),
        "both shards carry a share: shard 0 delivered {by_zero} of 300"
    );
}
