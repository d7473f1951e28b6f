//! The figures of one run, their targets, and how they are shown.

use serde::Serialize;

use crate::Phase;
use crate::big_rows::BigRows;
use crate::outage::Outage;
use crate::spool::SpoolCapacity;

#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) options: serde_json::Value,
    pub(crate) throughput: Throughput,
    pub(crate) fanout: Fanout,
    pub(crate) http2: crate::http2::Http2,
    pub(crate) latency: Latency,
    pub(crate) resources: Resources,
    pub(crate) backlog: Backlog,
    pub(crate) notify: Notify,
    pub(crate) outage: Outage,
    pub(crate) spool: SpoolCapacity,
    pub(crate) many: Vec<Many>,
    pub(crate) big_rows: BigRows,
    /// The phases run, in order; only their targets are judged.
    pub(crate) phases: Vec<Phase>,
    pub(crate) targets: Vec<Target>,
}

/// One run with many webhooks.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Many {
    pub(crate) webhooks: usize,
    pub(crate) leads: u64,
    /// From spawning leadhook to a walsender streaming from its slot.
    pub(crate) start_seconds: f64,
    /// One second after streaming started, before any lead.
    pub(crate) idle_rss_mib: f64,
    /// From committing the leads to every webhook having every one.
    pub(crate) delivery_seconds: f64,
    /// `leads` ÷ `delivery_seconds`: what each webhook got per second.
    pub(crate) leads_per_second_per_webhook: f64,
    pub(crate) peak_rss_mib: f64,
}

impl Report {
    fn many_with(&self, webhooks: usize) -> Option<&Many> {
        self.many.iter().find(|m| m.webhooks == webhooks)
    }
}

/// Notify mode (trigger outbox) on the same workloads, and its cost on writes.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Notify {
    pub(crate) events_per_second: f64,
    /// Committing the throughput run's leads without and with the capture trigger.
    pub(crate) insert_seconds_replication: f64,
    pub(crate) insert_seconds_notify: f64,
    pub(crate) latency: Percentiles,
}

/// Commit → arrival, in ms.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub(crate) max_ms: f64,
}

