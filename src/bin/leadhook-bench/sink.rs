//! The benchmark's receiver: as cheap as a receiver can be, so the figures
//! measure leadhook. It counts requests per path, records commit→arrival
//! latency for the latency path, and can be paused (requests wait).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::serve::ListenerExt;
use tokio::sync::watch;

/// Paths the sink knows: one counter each.
pub const PATHS: [&str; 6] = ["/hook0", "/hook1", "/hook2", "/hook3", "/limit", "/latency"];

struct Shared {
    counts: [AtomicU64; PATHS.len()],
    /// Commit→arrival in µs, for requests to `/latency`.
    latencies: Mutex<Vec<i64>>,
    paused: watch::Receiver<bool>,
}

pub struct Sink {
    shared: Arc<Shared>,
    pause: watch::Sender<bool>,
    pub addr: SocketAddr,
}

impl Sink {
    pub async fn start() -> std::io::Result<Sink> {
        let (pause, paused) = watch::channel(false);
        let shared = Arc::new(Shared {
            counts: Default::default(),
            latencies: Mutex::new(Vec::with_capacity(64 * 1024)),
            paused,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let app = Router::new().fallback(receive).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Sink {
            shared,
            pause,
            addr,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self, path: &str) -> u64 {
        PATHS
            .iter()
            .position(|p| *p == path)
            .map_or(0, |i| self.shared.counts[i].load(Ordering::Relaxed))
    }

    pub fn reset(&self) {
        for count in &self.shared.counts {
            count.store(0, Ordering::Relaxed);
        }
        self.latencies().clear();
    }

    pub fn latencies(&self) -> std::sync::MutexGuard<'_, Vec<i64>> {
        self.shared
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn pause(&self, paused: bool) {
        let _ = self.pause.send(paused);
    }
}

async fn receive(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> StatusCode {
    let mut paused = shared.paused.clone();
    let _ = paused.wait_for(|p| !*p).await;
    let Some(index) = PATHS.iter().position(|p| *p == uri.path()) else {
        return StatusCode::NOT_FOUND;
    };
    if PATHS[index] == "/latency"
        && let Some(committed) = commit_micros(&body)
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as i64;
        shared
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(now - committed);
    }
    shared.counts[index].fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
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
