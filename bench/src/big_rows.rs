//! A backlog of 300 kB rows while both webhooks are down: they compress to
//! almost nothing in the database, but the sidecar gets every value whole,
//! so its memory must stay bounded by `[delivery] memory`, not by rows.

use std::time::{Duration, Instant};

use anyhow::bail;
use leadhook_testkit::config::Webhook;
use serde::Serialize;

use crate::database::BenchDb;
use crate::report::{Report, Target};
use crate::{Bench, check_running, start, stop};

const PATHS: [&str; 2] = ["/big_a", "/big_b"];
const WEBHOOKS: [&str; 2] = ["big_a", "big_b"];
/// Bytes of `notes` per lead.
const ROW_BYTES: i32 = 300_000;
/// Leads per transaction.
const BATCH: u64 = 100;
const SPOOL_AFTER: Duration = Duration::from_secs(2);
/// The product's memory target for this backlog (the e2e test's bound).
const PEAK_RSS_MIB: f64 = 96.0;
const LIMIT: Duration = Duration::from_secs(900);

#[derive(Debug, Default, Serialize)]
pub(crate) struct BigRows {
    pub(crate) leads: u64,
    pub(crate) row_bytes: i32,
    pub(crate) spool_after_seconds: f64,
    /// From the first commit until both webhooks' spools held every lead.
    pub(crate) spooled_seconds: f64,
    /// Peak RSS by then, and at the end (after the drain).
    pub(crate) peak_rss_spooling_mib: f64,
    /// From both endpoints' recovery until both had every lead.
    pub(crate) drain_seconds: f64,
    pub(crate) peak_rss_mib: f64,
}

pub(crate) async fn big_rows(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let n = options.big_rows.max(1);
    eprintln!(
        "big rows: {n} leads of {} kB to two webhooks, both down...",
        ROW_BYTES / 1000
    );
    let slot = "bench_big_rows";
    let db = BenchDb::create(cluster, slot, &[slot]).await?;
    sink.reset();
    for path in PATHS {
        sink.track(path);
        sink.set_down(path, Some(500));
    }
    let config = WEBHOOKS.iter().zip(PATHS).fold(
        db.config(slot).with(|c| {
            c.delivery.spool_after = Some(SPOOL_AFTER);
            c.delivery.initial_backoff = Some(Duration::from_millis(100));
            c.delivery.max_backoff = Some(Duration::from_millis(500));
        }),
        |config, (name, path)| config.webhook(Webhook::new(*name, sink.url(path))),
    );
    let sidecar = start(binary, &config.to_toml())?;
    db.wait_active(slot).await?;

    let committing = Instant::now();
    let mut next = 1u64;
    while next <= n {
        let last = (next + BATCH - 1).min(n);
        db.sql
            .execute(
                "INSERT INTO leads (email, score, notes)
                 SELECT 'lead' || i || '@example.com', i, repeat(chr(97 + (i % 26)::int), $3)
                 FROM generate_series($1::int8, $2::int8) i",
                &[&(next as i64), &(last as i64), &ROW_BYTES],
            )
            .await?;
        next = last + 1;
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let rows = db.spool_rows().await?;
        if WEBHOOKS
            .iter()
            .all(|w| rows.get(*w).copied().unwrap_or(0) >= n as i64)
        {
            break;
        }
        check_running(&sidecar)?;
        if Instant::now() > deadline {
            bail!(
                "big rows: spooled {rows:?} of {n} within {LIMIT:?}; leadhook log:\n{}",
                sidecar.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let spooled_seconds = committing.elapsed().as_secs_f64();
    let peak_rss_spooling_mib = sidecar.peak_rss_mib();

    eprintln!("big rows: both endpoints are back; draining...");
    for path in PATHS {
        sink.set_down(path, None);
    }
    let recovered = Instant::now();
    let deadline = recovered + LIMIT;
    while PATHS.iter().any(|p| sink.delivered(p) < n) {
        check_running(&sidecar)?;
        if Instant::now() > deadline {
            bail!(
                "big rows: {} and {} of {n} delivered within {LIMIT:?}; leadhook log:\n{}",
                sink.delivered(PATHS[0]),
                sink.delivered(PATHS[1]),
                sidecar.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.big_rows = BigRows {
        leads: n,
        row_bytes: ROW_BYTES,
        spool_after_seconds: SPOOL_AFTER.as_secs_f64(),
        spooled_seconds,
        peak_rss_spooling_mib,
        drain_seconds: recovered.elapsed().as_secs_f64(),
        peak_rss_mib: sidecar.peak_rss_mib(),
    };
    stop(sidecar).await;
    Ok(())
}

impl BigRows {
    pub(crate) fn print(&self, row: &dyn Fn(&str, String)) {
        row(
            &format!(
                "big rows: {} leads of {} kB, 2 webhooks down, spool_after = {:.0} s",
                self.leads,
                self.row_bytes / 1000,
                self.spool_after_seconds
            ),
            String::new(),
        );
        row(
            "  first commit → both spools full",
            format!("{:.2} s", self.spooled_seconds),
        );
        row(
            "  peak RSS while spooling",
            format!("{:.1} MiB", self.peak_rss_spooling_mib),
        );
        row(
            "  recovery → every lead at both",
            format!("{:.2} s", self.drain_seconds),
        );
        row("  peak RSS", format!("{:.1} MiB", self.peak_rss_mib));
    }

    pub(crate) fn targets(&self) -> Vec<Target> {
        vec![Target::new(
            "peak RSS, 300 kB rows",
            format!("≤ {PEAK_RSS_MIB:.0} MiB"),
            format!("{:.1} MiB", self.peak_rss_mib),
            self.peak_rss_mib > 0.0 && self.peak_rss_mib <= PEAK_RSS_MIB,
        )]
    }
}
