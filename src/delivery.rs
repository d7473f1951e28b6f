//! Delivery: every event goes to every enabled webhook subscribed to
//! `save_lead`, with its method and headers, until the receiver answers 2xx.
//!
//! Each webhook has its own worker and bounded queue, so webhooks do not wait
//! for each other beyond the queue's size, and a webhook sees events in
//! commit order (one at a time), which keeps each lead's changes in order.
//! When the queues are full the lead stage waits, and the source stops
//! reading: the backlog stays in the server's WAL, not in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::checkpoint::{Checkpoint, TxSeq};
use crate::config::{Config, WebhookConfig};

/// Pause between attempts of one delivery.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Events queued per webhook.
const QUEUE: usize = 256;

/// One change, ready to send: the payload is serialised once for all webhooks.
#[derive(Debug)]
pub(crate) struct Event {
    /// `webhook-id`: the same on every redelivery of this change.
    pub(crate) id: HeaderValue,
    pub(crate) payload: Bytes,
    tx: TxSeq,
    /// Webhooks that have not handled it yet; the last one tells the checkpoint.
    remaining: AtomicUsize,
    checkpoint: Arc<Checkpoint>,
}

impl Event {
    pub(crate) fn new(
        id: HeaderValue,
        payload: Bytes,
        tx: TxSeq,
        webhooks: usize,
        checkpoint: Arc<Checkpoint>,
    ) -> Self {
        Event {
            id,
            payload,
            tx,
            remaining: AtomicUsize::new(webhooks),
            checkpoint,
        }
    }

    fn handled_by_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.checkpoint.handled(self.tx);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhooks[{index}]: {reason}")]
    Webhook { index: usize, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A webhook as delivery needs it.
#[derive(Debug)]
struct Webhook {
    name: String,
    url: reqwest::Url,
    /// Scheme, host and path only: what logs may show of the URL.
    shown_url: String,
    method: reqwest::Method,
    /// Marked sensitive, so they never show in Debug output.
    headers: HeaderMap,
    timeout: Duration,
}

/// The webhooks that receive `save_lead`, and the shared HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Webhooks {
    hooks: Arc<Vec<Webhook>>,
    client: reqwest::Client,
}

impl Webhooks {
    pub(crate) fn from_config(config: &Config) -> Result<Webhooks, DeliveryError> {
        let mut hooks = Vec::new();
        for (index, hook) in config.webhooks.iter().enumerate() {
            if hook.receives_save_lead() {
                hooks.push(
                    Webhook::from_config(hook, config.timeout_of(hook))
                        .map_err(|reason| DeliveryError::Webhook { index, reason })?,
                );
            }
        }
        Ok(Webhooks {
            hooks: Arc::new(hooks),
            client: http_client()?,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.hooks.len()
    }

    pub(crate) fn describe(&self) -> Vec<String> {
        self.hooks
            .iter()
            .map(|h| format!("{:?}: {} {}", h.name, h.method, h.shown_url))
            .collect()
    }

    /// Starts one worker per webhook; returns their queues.
    pub(crate) fn spawn(&self, tasks: &mut JoinSet<()>) -> Dispatcher {
        let queues = (0..self.hooks.len())
            .map(|i| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tasks.spawn(worker(self.hooks.clone(), i, self.client.clone(), rx));
                tx
            })
            .collect();
        Dispatcher { queues }
    }
}

/// Hands each event to every webhook's queue, in order.
pub(crate) struct Dispatcher {
    queues: Vec<mpsc::Sender<Arc<Event>>>,
}

impl Dispatcher {
    /// Waits while a queue is full (backpressure). `false` if a worker is gone.
    pub(crate) async fn dispatch(&self, event: Event) -> bool {
        let event = Arc::new(event);
        if self.queues.is_empty() {
            event.checkpoint.handled(event.tx);
            return true;
        }
        for queue in &self.queues {
            if queue.send(event.clone()).await.is_err() {
                return false;
            }
        }
        true
    }
}

impl Webhook {
    fn from_config(hook: &WebhookConfig, timeout: Duration) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(hook.url.expose()).map_err(|e| format!("url: {e}"))?;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let host = url.host_str().unwrap_or_default();
        let shown_url = format!("{}://{host}{port}{}", url.scheme(), url.path());
        let method = reqwest::Method::from_bytes(hook.method.as_bytes())
            .map_err(|e| format!("method: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &hook.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("headers.{name}: {e}"))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| format!("headers.{name}: invalid value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Webhook {
            name: hook.name.clone(),
            url,
            shown_url,
            method,
            headers,
            timeout,
        })
    }
}

fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::database::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("leadhook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

async fn worker(
    hooks: Arc<Vec<Webhook>>,
    index: usize,
    client: reqwest::Client,
    mut queue: mpsc::Receiver<Arc<Event>>,
) {
    let hook = &hooks[index];
    while let Some(event) = queue.recv().await {
        deliver(hook, &client, &event).await;
        event.handled_by_one();
    }
}

/// Tries until the receiver answers 2xx. A session ending aborts this task;
/// the change is then streamed and delivered again, with the same id.
async fn deliver(hook: &Webhook, client: &reqwest::Client, event: &Event) {
    let mut attempt: u32 = 1;
    loop {
        let started = std::time::Instant::now();
        let result = client
            .request(hook.method.clone(), hook.url.clone())
            .headers(hook.headers.clone())
            .header("webhook-id", event.id.clone())
            .timeout(hook.timeout)
            .body(event.payload.clone())
            .send()
            .await;
        metrics::histogram!("leadhook_delivery_duration_seconds", "webhook" => hook.name.clone())
            .record(started.elapsed());
        let failure = match result {
            Ok(response) if response.status().is_success() => {
                metrics::counter!("leadhook_deliveries_total", "webhook" => hook.name.clone(), "outcome" => "delivered").increment(1);
                return;
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) if e.is_timeout() => format!("no response within {:?}", hook.timeout),
            Err(e) if e.is_connect() => "cannot connect".to_owned(),
            Err(e) => format!("request failed: {}", e.without_url()),
        };
        tracing::warn!(
            webhook = %hook.name, url = %hook.shown_url, webhook_id = ?event.id, attempt, failure = %failure,
            retry_in = ?RETRY_DELAY, "delivery failed"
        );
        tokio::time::sleep(RETRY_DELAY).await;
        attempt = attempt.saturating_add(1);
    }
}
