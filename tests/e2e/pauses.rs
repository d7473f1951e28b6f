//! `leadhook webhooks pause/resume/list`: a paused webhook's changes wait in
//! the spool (not lost, not dead-lettered) and are delivered in per-lead
//! order on resume; the pause is kept in the database, so it survives a
//! restart and a standby that takes over sees it. `list` shows every
//! webhook's state from the status table, and says when it is stale.

use std::time::Duration;

use crate::registry::{eventually_listed, listed};
use crate::reload::arrived_scores;
use crate::support::*;

fn cli(run: &Running, args: &[&str]) -> Finished {
    let done = leadhook().run(&run.config.to_toml(), args, &[]);
    assert_eq!(
        done.code,
        Some(0),
        "{args:?}: {}{}",
        done.stdout,
        done.stderr
    );
    done
}

/// 20 leads, each inserted then updated twice, one transaction each and
/// 20 ms apart (a load that lasts over a second): 60 changes, scores
/// rising per lead (n, n + 100, n + 200).
async fn leads_with_updates(sql: &tokio_postgres::Client) {
    for n in 1..=20 {
        insert_leads(sql, n..=n).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for step in [100, 200] {
        for n in 1..=20 {
            sql.execute(
                "UPDATE leads SET score = $1 WHERE score = $2",
                &[&(n + step), &(n + step - 100)],
            )
            .await
            .expect("update a lead");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_webhook_paused_under_load_holds_its_changes_in_the_spool_and_delivers_them_in_order_on_resume()
 {
    let run = Scenario::new("pause")
        .webhook("paused", "/paused")
        .webhook("other", "/other")
        .start(&leadhook())
        .await;
    let writer = connect(&run.db.url).await;
    let load = tokio::spawn(async move { leads_with_updates(&writer).await });
    run.receiver
        .wait_for("/paused", 5, WAIT)
        .await
        .expect("deliveries under way");
    let done = cli(&run, &["webhooks", "pause", "paused"]);
    assert!(done.stdout.contains("paused"), "{}", done.stdout);
    run.sidecar
        .wait_log("paused: its changes wait in the spool")
        .await;
    let before_pause = run.receiver.count_to("/paused");
    load.await.expect("the load");
    run.receiver
        .wait_for("/other", 60, WAIT)
        .await
        .expect("the other webhook goes on");
    run.db
        .wait_confirmed("the slot past the spooled changes", &run.sidecar)
        .await;
    let spooled = run.db.spool_rows("paused").await;
    let sent = run.receiver.count_to("/paused");
    assert!(
        sent < 60 && spooled > 0,
        "paused mid-load: {sent} sent, {spooled} spooled"
    );
    assert!(
        sent <= before_pause + 64,
        "at most what was in flight finished after the pause"
    );
    assert_eq!(
        sent as i64 + spooled,
        60,
        "every change sent or waiting, none twice"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        run.receiver.count_to("/paused"),
        sent,
        "nothing more is sent while paused"
    );
    assert_eq!(
        eventually_listed(&run, "paused", "paused").await["spooled"],
        spooled
    );

    cli(&run, &["webhooks", "resume", "paused"]);
    run.receiver
        .wait_for("/paused", 60, WAIT)
        .await
        .expect("delivered on resume");
    let leads = scores_by_lead(&run.receiver, "/paused");
    assert_eq!(leads.len(), 20);
    for (email, scores) in &leads {
        let n = scores[0];
        assert_eq!(
            scores,
            &vec![n, n + 100, n + 200],
            "{email}: in commit order, each once"
        );
    }
    let dead: i64 = run
        .db
        .sql
        .query_one("SELECT count(*) FROM leadhook.dead_letters", &[])
        .await
        .expect("count dead letters")
        .get(0);
    assert_eq!(dead, 0, "a pause dead-letters nothing");
}

#[tokio::test]
async fn a_pause_survives_a_restart_and_a_standby_that_takes_over() {
    let run = Scenario::new("pausedurable")
        .webhook("paused", "/paused")
        .start(&leadhook())
        .await;
    cli(&run, &["webhooks", "pause", "paused"]);
    run.sidecar.wait_log("paused: its changes wait").await;
    run.db.insert_leads(1..=3).await;
    eventually(
        "spooled before the restart",
        || run.sidecar.log(),
        async || run.db.spool_rows("paused").await == 3,
    )
    .await;
    // It restarts with rows in the spool: it must not drain them.
    run.sidecar.restart();
    run.db.wait_streaming(&run.sidecar).await;
    run.db.insert_leads(4..=5).await;
    eventually(
        "spooled after the restart",
        || run.sidecar.log(),
        async || run.db.spool_rows("paused").await == 5,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        run.receiver.count_to("/paused"),
        0,
        "nothing drained after the restart"
    );

    let standby = leadhook().start(&run.config.to_toml());
    standby.wait_log("standing by").await;
    run.sidecar.kill();
    run.db.wait_streaming(&standby).await;
    run.db.insert_leads(6..=10).await;
    eventually(
        "spooled by the standby",
        || standby.log(),
        async || run.db.spool_rows("paused").await == 10,
    )
    .await;
    assert_eq!(
        run.receiver.count_to("/paused"),
        0,
        "still paused after restart and takeover"
    );

    cli(&run, &["webhooks", "resume", "paused"]);
    wait_for_scores(&run.receiver, "/paused", 10, &standby).await;
    assert_eq!(
        arrived_scores(&run.receiver, "/paused"),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn webhooks_list_shows_a_healthy_a_failing_and_a_paused_webhook_and_when_no_sidecar_runs() {
    let run = Scenario::new("list")
        .webhook("healthy", "/healthy")
        .webhook_with("failing", "/failing", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(200));
            w.headers
                .insert("Authorization".into(), "Bearer l1st-secret".into());
        })
        .webhook("paused", "/paused")
        .start(&leadhook())
        .await;
    fails_at(&run.receiver, "/failing", 500);
    cli(&run, &["webhooks", "pause", "paused"]);
    run.db.insert_leads(1..=3).await;
    wait_for_scores(&run.receiver, "/healthy", 3, &run.sidecar).await;

    let healthy = eventually_listed(&run, "healthy", "healthy").await;
    assert!(healthy["last_success_at"].is_string(), "{healthy}");
    assert_eq!(healthy["origin"], "file");
    let failing = eventually_listed(&run, "failing", "failing").await;
    assert_eq!(failing["last_failure"], "HTTP 500", "{failing}");
    let paused = eventually_listed(&run, "paused", "paused").await;
    assert_eq!(paused["paused"], true);
    let table = cli(&run, &["webhooks", "list"]).stdout;
    assert!(
        table.contains("refreshed") && table.contains("LAST FAILURE"),
        "{table}"
    );
    assert!(
        !table.contains("l1st-secret"),
        "a header value reached the list"
    );

    run.sidecar.terminate();
    run.sidecar.wait_exit(WAIT).await;
    // Time passing without a sidecar, compressed: the status ages.
    run.db
        .sql
        .batch_execute(
            "UPDATE leadhook.webhook_status SET updated_at = now() - interval '1 minute'",
        )
        .await
        .expect("age the status");
    let table = cli(&run, &["webhooks", "list"]).stdout;
    assert!(table.contains("stale"), "{table}");
    assert_eq!(
        listed(&run, "healthy")["state"],
        "healthy",
        "the last state reported"
    );

    let fresh = TestDb::create(shared_cluster(), "nosidecar").await;
    let config = fresh
        .config()
        .webhook(Webhook::to(&run.receiver, "never", "/never"));
    let done = leadhook().run(&config.to_toml(), &["webhooks", "list"], &[]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stdout.contains("no sidecar has reported"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("never") && done.stdout.contains("unknown"),
        "{}",
        done.stdout
    );
}
