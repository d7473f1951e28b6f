//! `[[webhooks]]`: where deliveries go. Read as written, then parsed once
//! into a [`WebhookConfig`] whose URL, method, headers and signing key are
//! typed values, so building a request from it cannot fail.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::filter::Filter;
use super::{DeliveryConfig, OnExhausted, Secret, checked, optional_byte_size, optional_duration};

/// The one event the product knows.
const SAVE_LEAD: &str = "save_lead";

/// A webhook, checked: what delivery needs, typed. Equal when nothing a
/// delivery uses differs (a reload compares them so).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookConfig {
    pub(crate) name: String,
    /// Where it was configured: the operator's file or the registry table.
    pub(crate) origin: Origin,
    /// May hold credentials, so it is only shown redacted.
    pub(crate) url: Secret<Url>,
    /// POST (documented), PUT or PATCH (for receivers that model leads as
    /// resources).
    pub(crate) method: Method,
    pub(crate) enabled: bool,
    /// Whether `events` lists `save_lead`.
    pub(crate) save_lead: bool,
    /// Values are secrets (tokens): never logged, and marked sensitive.
    pub(crate) headers: HeaderMap<Secret<HeaderValue>>,
    /// Signs each request (Standard Webhooks).
    pub(crate) signing_key: Option<SigningKey>,
    /// `[delivery]` with this webhook's overrides applied.
    pub(crate) policy: DeliveryConfig,
    /// Which leads it receives.
    pub(crate) filter: Filter,
    /// Refuse to connect to loopback, link-local, private and unique-local
    /// addresses: set for registry rows (untrusted) unless allowed.
    pub(crate) public_only: bool,
    /// Gets every existing lead when it is first configured (a backfill
    /// run filed once for its name; see `backfill`).
    pub(crate) backfill: bool,
    /// Which HTTP version its requests use.
    pub(crate) http2: Http2,
}

/// Scheme, host, port and the path's first segment, the rest masked: what
/// logs and pages may show of a URL. Credentials, the query and the rest
/// of the path may hold secrets (Slack's and Zapier's hooks carry their
/// token in the path).
pub(crate) fn shown_url(url: &Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let host = url.host_str().unwrap_or_default();
    let path = url.path();
    let first = path[1.min(path.len())..]
        .split('/')
        .next()
        .unwrap_or_default();
    let rest = if path.len() > first.len() + 1 {
        "/…"
    } else {
        ""
    };
    format!("{}://{host}{port}/{first}{rest}", url.scheme())
}

/// `http2`: whether a webhook's requests go over HTTP/2, where many share
/// one connection (fewer connections and syscalls than HTTP/1.1's one
/// request at a time per connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Http2 {
    /// HTTP/2 when the endpoint offers it in the TLS handshake (ALPN), else
    /// HTTP/1.1; plain `http://` is HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/2 only: over TLS without asking, and over plain `http://` with
    /// prior knowledge (h2c). An endpoint without it fails to connect.
    Always,
    /// HTTP/1.1 only.
    Never,
}

impl Http2 {
    pub(crate) const ALL: [Http2; 3] = [Http2::Auto, Http2::Always, Http2::Never];
}

/// Where a webhook was configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `[[webhooks]]` in the config file: the operator's.
    File,
    /// A row of the `[registry]` table: the product's users'.
    Table,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Table => "table",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl WebhookConfig {
    /// What logs and pages may show of the URL: see [`shown_url`].
    pub(crate) fn shown_url(&self) -> String {
        shown_url(self.url.expose())
    }

    /// Whether this webhook gets `save_lead` deliveries at all.
    pub(crate) fn receives_save_lead(&self) -> bool {
        self.enabled && self.save_lead
    }

    /// What this webhook asks that `mode` cannot do: a backfill needs the
    /// replication stream to place existing leads in.
    pub(crate) fn mode_problem(&self, key: &str, mode: super::SourceMode) -> Option<String> {
        (self.backfill && mode == super::SourceMode::Notify).then(|| {
            format!(
                "{key}.backfill: backfills need [source] mode = \"replication\"; in notify mode, re-save the leads (an UPDATE the capture trigger sees) instead"
            )
        })
    }

    /// The settings that differ from `before`, by name only (a log line
    /// may show which changed, never their values).
    pub(crate) fn changes_from(&self, before: &WebhookConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut note = |differs: bool, what| {
            if differs {
                changed.push(what);
            }
        };
        note(self.url != before.url, "url");
        note(self.method != before.method, "method");
        note(self.enabled != before.enabled, "enabled");
        note(self.save_lead != before.save_lead, "events");
        note(self.headers != before.headers, "headers");
        note(self.signing_key != before.signing_key, "secret");
        note(self.policy != before.policy, "delivery options");
        note(self.filter != before.filter, "filter");
        note(self.origin != before.origin, "origin");
        note(self.backfill != before.backfill, "backfill");
        note(self.http2 != before.http2, "http2");
        note(
            self.public_only != before.public_only,
            "allow_private_networks",
        );
        changed
    }
}

