//! `leadhook backfill`: existing leads delivered as `save_lead` by the
//! running sidecar, through the normal delivery; resumable after kill -9;
//! never a lead's older state after a newer live change of it; a webhook
//! with `backfill = true` gets every existing lead once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::*;

/// `n` leads committed before the sidecar starts: scores 1..=n, emails
/// `lead<n>@example.com`.
fn existing_leads(n: i32) -> String {
    format!(
        "INSERT INTO leads (email, score) SELECT 'lead' || i || '@example.com', i FROM generate_series(1, {n}) i"
    )
}

/// Runs the CLI (off the test's runtime, so the receiver keeps answering).
async fn cli(run: &Running, args: &[&str]) -> Finished {
    run_command(&run.config, args).await
}

#[tokio::test]
async fn a_backfill_delivers_every_existing_lead_once_with_ids_of_its_own() {
    let run = Scenario::new("backfill")
        .setup(existing_leads(250))
        .start(&leadhook())
        .await;
    let done = cli(&run, &["backfill", "--batch", "100"]).await;
    done.assert_success();
    assert!(
        done.stdout.contains("backfill run 1 filed")
            && done.stdout.contains("run 1 done: 250 of 250 leads"),
        "{}",
        done.stdout
    );
    let got = wait_or_diagnose(&run.receiver, "/leads", 250, &run.db, &run.sidecar).await;
    let ids: BTreeSet<String> = got
        .iter()
        .map(|r| r.header("webhook-id").expect("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 250, "one delivery per lead, each its own id");
    let lead = got
        .iter()
        .find(|r| data(r)["score"] == 7)
        .expect("lead 7 delivered");
    assert_eq!(data(lead)["email"], "lead7@example.com");
    assert_eq!(lead.header("webhook-id"), Some("backfill-1-7"));
    assert!(
        got.iter()
            .all(|r| r.path == "/leads" && r.body.starts_with(b"{\"data\":{\"email\"")),
        "the save_lead payload"
    );

    run.db.insert_leads(1000..=1000).await;
    let live = run
        .receiver
        .wait_for("/leads", 251, WAIT)
        .await
        .expect("a live change");
    let id = live[250].header("webhook-id").expect("webhook-id");
    assert!(!id.starts_with("backfill-"), "live ids stay live: {id}");

    let status = cli(&run, &["backfill", "status"]).await;
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("1  done")
                && l.contains("250")
                && l.contains("requested")),
        "{}",
        status.stdout
    );
    let json = cli(&run, &["backfill", "status", "1", "--json"]).await;
    let runs: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(runs[0]["state"], "done");
    assert_eq!(runs[0]["rows_done"], 250);
    let metrics = scrape(&run.sidecar.admin_url().await).await;
    assert_eq!(
        value(
            &metrics,
            "leadhook_backfill_rows_total",
            &[("outcome", "sent")]
        ),
        Some(250.0)
    );
    assert_eq!(
        value(&metrics, "leadhook_backfill_remaining", &[]),
        Some(0.0)
    );

    // On a terminal (a pseudo-terminal from script(1)) it shows a progress bar.
    let on_terminal = on_a_terminal(&run, "backfill --batch 50 --rate 500").await;
    assert!(
        on_terminal.contains("leads") && on_terminal.contains("eta") && on_terminal.contains("/s"),
        "a progress bar with rate and ETA: {on_terminal}"
    );
    assert!(
        on_terminal.contains("run 2 done: 251 of 251 leads"),
        "{on_terminal}"
    );
}

