//! A typed builder for `sidecar.toml`, so a test says what it configures
//! instead of editing TOML text. It writes the file format users write and
//! knows nothing of leadhook's own config types: what it produces is what
//! leadhook must accept.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::receiver::Receiver;

/// The whole file. Fields left `None` are left out, so leadhook's defaults apply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SidecarConfig {
    pub database: Database,
    pub source: Source,
    pub admin: Admin,
    pub delivery: Delivery,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Log>,
}

/// `[registry]`: webhooks from a table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Registry {
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_networks: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Database {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Source {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publication: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub poll_interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_slot_lost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub changed_at_margin: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
    /// `"K/N"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// e.g. `"64KiB"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<String>,
    /// Payload field → column; see [`Column`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, Column>,
}

/// Where a payload field comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Column {
    /// This column of the table.
    Named(String),
    /// `false`: the table has no such column; the field is sent as null.
    Absent(bool),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Admin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub shutdown_grace: Option<Duration>,
}

/// `[delivery]`, and the same options on one webhook.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub initial_backoff: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub max_backoff: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_retry_statuses: Option<Vec<u16>>,
    /// "dead_letter" or "block".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub retry_for: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "duration")]
    pub spool_after: Option<Duration>,
    /// A size such as "512MB".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retained_wal: Option<String>,
    /// `[delivery]` only: a size such as "64MiB".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<bool>,
    /// "auto", "always" or "never".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2: Option<String>,
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Column → a value or a list of values (strings, numbers, booleans).
    /// Last: TOML writes it as a table of its own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Log {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

impl SidecarConfig {
    /// A config for the database at `url`: an admin endpoint on a free port
    /// and a 2 s delivery timeout (short, so failing tests fail fast).
    pub fn new(url: impl Into<String>) -> SidecarConfig {
        SidecarConfig {
            database: Database {
                url: url.into(),
                schema: None,
            },
            admin: Admin {
                listen: Some("127.0.0.1:0".into()),
                shutdown_grace: None,
            },
            delivery: Delivery {
                timeout: Some(Duration::from_secs(2)),
                ..Delivery::default()
            },
            ..SidecarConfig::default()
        }
    }

    /// Names the slot and the publication `name`.
    pub fn slot(mut self, name: &str) -> SidecarConfig {
        self.source.slot = Some(name.to_owned());
        self.source.publication = Some(name.to_owned());
        self
    }

    /// Notify mode (the trigger outbox), polled every 200 ms.
    pub fn notify(mut self) -> SidecarConfig {
        self.source.mode = Some("notify".into());
        self.source.poll_interval = Some(Duration::from_millis(200));
        self
    }

    pub fn webhook(mut self, webhook: Webhook) -> SidecarConfig {
        self.webhooks.push(webhook);
        self
    }

    /// Any other change, e.g. `.with(|c| c.delivery.max_attempts = Some(3))`.
    pub fn with(mut self, change: impl FnOnce(&mut SidecarConfig)) -> SidecarConfig {
        change(&mut self);
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config is always valid TOML")
    }
}

impl fmt::Display for SidecarConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

impl Webhook {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Webhook {
        Webhook {
            name: name.into(),
            url: url.into(),
            ..Webhook::default()
        }
    }

    /// Webhook `name` delivering to `receiver` at `path`.
    pub fn to(receiver: &Receiver, name: &str, path: &str) -> Webhook {
        Webhook::new(name, receiver.url(path))
    }

    pub fn header(mut self, name: &str, value: &str) -> Webhook {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn secret(mut self, secret: &str) -> Webhook {
        self.secret = Some(secret.to_owned());
        self
    }

    /// Any other change, e.g. `.with(|w| w.delivery.max_attempts = Some(1))`.
    pub fn with(mut self, change: impl FnOnce(&mut Webhook)) -> Webhook {
        change(&mut self);
        self
    }
}

/// Durations as leadhook reads them: "250ms".
fn duration<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => serializer.serialize_str(&format!("{}ms", d.as_millis())),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_written_as_a_user_writes_it() {
        let config = SidecarConfig::new("postgres://db")
            .slot("s")
            .webhook(
                Webhook::new("hook", "http://127.0.0.1:1/leads")
                    .header("Authorization", "Bearer x")
                    .with(|w| w.delivery.max_attempts = Some(3)),
            )
            .to_toml();
        let parsed: toml::Table = config.parse().expect("valid TOML");
        assert_eq!(parsed["source"]["slot"].as_str(), Some("s"));
        assert_eq!(parsed["delivery"]["timeout"].as_str(), Some("2000ms"));
        let hook = &parsed["webhooks"][0];
        assert_eq!(hook["max_attempts"].as_integer(), Some(3));
        assert_eq!(hook["headers"]["Authorization"].as_str(), Some("Bearer x"));
        assert!(hook.get("method").is_none(), "unset keys are left out");
    }
}
