//! `[[webhooks]]`: where deliveries go.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::{OnExhausted, Secret, default_true, optional_duration};

/// The one event the product knows.
pub const SAVE_LEAD: &str = "save_lead";

/// Where a webhook can send: the product documents POST; PUT and PATCH are
/// offered for receivers that model leads as resources.
const METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    pub url: Secret,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Values are secrets (tokens): never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Signs each request (Standard Webhooks); `whsec_…` base64 or raw.
    #[serde(default)]
    pub secret: Option<Secret>,
    // Overrides of the `[delivery]` keys of the same names.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub initial_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_backoff: Option<Duration>,
    pub no_retry_statuses: Option<Vec<u16>>,
    pub on_exhausted: Option<OnExhausted>,
    pub max_in_flight: Option<usize>,
}

impl WebhookConfig {
    /// Whether this webhook gets `save_lead` deliveries at all.
    pub fn receives_save_lead(&self) -> bool {
        self.enabled && self.events.iter().any(|e| e == SAVE_LEAD)
    }
}

pub(super) fn validate_webhook(
    i: usize,
    hook: &mut WebhookConfig,
    names: &mut HashSet<String>,
    problems: &mut Vec<String>,
) {
    let key = format!("webhooks[{i}]");
    if hook.name.trim().is_empty() {
        problems.push(format!("{key}.name: must not be empty"));
    } else if !names.insert(hook.name.clone()) {
        problems.push(format!(
            "{key}.name: duplicate webhook name {:?}; names must be unique",
            hook.name
        ));
    }
    if let Err(e) = check_webhook_url(hook.url.expose()) {
        problems.push(format!("{key}.url: {e}"));
    }
    hook.method = hook.method.to_ascii_uppercase();
    if !METHODS.contains(&hook.method.as_str()) {
        problems.push(format!(
            "{key}.method: unsupported method {:?}; use POST, PUT or PATCH",
            hook.method
        ));
    }
    for event in &hook.events {
        if event != SAVE_LEAD {
            problems.push(format!(
                "{key}.events: unknown event {event:?}; the supported event is \"save_lead\""
            ));
        }
    }
    for (name, value) in &hook.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!(
                "{key}.headers: {name:?} is not a valid HTTP header name"
            ));
        } else if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
            problems.push(format!(
                "{key}.headers.{name}: value is not a valid HTTP header value"
            ));
        }
    }
}

/// Checks scheme and host without ever echoing the URL (it may hold credentials).
fn check_webhook_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(()),
        "http" | "https" => Err("URL has no host".into()),
        other => Err(format!(
            "scheme {other:?} is not supported; use http or https"
        )),
    }
}

fn default_method() -> String {
    "POST".into()
}
fn default_events() -> Vec<String> {
    vec![SAVE_LEAD.into()]
}
