//! A time series of what the spool phases watch, taken in the background:
//! the WAL the slot retains (from PostgreSQL) and one webhook's spool depth,
//! state and the memory in use (from the sidecar's `/metrics`).

use std::time::{Duration, Instant};

use anyhow::Context;
use leadhook_testkit::metrics::{scrape, value};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::database::BenchDb;

/// One look, `t` seconds after the phase's start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Sample {
    pub(crate) t: f64,
    /// `pg_current_wal_lsn() - restart_lsn`: WAL the server keeps for the slot.
    pub(crate) retained_wal_bytes: f64,
    /// `pg_current_wal_lsn() - confirmed_flush_lsn`: WAL not yet confirmed.
    pub(crate) unconfirmed_wal_bytes: f64,
    /// `leadhook_spool_depth` of the watched webhook.
    pub(crate) spool_depth: f64,
    /// `leadhook_webhook_state{state="spooling"}` of the watched webhook.
    pub(crate) spooling: bool,
    /// `leadhook_memory_bytes`.
    pub(crate) memory_bytes: f64,
}

pub(crate) struct Sampler {
    stop: watch::Sender<bool>,
    latest: watch::Receiver<Sample>,
    task: JoinHandle<anyhow::Result<Vec<Sample>>>,
}

impl Sampler {
    /// Samples every `every` until [`Self::finish`], on a connection of
    /// its own; `admin` is the sidecar's admin URL, `webhook` the one watched.
    pub(crate) async fn start(
        db: &BenchDb,
        slot: &str,
        admin: String,
        webhook: &str,
        every: Duration,
        since: Instant,
    ) -> anyhow::Result<Sampler> {
        let db = db.another_connection().await?;
        let (slot, webhook) = (slot.to_owned(), webhook.to_owned());
        let (stop, mut stopped) = watch::channel(false);
        let (publish, latest) = watch::channel(Sample::default());
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let t = since.elapsed().as_secs_f64();
                let (retained, unconfirmed) = db.retained_wal(&slot).await?;
                let metrics = scrape(&admin).await;
                let hook = [("webhook", webhook.as_str())];
                let spooling = [("webhook", webhook.as_str()), ("state", "spooling")];
                let sample = Sample {
                    t,
                    retained_wal_bytes: retained,
                    unconfirmed_wal_bytes: unconfirmed,
                    spool_depth: value(&metrics, "leadhook_spool_depth", &hook).unwrap_or(0.0),
                    spooling: value(&metrics, "leadhook_webhook_state", &spooling) == Some(1.0),
                    memory_bytes: value(&metrics, "leadhook_memory_bytes", &[]).unwrap_or(0.0),
                };
                samples.push(sample);
                publish.send_replace(sample);
            }
            Ok(samples)
        });
        Ok(Sampler { stop, latest, task })
    }

    /// The most recent sample.
    pub(crate) fn latest(&self) -> Sample {
        *self.latest.borrow()
    }

    /// Stops sampling; every sample taken, in order.
    pub(crate) async fn finish(self) -> anyhow::Result<Vec<Sample>> {
        self.stop.send_replace(true);
        self.task.await.context("the sampler panicked")?
    }
}

/// The largest value of `f` over `samples` (0 when none).
pub(crate) fn max_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).fold(0.0, f64::max)
}

/// Rows/s into the spool over the fastest `window` seconds, from the
/// depths sampled (a growing depth is rows written minus rows drained).
pub(crate) fn peak_rate(samples: &[Sample], window: f64) -> f64 {
    let mut best: f64 = 0.0;
    for (i, from) in samples.iter().enumerate() {
        if let Some(to) = samples[i..].iter().find(|s| s.t - from.t >= window) {
            best = best.max((to.spool_depth - from.spool_depth) / (to.t - from.t));
        }
    }
    best
}

/// How the spool filled: the last sample with it empty before it was
/// deepest, and the first sample at its deepest.
pub(crate) fn filling(samples: &[Sample]) -> (Sample, Sample) {
    let deepest = samples
        .iter()
        .copied()
        .reduce(|best, s| {
            if s.spool_depth > best.spool_depth {
                s
            } else {
                best
            }
        })
        .unwrap_or_default();
    let empty = samples
        .iter()
        .take_while(|s| s.t < deepest.t)
        .filter(|s| s.spool_depth == 0.0)
        .last()
        .copied()
        .unwrap_or(deepest);
    (empty, deepest)
}

/// Rows/s while the spool filled ([`filling`]); 0 if it never did.
pub(crate) fn fill_rate(samples: &[Sample]) -> f64 {
    let (empty, deepest) = filling(samples);
    if deepest.t > empty.t {
        (deepest.spool_depth - empty.spool_depth) / (deepest.t - empty.t)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, spool_depth: f64) -> Sample {
        Sample {
            t,
            spool_depth,
            ..Sample::default()
        }
    }

    #[test]
    fn the_peak_rate_is_the_steepest_window() {
        let samples = [
            at(0.0, 0.0),
            at(0.5, 100.0),
            at(1.0, 2100.0),
            at(1.5, 2200.0),
        ];
        assert_eq!(peak_rate(&samples, 1.0), 2100.0);
        assert_eq!(peak_rate(&samples, 10.0), 0.0, "no window that long");
        assert_eq!(max_of(&samples, |s| s.spool_depth), 2200.0);
    }

    #[test]
    fn the_spool_fills_from_the_last_empty_sample_to_the_first_deepest() {
        let samples = [
            at(0.0, 0.0),
            at(1.0, 0.0),
            at(2.0, 500.0),
            at(3.0, 900.0),
            at(4.0, 900.0),
            at(5.0, 0.0),
        ];
        let (empty, deepest) = filling(&samples);
        assert_eq!((empty.t, deepest.t), (1.0, 3.0));
        assert_eq!(fill_rate(&samples), 450.0);
        assert_eq!(fill_rate(&[at(0.0, 0.0)]), 0.0);
    }
}
