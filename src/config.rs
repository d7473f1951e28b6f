//! The sidecar's configuration: `sidecar.toml`, overridden by `LEADHOOK_…`
//! environment variables.
//!
//! Loading is strict on purpose: an unknown key, a bad URL or a missing
//! `${VAR}` stops `run` and `check` at once with the key named, because a
//! sidecar that silently ignores a typo delivers to the wrong place for weeks.

mod expand;
mod secret;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer};

pub use secret::Secret;

/// The one event the product knows.
pub const SAVE_LEAD: &str = "save_lead";

/// Where a webhook can send: the product documents POST; PUT and PATCH are
/// offered for receivers that model leads as resources.
const METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// A validated configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `leadhook=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style URL; may hold a password, so it is only ever shown redacted.
    pub url: Secret,
    /// Where the sidecar keeps objects of its own (dead letters, outbox).
    #[serde(default = "default_schema")]
    pub schema: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default)]
    pub mode: SourceMode,
    /// `schema.table`, or just `table` for `public`.
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default = "default_slot")]
    pub slot: String,
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Create the publication and slot when missing (needs table ownership).
    #[serde(default = "default_true")]
    pub create: bool,
    #[serde(default)]
    pub columns: ColumnsConfig,
    /// Notify mode: how often the outbox is read even without a notification.
    #[serde(default = "default_poll_interval", deserialize_with = "duration")]
    pub poll_interval: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            mode: SourceMode::default(),
            table: default_table(),
            slot: default_slot(),
            publication: default_publication(),
            create: true,
            columns: ColumnsConfig::default(),
            poll_interval: default_poll_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    #[default]
    Replication,
    /// A trigger outbox and LISTEN/NOTIFY, for databases without logical replication.
    Notify,
}

/// `[source.columns]`: payload field → column. A field left out maps to the
/// column of the same name; `false` declares that the table has no such
/// column, and the field is then always sent as its NULL value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsConfig {
    pub email: Option<ColumnSpec>,
    pub company: Option<ColumnSpec>,
    pub first_name: Option<ColumnSpec>,
    pub last_name: Option<ColumnSpec>,
    pub phone: Option<ColumnSpec>,
    pub website: Option<ColumnSpec>,
    pub position: Option<ColumnSpec>,
    pub twitter: Option<ColumnSpec>,
    pub linkedin: Option<ColumnSpec>,
    pub notes: Option<ColumnSpec>,
    pub score: Option<ColumnSpec>,
}

