//! An outage: steady single-row commits to two webhooks, one of them
//! answering 503 for the middle half of the run. The healthy one must not
//! notice; the down one spools (after a short `spool_after`), so the slot
//! retains little WAL, and drains when its endpoint is back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use leadhook_testkit::config::Webhook;
use leadhook_testkit::metrics::{scrape, value};
use serde::Serialize;

use crate::database::BenchDb;
use crate::leadhook::start_observed;
use crate::report::{Percentiles, Report, Target};
use crate::sampler::{Sample, Sampler, fill_rate, filling, max_of, peak_rate};
use crate::sink::Sink;
use crate::{Bench, check_running, sorted_latencies, steady_inserts, stop};

const HEALTHY: &str = "/outage_ok";
const DOWN: &str = "/outage_down";
/// What the down endpoint answers.
const DOWN_STATUS: u16 = 503;
/// `spool_after` for this phase: the default 30 s would outlast a short
/// outage; a third of the outage, at most 5 s.
const SPOOL_AFTER_MAX: Duration = Duration::from_secs(5);
/// The down webhook retries quickly, so its recovery is seen within a second.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Targets: the healthy webhook's p99 (a choice: well under a second,
/// while its neighbour fails and spools), and the WAL held back.
const HEALTHY_P99_MS: f64 = 100.0;
const MAX_RETAINED_WAL_MB: f64 = 512.0;
const LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Serialize)]
pub(crate) struct Outage {
    pub(crate) offered_per_second: u64,
    pub(crate) seconds: u64,
    pub(crate) commits: u64,
    /// The down webhook's endpoint answered 503 from..until (s into the run).
    pub(crate) down_from_seconds: f64,
    pub(crate) down_until_seconds: f64,
    pub(crate) spool_after_seconds: f64,
    /// The healthy webhook's commit → arrival over the whole run…
    pub(crate) healthy: Percentiles,
    /// …by commit time: before the outage, failing (before spooling),
    /// spooling, after the recovery.
    pub(crate) healthy_by_window: Vec<Window>,
    /// When the change with the healthy webhook's worst latency was committed.
    pub(crate) healthy_worst_at_seconds: f64,
    /// The down webhook's commit → arrival for changes committed after it
    /// recovered (live, or through the spool while it drains).
    pub(crate) down_after_recovery: Window,
    pub(crate) max_retained_wal_mb: f64,
    pub(crate) max_unconfirmed_wal_mb: f64,
    /// When the down webhook's state became `spooling` (s into the run).
    pub(crate) spooling_from_seconds: Option<f64>,
    /// The deepest its spool got.
    pub(crate) max_spool_depth: f64,
    /// Rows/s into the spool, from the first row to the deepest point.
    pub(crate) spool_rows_per_second: f64,
    /// The same over the fastest second (the backlog of `spool_after`).
    pub(crate) spool_peak_rows_per_second: f64,
    /// The spool's depth at the endpoint's recovery; from then until it
    /// was down to `drained_depth` rows, the rows delivered.
    pub(crate) depth_at_recovery: f64,
    pub(crate) drained_depth: f64,
    pub(crate) drained_rows: u64,
    pub(crate) drain_seconds: f64,
    pub(crate) drain_rows_per_second: f64,
    /// From the recovery until the webhook's state was `healthy` again.
    pub(crate) live_again_after_seconds: Option<f64>,
    /// Distinct leads each webhook got, of `commits`.
    pub(crate) delivered_healthy: u64,
    pub(crate) delivered_down: u64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) samples: Vec<Sample>,
}

