//! The spool: a webhook that stays down moves its backlog to
//! `leadhook.spool`, so the other webhooks and the slot go on; when it is
//! back, the rows drain oldest first, each lead's changes in commit order.
//! Through kill -9, a Postgres restart and a spool it may not write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// An endpoint that answers 500 until it is switched up.
#[derive(Clone, Default)]
struct Endpoint(Arc<AtomicBool>);

impl Endpoint {
    fn up(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn down(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// Answers `path` as the switch says (after `delay` when up); every
    /// other path 200 at once.
    fn serve(&self, receiver: &Receiver, path: &'static str, delay: Duration) {
        let up = self.0.clone();
        receiver.set_responder(move |request, _| {
            if request.path != path {
                Reply::ok()
            } else if up.load(Ordering::SeqCst) {
                Reply::ok().after(delay)
            } else {
                Reply::status(500)
            }
        });
    }
}

/// A connection to a server that may still be starting up.
async fn eventually_connect(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + WAIT;
    loop {
        match try_connect(url).await {
            Ok(sql) => return sql,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn state_is(admin: &str, webhook: &str, state: &str) -> bool {
    metric(
        admin,
        "leadhook_webhook_state",
        &[("webhook", webhook), ("state", state)],
    )
    .await
        == 1.0
}

async fn spool_depth(admin: &str, webhook: &str) -> f64 {
    metric(admin, "leadhook_spool_depth", &[("webhook", webhook)]).await
}

/// Each lead's scores (by email) in the order they arrived, repeats of
/// the same change (redeliveries) folded.
fn scores_by_lead(got: &[ReceivedRequest]) -> HashMap<String, Vec<i64>> {
    let mut by_lead: HashMap<String, Vec<i64>> = HashMap::new();
    for request in got {
        let lead = data(request);
        let scores = by_lead
            .entry(lead["email"].as_str().unwrap().to_owned())
            .or_default();
        let score = lead["score"].as_i64().unwrap();
        if scores.last() != Some(&score) {
            scores.push(score);
        }
    }
    by_lead
}

#[tokio::test]
async fn a_webhook_down_past_spool_after_spools_while_the_other_and_the_slot_go_on_then_gets_everything_in_order()
 {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("outage")
        .webhook_with("a", "/a", quick_retries)
        .webhook("b", "/b")
        .configure(|c| c.delivery.spool_after = Some(Duration::from_secs(1)))
        .start(&leadhook())
        .await;
    let endpoint = Endpoint::default();
    endpoint.serve(&receiver, "/a", Duration::ZERO);
    let admin = sidecar.admin_url().await;

    // 10 leads, then 150 updates at a steady ~30 commits/s for 5 s, each
    // giving one lead the next score: every lead's scores rise in commit order.
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score) SELECT 'lead' || i || '@example.com', 0 FROM generate_series(1, 10) i",
        )
        .await
        .unwrap();
    let mut slowest_b = Duration::ZERO;
    for step in 1..=150i32 {
        let committed = Instant::now();
        db.sql
            .execute(
                "UPDATE leads SET score = $1 WHERE email = 'lead' || ($1 % 10 + 1) || '@example.com'",
                &[&step],
            )
            .await
            .unwrap();
        if step % 30 == 0 {
            // B gets each change at once, outage or not.
            let n = 10 + step as usize;
            receiver.wait_for("/b", n, WAIT).await.unwrap();
            slowest_b = slowest_b.max(committed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    assert!(
        slowest_b < Duration::from_secs(1),
        "the healthy webhook waited {slowest_b:?} for a change"
    );
    db.wait_confirmed(
        "the slot should move on while A is down: its backlog is in the spool",
        &sidecar,
    )
    .await;
    assert!(state_is(&admin, "a", "spooling").await);
    assert!(spool_depth(&admin, "a").await > 100.0);
    assert!(sidecar.log().contains("spooling"), "{}", sidecar.log());

    // A is back while commits go on: it drains and goes live again
    // without the inflow stopping.
    endpoint.up();
    let mut step = 150;
    let mut live_while_committing = false;
    let deadline = Instant::now() + WAIT;
    while !live_while_committing || step % 10 != 0 {
        assert!(
            Instant::now() < deadline,
            "A never went live again: {}",
            sidecar.log()
        );
        step += 1;
        db.sql
            .execute(
                "UPDATE leads SET score = $1 WHERE email = 'lead' || ($1 % 10 + 1) || '@example.com'",
                &[&step],
            )
            .await
            .unwrap();
        live_while_committing = live_while_committing || state_is(&admin, "a", "healthy").await;
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    let total = 10 + step as usize;
    eventually(
        "every change should reach A once it is back",
        || sidecar.log(),
        async || {
            scores_by_lead(&receiver.requests_to("/a"))
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == total
        },
    )
    .await;
    assert_eq!(db.spool_rows("a").await, 0);
    assert_eq!(spool_depth(&admin, "a").await, 0.0);

    let got_a = receiver.requests_to("/a");
    for (lead, scores) in scores_by_lead(&got_a) {
        let mut sorted = scores.clone();
        sorted.sort_unstable();
        assert_eq!(
            scores, sorted,
            "{lead}'s changes arrived out of commit order"
        );
        assert_eq!(scores.len(), total / 10, "{lead}: {scores:?}");
    }
    wait_for_these_scores(&receiver, "/b", 151..=i64::from(step), &sidecar).await;
    let got_b = receiver.requests_to("/b");
    assert_eq!(got_b.len(), total, "B got a change twice or missed one");
    assert_eq!(ids_of(&got_b).len(), total);
    let letters: i64 = db
        .sql
        .query_one("SELECT count(*) FROM leadhook.dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(letters, 0, "nothing is dead-lettered");
    sidecar.wait_log("the spool is drained").await;
}

#[tokio::test]
async fn a_sidecar_killed_while_spooling_and_again_while_draining_loses_nothing() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("spool_kill")
        .webhook_with("a", "/a", |w| {
            quick_retries(w);
            w.delivery.max_in_flight = Some(4);
        })
        .configure(|c| c.delivery.spool_after = Some(Duration::from_millis(500)))
        .start(&leadhook())
        .await;
    let endpoint = Endpoint::default();
    endpoint.serve(&receiver, "/a", Duration::from_millis(20));

    db.insert_leads(1..=200).await;
    db.wait_confirmed("the backlog should be spooled and confirmed", &sidecar)
        .await;
    assert_eq!(db.spool_rows("a").await, 200);

    // Killed while spooling: the rows stay, and the restarted sidecar
    // queues later changes behind them.
    sidecar.restart();
    db.insert_leads(201..=300).await;
    db.wait_confirmed(
        "the restarted sidecar should spool behind the rows it found",
        &sidecar,
    )
    .await;
    sidecar.wait_log("the spool has rows for it").await;
    assert_eq!(db.spool_rows("a").await, 300);

    // Killed while draining (4 at a time, 20 ms each: about 200/s).
    endpoint.up();
    receiver.wait_for("/a", 100, WAIT).await.unwrap();
    sidecar.restart();
    let got = wait_for_scores(&receiver, "/a", 300, &sidecar).await;
    let duplicates = got.len() - 300;
    println!("spool kill -9 while draining: {duplicates} duplicates");
    assert!(
        duplicates <= 64,
        "only what was in flight or not yet deleted is sent again: {duplicates}"
    );
    assert_eq!(ids_of(&got).len(), 300, "every change has one stable id");
    eventually(
        "the spool should be empty",
        || sidecar.log(),
        async || db.spool_rows("a").await == 0,
    )
    .await;
    endpoint.down();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_while_spooling_loses_nothing() {
    let mut cluster = start_cluster(ClusterOptions::default());
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("spool_pgrestart")
        .on(&cluster)
        .webhook_with("a", "/a", quick_retries)
        .configure(|c| c.delivery.spool_after = Some(Duration::from_millis(500)))
        .start(&leadhook())
        .await;
    let endpoint = Endpoint::default();
    endpoint.serve(&receiver, "/a", Duration::ZERO);

    db.insert_leads(1..=100).await;
    eventually(
        "the changes should be spooling",
        || sidecar.log(),
        async || db.spool_rows("a").await > 0,
    )
    .await;
    tokio::task::block_in_place(|| cluster.restart()).expect("restart postgres");
    let sql = eventually_connect(&db.url).await;
    insert_leads_in_one_transaction(&sql, 101..=200).await;
    endpoint.up();
    let got = wait_for_scores(&receiver, "/a", 200, &sidecar).await;
    assert_eq!(ids_of(&got).len(), 200);
    assert!(
        sidecar.log().contains("reconnecting"),
        "the restart was noticed"
    );
}

#[tokio::test]
async fn a_spool_the_role_may_not_write_holds_the_position_with_a_clear_error_and_loses_nothing() {
    let db = TestDb::create(shared_cluster(), "spool_denied").await;
    let role = format!("{}_role", db.name);
    db.sql
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'pw';
             GRANT CREATE ON DATABASE {} TO {role};
             ALTER TABLE leads OWNER TO {role};",
            db.name
        ))
        .await
        .unwrap();
    let receiver = Receiver::start(0).await.unwrap();
    let endpoint = Endpoint::default();
    endpoint.serve(&receiver, "/a", Duration::ZERO);
    let config = db
        .config_as(&role, "pw")
        .webhook(Webhook::to(&receiver, "a", "/a").with(quick_retries))
        .with(|c| c.delivery.spool_after = Some(Duration::from_millis(500)));
    let sidecar = leadhook().start(&config.to_toml());
    db.wait_streaming(&sidecar).await;
    // The sidecar created its tables as the role; now it may not insert.
    db.sql
        .batch_execute(&format!("REVOKE INSERT ON leadhook.spool FROM {role}"))
        .await
        .unwrap();

    db.insert_leads(1..=20).await;
    let all_in = db.insert_lsn().await;
    sidecar.wait_log("cannot write to the spool").await;
    assert!(
        sidecar.log().contains("permission denied") && sidecar.log().contains("GRANT"),
        "{}",
        sidecar.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !db.confirmed_past(&all_in).await,
        "the position must wait for the spool"
    );

    db.sql
        .batch_execute(&format!("GRANT INSERT ON leadhook.spool TO {role}"))
        .await
        .unwrap();
    eventually(
        "the spool should be written once the role may",
        || sidecar.log(),
        async || db.confirmed_past(&all_in).await,
    )
    .await;
    endpoint.up();
    wait_for_scores(&receiver, "/a", 20, &sidecar).await;
}

#[tokio::test]
async fn in_notify_mode_a_down_webhook_spools_so_the_outbox_and_the_others_go_on() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("notify_spool")
        .notify()
        .webhook_with("a", "/a", quick_retries)
        .webhook("b", "/b")
        .configure(|c| c.delivery.spool_after = Some(Duration::from_secs(1)))
        .start(&leadhook())
        .await;
    let endpoint = Endpoint::default();
    endpoint.serve(&receiver, "/a", Duration::ZERO);

    // More than A can hold in flight and queued.
    db.insert_leads_in_one_transaction(1..=600).await;
    wait_for_scores(&receiver, "/b", 600, &sidecar).await;
    eventually(
        "the outbox should empty while A is down: its rows moved to the spool",
        || sidecar.log(),
        async || db.outbox_rows().await == 0,
    )
    .await;
    assert!(db.spool_rows("a").await > 0);

    endpoint.up();
    let got = wait_for_scores(&receiver, "/a", 600, &sidecar).await;
    assert_eq!(ids_of(&got).len(), 600);
    assert_eq!(receiver.requests_to("/b").len(), 600, "B got nothing twice");
}

#[tokio::test]
async fn a_webhook_holding_back_more_wal_than_max_retained_wal_spools_before_spool_after() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("retained")
        .webhook_with("a", "/a", quick_retries)
        .configure(|c| {
            c.delivery.spool_after = Some(Duration::from_secs(3600));
            c.delivery.max_retained_wal = Some("1MB".into());
        })
        .start(&leadhook())
        .await;
    let endpoint = Endpoint::default();
    endpoint.serve(&receiver, "/a", Duration::ZERO);

    // 50 leads of 40 kB notes (hex, which hardly compresses): 2 MB of WAL
    // that only A holds back.
    db.sql
        .batch_execute(
            "INSERT INTO leads (email, score, notes)
             SELECT 'lead' || i || '@example.com', i,
                    (SELECT string_agg(md5(i::text || '-' || j::text), '') FROM generate_series(1, 1250) j)
             FROM generate_series(1, 50) i",
        )
        .await
        .unwrap();
    db.wait_confirmed(
        "the backlog should be spooled and the position move on",
        &sidecar,
    )
    .await;
    sidecar.wait_log("max_retained_wal").await;
    assert_eq!(db.spool_rows("a").await, 50);
    endpoint.up();
    let got = wait_for_scores(&receiver, "/a", 50, &sidecar).await;
    let notes: HashSet<usize> = got
        .iter()
        .map(|r| data(r)["notes"].as_str().unwrap().len())
        .collect();
    assert_eq!(
        notes,
        HashSet::from([40_000]),
        "the spooled payloads are whole"
    );
}

#[tokio::test]
async fn one_lead_the_endpoint_keeps_failing_spools_before_it_holds_up_the_stream() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("stuck_lead")
        .notify()
        .webhook_with("a", "/a", quick_retries)
        // Only the held-back changes may make it spool.
        .configure(|c| c.delivery.spool_after = Some(Duration::from_secs(3600)))
        .start(&leadhook())
        .await;
    receiver.set_responder(|request, _| {
        if data(request)["score"] == 0 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });

    // Lead 0 always fails; the 1 500 after it hold its position back, far
    // past the 1 000 outbox rows at which a webhook spools.
    db.insert_leads(0..=0).await;
    db.insert_leads_in_one_transaction(1..=1500).await;
    sidecar.wait_log("stuck retrying").await;
    db.insert_leads_in_one_transaction(1501..=1600).await;
    wait_for_these_scores(&receiver, "/a", 1..=1600, &sidecar).await;
    eventually(
        "the outbox should empty: the stuck change waits in the spool",
        || sidecar.log(),
        async || db.outbox_rows().await == 0,
    )
    .await;
    eventually(
        "only the stuck change should wait in the spool",
        || sidecar.log(),
        async || db.spool_rows("a").await == 1,
    )
    .await;
}
