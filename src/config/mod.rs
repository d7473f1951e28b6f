//! The sidecar's configuration: `sidecar.toml`, overridden by `LEADHOOK_…`
//! environment variables.
//!
//! Loading is strict on purpose: an unknown key, a bad URL or a missing
//! `${VAR}` stops `run` and `check` at once with the key named, because a
//! sidecar that silently ignores a typo delivers to the wrong place for weeks.
//!
//! The file is read as written (`ConfigFile`: text where `${VAR}` may still
//! need expanding), then checked and parsed once into [`Config`], collecting
//! every problem. One file per part: `source` (`[database]`, `[source]`),
//! `delivery` (the policy), `webhook` (`[[webhooks]]`, and registry rows),
//! `filter` (which leads a webhook gets), `registry` (`[registry]`),
//! `admin` (`[admin]`, `[log]`), `secret` (redaction) and `expand` (`${VAR}`).
//!
//! A running sidecar loads the file again on SIGHUP; [`Config::reload`]
//! tells which of the changes it can apply.

mod admin;
mod delivery;
pub(crate) mod expand;
mod filter;
mod registry;
mod secret;
mod source;
mod webhook;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Deserializer};

pub(crate) use admin::AdminConfig;
pub use admin::{LogConfig, LogFormat};
pub(crate) use delivery::{DeliveryConfig, OnExhausted};
pub(crate) use registry::RegistryConfig;
pub(crate) use secret::Secret;
pub(crate) use source::{
    DEFAULT_MAX_MESSAGE_SIZE, DatabaseConfig, OnSlotLost, Shard, SourceConfig, SourceMode,
    TableName,
};
pub(crate) use webhook::{Http2, Origin, SigningKey, WebhookConfig, WebhookRow, shown_url};

use delivery::validate_policy;
use registry::RegistryFile;
use source::DatabaseFile;
use webhook::WebhookFile;

/// A loaded configuration: checked, and parsed into typed values, so what
/// runs from it cannot fail on a value of it.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) database: DatabaseConfig,
    pub(crate) source: SourceConfig,
    pub(crate) admin: AdminConfig,
    /// The file's webhooks, each with its policy: `[delivery]` under its
    /// own overrides. (Registry rows join them at run time.)
    pub(crate) webhooks: Vec<WebhookConfig>,
    /// `[delivery]`: the policy of registry rows, and `memory`.
    pub(crate) delivery: DeliveryConfig,
    /// `[delivery] memory`: the change bytes all stages together may hold.
    pub(crate) memory: u64,
    pub(crate) registry: Option<RegistryConfig>,
    pub log: LogConfig,
}

