//! What operators look at, through the real tools: Prometheus scrapes a
//! running sidecar and answers PromQL about its deliveries; `promtool`
//! accepts its `/metrics`, checks the alert rules and runs their unit
//! tests; every metric the rules and the Grafana dashboard use is served.

use std::collections::BTreeSet;

use leadhook_testkit::prometheus::{Prometheus, promtool};

use crate::support::*;

/// The `leadhook_…` metric names in `text` (a histogram's series under
/// its own name).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("leadhook_") {
        let start = at + found;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !preceded {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        at = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_sidecar_and_answers_promql_about_its_deliveries() {
    install_crypto_provider();
    // A cluster of its own: max_slot_wal_keep_size set, so the slot's safe
    // WAL is a metric too.
    let cluster = start_cluster(ClusterOptions::default().setting("max_slot_wal_keep_size", "1GB"));
    let run = Scenario::new("prometheus")
        .on(&cluster)
        .setup("INSERT INTO leads (email, score) SELECT 'old' || i || '@example.com', i FROM generate_series(1001, 1010) i")
        .start(&leadhook())
        .await;
    let admin = run.sidecar.admin_url().await;
    let prometheus = Prometheus::start(&[admin.trim_start_matches("http://").to_owned()]).await;
    // Prometheus scrapes a new target first after about 5 s (it batches
    // target updates); the leads come after, in two rounds scrapes apart,
    // so rate() sees the histogram grow.
    prometheus.wait_for_scrapes("up{job=\"leadhook\"}", 1).await;
    run.db.insert_leads(1..=25).await;
    wait_for_these_scores(&run.receiver, "/leads", 1..=25, &run.sidecar).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    run.db.insert_leads(26..=50).await;
    wait_for_these_scores(&run.receiver, "/leads", 1..=50, &run.sidecar).await;
    // A backfill too, so its metrics are served.
    let backfill = run_command(&run.config, &["backfill"]).await;
    backfill.assert_success();

    let delivered = "sum(leadhook_deliveries_total{job=\"leadhook\", outcome=\"delivered\"})";
    let mut last = None;
    for _ in 0..100 {
        last = prometheus.value(delivered).await;
        if last == Some(110.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        last,
        Some(110.0),
        "50 live, then a backfill of all 60 leads; Prometheus log:\n{}",
        prometheus.log()
    );
    let p99 = prometheus
        .value("histogram_quantile(0.99, sum by (le) (rate(leadhook_event_lag_seconds_bucket{job=\"leadhook\"}[1m])))")
        .await;
    assert!(
        p99.is_some_and(|s| s > 0.0 && s <= 30.0),
        "the lag's p99 through Prometheus: {p99:?}; {}",
        prometheus
            .query("leadhook_event_lag_seconds_count[1m]")
            .await
    );
    let up = prometheus.value("up{job=\"leadhook\"}").await;
    assert_eq!(up, Some(1.0));

    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("the metrics");
    let checked = promtool(&["check", "metrics"], Some(&text));
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let served = metric_names(&text);
    let rules =
        std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yaml")).expect("the rules");
    let dashboard =
        std::fs::read_to_string(repo_file("deploy/grafana/leadhook.json")).expect("the dashboard");
    for (what, text) in [("alerts.yaml", &rules), ("leadhook.json", &dashboard)] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{what} uses leadhook's metrics: {used:?}");
        let unknown: Vec<&String> = used.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics /metrics does not serve: {unknown:?}"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = repo_file("deploy/prometheus/alerts.yaml");
    let tests = repo_file("deploy/prometheus/alerts_test.yaml");
    for args in [
        vec!["check", "rules", rules.to_str().expect("a path")],
        vec!["test", "rules", tests.to_str().expect("a path")],
    ] {
        let done = promtool(&args, None);
        assert!(
            done.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        );
    }
}
