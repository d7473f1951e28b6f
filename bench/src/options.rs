//! The command line: the sizes of every phase, and which phases run.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug, serde::Serialize)]
#[command(
    name = "leadhook-bench",
    about = "Benchmark the leadhook sidecar end to end"
)]
pub(crate) struct Options {
    /// Leads committed before leadhook starts (throughput and fan-out runs).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: u64,
    /// Rows per transaction when committing them.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) batch: u64,
    /// How long `wrk` measures the HTTP limit (the lightest client's).
    #[arg(long, default_value_t = 5)]
    pub(crate) wrk_seconds: u64,
    /// Single-row commits per second during the latency run.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) latency_rate: u64,
    /// Length of the latency run.
    #[arg(long, default_value_t = 20)]
    pub(crate) latency_seconds: u64,
    /// Webhooks in the fan-out run.
    #[arg(long, default_value_t = 4)]
    pub(crate) fanout: usize,
    /// Leads in the backlog run (receiver paused for the first half of the drain).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) backlog_events: u64,
    /// Single-row commits per second during the outage run (two webhooks).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) outage_rate: u64,
    /// Length of the outage run; one webhook is down for its middle half.
    #[arg(long, default_value_t = 60)]
    pub(crate) outage_seconds: u64,
    /// Leads committed for the spool run (its endpoint down from the start).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) spool_events: u64,
    /// Webhook counts of the many-webhooks (fan-out) runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 100, 200, 1000])]
    pub(crate) many_webhooks: Vec<usize>,
    /// Leads each webhook gets in the many-webhooks runs.
    #[arg(long, default_value_t = 100)]
    pub(crate) many_leads: u64,
    /// Leads with 300 kB notes in the big-rows run (two webhooks, both down, then up).
    #[arg(long, default_value_t = 1_500)]
    pub(crate) big_rows: u64,
    /// The phases to run (in their usual order); fan-out and backlog use
    /// the throughput run's figures.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Phase::ALL)]
    pub(crate) phases: Vec<Phase>,
    /// Write every figure as JSON here.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) json: Option<PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) plot: Option<PathBuf>,
    /// The leadhook binary (default: the one built beside this one, by
    /// `cargo build --release`).
    #[arg(long)]
    #[serde(skip)]
    pub(crate) leadhook: Option<PathBuf>,
}

/// A part of the run, with figures and targets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    Throughput,
    Fanout,
    /// The throughput run over HTTP/2 (h2c).
    Http2,
    Latency,
    Backlog,
    Notify,
    Outage,
    Spool,
    Many,
    BigRows,
}

impl Phase {
    /// Every phase, in the order they run.
    pub(crate) const ALL: [Phase; 10] = [
        Phase::Throughput,
        Phase::Fanout,
        Phase::Http2,
        Phase::Latency,
        Phase::Backlog,
        Phase::Notify,
        Phase::Outage,
        Phase::Spool,
        Phase::Many,
        Phase::BigRows,
    ];
}
