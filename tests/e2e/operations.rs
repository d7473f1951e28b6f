//! Operations: metrics, health, graceful shutdown, logs, high availability.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::support::*;

pub(crate) async fn http_status(url: &str, method: reqwest::Method) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_and_carry_the_documented_names() {
    install_crypto_provider();
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("metrics")
        .webhook("hook", "/leads")
        .webhook_with("flaky", "/flaky", |w| {
            w.delivery.timeout = Some(Duration::from_millis(500));
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
        })
        .configure(|c| {
            let closed = Webhook::new("closed", "http://127.0.0.1:1/x")
                .with(|w| w.delivery.max_attempts = Some(1));
            c.webhooks.push(closed);
        })
        .start(&leadhook())
        .await;
    receiver.set_responder(|request, n| match (request.path.as_str(), n) {
        ("/flaky", 1) => Reply::status(503),
        ("/flaky", 2) => Reply::ok().after(Duration::from_secs(2)),
        _ => Reply::ok(),
    });
    let admin = sidecar.admin_url().await;

    db.sql
        .batch_execute("INSERT INTO leads (email) SELECT 'm' || i FROM generate_series(1, 25) i")
        .await
        .unwrap();
    db.sql
        .batch_execute(
            "UPDATE leads SET score = 1 WHERE email = 'm1'; DELETE FROM leads WHERE email = 'm2'",
        )
        .await
        .unwrap();
    receiver.wait_for("/leads", 26, WAIT).await.unwrap();
    let mut samples = Vec::new();
    eventually(
        "deliveries did not finish",
        || sidecar.log(),
        async || {
            samples = scrape(&admin).await;
            let done =
                |hook| value(&samples, "leadhook_deliveries_total", &[("webhook", hook)]).is_some();
            done("flaky")
                && value(
                    &samples,
                    "leadhook_deliveries_total",
                    &[("webhook", "closed"), ("outcome", "dead_lettered")],
                ) == Some(26.0)
                && value(
                    &samples,
                    "leadhook_deliveries_total",
                    &[("webhook", "flaky"), ("outcome", "delivered")],
                ) == Some(26.0)
        },
    )
    .await;
    let get = |name, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    assert_eq!(get("leadhook_changes_total", &[("op", "insert")]), 25.0);
    assert_eq!(get("leadhook_changes_total", &[("op", "update")]), 1.0);
    assert_eq!(get("leadhook_changes_total", &[("op", "delete")]), 1.0);
    assert_eq!(
        get(
            "leadhook_deliveries_total",
            &[("webhook", "hook"), ("outcome", "delivered")]
        ),
        26.0
    );
    assert_eq!(
        get(
            "leadhook_delivery_attempts_total",
            &[("webhook", "hook"), ("result", "success")]
        ),
        26.0
    );
    assert_eq!(
        get(
            "leadhook_delivery_attempts_total",
            &[("webhook", "flaky"), ("result", "http_error")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "leadhook_delivery_attempts_total",
            &[("webhook", "flaky"), ("result", "timeout")]
        ),
        1.0
    );
    // Each of the 26 changes had its one attempt: sent, or (once the
    // circuit opened) answered by the open circuit without a request.
    assert_eq!(
        get(
            "leadhook_delivery_attempts_total",
            &[("webhook", "closed"), ("result", "connect_error")]
        ) + get(
            "leadhook_circuit_skipped_attempts_total",
            &[("webhook", "closed")]
        ),
        26.0
    );
    assert!(
        get(
            "leadhook_delivery_attempts_total",
            &[("webhook", "closed"), ("result", "connect_error")]
        ) >= 5.0,
        "the circuit opens only after 5 failed requests"
    );
    assert_eq!(
        get(
            "leadhook_delivery_duration_seconds_count",
            &[("webhook", "hook")]
        ),
        26.0
    );
    assert_eq!(
        get("leadhook_event_lag_seconds_count", &[("webhook", "hook")]),
        26.0
    );
    assert!(
        value(
            &samples,
            "leadhook_delivery_duration_seconds_bucket",
            &[("webhook", "hook"), ("le", "0.005")]
        )
        .is_some()
    );
    assert_eq!(get("leadhook_in_flight", &[("webhook", "hook")]), 0.0);
    assert_eq!(get("leadhook_source_connected", &[]), 1.0);
    // Idle now: the lag is reported and small once the position catches up.
    let lag = Cell::new(0.0);
    eventually(
        "the replication lag stays high",
        || format!("at {}", lag.get()),
        async || {
            let samples = scrape(&admin).await;
            lag.set(value(&samples, "leadhook_replication_lag_bytes", &[]).expect("lag gauge"));
            lag.get() < 100_000.0
        },
    )
    .await;
}

/// reqwest in the test process needs the same crypto provider the sidecar installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database_while_healthz_stays_up_and_the_port_is_read_only() {
    install_crypto_provider();
    let mut cluster = start_cluster(ClusterOptions::default());
    let Running {
        db: _db,
        receiver: _receiver,
        sidecar,
        ..
    } = Scenario::new("ready").on(&cluster).start(&leadhook()).await;
    let admin = sidecar.admin_url().await;

    assert_eq!(
        http_status(&format!("{admin}/readyz"), reqwest::Method::GET).await,
        (200, "ready\n".into())
    );
    assert_eq!(
        http_status(&format!("{admin}/healthz"), reqwest::Method::GET)
            .await
            .0,
        200
    );
    assert_eq!(
        http_status(&format!("{admin}/metrics"), reqwest::Method::POST)
            .await
            .0,
        405
    );
    assert_eq!(
        http_status(&format!("{admin}/admin"), reqwest::Method::GET)
            .await
            .0,
        404
    );

    tokio::task::block_in_place(|| cluster.stop()).unwrap();
    let mut reason = String::new();
    eventually(
        "still ready with the database down",
        || sidecar.log(),
        async || {
            let (status, body) =
                http_status(&format!("{admin}/readyz"), reqwest::Method::GET).await;
            reason = body;
            status == 503
        },
    )
    .await;
    assert!(
        reason.starts_with("not ready: ") && reason.lines().count() == 1,
        "{reason:?}"
    );
    assert_eq!(
        http_status(&format!("{admin}/healthz"), reqwest::Method::GET)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    sidecar.assert_running();

    tokio::task::block_in_place(|| cluster.start_again()).unwrap();
    eventually(
        "not ready again after the database came back",
        || sidecar.log(),
        async || {
            http_status(&format!("{admin}/readyz"), reqwest::Method::GET)
                .await
                .0
                == 200
        },
    )
    .await;
}

#[tokio::test]
async fn sigterm_under_load_finishes_cleanly_and_a_restart_loses_nothing() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("sigterm")
        .webhook_with("hook", "/leads", |w| w.delivery.max_in_flight = Some(4))
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, _| Reply::ok().after(Duration::from_millis(3)));

    db.insert_leads_in_one_transaction(1..=3000).await;
    receiver.wait_for("/leads", 200, WAIT).await.unwrap();
    sidecar.terminate();
    let status = sidecar.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", sidecar.log());
    let log = sidecar.log();
    assert!(log.contains("replication stream closed"), "{log}");
    let before = receiver.requests_to("/leads").len();
    assert!(before < 3000, "the stop must land mid-stream");
    // Stopped cleanly: the slot is free at once.
    let active: bool = db
        .sql
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!active);

    sidecar.restart();
    wait_for_scores(&receiver, "/leads", 3000, &sidecar).await;
}

