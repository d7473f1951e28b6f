//! The HTTP/2 phase: the throughput run's workload to one webhook with
//! `http2 = "always"` (h2c, prior knowledge, against the same receiver), so
//! its requests share connections instead of one request per connection at
//! a time: its rate and CPU per event beside the HTTP/1.1 run's.

use std::time::{Duration, Instant};

use leadhook_testkit::config::Webhook;
use serde::Serialize;

use crate::database::BenchDb;
use crate::leadhook::{start, stop};
use crate::report::Report;
use crate::{Bench, wait_for};

#[derive(Debug, Default, Serialize)]
pub(crate) struct Http2 {
    pub(crate) events: u64,
    pub(crate) events_per_second: f64,
    pub(crate) cpu_seconds_per_100k_events: f64,
    pub(crate) peak_rss_mib: f64,
}

pub(crate) async fn http2(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let n = bench.options.events;
    eprintln!("http2: {n} leads to one webhook over HTTP/2 (h2c)...");
    let db = BenchDb::create(&bench.cluster, "bench_http2", &["bench_http2"]).await?;
    db.insert(n, bench.options.batch).await?;
    bench.sink.reset();
    let config = db
        .config("bench_http2")
        .webhook(
            Webhook::new("hook0", bench.sink.url("/hook0"))
                .with(|w| w.http2 = Some("always".into())),
        )
        .to_toml();
    let started = Instant::now();
    let mut sidecar = start(&bench.binary, &config)?;
    wait_for(
        &bench.sink,
        &mut sidecar,
        &["/hook0"],
        n,
        Duration::from_secs(600),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    report.http2 = Http2 {
        events: n,
        events_per_second: n as f64 / elapsed,
        cpu_seconds_per_100k_events: sidecar.cpu_seconds() * 100_000.0 / n as f64,
        peak_rss_mib: sidecar.peak_rss_mib(),
    };
    stop(sidecar).await;
    Ok(())
}

impl Http2 {
    pub(crate) fn print(&self, row: &dyn Fn(&str, String)) {
        row(
            &format!("throughput over HTTP/2, 1 webhook ({} events)", self.events),
            format!("{:.0} ev/s", self.events_per_second),
        );
        row(
            "  CPU per 100 000 events, HTTP/2",
            format!("{:.2} s", self.cpu_seconds_per_100k_events),
        );
        row(
            "  peak RSS, HTTP/2 run",
            format!("{:.1} MiB", self.peak_rss_mib),
        );
    }
}
