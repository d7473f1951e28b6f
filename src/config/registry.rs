//! `[registry]`: webhooks kept in a table, which the product's own settings
//! page writes with plain SQL. Its rows come from the product's users, so
//! they are held to stricter rules than the operator's `[[webhooks]]`.

use std::time::Duration;

use serde::Deserialize;

use super::checked;
use super::source::TableName;

/// `[registry]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryConfig {
    /// Where the webhooks are: `schema.table`.
    pub(crate) table: TableName,
    /// Lifts the refusal of loopback, link-local, private and unique-local
    /// addresses (for tests and receivers on the internal network).
    pub(crate) allow_private_networks: bool,
    /// A row's `${VAR}` may only name variables starting with this, so a
    /// row can never read the sidecar's own secrets (the database URL).
    pub(crate) env_prefix: String,
    /// How often the table is read even without a notification.
    pub(crate) poll_interval: Duration,
}

/// `[registry]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegistryFile {
    table: TableName,
    #[serde(default)]
    allow_private_networks: bool,
    env_prefix: Option<String>,
    #[serde(default, deserialize_with = "super::optional_duration")]
    poll_interval: Option<Duration>,
}

/// The prefix a row's variables must start with unless told otherwise.
const ENV_PREFIX: &str = "LEADHOOK_WEBHOOK_";
/// Changes take effect within 2 s even if a notification is lost.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

impl RegistryFile {
    pub(super) fn check(self, problems: &mut Vec<String>) -> Option<RegistryConfig> {
        checked(problems, "registry.table", self.table.check())?;
        let env_prefix = self.env_prefix.unwrap_or_else(|| ENV_PREFIX.to_owned());
        if env_prefix.is_empty() {
            problems.push(
                "registry.env_prefix: must not be empty (a row could then read every variable, the database password too)"
                    .into(),
            );
            return None;
        }
        let poll_interval = self.poll_interval.unwrap_or(POLL_INTERVAL);
        if poll_interval.is_zero() {
            problems.push("registry.poll_interval: must be greater than zero".into());
            return None;
        }
        Some(RegistryConfig {
            table: self.table,
            allow_private_networks: self.allow_private_networks,
            env_prefix,
            poll_interval,
        })
    }
}
