//! The benchmark's receiver: the test kit's, counting only (so a million
//! requests cost no memory), plus, for the paths a phase tracks, the
//! commit→arrival latency and the distinct leads of every request answered
//! 2xx; and paths switched "down", answered with an error status.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use leadhook_testkit::receiver::{ReceivedRequest, Receiver, Reply};

pub(crate) struct Sink {
    receiver: Receiver,
    control: Arc<RwLock<Control>>,
    records: Arc<Mutex<Records>>,
}

/// What the responder does per path; read on every request, written rarely.
#[derive(Default)]
struct Control {
    /// Paths answered with this status instead of 200.
    down: HashMap<String, u16>,
    /// Paths whose latencies and distinct leads are recorded.
    tracked: HashSet<String>,
}

/// What the responder recorded for tracked paths (2xx answers only).
#[derive(Default)]
struct Records {
    /// (commit time, commit→arrival), in µs (since the epoch), per path.
    latencies: HashMap<String, Vec<(i64, i64)>>,
    /// The distinct emails delivered, per path: redeliveries count once.
    delivered: HashMap<String, HashSet<Box<str>>>,
}

impl Sink {
    pub(crate) async fn start() -> std::io::Result<Sink> {
        let receiver = Receiver::counting(0).await?;
        let control = Arc::new(RwLock::new(Control::default()));
        let records = Arc::new(Mutex::new(Records::default()));
        let (read, record) = (Arc::clone(&control), Arc::clone(&records));
        receiver.set_responder(move |request, _| respond(&read, &record, request));
        Ok(Sink {
            receiver,
            control,
            records,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.receiver.url(path)
    }

    /// Requests that arrived at `path`, whatever they were answered.
    pub(crate) fn count(&self, path: &str) -> u64 {
        self.receiver.count_to(path) as u64
    }

    /// Forgets counts, records, tracked and down paths between phases.
    pub(crate) fn reset(&self) {
        self.receiver.clear();
        *write(&self.control) = Control::default();
        *lock(&self.records) = Records::default();
    }

    /// Records latencies and distinct leads for `path` from now on.
    pub(crate) fn track(&self, path: &str) {
        write(&self.control).tracked.insert(path.to_owned());
    }

    /// Answers `path` with `status` (e.g. 503) from now on; `None`: 200 again.
    pub(crate) fn set_down(&self, path: &str, status: Option<u16>) {
        let mut control = write(&self.control);
        match status {
            Some(status) => control.down.insert(path.to_owned(), status),
            None => control.down.remove(path),
        };
    }

    /// Commit→arrival in µs of the 2xx requests to a tracked `path`.
    pub(crate) fn latencies(&self, path: &str) -> Vec<i64> {
        self.timed_latencies(path)
            .into_iter()
            .map(|(_, latency)| latency)
            .collect()
    }

    /// (commit time in µs since the epoch, commit→arrival in µs) of the
    /// 2xx requests to a tracked `path`, in arrival order.
    pub(crate) fn timed_latencies(&self, path: &str) -> Vec<(i64, i64)> {
        lock(&self.records)
            .latencies
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Distinct leads (by email) answered 2xx at a tracked `path`.
    pub(crate) fn delivered(&self, path: &str) -> u64 {
        lock(&self.records)
            .delivered
            .get(path)
            .map_or(0, |leads| leads.len() as u64)
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

fn respond(
    control: &RwLock<Control>,
    records: &Mutex<Records>,
    request: &ReceivedRequest,
) -> Reply {
    let tracked = {
        let control = control.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(status) = control.down.get(&request.path) {
            return Reply::status(*status);
        }
        control.tracked.contains(&request.path)
    };
    if tracked {
        let committed = commit_micros(&request.body);
        let email = field(&request.body, "email");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as i64;
        let mut records = lock(records);
        if let Some(committed) = committed {
            records
                .latencies
                .entry(request.path.clone())
                .or_default()
                .push((committed, now - committed));
        }
        if let Some(email) = email {
            records
                .delivered
                .entry(request.path.clone())
                .or_default()
                .insert(email.into());
        }
    }
    Reply::ok()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The bench table's `notes` default is the commit time in µs since the epoch.
fn commit_micros(body: &[u8]) -> Option<i64> {
    field(body, "notes")?.parse().ok()
}

/// A string field of the payload, e.g. `"email":"lead1@example.com"`
/// (the bench's values have no escapes).
fn field<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(body).ok()?;
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_time_is_read_from_notes() {
        let body = br#"{"data":{"email":"a","notes":"1764000000123456","score":1}}"#;
        assert_eq!(commit_micros(body), Some(1_764_000_000_123_456));
        assert_eq!(commit_micros(br#"{"data":{"notes":null}}"#), None);
        assert_eq!(field(body, "email"), Some("a"));
    }

    #[tokio::test]
    async fn tracked_paths_record_distinct_leads_and_down_paths_fail() {
        leadhook_testkit::install_crypto_provider();
        let sink = Sink::start().await.unwrap();
        sink.track("/t");
        sink.set_down("/d", Some(503));
        let client = reqwest::Client::new();
        let post = async |path: &str, email: &str| {
            client
                .post(sink.url(path))
                .body(format!(r#"{{"data":{{"email":"{email}","notes":"1"}}}}"#))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(post("/t", "a").await, 200);
        assert_eq!(post("/t", "a").await, 200);
        assert_eq!(post("/t", "b").await, 200);
        assert_eq!(post("/d", "a").await, 503);
        assert_eq!(post("/u", "a").await, 200);
        assert_eq!(sink.delivered("/t"), 2, "a redelivery counts once");
        assert_eq!(sink.latencies("/t").len(), 3);
        assert_eq!(sink.count("/d"), 1);
        assert_eq!(sink.delivered("/u"), 0, "untracked");
        sink.set_down("/d", None);
        assert_eq!(post("/d", "a").await, 200);
        sink.reset();
        assert_eq!(sink.delivered("/t"), 0);
    }
}