impl ColumnsConfig {
    /// The column for each payload field, in payload order; `None` = absent.
    pub fn resolve(&self) -> [(&'static str, Option<&str>); 11] {
        fn pick<'a>(
            field: &'static str,
            spec: &'a Option<ColumnSpec>,
        ) -> (&'static str, Option<&'a str>) {
            let column = match spec {
                None | Some(ColumnSpec::Present(true)) => Some(field),
                Some(ColumnSpec::Present(false)) => None,
                Some(ColumnSpec::Column(name)) => Some(name.as_str()),
            };
            (field, column)
        }
        [
            pick("email", &self.email),
            pick("company", &self.company),
            pick("first_name", &self.first_name),
            pick("last_name", &self.last_name),
            pick("phone", &self.phone),
            pick("website", &self.website),
            pick("position", &self.position),
            pick("twitter", &self.twitter),
            pick("linkedin", &self.linkedin),
            pick("notes", &self.notes),
            pick("score", &self.score),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Column(String),
    /// `true` = the column of the same name, `false` = no such column.
    Present(bool),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// How long SIGTERM/SIGINT waits for in-flight deliveries before abandoning them.
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

/// `[delivery]`: the delivery policy of every webhook, unless the webhook
/// overrides a key. Also the resolved policy of one webhook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// One attempt without a response within this is a failure.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts before a change is dead-lettered (or, with `block`, retried on).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_initial_backoff", deserialize_with = "duration")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Statuses that are final at once (e.g. 400, 410): retrying cannot help.
    #[serde(default)]
    pub no_retry_statuses: Vec<u16>,
    #[serde(default)]
    pub on_exhausted: OnExhausted,
    /// Requests in flight to one webhook at once (different leads only).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: default_timeout(),
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            no_retry_statuses: Vec::new(),
            on_exhausted: OnExhausted::default(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

/// What happens to a change that used all its attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Written to `<schema>.dead_letters`; the stream moves on.
    #[default]
    DeadLetter,
    /// Retried at `max_backoff` forever, holding the slot: for receivers
    /// that must see every change, in order.
    Block,
}

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

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }

    /// One line per problem, each naming the key and what is wrong.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }
}

impl Config {
    /// Reads `path` (must exist), applies `LEADHOOK_SECTION__KEY` overrides
    /// from the environment, expands `${VAR}` and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::one(format!(
                "{}: config file not found (pass --config PATH or set LEADHOOK_CONFIG)",
                path.display()
            )));
        }
        Self::from_figment(
            Figment::new()
                .merge(Toml::file_exact(path))
                .merge(env_overrides()),
        )
    }

    /// Parses TOML text (no environment overrides); for tests and the demo.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| ConfigError {
            problems: e.into_iter().map(describe_figment_error).collect(),
        })?;
        let mut problems = Vec::new();
        config.expand_variables(&|name| std::env::var(name).ok(), &mut problems);
        config.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// `${VAR}` is allowed where secrets live: the database URL, webhook URLs
    /// and header values.
    fn expand_variables(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) {
        let mut expand = |key: String, value: &mut Secret| match expand::expand(value.expose(), env)
        {
            Ok(expanded) => *value = Secret::new(expanded),
            Err(e) => problems.push(format!("{key}: {e}")),
        };
        expand("database.url".into(), &mut self.database.url);
        for (i, hook) in self.webhooks.iter_mut().enumerate() {
            expand(format!("webhooks[{i}].url"), &mut hook.url);
            for (name, value) in hook.headers.iter_mut() {
                expand(format!("webhooks[{i}].headers.{name}"), value);
            }
            if let Some(secret) = hook.secret.as_mut() {
                expand(format!("webhooks[{i}].secret"), secret);
            }
        }
    }

    fn validate(&mut self, problems: &mut Vec<String>) {
        for (key, value) in [
            ("database.schema", &self.database.schema),
            ("source.slot", &self.source.slot),
            ("source.publication", &self.source.publication),
        ] {
            if let Err(e) = check_identifier(value) {
                problems.push(format!("{key}: {e}"));
            }
        }
        if let Err(e) = TableName::parse(&self.source.table) {
            problems.push(format!("source.table: {e}"));
        }
        validate_policy("delivery", &self.delivery, problems);
        let mut names = HashSet::new();
        for (i, hook) in self.webhooks.iter_mut().enumerate() {
            validate_webhook(i, hook, &mut names, problems);
        }
        if problems.is_empty() {
            for (i, hook) in self.webhooks.iter().enumerate() {
                validate_policy(&format!("webhooks[{i}]"), &self.policy_of(hook), problems);
            }
        }
    }

    pub fn table(&self) -> TableName {
        // Validated in `validate`; the fallback keeps this total.
        TableName::parse(&self.source.table).unwrap_or_else(|_| TableName {
            schema: "public".into(),
            name: self.source.table.clone(),
        })
    }

    /// A webhook's delivery policy: its overrides over `[delivery]`.
    pub fn policy_of(&self, hook: &WebhookConfig) -> DeliveryConfig {
        let d = &self.delivery;
        DeliveryConfig {
            timeout: hook.timeout.unwrap_or(d.timeout),
            max_attempts: hook.max_attempts.unwrap_or(d.max_attempts),
            initial_backoff: hook.initial_backoff.unwrap_or(d.initial_backoff),
            max_backoff: hook.max_backoff.unwrap_or(d.max_backoff),
            no_retry_statuses: hook
                .no_retry_statuses
                .clone()
                .unwrap_or_else(|| d.no_retry_statuses.clone()),
            on_exhausted: hook.on_exhausted.unwrap_or(d.on_exhausted),
            max_in_flight: hook.max_in_flight.unwrap_or(d.max_in_flight),
        }
    }
}