/// `leadhook <args>` on a pseudo-terminal (script(1)); what it wrote there.
async fn on_a_terminal(run: &Running, args: &str) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, run.config.to_toml()).expect("write the config");
    let command = format!(
        "{} {args} --config {}",
        leadhook().binary().display(),
        path.display()
    );
    let output = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .await
        .expect("script(1) from util-linux runs the command on a pseudo-terminal");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_backfilled_lead_never_arrives_after_a_newer_live_change_of_it() {
    let run = Scenario::new("backfill_order")
        .setup(existing_leads(2000))
        .start(&leadhook())
        .await;
    // Live updates while the backfill runs. Scores only ever rise, so a
    // backfilled (older) state arriving after a live one shows as a fall.
    // At most `ROUNDS` (about 8 000 changes): on a loaded machine a slower
    // backfill must not mean ever more changes to wait for.
    const ROUNDS: i64 = 400;
    let writer = connect(&run.db.url).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let updates = tokio::spawn(async move {
        let mut round = 0i64;
        while round < ROUNDS && !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            round += 1;
            writer
                .execute(
                    "UPDATE leads SET score = score + 10000 WHERE id % 97 = $1::int8 % 97",
                    &[&round],
                )
                .await
                .expect("update leads");
            // About 4 000 changes a second: well within what is delivered.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        round
    });
    let done = cli(&run, &["backfill", "--batch", "25"]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = updates.await.expect("the updates");
    done.assert_success();
    assert!(rounds > 20, "updates ran while the backfill did: {rounds}");

    let finals: BTreeMap<String, i64> = run
        .db
        .sql
        .query("SELECT email, score::int8 FROM leads", &[])
        .await
        .expect("read the leads")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rising = |scores: &Vec<i64>| scores.windows(2).all(|w| w[0] <= w[1]);
    let reached = |got: &BTreeMap<String, Vec<i64>>| {
        finals
            .iter()
            .all(|(email, last)| got.get(email).and_then(|s| s.last()) == Some(last))
    };
    eventually(
        "every lead's final state delivered (or one out of order)",
        || {
            format!(
                "{} leads reached",
                scores_by_lead(&run.receiver, "/leads").len()
            )
        },
        async || {
            let got = scores_by_lead(&run.receiver, "/leads");
            reached(&got) || !got.values().all(rising)
        },
    )
    .await;
    let got = scores_by_lead(&run.receiver, "/leads");
    for (email, scores) in &got {
        assert!(
            rising(scores),
            "{email}: a backfilled state arrived after a newer live one: {scores:?}"
        );
    }
    assert_eq!(got.len(), 2000, "every lead delivered");
    assert!(reached(&got), "each lead's last delivery is its state now");
    let superseded = value(
        &scrape(&run.sidecar.admin_url().await).await,
        "leadhook_backfill_rows_total",
        &[("outcome", "superseded")],
    );
    println!("rows superseded by live changes: {superseded:?}");
}

/// Run `id`'s status, as `backfill status --json` prints it.
async fn status_of(run: &Running, id: i64) -> serde_json::Value {
    let done = cli(run, &["backfill", "status", &id.to_string(), "--json"]).await;
    done.assert_success();
    let runs: serde_json::Value = serde_json::from_str(&done.stdout).expect("JSON");
    runs[0].clone()
}

async fn wait_for_state(run: &Running, id: i64, state: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..240 {
        last = status_of(run, id).await;
        if last["state"] == state {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "run {id} never became {state}: {last}; log:\n{}",
        run.sidecar.log()
    );
}

#[tokio::test]
async fn a_backfill_killed_mid_run_goes_on_where_it_stopped_after_a_restart() {
    let run = Scenario::new("backfill_kill")
        .setup(existing_leads(3000))
        .start(&leadhook())
        .await;
    let filed = cli(
        &run,
        &["backfill", "--batch", "100", "--rate", "600/s", "--detach"],
    )
    .await;
    filed.assert_success();
    run.receiver
        .wait_for("/leads", 700, WAIT)
        .await
        .expect("the backfill under way");
    run.sidecar.kill();
    let before = run.receiver.count_to("/leads");
    assert!(before < 3000, "killed mid-run: {before} delivered");
    run.sidecar.restart();
    let status = wait_for_state(&run, 1, "done").await;
    assert_eq!(status["rows_done"], 3000);
    run.sidecar.wait_log("backfill done").await;
    let log = run.sidecar.log();
    let resumed_at: i64 = log
        .lines()
        .find(|l| l.contains("backfill running"))
        .and_then(|l| l.split("done=").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resume line in\n{log}"));
    assert!(
        resumed_at >= 600,
        "went on from the last recorded batch: {resumed_at}"
    );
    let got = scores_by_lead(&run.receiver, "/leads");
    assert_eq!(got.len(), 3000, "no lead missed");
    let sent = run.receiver.count_to("/leads");
    assert!(
        sent <= 3000 + 200,
        "only the batches in hand at the kill were sent again: {sent}"
    );
}

#[tokio::test]
async fn a_backfill_for_one_webhook_with_a_condition_reaches_only_it_and_only_those_leads() {
    let run = Scenario::new("backfill_where")
        .setup(existing_leads(100))
        .webhook("a", "/a")
        .webhook("b", "/b")
        .start(&leadhook())
        .await;
    let done = cli(
        &run,
        &["backfill", "--webhook", "a", "--where", "score % 2 = 0"],
    )
    .await;
    done.assert_success();
    assert!(
        done.stdout.contains("done: 50 of 50 leads"),
        "{}",
        done.stdout
    );
    let got = run
        .receiver
        .wait_for("/a", 50, WAIT)
        .await
        .expect("a's leads");
    assert!(
        got.iter()
            .all(|r| data(r)["score"].as_i64().is_some_and(|s| s % 2 == 0))
    );
    // A live change after the run reaches both: b was simply not part of it.
    run.db.insert_leads(1001..=1001).await;
    run.receiver.wait_for("/b", 1, WAIT).await.expect("b live");
    run.receiver.wait_for("/a", 51, WAIT).await.expect("a live");
    assert_eq!(run.receiver.count_to("/b"), 1, "b got no backfill");
    assert_eq!(run.receiver.count_to("/a"), 51);
}

#[tokio::test]
async fn a_webhook_with_backfill_true_gets_every_existing_lead_once_from_the_file_or_the_table() {
    let run = Scenario::new("backfill_auto")
        .setup(existing_leads(30))
        .webhook("a", "/a")
        .configure(|c| {
            c.registry = Some(leadhook_testkit::config::Registry {
                table: "leadhook.webhooks".into(),
                allow_private_networks: Some(true),
                ..Default::default()
            })
        })
        .start(&leadhook())
        .await;
    let with_b = run
        .config
        .clone()
        .webhook(Webhook::to(&run.receiver, "b", "/b").with(|w| w.backfill = Some(true)));
    run.sidecar.rewrite_config(&with_b.to_toml());
    run.sidecar.hang_up();
    let got = run
        .receiver
        .wait_for("/b", 30, WAIT)
        .await
        .expect("b's backfill");
    assert!(got.iter().all(|r| {
        r.header("webhook-id")
            .is_some_and(|id| id.starts_with("backfill-1-"))
    }));
    let status = status_of(&run, 1).await;
    assert_eq!(status["reason"], "new webhook \"b\" (backfill = true)");
    wait_for_state(&run, 1, "done").await;
    assert_eq!(run.receiver.count_to("/a"), 0, "a got no backfill");

    run.db
        .sql
        .execute(
            "INSERT INTO leadhook.webhooks (name, url, backfill) VALUES ('c', $1, true)",
            &[&run.receiver.url("/c")],
        )
        .await
        .expect("insert a registry row");
    run.receiver
        .wait_for("/c", 30, WAIT)
        .await
        .expect("c's backfill");
    wait_for_state(&run, 2, "done").await;

    // Filed once per name: a restart backfills nobody again.
    run.sidecar.restart();
    run.db.wait_streaming(&run.sidecar).await;
    run.db.insert_leads(1001..=1001).await;
    run.receiver.wait_for("/c", 31, WAIT).await.expect("c live");
    run.receiver.wait_for("/b", 31, WAIT).await.expect("b live");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(run.receiver.count_to("/b"), 31);
    assert_eq!(run.receiver.count_to("/c"), 31);
    assert_eq!(run.receiver.count_to("/a"), 1);
}

#[tokio::test]
async fn a_cancelled_backfill_stops_and_a_failing_condition_fails_its_run_with_the_reason() {
    let run = Scenario::new("backfill_cancel")
        .setup(existing_leads(500))
        .start(&leadhook())
        .await;
    let filed = cli(
        &run,
        &["backfill", "--batch", "10", "--rate", "50", "--detach"],
    )
    .await;
    filed.assert_success();
    run.receiver
        .wait_for("/leads", 20, WAIT)
        .await
        .expect("under way");
    let cancelled = cli(&run, &["backfill", "cancel", "1"]).await;
    assert!(
        cancelled.stdout.contains("run 1 cancelled"),
        "{}",
        cancelled.stdout
    );
    run.sidecar.wait_log("backfill cancelled").await;
    let after = run.receiver.count_to("/leads");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(run.receiver.count_to("/leads"), after, "nothing more sent");
    assert!(after < 500);
    assert_eq!(status_of(&run, 1).await["state"], "cancelled");

    // Valid SQL, so it is filed; it fails when the leads are read.
    let failed = cli(&run, &["backfill", "--where", "1 / (score - 5) > 0"]).await;
    assert_eq!(failed.code, Some(1), "{}{}", failed.stdout, failed.stderr);
    assert!(
        failed.stdout.contains("run 2 failed") && failed.stdout.contains("division by zero"),
        "{}",
        failed.stdout
    );
    // A run for a webhook removed since it was filed fails, saying so.
    run.db
        .sql
        .execute(
            "INSERT INTO leadhook.backfills (webhooks, batch, reason) VALUES (ARRAY['gone'], 10, 'by hand')",
            &[],
        )
        .await
        .expect("file a run by hand");
    let gone = wait_for_state(&run, 3, "failed").await;
    assert!(
        gone["error"]
            .as_str()
            .is_some_and(|e| e.contains("no webhook of that name") && e.contains("gone")),
        "{gone}"
    );
    let done = cli(&run, &["backfill", "--where", "score <= 3"]).await;
    assert!(
        done.stdout.contains("run 4 done: 3 of 3"),
        "the next run goes on: {}",
        done.stdout
    );
}

#[tokio::test]
async fn the_backfill_command_refuses_what_it_cannot_do_and_says_why() {
    let run = Scenario::new("backfill_refused").start(&leadhook()).await;
    let unknown = cli(&run, &["backfill", "--webhook", "nope"]).await;
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("no webhook named \"nope\""),
        "{}",
        unknown.stderr
    );
    let bad = cli(&run, &["backfill", "--where", "no_such_column = 1"]).await;
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("--where is not a valid condition")
            && bad.stderr.contains("no_such_column"),
        "{}",
        bad.stderr
    );
    let rate = cli(&run, &["backfill", "--rate", "0/s"]).await;
    assert_eq!(rate.code, Some(2), "{}", rate.stderr);
    assert!(rate.stderr.contains("is not a rate"), "{}", rate.stderr);
    let notify = run.config.clone().notify();
    let in_notify = run_command(&notify, &["backfill"]).await;
    assert_eq!(in_notify.code, Some(1));
    assert!(
        in_notify.stderr.contains("backfill needs replication mode"),
        "{}",
        in_notify.stderr
    );
    let none = cli(&run, &["backfill", "status"]).await;
    assert!(
        none.stdout.contains("no backfill runs yet"),
        "{}",
        none.stdout
    );
    let missing = cli(&run, &["backfill", "status", "9"]).await;
    assert!(
        missing.stderr.contains("no backfill run 9"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn a_batch_larger_than_the_memory_budget_still_goes_through() {
    // 1 MiB holds 1 024 rows at most (each counts at least 1 kB): a batch of
    // 3 000 must neither wait for room it holds itself nor stall the stream.
    let run = Scenario::new("backfill_memory")
        .setup(existing_leads(3000))
        .configure(|c| c.delivery.memory = Some("1MiB".into()))
        .start(&leadhook())
        .await;
    let done = tokio::time::timeout(WAIT, cli(&run, &["backfill", "--batch", "3000"]))
        .await
        .unwrap_or_else(|_| panic!("the backfill never finished; log:\n{}", run.sidecar.log()));
    done.assert_success();
    assert!(
        done.stdout.contains("done: 3000 of 3000 leads"),
        "{}",
        done.stdout
    );
    run.db.insert_leads(5000..=5000).await;
    let got = wait_or_diagnose(&run.receiver, "/leads", 3001, &run.db, &run.sidecar).await;
    assert_eq!(
        scores_by_lead(&run.receiver, "/leads").len(),
        3001,
        "{}",
        got.len()
    );
}