impl Percentiles {
    pub(crate) fn of(sorted: &[f64]) -> Percentiles {
        Percentiles {
            p50_ms: quantile(sorted, 0.50),
            p90_ms: quantile(sorted, 0.90),
            p99_ms: quantile(sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: f64,
    pub(crate) postgres: String,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Throughput {
    pub(crate) events: u64,
    /// From leadhook's start to the last delivery.
    pub(crate) events_per_second: f64,
    /// From leadhook's start to the first delivery (process start,
    /// connection, replication start).
    pub(crate) first_delivery_seconds: f64,
    /// From the first delivery to the last: the steady rate.
    pub(crate) drain_events_per_second: f64,
    /// The steady rate ÷ min(decode, wrk): like with like, since wrk's
    /// rate leaves its own start out too.
    pub(crate) drain_wrk_ratio: f64,
    pub(crate) decode_limit_per_second: f64,
    pub(crate) http_limit_per_second: f64,
    /// leadhook ÷ min(decode, HTTP).
    pub(crate) ratio: f64,
    /// Requests/s the receiver takes from `wrk`.
    pub(crate) wrk_limit_per_second: f64,
    /// leadhook ÷ min(decode, wrk): against the lightest client.
    pub(crate) wrk_ratio: f64,
    /// wrk's own CPU seconds per 100 000 requests: the floor under
    /// leadhook's CPU per event while it sends one request per event.
    pub(crate) wrk_cpu_seconds_per_100k_requests: f64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Fanout {
    pub(crate) webhooks: usize,
    pub(crate) events_per_second_per_webhook: Vec<f64>,
    /// min(decode, HTTP ÷ webhooks): each event is sent once per webhook.
    pub(crate) limit_per_second: f64,
    /// The slowest webhook ÷ that limit.
    pub(crate) ratio: f64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) offered_per_second: u64,
    pub(crate) seconds: u64,
    pub(crate) samples: usize,
    #[serde(flatten)]
    pub(crate) ms: Percentiles,
    /// Every sample, in ms, for the plot.
    #[serde(skip)]
    pub(crate) all_ms: Vec<f64>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Resources {
    pub(crate) idle_rss_mib: f64,
    pub(crate) throughput_peak_rss_mib: f64,
    pub cpu_seconds_per_100k_events: f64,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Backlog {
    pub(crate) events: u64,
    pub(crate) paused_seconds: f64,
    pub(crate) events_per_second_after_resume: f64,
    pub(crate) peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) goal: String,
    pub(crate) measured: String,
    pub(crate) pass: bool,
}

impl Target {
    pub(crate) fn new(name: &str, goal: String, measured: String, pass: bool) -> Target {
        Target {
            name: name.into(),
            goal,
            measured,
            pass,
        }
    }
}

impl Report {
    /// Judges the figures of the phases run against the product's targets.
    pub(crate) fn judge(&mut self) {
        let mut targets = Vec::new();
        for phase in self.phases.clone() {
            targets.extend(self.targets_of(phase));
        }
        self.targets = targets;
    }

    fn targets_of(&self, phase: Phase) -> Vec<Target> {
        match phase {
            Phase::Throughput => vec![
                Target::new(
                    "throughput, 1 webhook",
                    "≥ 0.80 × limit".into(),
                    format!("{:.2} ×", self.throughput.ratio),
                    self.throughput.ratio >= 0.8,
                ),
                Target::new(
                    "  against wrk (steady)",
                    "≥ 0.80 × limit".into(),
                    format!("{:.2} ×", self.throughput.drain_wrk_ratio),
                    self.throughput.drain_wrk_ratio >= 0.8,
                ),
                Target::new(
                    "  CPU per 100 000 events",
                    "≤ 0.90 s".into(),
                    format!("{:.2} s", self.resources.cpu_seconds_per_100k_events),
                    self.resources.cpu_seconds_per_100k_events <= 0.9,
                ),
            ],
            Phase::Fanout => vec![Target::new(
                "throughput, fan-out",
                "≥ 0.60 × limit".into(),
                format!("{:.2} ×", self.fanout.ratio),
                self.fanout.ratio >= 0.6,
            )],
            Phase::Latency => vec![
                Target::new(
                    "latency p50",
                    "≤ 5 ms".into(),
                    format!("{:.2} ms", self.latency.ms.p50_ms),
                    self.latency.ms.p50_ms <= 5.0,
                ),
                Target::new(
                    "latency p99",
                    "≤ 25 ms".into(),
                    format!("{:.2} ms", self.latency.ms.p99_ms),
                    self.latency.ms.p99_ms <= 25.0,
                ),
                Target::new(
                    "RSS, idle",
                    "≤ 20 MB".into(),
                    format!("{:.1} MiB", self.resources.idle_rss_mib),
                    self.resources.idle_rss_mib <= 20.0,
                ),
            ],
            Phase::Backlog => vec![Target::new(
                "peak RSS, backlog",
                "≤ 64 MB".into(),
                format!("{:.1} MiB", self.backlog.peak_rss_mib),
                self.backlog.peak_rss_mib <= 64.0,
            )],
            Phase::Notify | Phase::Http2 => Vec::new(),
            Phase::Outage => self.outage.targets(),
            Phase::Spool => self.spool.targets(),
            Phase::Many => {
                let thousand = self.many_with(1000).map_or(f64::NAN, |m| m.start_seconds);
                let two_hundred = self.many_with(200);
                let (seconds, rss) = two_hundred.map_or((f64::NAN, f64::NAN), |m| {
                    (m.delivery_seconds, m.peak_rss_mib)
                });
                vec![
                    Target::new(
                        "start, 1 000 webhooks",
                        "≤ 2 s".into(),
                        format!("{thousand:.2} s"),
                        thousand <= 2.0,
                    ),
                    Target::new(
                        "200 webhooks: delivery",
                        "≤ 60 s".into(),
                        format!("{seconds:.1} s"),
                        seconds <= 60.0,
                    ),
                    Target::new(
                        "200 webhooks: peak RSS",
                        "≤ 64 MB".into(),
                        format!("{rss:.1} MiB"),
                        rss <= 64.0,
                    ),
                ]
            }
            Phase::BigRows => self.big_rows.targets(),
        }
    }

    pub(crate) fn print(&self) {
        if cfg!(debug_assertions) {
            println!(
                "\nNOTE: a debug build; the figures below only show that the benchmark works. Use --release for figures."
            );
        }
        let m = &self.machine;
        println!(
            "\nleadhook benchmark — {} CPUs ({}), {:.0} GiB, PostgreSQL {}\n",
            m.cpus, m.cpu_model, m.memory_gib, m.postgres
        );
        println!("{:<58} {:>20}", "measure", "value");
        let row = |name: &str, value: String| println!("{name:<58} {value:>20}");
        for phase in &self.phases {
            match phase {
                Phase::Throughput => self.print_throughput(&row),
                Phase::Fanout => self.print_fanout(&row),
                Phase::Http2 => self.http2.print(&row),
                Phase::Latency => self.print_latency(&row),
                Phase::Backlog => self.print_backlog(&row),
                Phase::Notify => self.print_notify(&row),
                Phase::Outage => self.outage.print(&row),
                Phase::Spool => self.spool.print(&row),
                Phase::Many => self.print_many(&row),
                Phase::BigRows => self.big_rows.print(&row),
            }
        }
        println!(
            "\n{:<24} {:<16} {:>12}  result",
            "target", "goal", "measured"
        );
        for t in &self.targets {
            println!(
                "{:<24} {:<16} {:>12}  {}",
                t.name,
                t.goal,
                t.measured,
                if t.pass { "PASS" } else { "MISS" }
            );
        }
    }

    fn print_throughput(&self, row: &dyn Fn(&str, String)) {
        let t = &self.throughput;
        row(
            &format!("throughput, 1 webhook ({} events)", t.events),
            format!("{:.0} ev/s", t.events_per_second),
        );
        row(
            "  decode limit (pg_recvlogical)",
            format!("{:.0} ev/s", t.decode_limit_per_second),
        );
        row(
            "  HTTP limit (64 connections)",
            format!("{:.0} req/s", t.http_limit_per_second),
        );
        row("  ratio to min(limits)", format!("{:.2}", t.ratio));
        row(
            "  HTTP limit, wrk (64 connections)",
            format!("{:.0} req/s", t.wrk_limit_per_second),
        );
        row("  ratio to min(decode, wrk)", format!("{:.2}", t.wrk_ratio));
        row(
            "  first delivery after the start",
            format!("{:.0} ms", t.first_delivery_seconds * 1000.0),
        );
        row(
            "  steady rate (first to last delivery)",
            format!("{:.0} ev/s", t.drain_events_per_second),
        );
        row(
            "  steady ratio to min(decode, wrk)",
            format!("{:.2}", t.drain_wrk_ratio),
        );
        let r = &self.resources;
        row(
            "  peak RSS, throughput run",
            format!("{:.1} MiB", r.throughput_peak_rss_mib),
        );
        row(
            "  CPU per 100 000 events",
            format!("{:.2} s", r.cpu_seconds_per_100k_events),
        );
        row(
            "  wrk's own CPU per 100 000 requests",
            format!("{:.2} s", t.wrk_cpu_seconds_per_100k_requests),
        );
    }

    fn print_fanout(&self, row: &dyn Fn(&str, String)) {
        for (i, rate) in self.fanout.events_per_second_per_webhook.iter().enumerate() {
            row(
                &format!("fan-out: webhook {} of {}", i + 1, self.fanout.webhooks),
                format!("{rate:.0} ev/s"),
            );
        }
        row(
            "  limit per webhook: min(decode, HTTP ÷ webhooks)",
            format!("{:.0} ev/s", self.fanout.limit_per_second),
        );
        row(
            "  ratio (slowest webhook)",
            format!("{:.2}", self.fanout.ratio),
        );
    }

    fn print_latency(&self, row: &dyn Fn(&str, String)) {
        let l = &self.latency;
        row(
            &format!(
                "latency at {}/s for {} s ({} samples)",
                l.offered_per_second, l.seconds, l.samples
            ),
            String::new(),
        );
        for (name, value) in [
            ("  p50", l.ms.p50_ms),
            ("  p90", l.ms.p90_ms),
            ("  p99", l.ms.p99_ms),
            ("  max", l.ms.max_ms),
        ] {
            row(name, format!("{value:.2} ms"));
        }
        row(
            "RSS idle",
            format!("{:.1} MiB", self.resources.idle_rss_mib),
        );
    }

    fn print_backlog(&self, row: &dyn Fn(&str, String)) {
        let b = &self.backlog;
        row(
            &format!(
                "backlog: {} events, receiver paused {:.0} s",
                b.events, b.paused_seconds
            ),
            String::new(),
        );
        row(
            "  drain after resume",
            format!("{:.0} ev/s", b.events_per_second_after_resume),
        );
        row("  peak RSS", format!("{:.1} MiB", b.peak_rss_mib));
    }

    fn print_notify(&self, row: &dyn Fn(&str, String)) {
        let n = &self.notify;
        row(
            "notify mode: throughput, 1 webhook",
            format!("{:.0} ev/s", n.events_per_second),
        );
        row(
            "  committing the leads: replication / notify",
            format!(
                "{:.2} s / {:.2} s",
                n.insert_seconds_replication, n.insert_seconds_notify
            ),
        );
        row(
            "  latency p50 / p99 / max",
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                n.latency.p50_ms, n.latency.p99_ms, n.latency.max_ms
            ),
        );
    }

    fn print_many(&self, row: &dyn Fn(&str, String)) {
        for m in &self.many {
            row(
                &format!("{} webhook(s), {} leads each", m.webhooks, m.leads),
                String::new(),
            );
            row(
                "  start (to streaming)",
                format!("{:.2} s", m.start_seconds),
            );
            row("  RSS idle", format!("{:.1} MiB", m.idle_rss_mib));
            row(
                "  every lead to every webhook",
                format!("{:.2} s", m.delivery_seconds),
            );
            row(
                "  throughput per webhook",
                format!("{:.0} leads/s", m.leads_per_second_per_webhook),
            );
            row("  peak RSS", format!("{:.1} MiB", m.peak_rss_mib));
        }
        if let (Some(one), Some(thousand)) = (self.many_with(1), self.many_with(1000)) {
            row(
                "  idle memory per webhook (1 → 1 000)",
                format!(
                    "{:.1} KiB",
                    (thousand.idle_rss_mib - one.idle_rss_mib) * 1024.0 / 999.0
                ),
            );
        }
    }
}

/// The q-quantile (0..=1) of sorted samples.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests;
