//! SIGHUP: the config file read again while the sidecar runs. Webhooks
//! added, disabled and changed take effect; an untouched webhook neither
//! loses nor repeats a change; an invalid file is rejected and the running
//! config stays; what a removed webhook still held becomes dead letters.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

/// Scores of the leads that arrived at `path`, sorted, repeats included
/// (test events of `leadhook webhooks test` left out).
pub(crate) fn arrived_scores(receiver: &Receiver, path: &str) -> Vec<i64> {
    let mut scores: Vec<i64> = receiver
        .requests_to(path)
        .iter()
        .filter(|r| {
            !r.header("webhook-id")
                .is_some_and(|id| id.starts_with("test_"))
        })
        .map(|r| data(r)["score"].as_i64().expect("score"))
        .collect();
    scores.sort_unstable();
    scores
}

/// Rewrites the sidecar's config and sends SIGHUP; waits until it applied
/// new webhooks (`log` is what it logs then).
async fn reload(run: &Running, config: &SidecarConfig, log: &str) {
    run.sidecar.rewrite_config(&config.to_toml());
    run.sidecar.hang_up();
    run.sidecar.wait_log(log).await;
}

#[tokio::test]
async fn sighup_adds_disables_and_moves_webhooks_while_an_untouched_one_loses_and_repeats_nothing()
{
    let run = Scenario::new("sighup")
        .webhook("keep", "/keep")
        .webhook("gone", "/gone")
        .webhook("moved", "/old")
        .start(&leadhook())
        .await;
    run.db.insert_leads(1..=20).await;
    for path in ["/keep", "/gone", "/old"] {
        wait_for_scores(&run.receiver, path, 20, &run.sidecar).await;
    }
    let mut config = run.config.clone();
    config.webhooks[1].enabled = Some(false);
    config.webhooks[2].url = run.receiver.url("/new");
    config.webhooks[2]
        .headers
        .insert("Authorization".into(), "Bearer n3w-t0ken".into());
    config
        .webhooks
        .push(Webhook::to(&run.receiver, "added", "/added"));
    reload(&run, &config, "applying the new webhooks").await;
    run.db.insert_leads(21..=40).await;
    wait_for_scores(&run.receiver, "/keep", 40, &run.sidecar).await;
    wait_for_these_scores(&run.receiver, "/new", 21..=40, &run.sidecar).await;
    wait_for_these_scores(&run.receiver, "/added", 21..=40, &run.sidecar).await;
    run.db.wait_confirmed("every lead", &run.sidecar).await;

    let all: Vec<i64> = (1..=40).collect();
    let later: Vec<i64> = (21..=40).collect();
    assert_eq!(
        arrived_scores(&run.receiver, "/keep"),
        all,
        "untouched: each lead exactly once"
    );
    assert_eq!(
        arrived_scores(&run.receiver, "/gone"),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        arrived_scores(&run.receiver, "/old"),
        (1..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        arrived_scores(&run.receiver, "/new"),
        later,
        "the new URL gets what followed"
    );
    assert_eq!(
        arrived_scores(&run.receiver, "/added"),
        later,
        "from its cut-over on"
    );
    let moved = run.receiver.requests_to("/new");
    assert_eq!(moved[0].header("authorization"), Some("Bearer n3w-t0ken"));
    run.sidecar.assert_running();
    let log = run.sidecar.log();
    assert!(
        log.contains("webhook added") && log.contains("cut_over="),
        "{log}"
    );
    assert!(log.contains("the webhook was disabled"), "{log}");
    assert!(log.contains("changed=url, headers"), "{log}");
    assert!(!log.contains("n3w-t0ken"), "a header value reached the log");
}

#[tokio::test]
async fn reloads_under_load_leave_an_untouched_webhook_every_lead_exactly_once() {
    let run = Scenario::new("reloadload")
        .webhook("steady", "/steady")
        .webhook("other", "/other")
        .start(&leadhook())
        .await;
    // Slow answers, so that reloads find changes queued and on the wire.
    run.receiver
        .set_responder(|_, _| Reply::ok().after(Duration::from_millis(15)));
    let writer = connect(&run.db.url).await;
    let load = tokio::spawn(async move {
        for n in 1..=300 {
            insert_leads(&writer, n..=n).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    run.receiver
        .wait_for("/steady", 30, WAIT)
        .await
        .expect("deliveries under way");
    let mut config = run.config.clone();
    config
        .webhooks
        .push(Webhook::to(&run.receiver, "added", "/added"));
    reload(&run, &config, "applying the new webhooks").await;
    run.receiver
        .wait_for("/added", 10, WAIT)
        .await
        .expect("the added webhook delivers");
    config.webhooks[1].enabled = Some(false);
    run.sidecar.rewrite_config(&config.to_toml());
    run.sidecar.hang_up();
    run.sidecar.wait_log("the webhook was disabled").await;
    load.await.expect("the load");
    wait_for_scores(&run.receiver, "/steady", 300, &run.sidecar).await;
    run.db.wait_confirmed("every lead", &run.sidecar).await;
    assert_eq!(
        arrived_scores(&run.receiver, "/steady"),
        (1..=300).collect::<Vec<_>>(),
        "through two reloads under load: each lead exactly once"
    );
    run.sidecar.assert_running();
}

#[tokio::test]
async fn in_notify_mode_a_reload_sends_a_healthy_webhook_nothing_a_failing_one_still_held() {
    let run = Scenario::new("notifyreload")
        .notify()
        .webhook("healthy", "/healthy")
        .webhook_with("failing", "/failing", quick_retries)
        .start(&leadhook())
        .await;
    fails_at(&run.receiver, "/failing", 503);
    run.db.insert_leads(1..=10).await;
    wait_for_scores(&run.receiver, "/healthy", 10, &run.sidecar).await;
    run.receiver
        .wait_for("/failing", 10, WAIT)
        .await
        .expect("attempts");
    assert_eq!(
        run.db.outbox_rows().await,
        10,
        "the failing webhook holds them"
    );

    let mut config = run.config.clone();
    config
        .webhooks
        .push(Webhook::to(&run.receiver, "added", "/added"));
    reload(&run, &config, "applying the new webhooks").await;
    run.sidecar
        .wait_log_within(DELIVERING_FROM_OUTBOX, WAIT)
        .await;
    run.db.insert_leads(11..=15).await;
    wait_for_scores(&run.receiver, "/healthy", 15, &run.sidecar).await;
    run.receiver
        .wait_for("/failing", 20, WAIT)
        .await
        .expect("retried after the reload");
    assert_eq!(
        arrived_scores(&run.receiver, "/healthy"),
        (1..=15).collect::<Vec<_>>(),
        "the rows the failing webhook held are not sent to the healthy one again"
    );
}

#[tokio::test]
async fn an_invalid_file_on_sighup_is_rejected_with_the_key_named_and_the_running_config_stays() {
    let run = Scenario::new("badreload").start(&leadhook()).await;
    let mut broken = run.config.clone();
    broken.webhooks[0].url = "ftp://leads.example.com/hook".into();
    run.sidecar.rewrite_config(&broken.to_toml());
    run.sidecar.hang_up();
    run.sidecar.wait_log("the new config is invalid").await;
    assert!(
        run.sidecar.log().contains("webhooks[0].url"),
        "{}",
        run.sidecar.log()
    );

    let mut unknown_column = run.config.clone();
    unknown_column.webhooks[0]
        .filter
        .insert("tenant".into(), 7.into());
    run.sidecar.rewrite_config(&unknown_column.to_toml());
    run.sidecar.hang_up();
    run.sidecar
        .wait_log("webhooks[0].filter: column \"tenant\" not found")
        .await;

    let mut admin_moved = run.config.clone();
    admin_moved.admin.listen = Some("127.0.0.1:1".into());
    admin_moved.database.url = format!("{}?application_name=other", run.db.url);
    admin_moved.source.poll_interval = Some(Duration::from_secs(3));
    run.sidecar.rewrite_config(&admin_moved.to_toml());
    run.sidecar.hang_up();
    run.sidecar
        .wait_log("take effect only after a restart")
        .await;
    let log = run.sidecar.log();
    assert!(
        log.contains("section=[admin]") && log.contains("section=[database]"),
        "{log}"
    );
    assert!(
        !log.contains("applying the new webhooks"),
        "nothing to apply: no restart"
    );

    run.db.insert_leads(1..=5).await;
    wait_for_scores(&run.receiver, "/leads", 5, &run.sidecar).await;
    run.sidecar.assert_running();
}

#[tokio::test]
async fn removing_a_failing_webhook_turns_what_it_held_into_dead_letters_with_the_reason() {
    let run = Scenario::new("retire")
        .webhook("healthy", "/ok")
        .webhook_with("doomed", "/down", quick_retries)
        .start(&leadhook())
        .await;
    fails_at(&run.receiver, "/down", 503);
    run.db.insert_leads(1..=10).await;
    wait_for_scores(&run.receiver, "/ok", 10, &run.sidecar).await;
    run.receiver
        .wait_for("/down", 10, WAIT)
        .await
        .expect("attempts");

    let mut config = run.config.clone();
    config.webhooks.remove(1);
    reload(&run, &config, "applying the new webhooks").await;
    let letters = dead_letters(&run.db).await;
    assert_eq!(letters.len(), 10, "every change it held: {letters:?}");
    assert!(
        letters.values().all(|reason| reason.contains("removed")),
        "{letters:?}"
    );
    run.db.insert_leads(11..=12).await;
    wait_for_these_scores(&run.receiver, "/ok", 11..=12, &run.sidecar).await;
    run.db
        .wait_confirmed("the slot past the removed webhook", &run.sidecar)
        .await;
}

#[tokio::test]
async fn disabling_a_paused_webhook_moves_its_spooled_changes_to_dead_letters() {
    let run = Scenario::new("retirespool")
        .webhook("doomed", "/doomed")
        .webhook("other", "/other")
        .start(&leadhook())
        .await;
    let done = leadhook().run(&run.config.to_toml(), &["webhooks", "pause", "doomed"], &[]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    run.sidecar.wait_log("paused: its changes wait").await;
    run.db.insert_leads(1..=5).await;
    wait_for_scores(&run.receiver, "/other", 5, &run.sidecar).await;
    eventually(
        "spooled",
        || run.sidecar.log(),
        async || run.db.spool_rows("doomed").await == 5,
    )
    .await;

    let mut config = run.config.clone();
    config.webhooks[0].enabled = Some(false);
    reload(
        &run,
        &config,
        "moved the webhook's spooled changes to the dead letters",
    )
    .await;
    let letters = dead_letters(&run.db).await;
    assert_eq!(letters.len(), 5, "{letters:?}");
    assert!(
        letters.values().all(|r| r == "the webhook was disabled"),
        "{letters:?}"
    );
    assert_eq!(run.db.spool_rows("doomed").await, 0);
    assert_eq!(run.receiver.count_to("/doomed"), 0);
}

/// `webhook_id → last_error` of webhook `doomed`'s dead letters.
async fn dead_letters(db: &TestDb) -> HashMap<String, String> {
    db.sql
        .query(
            "SELECT webhook_id, last_error FROM leadhook.dead_letters WHERE webhook = 'doomed'",
            &[],
        )
        .await
        .expect("read dead letters")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}
