//! Which changes become events, and how they reach the webhooks.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn insert_then_update_arrive_in_commit_order_with_distinct_ids() {
    let (db, receiver, _sidecar) = streaming_to_one_webhook("order").await;

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
    let db = TestDb::create(shared_cluster(), "fanout").await;
    let receiver = Receiver::start(0).await.unwrap();
    let webhooks = format!(
        "{}headers = {{ Authorization = \"Bearer ${{FANOUT_TOKEN}}\", X-Tenant = \"acme\" }}\n\n\
         [[webhooks]]\nname = \"crm\"\nurl = \"{}\"\nmethod = \"PUT\"\n\n\
         [[webhooks]]\nname = \"patcher\"\nurl = \"{}\"\nmethod = \"PATCH\"\n\n\
         [[webhooks]]\nname = \"off\"\nurl = \"{}\"\nenabled = false\n",
        webhook("tracking", &receiver, "/tracking"),
        receiver.url("/crm"),
        receiver.url("/patch"),
        receiver.url("/disabled"),
    );
    let mut sidecar =
        Sidecar::start_with_env(&db.config(&webhooks), &[("FANOUT_TOKEN", "s3cret-token")]);
    db.wait_streaming(&mut sidecar).await;

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
    let (db, receiver, _sidecar) = streaming_to_one_webhook("rollback").await;

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
    let (db, receiver, _sidecar) = streaming_to_one_webhook("bulk").await;

    db.sql
        .batch_execute("INSERT INTO leads (email, score) SELECT 'lead' || i || '@example.com', i FROM generate_series(1, 10000) i")
        .await
        .unwrap();
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
    let db = TestDb::create(shared_cluster(), "others").await;
    db.sql
        .batch_execute(&format!(
            "CREATE TABLE orders (id serial PRIMARY KEY, email text, score int);
             CREATE PUBLICATION {} FOR ALL TABLES;",
            db.name
        ))
        .await
        .unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let mut sidecar = Sidecar::start(&db.config(&webhook("hook", &receiver, "/leads")));
    db.wait_streaming(&mut sidecar).await;

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
    let (db, receiver, mut sidecar) = streaming_to_one_webhook("ddl").await;

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
    let db = TestDb::create(shared_cluster(), "down").await;
    let mut receiver = Receiver::start(0).await.unwrap();
    let mut sidecar = Sidecar::start(&db.config(&webhook("hook", &receiver, "/leads")));
    db.wait_streaming(&mut sidecar).await;

    receiver.stop().await;
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'l' || i, i FROM generate_series(1, 5) i",
        )
        .await
        .unwrap();
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
    let db = TestDb::create(shared_cluster(), "retry").await;
    let receiver = Receiver::start(0).await.unwrap();
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
    let config = db
        .config(&webhook("hook", &receiver, "/leads"))
        .replace("timeout = \"2s\"", "timeout = \"500ms\"");
    let mut sidecar = Sidecar::start(&config);
    db.wait_streaming(&mut sidecar).await;

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
    let db = TestDb::create(shared_cluster(), "slow").await;
    let receiver = Receiver::start(0).await.unwrap();
    // The first 40 deliveries take 250 ms each: 10 s, well past the 4 s
    // wal_sender_timeout, while the backlog (2 000 changes) is larger than
    // the sidecar's buffers, so the source has to stop reading meanwhile.
    receiver.set_responder(|_, n| Reply {
        delay: Duration::from_millis(if n <= 40 { 250 } else { 0 }),
        ..Reply::ok()
    });
    // One request at a time, so the slow ones add up.
    let hook = webhook("hook", &receiver, "/leads") + "max_in_flight = 1\n";
    let mut sidecar = Sidecar::start(&db.config(&hook));
    db.wait_streaming(&mut sidecar).await;

    db.sql.batch_execute("INSERT INTO leads (email, score) SELECT 'slow' || i, i FROM generate_series(1, 2000) i").await.unwrap();
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
    let db = TestDb::create(shared_cluster(), "nohooks").await;
    let receiver = Receiver::start(0).await.unwrap();
    let off = webhook("off", &receiver, "/off") + "enabled = false\n";
    let mut sidecar = Sidecar::start(&db.config(&off));
    db.wait_streaming(&mut sidecar).await;
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('nobody')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if db.confirmed_past(&after).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not confirmed; log:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(receiver.requests().is_empty());
    assert!(!sidecar.log().contains("reconnecting"), "{}", sidecar.log());
}