/// A `[[webhooks]]` entry as written: `None` is a key left out. `name` and
/// `url` are required, so the entry has no `Default`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookFile {
    name: String,
    pub(super) url: Secret,
    method: Option<String>,
    enabled: Option<bool>,
    events: Option<Vec<String>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Secret>,
    /// `whsec_…` base64 or raw.
    pub(super) secret: Option<Secret>,
    // Overrides of the `[delivery]` keys of the same names.
    #[serde(default, deserialize_with = "optional_duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    retry_for: Option<Duration>,
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    initial_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    max_backoff: Option<Duration>,
    no_retry_statuses: Option<Vec<u16>>,
    on_exhausted: Option<OnExhausted>,
    max_in_flight: Option<usize>,
    spool: Option<bool>,
    #[serde(default, deserialize_with = "optional_duration")]
    spool_after: Option<Duration>,
    #[serde(default, deserialize_with = "optional_byte_size")]
    max_retained_wal: Option<u64>,
    /// `{ column = value | [values] }`, see [`Filter`].
    filter: Option<BTreeMap<String, serde_json::Value>>,
    /// Deliver every existing lead to it once, when it is first configured.
    backfill: Option<bool>,
    http2: Option<Http2>,
}

impl WebhookFile {
    /// A registry row, as the table has it: only the seed's fields (and a
    /// filter); its delivery policy is `[delivery]`'s.
    pub(super) fn from_row(row: WebhookRow) -> WebhookFile {
        WebhookFile {
            name: row.name,
            url: Secret::new(row.url),
            method: row.method,
            enabled: Some(row.enabled),
            events: None,
            headers: row
                .headers
                .into_iter()
                .map(|(name, value)| (name, Secret::new(value)))
                .collect(),
            secret: row.secret.map(Secret::new),
            timeout: None,
            retry_for: None,
            max_attempts: None,
            initial_backoff: None,
            max_backoff: None,
            no_retry_statuses: None,
            on_exhausted: None,
            max_in_flight: None,
            spool: None,
            spool_after: None,
            max_retained_wal: None,
            filter: row.filter,
            backfill: Some(row.backfill),
            http2: None,
        }
    }