fn validate_webhook(
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

/// Checks a resolved policy; `key` names where a bad value came from.
fn validate_policy(key: &str, policy: &DeliveryConfig, problems: &mut Vec<String>) {
    if policy.timeout.is_zero() {
        problems.push(format!("{key}.timeout: must be greater than zero"));
    }
    if policy.max_attempts == 0 {
        problems.push(format!("{key}.max_attempts: must be at least 1"));
    }
    if policy.max_in_flight == 0 {
        problems.push(format!("{key}.max_in_flight: must be at least 1"));
    }
    if policy.initial_backoff > policy.max_backoff {
        problems.push(format!(
            "{key}.initial_backoff: must not exceed max_backoff ({:?})",
            policy.max_backoff
        ));
    }
    for status in &policy.no_retry_statuses {
        if !(100..=599).contains(status) {
            problems.push(format!(
                "{key}.no_retry_statuses: {status} is not an HTTP status"
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

/// A schema-qualified table name, as written in `source.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `"schema"."name"`, ready for SQL.
    pub(crate) fn quoted(&self) -> String {
        use postgres_protocol::escape::escape_identifier;
        format!(
            "{}.{}",
            escape_identifier(&self.schema),
            escape_identifier(&self.name)
        )
    }

    fn parse(text: &str) -> Result<TableName, String> {
        let (schema, name) = text.split_once('.').unwrap_or(("public", text));
        check_identifier(schema)?;
        check_identifier(name)?;
        Ok(TableName {
            schema: schema.into(),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Names are quoted wherever they reach SQL, so any non-empty name Postgres
/// could store is fine; this only rejects what it could not.
fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if name.len() > 63 {
        Err(format!(
            "{name:?} is longer than PostgreSQL's 63-byte name limit"
        ))
    } else if name.contains('\0') {
        Err("must not contain NUL".into())
    } else {
        Ok(())
    }
}

/// Environment overrides: only `LEADHOOK_*` variables with a `__` are config
/// keys (`LEADHOOK_DATABASE__URL` → `database.url`), so variables such as
/// `LEADHOOK_CONFIG`, or `LEADHOOK_TOKEN` used in a `${VAR}`, are not
/// mistaken for unknown keys.
fn env_overrides() -> Env {
    Env::prefixed("LEADHOOK_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

fn describe_figment_error(error: figment::Error) -> String {
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (in {source})"),
            None => format!(" (in {})", m.name),
        })
        .unwrap_or_default();
    let key = error.path.join(".");
    let key = if key.is_empty() {
        "config".to_owned()
    } else {
        key
    };
    format!("{key}: {}{source}", error.kind)
}

fn default_schema() -> String {
    "leadhook".into()
}
fn default_table() -> String {
    "public.leads".into()
}
fn default_slot() -> String {
    "leadhook".into()
}
fn default_publication() -> String {
    "leadhook_leads".into()
}
fn default_true() -> bool {
    true
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_log_level() -> String {
    "info".into()
}
fn default_max_attempts() -> u32 {
    12
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_max_in_flight() -> usize {
    64
}
fn default_method() -> String {
    "POST".into()
}
fn default_events() -> Vec<String> {
    vec![SAVE_LEAD.into()]
}

/// Durations are strings such as `"5s"` or `"250ms"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"5s\" or \"250ms\" ({e})"
        ))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// The config path: `--config`, else `LEADHOOK_CONFIG`, else `sidecar.toml`
/// (clap resolves the first two).
pub fn default_path() -> PathBuf {
    PathBuf::from("sidecar.toml")
}

#[cfg(test)]
mod tests;