#[tokio::test]
async fn sigterm_when_idle_confirms_everything_delivered() {
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("sigterm_idle").start(&leadhook()).await;
    // Where the transaction's records end, short of its commit record: read
    // after commit, the position could include WAL that other tests' databases
    // wrote since, which no keepalive may have reported yet.
    db.sql
        .batch_execute("BEGIN; INSERT INTO leads (email) VALUES ('x')")
        .await
        .unwrap();
    let after = db.insert_lsn().await;
    db.sql.batch_execute("COMMIT").await.unwrap();
    receiver.wait_for("/leads", 1, WAIT).await.unwrap();
    sidecar.terminate();
    assert_eq!(
        sidecar.wait_exit(Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let confirmed = db.confirmed_past(&after).await;
    assert!(
        confirmed,
        "the delivered change must be confirmed at shutdown"
    );
}

#[tokio::test]
async fn logs_can_be_json_lines_at_the_configured_level() {
    // An empty RUST_LOG: the config's level applies.
    let Running {
        db,
        receiver,
        sidecar,
        ..
    } = Scenario::new("jsonlog")
        .webhook_with("hook", "/leads", |w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(50));
        })
        .configure(|c| {
            c.log = Some(Log {
                format: Some("json".into()),
                level: Some("warn".into()),
            });
        })
        .env("RUST_LOG", "")
        .start(&leadhook())
        .await;
    receiver.set_responder(|_, n| {
        if n == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('j')")
        .await
        .unwrap();
    receiver.wait_for("/leads", 2, WAIT).await.unwrap();
    let log = sidecar.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "level = warn hides info:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "delivery failed"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_takes_over_within_seconds_when_the_active_one_dies() {
    install_crypto_provider();
    let Running {
        db,
        receiver,
        sidecar: active,
        config,
    } = Scenario::new("ha").start(&leadhook()).await;
    let standby = leadhook().start(&config.to_toml());
    let standby_admin = standby.admin_url().await;
    // The second instance should stand by.
    standby.wait_log_within("standing by", WAIT).await;
    let (status, reason) =
        http_status(&format!("{standby_admin}/readyz"), reqwest::Method::GET).await;
    assert_eq!(status, 503);
    assert!(reason.contains("standby"), "{reason}");
    // Its status page says so too.
    let source = async || {
        let (_, body) =
            http_status(&format!("{standby_admin}/api/status"), reqwest::Method::GET).await;
        serde_json::from_str::<serde_json::Value>(&body)
            .map(|s| s["source"].clone())
            .unwrap_or_default()
    };
    eventually(
        "the standby's status page shows it standing by",
        || standby.log(),
        async || {
            let source = source().await;
            source["connected"] == false
                && source["not_ready"]
                    .as_str()
                    .is_some_and(|why| why.starts_with("standby"))
        },
    )
    .await;

    db.insert_leads_in_one_transaction(1..=100).await;
    receiver.wait_for("/leads", 100, WAIT).await.unwrap();
    active.kill();
    let killed = Instant::now();
    db.insert_leads_in_one_transaction(101..=200).await;
    wait_for_scores(&receiver, "/leads", 200, &standby).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    assert_eq!(
        http_status(&format!("{standby_admin}/readyz"), reqwest::Method::GET)
            .await
            .0,
        200
    );
    eventually(
        "the new active instance's page shows it connected",
        || standby.log(),
        async || source().await["connected"] == true,
    )
    .await;
}
