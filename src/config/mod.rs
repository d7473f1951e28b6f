//! The sidecar's configuration: `sidecar.toml`, overridden by `LEADHOOK_…`
//! environment variables.
//!
//! Loading is strict on purpose: an unknown key, a bad URL or a missing
//! `${VAR}` stops `run` and `check` at once with the key named, because a
//! sidecar that silently ignores a typo delivers to the wrong place for weeks.

mod admin;
mod delivery;
mod expand;
mod secret;
mod source;
mod webhook;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer};

pub use admin::{AdminConfig, LogConfig, LogFormat};
pub use delivery::{DeliveryConfig, OnExhausted};
pub use secret::Secret;
pub use source::{DatabaseConfig, SourceConfig, SourceMode, TableName};
pub use webhook::{SAVE_LEAD, WebhookConfig};

use delivery::validate_policy;
use source::check_identifier;
use webhook::validate_webhook;

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

pub(super) fn default_true() -> bool {
    true
}

/// Durations are strings such as `"5s"` or `"250ms"`.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"5s\" or \"250ms\" ({e})"
        ))
    })
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[cfg(test)]
mod tests;
