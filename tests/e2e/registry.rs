//! `[registry] table`: webhooks as rows the product's settings page writes.
//! Inserts, updates, disables and deletes take effect within 2 s; an
//! invalid row is reported and skipped; rows are untrusted (no private
//! networks, no variables outside the prefix).

use std::time::{Duration, Instant};

use leadhook_testkit::config::Registry;

use crate::reload::arrived_scores;
use crate::support::*;

/// The table the tests keep webhooks in.
const TABLE: &str = "leadhook.webhooks";

fn registry(allow_private_networks: bool) -> impl FnOnce(&mut SidecarConfig) {
    move |config| {
        config.registry = Some(Registry {
            table: TABLE.into(),
            allow_private_networks: Some(allow_private_networks),
            ..Registry::default()
        })
    }
}

async fn sql(run: &Running, statement: &str, url: &str) {
    run.db
        .sql
        .execute(statement, &[&url])
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Waits (at most 2 s from `since`) until the log has `text`.
async fn within_two_seconds(run: &Running, since: Instant, text: &str) {
    let left = Duration::from_secs(2).saturating_sub(since.elapsed());
    run.sidecar.wait_log_within(text, left).await;
}

#[tokio::test]
async fn rows_inserted_updated_disabled_and_deleted_take_effect_within_two_seconds() {
    let run = Scenario::new("registry")
        .webhook("file", "/file")
        .configure(registry(true))
        .start(&leadhook())
        .await;
    let (url, moved) = (run.receiver.url("/crm"), run.receiver.url("/crm2"));

    let at = Instant::now();
    sql(
        &run,
        &format!("INSERT INTO {TABLE} (name, url) VALUES ('crm', $1)"),
        &url,
    )
    .await;
    within_two_seconds(
        &run,
        at,
        "webhook added: it receives the changes committed after the cut-over position webhook=crm",
    )
    .await;
    run.db.insert_leads(1..=3).await;
    wait_for_scores(&run.receiver, "/crm", 3, &run.sidecar).await;
    // Off this thread: the receiver answering it runs here.
    let config = run.config.to_toml();
    let tested = tokio::task::spawn_blocking(move || {
        leadhook().run(&config, &["webhooks", "test", "crm"], &[])
    })
    .await
    .expect("run webhooks test");
    assert_eq!(
        tested.code,
        Some(0),
        "a row can be tested too: {}{}",
        tested.stdout,
        tested.stderr
    );

    let at = Instant::now();
    sql(
        &run,
        &format!("UPDATE {TABLE} SET url = $1 WHERE name = 'crm'"),
        &moved,
    )
    .await;
    within_two_seconds(&run, at, "webhook=crm changed=url").await;
    run.db.insert_leads(4..=6).await;
    wait_for_these_scores(&run.receiver, "/crm2", 4..=6, &run.sidecar).await;

    let at = Instant::now();
    sql(
        &run,
        &format!("UPDATE {TABLE} SET enabled = false WHERE name = 'crm' AND url = $1"),
        &moved,
    )
    .await;
    within_two_seconds(&run, at, "webhook=crm reason=the webhook was disabled").await;
    run.db.insert_leads(7..=9).await;
    wait_for_scores(&run.receiver, "/file", 9, &run.sidecar).await;

    sql(
        &run,
        &format!("UPDATE {TABLE} SET enabled = true WHERE url = $1"),
        &moved,
    )
    .await;
    logged_twice(&run, "webhook=crm cut_over=").await;
    let at = Instant::now();
    sql(&run, &format!("DELETE FROM {TABLE} WHERE url = $1"), &moved).await;
    within_two_seconds(
        &run,
        at,
        "the webhook was removed (it was in the registry table)",
    )
    .await;
    run.db.insert_leads(10..=12).await;
    wait_for_scores(&run.receiver, "/file", 12, &run.sidecar).await;
    run.db.wait_confirmed("every lead", &run.sidecar).await;

    assert_eq!(
        arrived_scores(&run.receiver, "/crm"),
        vec![1, 2, 3],
        "and the test event"
    );
    assert_eq!(run.receiver.count_to("/crm"), 4);
    assert_eq!(
        arrived_scores(&run.receiver, "/crm2"),
        vec![4, 5, 6],
        "nothing while disabled or deleted"
    );
    assert_eq!(
        arrived_scores(&run.receiver, "/file"),
        (1..=12).collect::<Vec<_>>(),
        "the file's webhook: each once"
    );
}

#[tokio::test]
async fn an_invalid_row_is_reported_and_skipped_while_the_rows_beside_it_deliver() {
    let run = Scenario::new("badrow")
        .configure(registry(true))
        .start(&leadhook())
        .await;
    let url = run.receiver.url("/good");
    sql(
        &run,
        &format!(
            "INSERT INTO {TABLE} (name, url, method, filter) VALUES
                 ('wrong_method', $1, 'GET', NULL),
                 ('numeric_header', $1, 'POST', NULL),
                 ('unknown_column', $1, 'POST', '{{\"tenant\": 1}}'),
                 ('hook', $1, 'POST', NULL),
                 ('good', $1, 'POST', NULL)"
        ),
        &url,
    )
    .await;
    run.db
        .sql
        .batch_execute(&format!(
            "UPDATE {TABLE} SET headers = '{{\"X-Tenant\": 7}}' WHERE name = 'numeric_header'"
        ))
        .await
        .expect("a header that is not a string");
    run.sidecar.wait_log("webhook=good cut_over=").await;
    run.db.insert_leads(1..=3).await;
    wait_for_scores(&run.receiver, "/good", 3, &run.sidecar).await;
    let log = run.sidecar.log();
    for problem in [
        "registry row \"wrong_method\".method: unsupported method \"GET\"",
        "registry row \"unknown_column\".filter: column \"tenant\" not found",
        "registry row \"hook\".name: duplicate webhook name \"hook\"",
        "registry row \"numeric_header\".headers: must be a JSON object of strings",
    ] {
        assert!(log.contains(problem), "{problem} not in:\n{log}");
    }
    assert_eq!(
        arrived_scores(&run.receiver, "/leads"),
        vec![1, 2, 3],
        "the file's \"hook\" keeps its name and its deliveries"
    );
    let admin = run.sidecar.admin_url().await;
    assert!(metric(&admin, "leadhook_registry_invalid_rows_total", &[]).await >= 4.0);

    let checked = leadhook().run(&run.config.to_toml(), &["check"], &[]);
    assert_eq!(
        checked.code,
        Some(0),
        "invalid rows are warnings: {}",
        checked.stdout
    );
    assert!(
        checked
            .stdout
            .contains("ok       registry row \"good\" (enabled)"),
        "{}",
        checked.stdout
    );
    assert!(
        checked
            .stdout
            .contains("warning  registry row \"wrong_method\".method"),
        "{}",
        checked.stdout
    );

    let listed = eventually_listed(&run, "wrong_method", "invalid").await;
    assert!(
        listed["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("GET"),
        "{listed}"
    );
}

#[tokio::test]
async fn rows_pointing_at_loopback_metadata_or_the_sidecars_own_variables_are_refused() {
    let run = Scenario::new("untrusted")
        .configure(registry(false))
        .env("LEADHOOK_WEBHOOK_TOKEN", "partner-token")
        .start(&leadhook())
        .await;
    let port = run.receiver.addr().port();
    run.db
        .sql
        .batch_execute(&format!(
            "INSERT INTO {TABLE} (name, url, headers) VALUES
                 ('loopback', 'http://127.0.0.1:{port}/loopback', '{{}}'),
                 ('metadata', 'http://169.254.169.254/latest/meta-data', '{{}}'),
                 ('reads_db_url', 'https://partner.example.com/hook',
                  '{{\"Authorization\": \"${{LEADHOOK_DATABASE__URL}}\"}}'),
                 ('by_name', 'http://localhost:{port}/by_name',
                  '{{\"Authorization\": \"Bearer ${{LEADHOOK_WEBHOOK_TOKEN}}\"}}')"
        ))
        .await
        .expect("insert rows");
    run.sidecar.wait_log("webhook=by_name cut_over=").await;
    let log = run.sidecar.log();
    assert!(log.contains("127.0.0.1 is a non-public address"), "{log}");
    assert!(
        log.contains("169.254.169.254 is a non-public address"),
        "{log}"
    );
    assert!(
        log.contains("${LEADHOOK_DATABASE__URL} is not allowed here"),
        "{log}"
    );

    // A name is judged on the addresses it resolves to, when connecting.
    run.db.insert_leads(1..=1).await;
    run.sidecar
        .wait_log("localhost resolves only to non-public addresses")
        .await;
    for path in ["/loopback", "/by_name"] {
        assert_eq!(
            run.receiver.count_to(path),
            0,
            "{path}: reached the private network"
        );
    }
    assert!(!run.sidecar.log().contains("partner-token"));
}

/// Waits until `text` is in the log a second time.
async fn logged_twice(run: &Running, text: &str) {
    eventually(
        &format!("{text:?} logged twice"),
        || run.sidecar.log(),
        async || run.sidecar.log().matches(text).count() >= 2,
    )
    .await;
}

/// `leadhook webhooks list --json`'s entry for `name`, once it shows `state`.
pub(crate) async fn eventually_listed(run: &Running, name: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let entry = listed(run, name);
        if entry["state"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks list never showed {name} {state}: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `leadhook webhooks list --json`'s entry for `name` (null if absent).
pub(crate) fn listed(run: &Running, name: &str) -> serde_json::Value {
    let done = leadhook().run(&run.config.to_toml(), &["webhooks", "list", "--json"], &[]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let listing: serde_json::Value = serde_json::from_str(&done.stdout).expect("JSON");
    listing["webhooks"]
        .as_array()
        .and_then(|all| all.iter().find(|w| w["name"] == name).cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn dead_letters_of_a_registry_webhook_replay_to_it_unless_it_is_paused() {
    let run = Scenario::new("rowreplay")
        .configure(registry(true))
        .start(&leadhook())
        .await;
    let url = run.receiver.url("/crm");
    sql(
        &run,
        &format!("INSERT INTO {TABLE} (name, url) VALUES ('crm', $1)"),
        &url,
    )
    .await;
    run.sidecar.wait_log("webhook=crm cut_over=").await;
    run.db
        .sql
        .batch_execute(
            "INSERT INTO leadhook.dead_letters (webhook, webhook_id, payload, attempts, last_error, first_attempt_at, last_attempt_at)
             VALUES ('crm', 'letter-1', '{\"data\":{}}', 3, 'HTTP 500', now(), now())",
        )
        .await
        .expect("a dead letter");
    let config = run.config.to_toml();
    let replay = move |config: String| {
        tokio::task::spawn_blocking(move || {
            leadhook().run(
                &config,
                &["dead-letters", "replay", "--webhook", "crm"],
                &[],
            )
        })
    };
    let pause = leadhook().run(&config, &["webhooks", "pause", "crm"], &[]);
    assert_eq!(pause.code, Some(0), "{}", pause.stderr);
    let skipped = replay(config.clone()).await.expect("replay");
    assert!(skipped.stdout.contains("paused"), "{}", skipped.stdout);
    assert_eq!(run.receiver.count_to("/crm"), 0);
    leadhook().run(&config, &["webhooks", "resume", "crm"], &[]);
    let done = replay(config).await.expect("replay");
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    assert_eq!(run.receiver.count_to("/crm"), 1, "{}", done.stdout);
    assert_eq!(
        run.receiver.requests_to("/crm")[0].header("webhook-id"),
        Some("letter-1")
    );
}
