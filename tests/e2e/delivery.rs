//! Which changes become events, and how they reach the webhooks.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn insert_then_update_arrive_in_commit_order_with_distinct_ids() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("order").start(&leadhook()).await;

    db.sql
        .batch_execute("INSERT INTO leads (email, score) VALUES ('a@example.com', 1)")
        .await
        .unwrap();
    for score in 2..=5 {
        db.sql
            .execute("UPDATE leads SET score = $1", &[&score])
            .await
            .unwrap();
    }
    let got = receiver.wait_for("/leads", 5, WAIT).await.unwrap();
    let scores: Vec<i64> = got
        .iter()
        .map(|r| data(r)["score"].as_i64().unwrap())
        .collect();
    assert_eq!(scores, [1, 2, 3, 4, 5]);
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "every change has its own webhook-id");
}

#[tokio::test]
async fn every_enabled_webhook_gets_every_event_with_its_method_and_headers() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("fanout")
        .webhook_with("tracking", "/tracking", |w| {
            let token = "Bearer ${FANOUT_TOKEN}";
            w.headers.insert("Authorization".into(), token.into());
            w.headers.insert("X-Tenant".into(), "acme".into());
        })
        .webhook_with("crm", "/crm", |w| w.method = Some("PUT".into()))
        .webhook_with("patcher", "/patch", |w| w.method = Some("PATCH".into()))
        .webhook_with("off", "/disabled", |w| w.enabled = Some(false))
        .env("FANOUT_TOKEN", "s3cret-token")
        .start(&leadhook())
        .await;

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('a@example.com'), ('b@example.com')")
        .await
        .unwrap();
    let tracking = receiver.wait_for("/tracking", 2, WAIT).await.unwrap();
    let crm = receiver.wait_for("/crm", 2, WAIT).await.unwrap();
    let patch = receiver.wait_for("/patch", 2, WAIT).await.unwrap();
    assert!(tracking.iter().all(|r| r.method == "POST"
        && r.header("authorization") == Some("Bearer s3cret-token")
        && r.header("x-tenant") == Some("acme")));
    assert!(
        crm.iter()
            .all(|r| r.method == "PUT" && r.header("authorization").is_none())
    );
    assert!(patch.iter().all(|r| r.method == "PATCH"));
    // The id names the change, not the webhook: both got the same (id, body) pairs.
    let pairs = |got: &[ReceivedRequest]| -> HashSet<(String, Vec<u8>)> {
        got.iter()
            .map(|r| (r.header("webhook-id").unwrap().to_owned(), r.body.to_vec()))
            .collect()
    };
    assert_eq!(pairs(&tracking), pairs(&crm));
    assert_eq!(pairs(&tracking).len(), 2);
    // A later change proves the disabled webhook was passed over, not just slow.
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('c@example.com')")
        .await
        .unwrap();
    receiver.wait_for("/tracking", 3, WAIT).await.unwrap();
    receiver.wait_for("/crm", 3, WAIT).await.unwrap();
    assert!(receiver.requests_to("/disabled").is_empty());
    assert!(
        !sidecar.log().contains("s3cret-token"),
        "header values must never be logged"
    );
}

#[tokio::test]
async fn rolled_back_transactions_deletes_and_truncates_send_nothing() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("rollback").start(&leadhook()).await;

    db.sql
        .batch_execute("BEGIN; INSERT INTO leads (email) VALUES ('rolled@back'); ROLLBACK;")
        .await
        .unwrap();
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('kept@example.com')")
        .await
        .unwrap();
    db.sql
        .batch_execute("DELETE FROM leads; TRUNCATE leads;")
        .await
        .unwrap();
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('marker@example.com')")
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let emails: Vec<String> = receiver
        .requests_to("/leads")
        .iter()
        .map(|r| data(r)["email"].to_string())
        .collect();
    assert_eq!(
        emails,
        ["\"kept@example.com\"", "\"marker@example.com\""],
        "{got:?}"
    );
}

#[tokio::test]
async fn a_ten_thousand_row_transaction_makes_ten_thousand_deliveries() {
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("bulk").start(&leadhook()).await;

    db.insert_leads_in_one_transaction(1..=10_000).await;
    let got = receiver
        .wait_for("/leads", 10_000, Duration::from_secs(120))
        .await
        .unwrap();
    // Different leads are delivered concurrently: each exactly once, any order.
    let mut scores: Vec<i64> = got
        .iter()
        .map(|r| data(r)["score"].as_i64().unwrap())
        .collect();
    scores.sort_unstable();
    assert_eq!(scores, (1..=10_000).collect::<Vec<_>>(), "all rows, once");
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 10_000);
}

