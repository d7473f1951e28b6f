//! Many webhooks (fan-out): how long leadhook takes to start with 1, 16,
//! 100, 200 and 1 000 of them (`--many-webhooks`), what each costs at rest,
//! and how fast `--many-leads` leads reach every one.

use std::time::{Duration, Instant};

use leadhook_testkit::config::{SidecarConfig, Webhook};

use crate::database::BenchDb;
use crate::report::{Many, Report};
use crate::{Bench, check_running, start, stop, wait_for};

/// Requests in flight per webhook: one receiver stands for every partner,
/// and 1 000 × 64 connections would measure it, not leadhook.
const IN_FLIGHT: usize = 4;

pub(crate) async fn many(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let leads = bench.options.many_leads;
    for &webhooks in &bench.options.many_webhooks {
        eprintln!("many webhooks: {webhooks} webhooks, {leads} leads...");
        let name = format!("bench_many_{webhooks}");
        let db = BenchDb::create(&bench.cluster, &name, &[&name]).await?;
        bench.sink.reset();
        let paths: Vec<String> = (0..webhooks).map(|i| format!("/many{i}")).collect();
        let config = paths.iter().enumerate().fold(
            SidecarConfig::new(format!("{}?sslmode=disable", db.url)).with(|c| {
                c.source.slot = Some(name.clone());
                c.source.publication = Some("bench".to_owned());
                c.delivery.timeout = None;
                c.delivery.max_in_flight = Some(IN_FLIGHT);
            }),
            |config, (i, path)| config.webhook(Webhook::new(format!("h{i}"), bench.sink.url(path))),
        );
        let started = Instant::now();
        let mut sidecar = start(&bench.binary, &config.to_toml())?;
        db.wait_active(&name).await?;
        let start_seconds = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss_mib = sidecar.rss_mib();
        check_running(&sidecar)?;

        let delivering = Instant::now();
        db.insert(leads, 1_000).await?;
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        wait_for(
            &bench.sink,
            &mut sidecar,
            &paths,
            leads,
            Duration::from_secs(300),
        )
        .await?;
        let delivery_seconds = delivering.elapsed().as_secs_f64();
        report.many.push(Many {
            webhooks,
            leads,
            start_seconds,
            idle_rss_mib,
            delivery_seconds,
            leads_per_second_per_webhook: leads as f64 / delivery_seconds,
            peak_rss_mib: sidecar.peak_rss_mib(),
        });
        stop(sidecar).await;
    }
    Ok(())
}
