//! Spool capacity: a backlog committed before leadhook starts, its one
//! webhook's endpoint down from the start and `spool_after` = 1 s: how fast
//! the backlog is written to `leadhook.spool`, and how fast it drains once
//! the endpoint answers again.

use std::time::{Duration, Instant};

use anyhow::bail;
use leadhook_testkit::config::Webhook;
use leadhook_testkit::metrics::metric;
use serde::Serialize;

use crate::database::BenchDb;
use crate::leadhook::start_observed;
use crate::report::{Report, Target};
use crate::sampler::{Sampler, fill_rate, filling};
use crate::{Bench, check_running, stop};

const PATH: &str = "/spool";
const WEBHOOK: &str = "spooled";
const SPOOL_AFTER: Duration = Duration::from_secs(1);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The target: spooling keeps up with this many changes/s.
const TARGET_ROWS_PER_SECOND: f64 = 10_000.0;
const LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, Default, Serialize)]
pub(crate) struct SpoolCapacity {
    pub(crate) events: u64,
    pub(crate) spool_after_seconds: f64,
    /// From spawning leadhook to its first spooled row showing.
    pub(crate) first_row_seconds: f64,
    /// From the first spooled row to all of them (as the depth shows).
    pub(crate) spool_seconds: f64,
    pub(crate) spool_rows_per_second: f64,
    /// `count(*)` of the webhook's rows once the depth said all.
    pub(crate) rows_in_table: i64,
    /// leadhook's CPU (user + system) from its start until all were spooled.
    pub(crate) cpu_seconds_spooling: f64,
    /// From the endpoint's recovery until it had every change and the
    /// spool was empty.
    pub(crate) drain_seconds: f64,
    pub(crate) drain_rows_per_second: f64,
    pub(crate) peak_rss_mib: f64,
}

pub(crate) async fn spool(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let n = options.spool_events.max(1);
    eprintln!("spool: committing {n} leads, the endpoint down from the start...");
    let slot = "bench_spool";
    let db = BenchDb::create(cluster, slot, &[slot]).await?;
    db.insert(n, options.batch).await?;
    sink.reset();
    sink.track(PATH);
    sink.set_down(PATH, Some(503));
    let config = db
        .config(slot)
        .with(|c| c.delivery.spool_after = Some(SPOOL_AFTER))
        .webhook(Webhook::new(WEBHOOK, sink.url(PATH)).with(|w| {
            w.delivery.initial_backoff = Some(Duration::from_millis(100));
            w.delivery.max_backoff = Some(Duration::from_secs(1));
        }));
    let started = Instant::now();
    let (sidecar, admin) = start_observed(binary, &config.to_toml()).await?;
    let sampler = Sampler::start(&db, slot, admin.clone(), WEBHOOK, SAMPLE_EVERY, started).await?;
    eprintln!("spool: writing the backlog to the spool...");
    let deadline = Instant::now() + LIMIT;
    while sampler.latest().spool_depth < n as f64 {
        check_running(&sidecar)?;
        if Instant::now() > deadline {
            bail!(
                "spool: {} of {n} rows spooled within {LIMIT:?}; leadhook log:\n{}",
                sampler.latest().spool_depth,
                sidecar.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_seconds_spooling = sidecar.cpu_seconds();
    let rows_in_table = db.spool_rows().await?.get(WEBHOOK).copied().unwrap_or(0);
    let samples = sampler.finish().await?;
    let (empty, full) = filling(&samples);

    eprintln!("spool: the endpoint is back; draining...");
    sink.set_down(PATH, None);
    let recovered = Instant::now();
    let deadline = recovered + LIMIT;
    while sink.delivered(PATH) < n
        || metric(&admin, "leadhook_spool_depth", &[("webhook", WEBHOOK)]).await > 0.0
    {
        check_running(&sidecar)?;
        if Instant::now() > deadline {
            bail!(
                "spool: {} of {n} changes drained within {LIMIT:?}; leadhook log:\n{}",
                sink.delivered(PATH),
                sidecar.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_seconds = recovered.elapsed().as_secs_f64();
    let peak_rss_mib = sidecar.peak_rss_mib();
    stop(sidecar).await;
    report.spool = SpoolCapacity {
        events: n,
        spool_after_seconds: SPOOL_AFTER.as_secs_f64(),
        first_row_seconds: samples
            .iter()
            .find(|s| s.spool_depth > 0.0)
            .map_or(0.0, |s| s.t),
        spool_seconds: full.t - empty.t,
        spool_rows_per_second: fill_rate(&samples),
        rows_in_table,
        cpu_seconds_spooling,
        drain_seconds,
        drain_rows_per_second: n as f64 / drain_seconds,
        peak_rss_mib,
    };
    Ok(())
}

impl SpoolCapacity {
    pub(crate) fn print(&self, row: &dyn Fn(&str, String)) {
        row(
            &format!(
                "spool: {} leads, endpoint down, spool_after = {:.0} s",
                self.events, self.spool_after_seconds
            ),
            String::new(),
        );
        row(
            "  start → first spooled row",
            format!("{:.2} s", self.first_row_seconds),
        );
        row(
            &format!("  writing every row ({} in the table)", self.rows_in_table),
            format!("{:.2} s", self.spool_seconds),
        );
        row(
            "  spool write rate",
            format!("{:.0} rows/s", self.spool_rows_per_second),
        );
        row(
            "  CPU until all were spooled",
            format!("{:.2} s", self.cpu_seconds_spooling),
        );
        row(
            "  drain after recovery",
            format!(
                "{:.2} s, {:.0} rows/s",
                self.drain_seconds, self.drain_rows_per_second
            ),
        );
        row("  peak RSS", format!("{:.1} MiB", self.peak_rss_mib));
    }

    pub(crate) fn targets(&self) -> Vec<Target> {
        vec![Target::new(
            "spool write rate",
            format!("≥ {TARGET_ROWS_PER_SECOND:.0}/s"),
            format!("{:.0}/s", self.spool_rows_per_second),
            self.spool_rows_per_second >= TARGET_ROWS_PER_SECOND
                && self.rows_in_table == self.events as i64,
        )]
    }
}
