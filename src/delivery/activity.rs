//! What a webhook did lately, for the status table (`leadhook webhooks
//! list`) and the status page: its last success and last failure (what an
//! operator asks first about a partner endpoint), and over the last few
//! minutes its deliveries, failed attempts and lag quantiles. Recorded on
//! every attempt; a mutex, held for a few stores.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::retry::Failure;

/// The window the recent figures cover, in whole minutes: the current
/// minute and the ones before it.
pub(crate) const WINDOW_MINUTES: usize = 5;
/// The slowest lag the quantiles tell apart (longer ones count as this).
const MAX_LAG: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub(crate) struct Activity(Mutex<Record>);

#[derive(Debug, Default)]
struct Record {
    last: Last,
    /// One slot per minute, by minute number modulo the window.
    minutes: [Option<Minute>; WINDOW_MINUTES],
}

/// The last of each, as shown.
#[derive(Debug, Default, Clone)]
pub(crate) struct Last {
    pub(crate) success: Option<SystemTime>,
    /// When, and the failure in short (status, or what went wrong).
    pub(crate) failure: Option<(SystemTime, String)>,
}

/// One minute's figures.
#[derive(Debug)]
struct Minute {
    /// Minutes since the Unix epoch: a slot holding an older one is reused.
    number: u64,
    delivered: u64,
    failed: u64,
    /// Commit-to-delivery lag of the changes delivered, in microseconds,
    /// to one significant digit (within 10 %: a page's figure, 2 KiB);
    /// made at the minute's first delivery.
    lag: Option<Histogram<u32>>,
}

impl Minute {
    fn lag(&mut self) -> Option<&mut Histogram<u32>> {
        if self.lag.is_none() {
            let micros = u64::try_from(MAX_LAG.as_micros()).unwrap_or(u64::MAX);
            self.lag = Histogram::new_with_bounds(1, micros, 1).ok();
        }
        self.lag.as_mut()
    }
}

/// The window's figures, as shown.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Recent {
    pub(crate) delivered: u64,
    /// Attempts that failed (answered with an error, or not at all).
    pub(crate) failed: u64,
    /// Lag quantiles of the changes delivered; `None` without any.
    pub(crate) lag_p50: Option<Duration>,
    pub(crate) lag_p99: Option<Duration>,
}

impl Activity {
    /// A change delivered, `lag` after its commit: the attempt succeeded.
    /// A delivery at `now`, `lag` after its commit.
    pub(crate) fn delivered(&self, now: SystemTime, lag: Duration) {
        let Ok(mut record) = self.0.lock() else {
            return;
        };
        record.last.success = Some(now);
        let minute = record.minute(now);
        minute.delivered += 1;
        let micros = u64::try_from(lag.min(MAX_LAG).as_micros()).unwrap_or(u64::MAX);
        if let Some(histogram) = minute.lag() {
            histogram.saturating_record(micros.max(1));
        }
    }

    /// An attempt that failed.
    pub(crate) fn failed(&self, failure: &Failure) {
        let now = SystemTime::now();
        let reason = short(failure);
        let Ok(mut record) = self.0.lock() else {
            return;
        };
        record.last.failure = Some((now, reason));
        record.minute(now).failed += 1;
    }

    pub(crate) fn last(&self) -> Last {
        self.0
            .lock()
            .map(|record| record.last.clone())
            .unwrap_or_default()
    }

    /// The figures of the last [`WINDOW_MINUTES`] minutes.
    pub(crate) fn recent(&self) -> Recent {
        let Ok(record) = self.0.lock() else {
            return Recent::default();
        };
        let now = minute_number(SystemTime::now());
        let mut recent = Recent::default();
        let mut lag: Option<Histogram<u32>> = None;
        let window = now.saturating_sub(WINDOW_MINUTES as u64 - 1)..=now;
        for minute in record.minutes.iter().flatten() {
            if !window.contains(&minute.number) {
                continue;
            }
            recent.delivered += minute.delivered;
            recent.failed += minute.failed;
            match (&mut lag, &minute.lag) {
                (_, None) => {}
                (None, Some(one)) => lag = Some(one.clone()),
                // Same bounds and precision: adding cannot fail.
                (Some(all), Some(one)) => {
                    let _ = all.add(one);
                }
            }
        }
        if let Some(lag) = lag.filter(|h| !h.is_empty()) {
            recent.lag_p50 = Some(Duration::from_micros(lag.value_at_quantile(0.5)));
            recent.lag_p99 = Some(Duration::from_micros(lag.value_at_quantile(0.99)));
        }
        recent
    }
}

impl Record {
    /// The slot of `now`'s minute, emptied first if it held an older one.
    fn minute(&mut self, now: SystemTime) -> &mut Minute {
        let number = minute_number(now);
        let slot = &mut self.minutes[(number % WINDOW_MINUTES as u64) as usize];
        if slot.as_ref().is_none_or(|m| m.number != number) {
            *slot = Some(Minute {
                number,
                delivered: 0,
                failed: 0,
                lag: None,
            });
        }
        slot.get_or_insert_with(|| unreachable!("filled above"))
    }
}

fn minute_number(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60
}

/// At most 200 characters: a status line, not a body.
fn short(failure: &Failure) -> String {
    let text = failure.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_counts_deliveries_and_failures_and_gives_lag_quantiles() {
        let activity = Activity::default();
        assert_eq!(activity.recent(), Recent::default());
        for ms in 1..=100 {
            activity.delivered(SystemTime::now(), Duration::from_millis(ms));
        }
        let failure = Failure::Timeout;
        activity.failed(&failure);
        let recent = activity.recent();
        assert_eq!((recent.delivered, recent.failed), (100, 1));
        let p50 = recent.lag_p50.expect("a p50").as_secs_f64();
        let p99 = recent.lag_p99.expect("a p99").as_secs_f64();
        // One significant digit: within 10 %.
        assert!((0.045..=0.055).contains(&p50), "p50 {p50}");
        assert!((0.09..=0.11).contains(&p99), "p99 {p99}");
        let last = activity.last();
        assert!(last.success.is_some());
        assert_eq!(last.failure.map(|f| f.1), Some(failure.to_string()));
    }

    #[test]
    fn a_minute_older_than_the_window_is_not_counted() {
        let mut record = Record::default();
        let long_ago = SystemTime::now() - Duration::from_secs(60 * WINDOW_MINUTES as u64);
        record.minute(long_ago).delivered = 7;
        let activity = Activity(Mutex::new(record));
        assert_eq!(activity.recent().delivered, 0);
        activity.delivered(SystemTime::now(), Duration::from_millis(3));
        assert_eq!(activity.recent().delivered, 1, "the slot is reused");
    }
}
