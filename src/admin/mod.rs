//! The admin endpoint: `GET /` (the status page), `GET /api/status` (the
//! same as JSON), `GET /metrics` (Prometheus), `GET /healthz` (the process
//! is alive) and `GET /readyz` (connected and streaming). Read-only: other
//! methods get 405, other paths 404.

mod catalog;
mod page;
pub(crate) mod status;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets (seconds) for the delivery and lag histograms: loopback
/// deliveries take a millisecond, slow receivers seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin.listen: cannot listen on {addr}: {source} (is another leadhook running? choose another port)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// Whether the sidecar is streaming, and if not, why (one line); and how
/// far behind the server it is, for the status page.
#[derive(Debug)]
pub(crate) struct Health {
    not_ready: Mutex<Option<String>>,
    /// `leadhook_replication_lag_bytes` as last measured; `u64::MAX` before.
    lag_bytes: AtomicU64,
}

impl Health {
    pub(crate) fn new() -> Arc<Health> {
        Arc::new(Health {
            not_ready: Mutex::new(Some("starting".into())),
            lag_bytes: AtomicU64::new(u64::MAX),
        })
    }

    pub(crate) fn show_lag(&self, bytes: u64) {
        self.lag_bytes
            .store(bytes.min(u64::MAX - 1), Ordering::Relaxed);
        metrics::gauge!("leadhook_replication_lag_bytes").set(bytes as f64);
    }

    /// The replication lag last measured (`None`: not yet, or notify mode).
    pub(crate) fn lag(&self) -> Option<u64> {
        let bytes = self.lag_bytes.load(Ordering::Relaxed);
        (bytes != u64::MAX).then_some(bytes)
    }

    pub(crate) fn ready(&self) {
        *self.lock() = None;
        metrics::gauge!("leadhook_source_connected").set(1.0);
    }

    pub(crate) fn not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
        // Measured by a session that is over: not this instance's lag now.
        self.lag_bytes.store(u64::MAX, Ordering::Relaxed);
        metrics::gauge!("leadhook_source_connected").set(0.0);
    }

    /// Streaming (or delivering from the outbox): the active instance.
    pub(crate) fn is_ready(&self) -> bool {
        self.lock().is_none()
    }

    pub(crate) fn reason(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.not_ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The process-wide Prometheus recorder (installed once, however many
/// sidecars a process runs, as the demo and tests do).
fn recorder() -> Result<PrometheusHandle, AdminError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| AdminError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    catalog::describe();
    // Histograms are aggregated lazily; upkeep bounds their memory.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// What the handlers read.
#[derive(Clone)]
struct Shown {
    health: Arc<Health>,
    board: Arc<status::StatusBoard>,
}

/// Binds `addr` (fatal if taken: better to say so than to run unobserved)
/// and serves the endpoints in the background, the status page from what
/// the sidecar publishes on `board`. Returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    board: Arc<status::StatusBoard>,
) -> Result<SocketAddr, AdminError> {
    let metrics = recorder()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let app = Router::new()
        .route("/", get(status_page))
        .route("/api/status", get(status_json))
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Shown { health, board });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(shown): State<Shown>) -> (StatusCode, String) {
    match shown.health.reason() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Never cached: a reload must show the present.
fn fresh(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn status_page(State(shown): State<Shown>) -> Response {
    fresh(page::render(shown.board.latest().as_deref()).into_response())
}

/// 503 until the first snapshot, as `/readyz` would say.
async fn status_json(State(shown): State<Shown>) -> Response {
    fresh(match shown.board.latest() {
        Some(status) => Json(&*status).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "starting": true })),
        )
            .into_response(),
    })
}
