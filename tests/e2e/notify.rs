//! Notify mode: the trigger outbox with LISTEN/NOTIFY, on a cluster with
//! `wal_level = replica` (except where it is compared with replication mode).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use leadhook::throwaway::{ClusterOptions, WalLevel};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);
const DELIVERING: &str = "delivering from the outbox";

async fn start(db: &TestDb, webhooks: &str) -> Sidecar {
    let mut sidecar = Sidecar::start(&db.notify_config(webhooks));
    sidecar.wait_log(DELIVERING).await;
    sidecar
}

#[tokio::test]
async fn notify_mode_payloads_are_byte_identical_to_replication_mode() {
    let db = TestDb::create(shared_cluster(), "identical").await;
    let receiver = Receiver::start(0).await.unwrap();
    let mut replication = Sidecar::start(&db.config(&webhook("hook", &receiver, "/replication")));
    db.wait_streaming(&mut replication).await;
    let _notify = start(&db, &webhook("hook", &receiver, "/notify")).await;

    for statement in [
        "INSERT INTO leads (email, company, notes, score) VALUES (NULL, 'Zoë \"Q\" \\ ✓', E'two\\nlines', NULL)",
        "INSERT INTO leads (email, notes, score)
           SELECT 'big@example.com', string_agg(md5(random()::text), ''), 7 FROM generate_series(1, 6400)",
        "UPDATE leads SET score = 8 WHERE email = 'big@example.com'",
        "BEGIN; INSERT INTO leads (email) VALUES ('rolled@back'); ROLLBACK;",
    ] {
        db.sql.batch_execute(statement).await.unwrap();
    }
    let from_stream = receiver.wait_for("/replication", 3, WAIT).await.unwrap();
    let from_outbox = receiver.wait_for("/notify", 3, WAIT).await.unwrap();
    let bodies = |got: &[ReceivedRequest]| -> HashSet<Vec<u8>> {
        got.iter().map(|r| r.body.to_vec()).collect()
    };
    assert_eq!(bodies(&from_outbox), bodies(&from_stream));
    assert_eq!(bodies(&from_outbox).len(), 3);
    assert!(
        from_outbox
            .iter()
            .all(|r| r.header("webhook-id").unwrap().starts_with("outbox-"))
    );
}