pub(crate) async fn outage(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let (rate, seconds) = (options.outage_rate.max(1), options.outage_seconds.max(4));
    let down_from = Duration::from_secs_f64(seconds as f64 / 4.0);
    let down_until = Duration::from_secs_f64(seconds as f64 * 3.0 / 4.0);
    let spool_after = SPOOL_AFTER_MAX.min((down_until - down_from) / 3);
    eprintln!(
        "outage: {rate} commits/s for {seconds} s to two webhooks, {DOWN} answering \
         {DOWN_STATUS} from {:.0} s to {:.0} s, spool_after = {:.1} s...",
        down_from.as_secs_f64(),
        down_until.as_secs_f64(),
        spool_after.as_secs_f64()
    );
    let slot = "bench_outage";
    let db = BenchDb::create(cluster, slot, &[slot]).await?;
    sink.reset();
    sink.track(HEALTHY);
    sink.track(DOWN);
    let config = db
        .config(slot)
        .with(|c| c.delivery.spool_after = Some(spool_after))
        .webhook(Webhook::new("ok", sink.url(HEALTHY)))
        .webhook(Webhook::new("down", sink.url(DOWN)).with(|w| {
            w.delivery.initial_backoff = Some(RETRY_BACKOFF.0);
            w.delivery.max_backoff = Some(RETRY_BACKOFF.1);
        }));
    let (sidecar, admin) = start_observed(binary, &config.to_toml()).await?;
    db.wait_active(slot).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = Instant::now();
    let epoch_us = epoch_micros();
    let sampler = Sampler::start(&db, slot, admin.clone(), "down", SAMPLE_EVERY, started).await?;
    // The endpoint's outage and its recovery, beside the steady commits.
    let outage = async {
        tokio::time::sleep_until((started + down_from).into()).await;
        sink.set_down(DOWN, Some(DOWN_STATUS));
        tokio::time::sleep_until((started + down_until).into()).await;
        sink.set_down(DOWN, None);
        recover(&admin, sink, rate, Instant::now()).await
    };
    let (commits, recovery) = tokio::join!(steady_inserts(&db, rate, seconds), outage);
    let commits = commits?;

    let deadline = Instant::now() + LIMIT;
    while sink.delivered(HEALTHY) < commits || sink.delivered(DOWN) < commits {
        if Instant::now() > deadline {
            break;
        }
        check_running(&sidecar)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let samples = sampler.finish().await?;
    let peak_rss_mib = sidecar.peak_rss_mib();
    let log = sidecar.log();
    stop(sidecar).await;
    let (delivered_healthy, delivered_down) = (sink.delivered(HEALTHY), sink.delivered(DOWN));
    if delivered_healthy < commits || delivered_down < commits {
        bail!(
            "outage: of {commits} changes, {delivered_healthy} reached {HEALTHY} and \
             {delivered_down} {DOWN} within {LIMIT:?}; leadhook log:\n{log}"
        );
    }
    let Some(drain_seconds) = recovery.drained_after else {
        bail!("outage: the spool did not drain within {LIMIT:?}; leadhook log:\n{log}");
    };

    let spooling_from = samples.iter().find(|s| s.spooling).map(|s| s.t);
    let bounds = [
        ("before", 0.0, down_from.as_secs_f64()),
        (
            "failing",
            down_from.as_secs_f64(),
            spooling_from.unwrap_or(down_until.as_secs_f64()),
        ),
        (
            "spooling",
            spooling_from.unwrap_or(down_until.as_secs_f64()),
            down_until.as_secs_f64(),
        ),
        ("after", down_until.as_secs_f64(), f64::INFINITY),
    ];
    let healthy_timed = sink.timed_latencies(HEALTHY);
    let worst = healthy_timed
        .iter()
        .max_by_key(|(_, latency)| *latency)
        .map_or((0.0, 0.0), |(at, latency)| {
            ((at - epoch_us) as f64 / 1e6, *latency as f64 / 1000.0)
        });
    let (_, deepest) = filling(&samples);
    report.outage = Outage {
        offered_per_second: rate,
        seconds,
        commits,
        down_from_seconds: down_from.as_secs_f64(),
        down_until_seconds: down_until.as_secs_f64(),
        spool_after_seconds: spool_after.as_secs_f64(),
        healthy: Percentiles::of(&sorted_latencies(sink, HEALTHY)),
        max_retained_wal_mb: max_of(&samples, |s| s.retained_wal_bytes) / 1e6,
        max_unconfirmed_wal_mb: max_of(&samples, |s| s.unconfirmed_wal_bytes) / 1e6,
        healthy_by_window: windows(&healthy_timed, epoch_us, &bounds),
        healthy_worst_at_seconds: worst.0,
        down_after_recovery: windows(&sink.timed_latencies(DOWN), epoch_us, &bounds[3..])
            .pop()
            .unwrap_or_default(),
        spooling_from_seconds: spooling_from,
        max_spool_depth: deepest.spool_depth,
        spool_rows_per_second: fill_rate(&samples),
        spool_peak_rows_per_second: peak_rate(&samples, 1.0),
        depth_at_recovery: recovery.depth,
        drained_depth: drained_depth(rate),
        drained_rows: recovery.drained_rows,
        drain_seconds,
        drain_rows_per_second: recovery.drained_rows as f64 / drain_seconds.max(f64::EPSILON),
        live_again_after_seconds: recovery.live_after,
        delivered_healthy,
        delivered_down,
        peak_rss_mib,
        samples,
    };
    Ok(())
}

/// What the down webhook did after its endpoint recovered.
struct Recovery {
    /// Its spool's depth when the endpoint came back.
    depth: f64,
    /// Seconds until its backlog was drained (the spool down to
    /// [`drained_depth`] rows), and the changes it got by then.
    drained_after: Option<f64>,
    drained_rows: u64,
    /// Seconds until its state was `healthy` again (the spool empty, and
    /// delivering live).
    live_after: Option<f64>,
}

/// The spool depth below which a backlog counts as drained: what half a
/// second of commits adds. (While commits go on, the spool is seldom
/// empty: each change still passes through it until the webhook is live.)
fn drained_depth(rate: u64) -> f64 {
    (rate as f64 / 2.0).max(1.0)
}

/// Watches the down webhook from its recovery until it is live again, or
/// [`LIMIT`] has passed.
async fn recover(admin: &str, sink: &Sink, rate: u64, recovered: Instant) -> Recovery {
    let before = sink.delivered(DOWN);
    let depth_of = |metrics: &[_]| value(metrics, "leadhook_spool_depth", &[("webhook", "down")]);
    let mut recovery = Recovery {
        depth: depth_of(&scrape(admin).await).unwrap_or(0.0),
        drained_after: None,
        drained_rows: 0,
        live_after: None,
    };
    while recovered.elapsed() < LIMIT {
        let metrics = scrape(admin).await;
        let at = recovered.elapsed().as_secs_f64();
        if recovery.drained_after.is_none()
            && depth_of(&metrics).unwrap_or(0.0) <= drained_depth(rate)
        {
            recovery.drained_after = Some(at);
            recovery.drained_rows = sink.delivered(DOWN) - before;
        }
        let healthy = [("webhook", "down"), ("state", "healthy")];
        if value(&metrics, "leadhook_webhook_state", &healthy) == Some(1.0) {
            recovery.live_after = Some(at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recovery
}

/// Commit → arrival of one part of the run, by commit time.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Window {
    pub(crate) name: String,
    pub(crate) from_seconds: f64,
    pub(crate) until_seconds: f64,
    pub(crate) samples: usize,
    #[serde(flatten)]
    pub(crate) ms: Percentiles,
}

/// `timed` ((commit µs since the epoch, latency µs)) cut by commit time
/// into `bounds` (name, from, until: seconds after `epoch_us`).
fn windows(timed: &[(i64, i64)], epoch_us: i64, bounds: &[(&str, f64, f64)]) -> Vec<Window> {
    bounds
        .iter()
        .map(|(name, from, until)| {
            let mut ms: Vec<f64> = timed
                .iter()
                .filter(|(at, _)| {
                    let t = (at - epoch_us) as f64 / 1e6;
                    t >= *from && t < *until
                })
                .map(|(_, latency)| *latency as f64 / 1000.0)
                .collect();
            ms.sort_by(f64::total_cmp);
            let last = timed
                .iter()
                .map(|(at, _)| (at - epoch_us) as f64 / 1e6)
                .fold(*from, f64::max);
            Window {
                name: (*name).to_owned(),
                from_seconds: *from,
                until_seconds: until.min(last),
                samples: ms.len(),
                ms: Percentiles::of(&ms),
            }
        })
        .collect()
}

fn epoch_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

impl Outage {
    pub(crate) fn print(&self, row: &dyn Fn(&str, String)) {
        row(
            &format!(
                "outage: {}/s for {} s, 2 webhooks, one answering {DOWN_STATUS} {}–{} s",
                self.offered_per_second,
                self.seconds,
                self.down_from_seconds,
                self.down_until_seconds
            ),
            String::new(),
        );
        row(
            "  spool_after (for this phase)",
            format!("{:.1} s", self.spool_after_seconds),
        );
        row(
            "  healthy webhook p50 / p99",
            format!("{:.2} / {:.2} ms", self.healthy.p50_ms, self.healthy.p99_ms),
        );
        row(
            &format!(
                "  healthy webhook max (committed at {:.1} s)",
                self.healthy_worst_at_seconds
            ),
            format!("{:.2} ms", self.healthy.max_ms),
        );
        for w in &self.healthy_by_window {
            row(
                &format!(
                    "    committed {} ({:.1}–{:.1} s): p50 / p99",
                    w.name, w.from_seconds, w.until_seconds
                ),
                format!("{:.2} / {:.2} ms", w.ms.p50_ms, w.ms.p99_ms),
            );
        }
        row(
            "  max retained WAL (restart_lsn)",
            format!("{:.1} MB", self.max_retained_wal_mb),
        );
        row(
            "  max unconfirmed WAL (confirmed_flush_lsn)",
            format!("{:.1} MB", self.max_unconfirmed_wal_mb),
        );
        row(
            "  spooling from",
            self.spooling_from_seconds
                .map_or("never".into(), |t| format!("{t:.1} s")),
        );
        row(
            &format!("  spool writes ({:.0} rows at most)", self.max_spool_depth),
            format!("{:.0} rows/s", self.spool_rows_per_second),
        );
        row(
            "  spool writes, fastest second",
            format!("{:.0} rows/s", self.spool_peak_rows_per_second),
        );
        row(
            "  spool depth at recovery",
            format!("{:.0} rows", self.depth_at_recovery),
        );
        row(
            &format!(
                "  drain: {} rows, recovery → spool ≤ {:.0} rows",
                self.drained_rows, self.drained_depth
            ),
            format!("{:.2} s", self.drain_seconds),
        );
        row(
            "  drain rate",
            format!("{:.0} rows/s", self.drain_rows_per_second),
        );
        // Whether it went live only once the commits had stopped.
        let stopped = self.seconds as f64 - self.down_until_seconds;
        row(
            "  recovery → spool empty, live again (state healthy)",
            self.live_again_after_seconds
                .map_or("not within 300 s".into(), |t| {
                    let note = if t >= stopped { " (commits over)" } else { "" };
                    format!("{t:.2} s{note}")
                }),
        );
        let d = &self.down_after_recovery;
        row(
            "  down webhook after recovery: p50 / p99",
            format!("{:.2} / {:.2} ms", d.ms.p50_ms, d.ms.p99_ms),
        );
        row(
            "  distinct changes at ok / down",
            format!(
                "{} / {} of {}",
                self.delivered_healthy, self.delivered_down, self.commits
            ),
        );
        row("  peak RSS", format!("{:.1} MiB", self.peak_rss_mib));
    }

    pub(crate) fn targets(&self) -> Vec<Target> {
        vec![
            Target::new(
                "outage: healthy p99",
                format!("≤ {HEALTHY_P99_MS:.0} ms"),
                format!("{:.2} ms", self.healthy.p99_ms),
                self.healthy.p99_ms <= HEALTHY_P99_MS,
            ),
            Target::new(
                "outage: retained WAL",
                format!("≤ {MAX_RETAINED_WAL_MB:.0} MB"),
                format!("{:.1} MB", self.max_retained_wal_mb),
                self.max_retained_wal_mb <= MAX_RETAINED_WAL_MB,
            ),
            Target::new(
                "outage: every change",
                "both webhooks".into(),
                format!(
                    "{}/{}",
                    self.delivered_healthy.min(self.delivered_down),
                    self.commits
                ),
                self.commits > 0
                    && self.delivered_healthy >= self.commits
                    && self.delivered_down >= self.commits,
            ),
        ]
    }
}
