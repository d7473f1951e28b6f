use super::*;

#[test]
fn quantiles_pick_the_nearest_rank() {
    let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(quantile(&sorted, 0.5), 50.0);
    assert_eq!(quantile(&sorted, 0.99), 99.0);
    assert_eq!(quantile(&sorted, 1.0), 100.0);
    assert_eq!(quantile(&[], 0.5), 0.0);
}

#[test]
fn targets_are_judged_against_the_figures() {
    let mut report = Report::default();
    report.throughput.ratio = 0.9;
    report.throughput.drain_wrk_ratio = 0.7;
    report.resources.cpu_seconds_per_100k_events = 0.8;
    report.fanout.ratio = 0.5;
    report.latency.ms.p50_ms = 1.0;
    report.latency.ms.p99_ms = 30.0;
    report.many.push(Many {
        webhooks: 1000,
        start_seconds: 1.5,
        ..Many::default()
    });
    report.many.push(Many {
        webhooks: 200,
        delivery_seconds: 10.0,
        peak_rss_mib: 80.0,
        ..Many::default()
    });
    report.outage.healthy.p99_ms = 150.0;
    report.outage.max_retained_wal_mb = 10.0;
    (report.outage.commits, report.outage.delivered_healthy) = (10, 10);
    report.outage.delivered_down = 10;
    report.spool.spool_rows_per_second = 12_000.0;
    (report.spool.events, report.spool.rows_in_table) = (5, 5);
    report.big_rows.peak_rss_mib = 80.0;
    report.phases = Phase::ALL.to_vec();
    report.judge();
    let passed: Vec<bool> = report.targets.iter().map(|t| t.pass).collect();
    assert_eq!(
        passed,
        [
            true, false, true, false, // throughput (reqwest, wrk, CPU), fan-out
            true, false, true, // latency p50, p99, idle RSS
            true, // backlog
            false, true, true, // outage: p99, WAL, every change
            true, // spool
            true, true, false, // many
            true,  // big rows
        ]
    );

    report.phases = vec![Phase::Latency];
    report.judge();
    assert_eq!(report.targets.len(), 3, "only the phases run are judged");
}