#[tokio::test]
async fn webhooks_rollbacks_other_tables_and_a_ten_thousand_row_transaction() {
    let db = TestDb::create(shared_replica_cluster(), "notify_basic").await;
    db.sql
        .batch_execute("CREATE TABLE orders (id serial PRIMARY KEY, email text)")
        .await
        .unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let hooks = format!(
        "{}headers = {{ X-Tenant = \"acme\" }}\n\n{}method = \"PUT\"\n\n[[webhooks]]\nname = \"off\"\nurl = \"{}\"\nenabled = false\n",
        webhook("a", &receiver, "/a"),
        webhook("b", &receiver, "/b"),
        receiver.url("/off")
    );
    let sidecar = start(&db, &hooks).await;

    for statement in [
        "BEGIN; INSERT INTO leads (email, score) VALUES ('rolled', -1); ROLLBACK;",
        "INSERT INTO orders (email) VALUES ('order')",
        "INSERT INTO leads (email, score) SELECT 'n' || i, i FROM generate_series(1, 10000) i",
    ] {
        db.sql.batch_execute(statement).await.unwrap();
    }
    let a = wait_for_scores(&receiver, "/a", 10_000, &sidecar).await;
    let b = wait_for_scores(&receiver, "/b", 10_000, &sidecar).await;
    assert!(
        a.iter()
            .all(|r| r.method == "POST" && r.header("x-tenant") == Some("acme"))
    );
    assert!(b.iter().all(|r| r.method == "PUT"));
    assert!(
        !scores_of(&a).contains(&-1),
        "the rolled-back insert was delivered"
    );
    assert_eq!(scores_of(&a).len(), 10_000, "nothing else (orders) arrived");
    assert!(receiver.requests_to("/off").is_empty());
    let deadline = Instant::now() + WAIT;
    loop {
        let left: i64 = db
            .sql
            .query_one("SELECT count(*) FROM leadhook.outbox", &[])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} handled rows were not deleted from the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_receiver_outage_delays_but_loses_nothing() {
    let db = TestDb::create(shared_replica_cluster(), "notify_down").await;
    let mut receiver = Receiver::start(0).await.unwrap();
    let sidecar = start(
        &db,
        &(webhook("hook", &receiver, "/leads")
            + "initial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n"),
    )
    .await;
    receiver.stop().await;
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'd' || i, i FROM generate_series(1, 20) i",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held: i64 = db
        .sql
        .query_one("SELECT count(*) FROM leadhook.outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 20, "undelivered rows stay in the outbox");
    receiver.start_again().await.unwrap();
    wait_for_scores(&receiver, "/leads", 20, &sidecar).await;
}

#[tokio::test]
async fn a_killed_sidecar_redelivers_with_the_same_webhook_ids() {
    let db = TestDb::create(shared_replica_cluster(), "notify_kill").await;
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_millis(5)));
    let mut sidecar = start(
        &db,
        &(webhook("hook", &receiver, "/leads") + "max_in_flight = 4\n"),
    )
    .await;
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'k' || i, i FROM generate_series(1, 1000) i",
        )
        .await
        .unwrap();
    receiver.wait_for("/leads", 100, WAIT).await.unwrap();
    sidecar.kill();
    assert!(
        receiver.requests_to("/leads").len() < 1000,
        "the kill must land mid-way"
    );
    sidecar.restart();
    let got = wait_for_scores(&receiver, "/leads", 1000, &sidecar).await;
    let mut ids: HashMap<&str, &[u8]> = HashMap::new();
    for request in &got {
        if let Some(first) = ids.insert(request.header("webhook-id").unwrap(), &request.body) {
            assert_eq!(first, &request.body[..], "a redelivery changed its body");
        }
    }
    assert_eq!(ids.len(), 1000, "one id per change, the same on redelivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_survived() {
    let mut cluster = start_cluster(ClusterOptions {
        wal_level: WalLevel::Replica,
        ..ClusterOptions::default()
    });
    let db = TestDb::create(&cluster, "notify_pgrestart").await;
    let receiver = Receiver::start(0).await.unwrap();
    let mut sidecar = start(&db, &webhook("hook", &receiver, "/leads")).await;
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'r' || i, i FROM generate_series(1, 50) i",
        )
        .await
        .unwrap();
    tokio::task::block_in_place(|| cluster.restart()).unwrap();
    let sql = connect(&db.url).await;
    sql.batch_execute(
        "INSERT INTO leads (email, score) SELECT 'r' || i, i FROM generate_series(51, 100) i",
    )
    .await
    .unwrap();
    wait_for_scores(&receiver, "/leads", 100, &sidecar).await;
    sidecar.wait_log("reconnecting").await;
}

#[tokio::test]
async fn a_row_whose_notification_was_missed_is_found_by_the_poll() {
    let db = TestDb::create(shared_replica_cluster(), "notify_poll").await;
    let receiver = Receiver::start(0).await.unwrap();
    let sidecar = start(&db, &webhook("hook", &receiver, "/leads")).await;
    // Written straight into the outbox: no trigger, so no NOTIFY rings.
    db.sql
        .batch_execute(
            r#"INSERT INTO leadhook.outbox (op, lead_key, lead) VALUES ('insert', '["99"]',
               '{"email": "polled@example.com", "company": null, "first_name": null, "last_name": null, "phone": null,
                 "website": null, "position": null, "twitter": null, "linkedin": null, "notes": null, "score": "1"}')"#,
        )
        .await
        .unwrap();
    let got = receiver
        .wait_for("/leads", 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(data(&got[0])["email"], "polled@example.com");
    drop(sidecar);
}