    /// Parses the entry found at `key` (`webhooks[2]`, or a registry row),
    /// recording every problem under that key; `None` when there was one.
    /// Its policy is checked later, once the rest of the config is sound
    /// (see `Config::check`).
    pub(super) fn check(
        self,
        key: &str,
        origin: Origin,
        delivery: &DeliveryConfig,
        names: &mut HashSet<String>,
        problems: &mut Vec<String>,
    ) -> Option<WebhookConfig> {
        let before = problems.len();
        if self.name.trim().is_empty() {
            problems.push(format!("{key}.name: must not be empty"));
        } else if !names.insert(self.name.clone()) {
            problems.push(format!(
                "{key}.name: duplicate webhook name {:?}; names must be unique",
                self.name
            ));
        }
        let url = checked(
            problems,
            format_args!("{key}.url"),
            webhook_url(self.url.expose()),
        );
        let method = checked(
            problems,
            format_args!("{key}.method"),
            method(self.method.as_deref().unwrap_or("POST")),
        );
        let events = self.events.unwrap_or_else(|| vec![SAVE_LEAD.into()]);
        for event in events.iter().filter(|e| *e != SAVE_LEAD) {
            problems.push(format!(
                "{key}.events: unknown event {event:?}; the supported event is \"save_lead\""
            ));
        }
        let headers = headers(key, &self.headers, problems);
        let filter = match &self.filter {
            Some(written) => checked(
                problems,
                format_args!("{key}.filter"),
                Filter::parse(written),
            ),
            None => Some(Filter::default()),
        };
        let signing_key = match &self.secret {
            Some(secret) => Some(checked(
                problems,
                format_args!("{key}.secret"),
                SigningKey::from_secret(secret.expose()),
            )?),
            None => None,
        };
        let policy = DeliveryConfig {
            timeout: self.timeout.unwrap_or(delivery.timeout),
            retry_for: self.retry_for.unwrap_or(delivery.retry_for),
            max_attempts: self.max_attempts.or(delivery.max_attempts),
            initial_backoff: self.initial_backoff.unwrap_or(delivery.initial_backoff),
            max_backoff: self.max_backoff.unwrap_or(delivery.max_backoff),
            no_retry_statuses: self
                .no_retry_statuses
                .unwrap_or_else(|| delivery.no_retry_statuses.clone()),
            on_exhausted: self.on_exhausted.unwrap_or(delivery.on_exhausted),
            max_in_flight: self.max_in_flight.unwrap_or(delivery.max_in_flight),
            spool: self.spool.unwrap_or(delivery.spool),
            spool_after: self.spool_after.unwrap_or(delivery.spool_after),
            max_retained_wal: self.max_retained_wal.unwrap_or(delivery.max_retained_wal),
            memory: delivery.memory,
        };
        if problems.len() > before {
            return None;
        }
        Some(WebhookConfig {
            name: self.name,
            origin,
            url: url?.into(),
            method: method?,
            enabled: self.enabled.unwrap_or(true),
            save_lead: events.iter().any(|e| e == SAVE_LEAD),
            headers,
            signing_key,
            policy,
            filter: filter?,
            public_only: false,
            backfill: self.backfill.unwrap_or(false),
            http2: self.http2.unwrap_or_default(),
        })
    }
}

/// A row of the registry table, as read (header values and the secret may
/// still hold `${VAR}`).
#[derive(Debug)]
pub(crate) struct WebhookRow {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) method: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) enabled: bool,
    pub(crate) secret: Option<String>,
    pub(crate) filter: Option<BTreeMap<String, serde_json::Value>>,
    pub(crate) backfill: bool,
}

/// Checks scheme and host without ever echoing the URL (it may hold credentials).
fn webhook_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    // Requests are built from it as an HTTP URI (see `delivery::transport`).
    if let Err(e) = url.as_str().parse::<http::Uri>() {
        return Err(format!("not a valid HTTP request target ({e})"));
    }
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("URL has no host".into()),
        other => Err(format!(
            "scheme {other:?} is not supported; use http or https"
        )),
    }
}

/// POST, PUT or PATCH, in any case.
fn method(text: &str) -> Result<Method, String> {
    match text.to_ascii_uppercase().as_str() {
        "POST" => Ok(Method::POST),
        "PUT" => Ok(Method::PUT),
        "PATCH" => Ok(Method::PATCH),
        other => Err(format!(
            "unsupported method {other:?}; use POST, PUT or PATCH"
        )),
    }
}

/// Valid names and values, the values marked sensitive (hidden from
/// `Debug`, and from HTTP/2 header compression).
fn headers(
    key: &str,
    written: &BTreeMap<String, Secret>,
    problems: &mut Vec<String>,
) -> HeaderMap<Secret<HeaderValue>> {
    let mut headers = HeaderMap::default();
    for (name, value) in written {
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.push(format!(
                "{key}.headers: {name:?} is not a valid HTTP header name"
            ));
            continue;
        };
        let Ok(mut value) = HeaderValue::from_str(value.expose()) else {
            problems.push(format!(
                "{key}.headers.{name}: value is not a valid HTTP header value"
            ));
            continue;
        };
        value.set_sensitive(true);
        headers.insert(parsed, Secret::from(value));
    }
    headers
}

/// A webhook's signing key, decoded from `secret` when the config is loaded.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// `whsec_<base64>` (the Standard Webhooks form) or any other text, used as is.
    pub(crate) fn from_secret(secret: &str) -> Result<SigningKey, String> {
        match secret.strip_prefix("whsec_") {
            Some(encoded) => STANDARD
                .decode(encoded)
                .map(SigningKey)
                .map_err(|_| "a whsec_ secret must be base64 after the prefix".to_owned()),
            None if secret.is_empty() => Err("must not be empty".to_owned()),
            None => Ok(SigningKey(secret.as_bytes().to_vec())),
        }
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}
