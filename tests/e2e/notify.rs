//! Notify mode: the trigger outbox with LISTEN/NOTIFY, on a cluster with
//! `wal_level = replica` (except where it is compared with replication mode).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn notify_mode_payloads_are_byte_identical_to_replication_mode() {
    let Running {
        db,
        receiver,
        sidecar: _replication,
        ..
    } = Scenario::new("identical")
        .webhook("hook", "/replication")
        .start(&leadhook())
        .await;
    let notify = db
        .config()
        .notify()
        .webhook(Webhook::to(&receiver, "hook", "/notify"));
    let notify = leadhook().start(&notify.to_toml());
    notify.wait_log(DELIVERING_FROM_OUTBOX).await;

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
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("notify_basic")
        .notify()
        .setup("CREATE TABLE orders (id serial PRIMARY KEY, email text)")
        .webhook_with("a", "/a", |w| {
            w.headers.insert("X-Tenant".into(), "acme".into());
        })
        .webhook_with("b", "/b", |w| w.method = Some("PUT".into()))
        .webhook_with("off", "/off", |w| w.enabled = Some(false))
        .start(&leadhook())
        .await;

    for statement in [
        "BEGIN; INSERT INTO leads (email, score) VALUES ('rolled', -1); ROLLBACK;",
        "INSERT INTO orders (email) VALUES ('order')",
    ] {
        db.sql.batch_execute(statement).await.unwrap();
    }
    db.insert_leads_in_one_transaction(1..=10_000).await;
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
    let left = Cell::new(0);
    eventually(
        "handled rows were not deleted from the outbox",
        || format!("{} left", left.get()),
        async || {
            left.set(db.outbox_rows().await);
            left.get() == 0
        },
    )
    .await;
}

#[tokio::test]
async fn a_receiver_outage_delays_but_loses_nothing() {
    let Running {
        db,
        mut receiver,
        sidecar,
        ..
    } = Scenario::new("notify_down")
        .notify()
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(100));
            w.delivery.max_backoff = Some(Duration::from_millis(500));
        })
        .start(&leadhook())
        .await;
    receiver.stop().await;
    db.insert_leads_in_one_transaction(1..=20).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        db.outbox_rows().await,
        20,
        "undelivered rows stay in the outbox"
    );
    receiver.start_again().await.unwrap();
    wait_for_scores(&receiver, "/leads", 20, &sidecar).await;
}

#[tokio::test]
async fn a_killed_sidecar_redelivers_with_the_same_webhook_ids() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("notify_kill")
        .notify()
        .webhook_with("hook", "/leads", |w| w.delivery.max_in_flight = Some(4))
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_millis(5)));
    db.insert_leads_in_one_transaction(1..=1000).await;
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
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("notify_pgrestart")
        .notify()
        .on(&cluster)
        .start(&leadhook())
        .await;
    db.insert_leads_in_one_transaction(1..=50).await;
    tokio::task::block_in_place(|| cluster.restart()).unwrap();
    let sql = connect(&db.url).await;
    insert_leads_in_one_transaction(&sql, 51..=100).await;
    wait_for_scores(&receiver, "/leads", 100, &sidecar).await;
    sidecar.wait_log("reconnecting").await;
}

#[tokio::test]
async fn a_row_whose_notification_was_missed_is_found_by_the_poll() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("notify_poll")
        .notify()
        .start(&leadhook())
        .await;
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
    let Running {
        db,
        receiver,
        sidecar: first,
        config,
    } = Scenario::new("notify_two")
        .notify()
        .start(&leadhook())
        .await;
    let second = leadhook().start(&config.to_toml());
    second.wait_log("standing by").await;

    db.insert_leads_in_one_transaction(1..=300).await;
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
    db.insert_leads_in_one_transaction(301..=350).await;
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
    let config = db
        .config_as(&role, "pw")
        .notify()
        .with(|c| c.source.create = Some(false))
        .to_toml();
    let run = |args: &[&str]| leadhook().run(&config, args, &[]);

    let Finished { code, stdout, .. } = run(&["check"]);
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

    let Finished {
        code,
        stdout: printed,
        ..
    } = run(&["setup"]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains(
            "CREATE TRIGGER leadhook_capture AFTER INSERT OR UPDATE ON \"public\".\"leads\""
        ),
        "{printed}"
    );
    assert!(
        printed.contains("CREATE TABLE IF NOT EXISTS \"leadhook\".spool ("),
        "setup creates the spool too: {printed}"
    );
    let Finished {
        code,
        stdout: applied,
        stderr,
        ..
    } = run(&["setup", "--apply"]);
    assert_eq!(code, Some(0), "{applied}{stderr}");
    let Finished { code, stdout, .. } = run(&["check"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("outbox \"leadhook\".outbox and its capture trigger are installed"),
        "{stdout}"
    );

    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('pending')")
        .await
        .unwrap();
    let Finished {
        code,
        stdout: removed,
        ..
    } = run(&["setup", "--uninstall"]);
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
    // 60 bytes, with `$$` in it: the old channel name `<schema>_outbox`
    // did not fit, and `$$` ended the generated function body.
    let schema = "leadhook_state_for_partner_webhooks_$$_of_team_eu_production";
    assert_eq!(schema.len(), 60);
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("names")
        .notify()
        .setup(r#"ALTER TABLE leads RENAME COLUMN email TO "e$$mail""#)
        .configure(move |c| {
            let column = Column::Named("e$$mail".into());
            c.source.columns.insert("email".into(), column);
            c.database.schema = Some(schema.into());
        })
        .start(&leadhook())
        .await;
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