#[tokio::test]
async fn changes_to_other_tables_are_never_delivered_even_in_a_shared_publication() {
    // A publication of every table, which the sidecar is told to use.
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("others")
        .setup(
            "CREATE TABLE orders (id serial PRIMARY KEY, email text, score int);
             CREATE PUBLICATION shared FOR ALL TABLES;",
        )
        .configure(|c| c.source.publication = Some("shared".into()))
        .start(&leadhook())
        .await;

    db.sql
        .batch_execute(
            "BEGIN; INSERT INTO orders (email) VALUES ('order@example.com'); INSERT INTO leads (email) VALUES ('lead@example.com');
             UPDATE orders SET score = 3; COMMIT;
             INSERT INTO orders (email) VALUES ('order2@example.com');
             INSERT INTO leads (email) VALUES ('marker@example.com');",
        )
        .await
        .unwrap();
    receiver.wait_for("/leads", 2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut emails: Vec<String> = receiver
        .requests_to("/leads")
        .iter()
        .map(|r| data(r)["email"].to_string())
        .collect();
    emails.sort();
    assert_eq!(emails, ["\"lead@example.com\"", "\"marker@example.com\""]);
}

#[tokio::test]
async fn schema_changes_mid_stream_do_not_stop_or_corrupt_the_stream() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("ddl").start(&leadhook()).await;

    db.sql
        .batch_execute("INSERT INTO leads (email, score) VALUES ('before@example.com', 1)")
        .await
        .unwrap();
    db.sql
        .batch_execute(
            "ALTER TABLE leads ADD COLUMN source text DEFAULT 'web';
             INSERT INTO leads (email, score, source) VALUES ('after@example.com', 2, 'ads');
             ALTER TABLE leads DROP COLUMN updated_at;
             ALTER TABLE leads ADD COLUMN extra jsonb;
             UPDATE leads SET company = 'Acme', extra = '{\"a\":1}' WHERE email = 'before@example.com';",
        )
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 3, WAIT).await.unwrap();
    let of = |email: &str| -> Vec<serde_json::Value> {
        got.iter()
            .map(data)
            .filter(|d| d["email"] == email)
            .collect()
    };
    let (before, after) = (of("before@example.com"), of("after@example.com"));
    assert_eq!(before.len(), 2, "insert and update, in commit order");
    assert_eq!(before[0]["company"], serde_json::Value::Null);
    assert_eq!(before[1]["company"], "Acme");
    assert_eq!(before[1]["score"], 1);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["score"], 2);
    assert_eq!(
        before[1].as_object().unwrap().len(),
        11,
        "new columns do not leak into the payload"
    );
    sidecar.assert_running();
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_every_change_once_it_is_back() {
    let Running {
        db,
        mut receiver,
        sidecar,
        ..
    } = Scenario::new("down").start(&leadhook()).await;

    receiver.stop().await;
    db.insert_leads_in_one_transaction(1..=5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sidecar.log().contains("delivery failed"),
        "failures are logged: {}",
        sidecar.log()
    );
    receiver.start_again().await.unwrap();
    let got = receiver.wait_for("/leads", 5, WAIT).await.unwrap();
    let mut scores: Vec<i64> = got
        .iter()
        .map(|r| data(r)["score"].as_i64().unwrap())
        .collect();
    scores.sort_unstable();
    assert_eq!(scores, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn error_statuses_and_timeouts_are_retried_with_the_same_webhook_id() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("retry")
        .configure(|c| c.delivery.timeout = Some(Duration::from_millis(500)))
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, n| match n {
        1 => Reply {
            status: 500,
            ..Reply::ok()
        },
        2 => Reply {
            delay: Duration::from_secs(3),
            ..Reply::ok()
        },
        _ => Reply::ok(),
    });

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('retry@example.com')")
        .await
        .unwrap();
    let got = receiver.wait_for("/leads", 3, WAIT).await.unwrap();
    let ids: HashSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "all attempts carry one id");
    let log = sidecar.log();
    assert!(
        log.contains("HTTP 500") && log.contains("no response within"),
        "{log}"
    );
}

#[tokio::test]
async fn a_slow_receiver_does_not_get_the_stream_cut_off_by_wal_sender_timeout() {
    // One request at a time, so the slow ones add up.
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("slow")
        .webhook_with("hook", "/leads", |w| w.delivery.max_in_flight = Some(1))
        .start(&leadhook())
        .await;
    // The first 40 deliveries take 250 ms each: 10 s, well past the 4 s
    // wal_sender_timeout, while the backlog (2 000 changes) is larger than
    // the sidecar's buffers, so the source has to stop reading meanwhile.
    receiver.set_responder(|_, n| Reply {
        delay: Duration::from_millis(if n <= 40 { 250 } else { 0 }),
        ..Reply::ok()
    });

    db.insert_leads_in_one_transaction(1..=2000).await;
    let got = receiver
        .wait_for("/leads", 2000, Duration::from_secs(90))
        .await
        .unwrap();
    let scores: HashSet<i64> = got
        .iter()
        .map(|r| data(r)["score"].as_i64().unwrap())
        .collect();
    assert_eq!(scores.len(), 2000, "{}", sidecar.log());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = sidecar.log();
    assert!(
        !log.contains("reconnecting"),
        "the session must survive slow deliveries:\n{log}"
    );
    sidecar.assert_running();
}

#[tokio::test]
async fn with_no_enabled_webhook_changes_are_confirmed_without_delivery() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("nohooks")
        .webhook_with("off", "/off", |w| w.enabled = Some(false))
        .start(&leadhook())
        .await;
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('nobody')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    eventually(
        "not confirmed",
        || sidecar.log(),
        async || db.confirmed_past(&after).await,
    )
    .await;
    assert!(receiver.requests().is_empty());
    assert!(!sidecar.log().contains("reconnecting"), "{}", sidecar.log());
}