/// The configuration as written (after environment overrides): the
/// sections whose values need `${VAR}` expansion before they can be parsed
/// are kept as text here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    database: DatabaseFile,
    #[serde(default)]
    source: SourceConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    webhooks: Vec<WebhookFile>,
    registry: Option<RegistryFile>,
    #[serde(default)]
    log: LogConfig,
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
    /// from the environment, expands `${VAR}` and checks.
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

    /// Parses TOML text (no environment overrides); for tests, the demo
    /// and the fuzz targets.
    #[cfg(any(test, feature = "demo", feature = "fuzzing"))]
    pub(crate) fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut file: ConfigFile = figment.extract().map_err(|e| ConfigError {
            problems: e.into_iter().map(describe_figment_error).collect(),
        })?;
        let mut problems = Vec::new();
        file.expand_variables(&|name| std::env::var(name).ok(), &mut problems);
        match Config::check(file, &mut problems) {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
    }

    /// Checks and parses every section, recording all problems rather than
    /// stopping at the first; `None` when there was one.
    fn check(file: ConfigFile, problems: &mut Vec<String>) -> Option<Config> {
        let ConfigFile {
            database,
            source,
            admin,
            delivery,
            webhooks,
            registry,
            log,
        } = file;
        let database = database.check(problems);
        let source = source.check(problems);
        validate_policy("delivery", &delivery, problems);
        let registry = match registry {
            Some(registry) => Some(registry.check(problems)?),
            None => None,
        };
        let mut names = HashSet::new();
        let webhooks: Vec<_> = webhooks
            .into_iter()
            .enumerate()
            .map(|(i, hook)| {
                let key = format!("webhooks[{i}]");
                hook.check(&key, Origin::File, &delivery, &mut names, problems)
            })
            .collect();
        for (i, hook) in webhooks.iter().enumerate() {
            if let Some(problem) = hook
                .as_ref()
                .and_then(|h| h.mode_problem(&format!("webhooks[{i}]"), source.mode))
            {
                problems.push(problem);
            }
        }
        // A webhook's policy is its overrides over `[delivery]`: judged only
        // when both are sound, so one mistake is not reported twice.
        if problems.is_empty() {
            for (i, hook) in webhooks.iter().enumerate() {
                if let Some(hook) = hook {
                    validate_policy(&format!("webhooks[{i}]"), &hook.policy, problems);
                }
            }
        }
        Some(Config {
            database: database?,
            source,
            admin,
            webhooks: webhooks.into_iter().collect::<Option<_>>()?,
            memory: delivery.memory,
            delivery,
            registry,
            log,
        })
    }

    /// Checks a registry row as a webhook: the same rules as the file's,
    /// plus those for untrusted rows (`${VAR}` only under `env_prefix`, no
    /// private networks unless allowed). `taken` holds the names already
    /// used (the file's, and earlier rows'); every problem is returned.
    pub(crate) fn check_row(
        &self,
        row: WebhookRow,
        taken: &mut HashSet<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<WebhookConfig, Vec<String>> {
        let Some(registry) = &self.registry else {
            return Err(vec!["no [registry] is configured".into()]);
        };
        let key = format!("registry row {:?}", row.name);
        let mut problems = Vec::new();
        let mut file = WebhookFile::from_row(row);
        let mut expand = |what: String, value: &mut Secret| match expand::expand_prefixed(
            value.expose(),
            &registry.env_prefix,
            env,
        ) {
            Ok(expanded) => *value = Secret::new(expanded),
            Err(e) => problems.push(format!("{key}.{what}: {e}")),
        };
        for (name, value) in file.headers.iter_mut() {
            expand(format!("headers.{name}"), value);
        }
        if let Some(secret) = file.secret.as_mut() {
            expand("secret".into(), secret);
        }
        let checked = file.check(&key, Origin::Table, &self.delivery, taken, &mut problems);
        match checked {
            Some(mut hook) if problems.is_empty() => {
                hook.public_only = !registry.allow_private_networks;
                Ok(hook)
            }
            _ => Err(problems),
        }
    }

    /// What a reload may apply of `new`: everything about webhooks and
    /// `[delivery]`. The sections named in the result need a restart
    /// instead, and stay as they are.
    pub(crate) fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut sections = Vec::new();
        if self.database.url != new.database.url || self.database.schema != new.database.schema {
            sections.push("[database]");
        }
        if self.source != new.source {
            sections.push("[source]");
        }
        if self.admin != new.admin {
            sections.push("[admin]");
        }
        if self.registry != new.registry {
            sections.push("[registry]");
        }
        if self.log != new.log {
            sections.push("[log]");
        }
        sections
    }

    /// `self` with what a reload may apply of `new` (see [`Self::restart_needed`]).
    pub(crate) fn reload(&self, new: Config) -> Config {
        Config {
            webhooks: new.webhooks,
            delivery: new.delivery,
            memory: new.memory,
            ..self.clone()
        }
    }

    /// The leads table (a copy: most callers keep it).
    /// This config as shard `index`'s instance has it (unsharded: itself).
    pub(crate) fn for_shard(&self, index: u32) -> Config {
        Config {
            source: self.source.for_shard(index),
            ..self.clone()
        }
    }

    pub(crate) fn table(&self) -> TableName {
        self.source.table.clone()
    }
}

impl ConfigFile {
    /// `${VAR}` is allowed where secrets live: the database URL, webhook
    /// URLs, header values and signing secrets.
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
}

/// `Some` when `result` is; else its problem is recorded under `key`.
fn checked<T>(
    problems: &mut Vec<String>,
    key: impl fmt::Display,
    result: Result<T, String>,
) -> Option<T> {
    result
        .map_err(|e| problems.push(format!("{key}: {e}")))
        .ok()
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

/// Durations are strings such as `"5s"` or `"250ms"`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"5s\" or \"250ms\" ({e})"
        ))
    })
}

/// Byte sizes are strings such as `"512MB"` or `"64MiB"`, or plain numbers.
fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bytes(u64),
        Text(String),
    }
    match Written::deserialize(d)? {
        Written::Bytes(bytes) => Ok(bytes),
        Written::Text(text) => text
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a size like \"512MB\" or \"64MiB\" ({e})"
                ))
            }),
    }
}

fn optional_byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    byte_size(d).map(Some)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[cfg(test)]
mod tests;
