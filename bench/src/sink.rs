//! The benchmark's receiver: the test kit's, counting only (so a million
//! requests cost no memory), plus the commit→arrival latency of every
//! request to `/latency`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use leadhook_testkit::receiver::{Receiver, Reply};

pub(crate) struct Sink {
    receiver: Receiver,
    /// Commit→arrival in µs, for requests to `/latency`.
    latencies: Arc<Mutex<Vec<i64>>>,
}

impl Sink {
    pub(crate) async fn start() -> std::io::Result<Sink> {
        let receiver = Receiver::counting(0).await?;
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
        let record = Arc::clone(&latencies);
        receiver.set_responder(move |request, _| {
            if request.path == "/latency"
                && let Some(committed) = commit_micros(&request.body)
            {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros() as i64;
                lock(&record).push(now - committed);
            }
            Reply::ok()
        });
        Ok(Sink {
            receiver,
            latencies,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.receiver.url(path)
    }

    pub(crate) fn count(&self, path: &str) -> u64 {
        self.receiver.count_to(path) as u64
    }

    /// Forgets counts and latencies between phases.
    pub(crate) fn reset(&self) {
        self.receiver.clear();
        self.latencies().clear();
    }

    pub(crate) fn latencies(&self) -> MutexGuard<'_, Vec<i64>> {
        lock(&self.latencies)
    }

    /// While paused, requests wait unread: a stalled partner.
    pub(crate) fn pause(&self, paused: bool) {
        if paused {
            self.receiver.pause();
        } else {
            self.receiver.resume();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The bench table's `notes` default is the commit time in µs since the epoch.
fn commit_micros(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"notes\":\"")? + 9;
    let end = start + text[start..].find('"')?;
    text[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_time_is_read_from_notes() {
        let body = br#"{"data":{"email":"a","notes":"1764000000123456","score":1}}"#;
        assert_eq!(commit_micros(body), Some(1_764_000_000_123_456));
        assert_eq!(commit_micros(br#"{"data":{"notes":null}}"#), None);
    }
}