#[tokio::test]
async fn two_instances_never_deliver_the_same_row_and_the_standby_takes_over() {
    let db = TestDb::create(shared_replica_cluster(), "notify_two").await;
    let receiver = Receiver::start(0).await.unwrap();
    let hook = webhook("hook", &receiver, "/leads");
    let mut first = start(&db, &hook).await;
    let mut second = Sidecar::start(&db.notify_config(&hook));
    second.wait_log("standing by").await;

    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 't' || i, i FROM generate_series(1, 300) i",
        )
        .await
        .unwrap();
    let got = wait_for_scores(&receiver, "/leads", 300, &first).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = receiver.requests_to("/leads");
    assert_eq!(
        got_now.len(),
        300,
        "a row was delivered twice ({} requests for 300 rows)",
        got.len()
    );

    first.kill();
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 't' || i, i FROM generate_series(301, 350) i",
        )
        .await
        .unwrap();
    wait_for_scores(&receiver, "/leads", 350, &second).await;
}

#[tokio::test]
async fn check_and_setup_handle_notify_mode_without_replication_rights() {
    let db = TestDb::create(shared_replica_cluster(), "notify_setup").await;
    let role = format!("{}_app", db.name);
    db.sql
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT CREATE ON DATABASE {} TO {role}; ALTER TABLE leads OWNER TO {role};", db.name))
        .await
        .unwrap();
    let url = db.url.replace("postgres:postgres@", &format!("{role}:pw@"));
    let config = db
        .notify_config("")
        .replace(&db.url, &url)
        .replace("[source]\n", "[source]\ncreate = false\n");

    let (code, stdout, _, _) = run_leadhook(&config, &["check"], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("notify mode (wal_level = replica, no replication needed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("problem  notify mode needs the outbox"),
        "{stdout}"
    );
    assert!(!stdout.contains("may not replicate"), "{stdout}");

    let (code, printed, _, _) = run_leadhook(&config, &["setup"], &[]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains(
            "CREATE TRIGGER leadhook_capture AFTER INSERT OR UPDATE ON \"public\".\"leads\""
        ),
        "{printed}"
    );
    let (code, applied, stderr, _) = run_leadhook(&config, &["setup", "--apply"], &[]);
    assert_eq!(code, Some(0), "{applied}{stderr}");
    let (code, stdout, _, _) = run_leadhook(&config, &["check"], &[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("outbox \"leadhook\".outbox and its capture trigger are installed"),
        "{stdout}"
    );

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('pending')")
        .await
        .unwrap();
    let (code, removed, _, _) = run_leadhook(&config, &["setup", "--uninstall"], &[]);
    assert_eq!(code, Some(0), "{removed}");
    assert!(
        removed.contains("removed the capture trigger leadhook_capture"),
        "{removed}"
    );
    assert!(
        removed.contains("removed the outbox \"leadhook\".outbox (1 undelivered change(s) in it)"),
        "{removed}"
    );
    let gone: bool = db
        .sql
        .query_one("SELECT to_regclass('leadhook.outbox') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone);
}

#[tokio::test]
async fn a_long_schema_name_and_dollar_quotes_in_names_never_break_the_applications_writes() {
    let db = TestDb::create(shared_replica_cluster(), "names").await;
    // 60 bytes, with `$$` in it: the old channel name `<schema>_outbox`
    // did not fit, and `$$` ended the generated function body.
    let schema = "leadhook_state_for_partner_webhooks_$$_of_team_eu_production";
    assert_eq!(schema.len(), 60);
    db.sql
        .batch_execute(r#"ALTER TABLE leads RENAME COLUMN email TO "e$$mail""#)
        .await
        .unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let config = db
        .notify_config(&webhook("hook", &receiver, "/leads"))
        .replace(
            "[source]\n",
            "[source.columns]\nemail = \"e$$mail\"\n\n[source]\n",
        )
        .replace(
            "[database]\n",
            &format!("[database]\nschema = \"{schema}\"\n"),
        );
    let mut sidecar = Sidecar::start(&config);
    sidecar.wait_log(DELIVERING).await;
    db.sql
        .execute(
            r#"INSERT INTO leads ("e$$mail", score) VALUES ('dollar@example.com', 1)"#,
            &[],
        )
        .await
        .expect("the application's INSERT succeeds");
    let got = wait_for_scores(&receiver, "/leads", 1, &sidecar).await;
    assert_eq!(data(&got[0])["email"], "dollar@example.com");
}
