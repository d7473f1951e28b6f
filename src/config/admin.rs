//! `[admin]` and `[log]`: how the running sidecar shows itself.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `leadhook=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: "info".into(),
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

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AdminConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub(crate) listen: SocketAddr,
    /// How long SIGTERM/SIGINT waits for in-flight deliveries before abandoning them.
    #[serde(deserialize_with = "duration")]
    pub(crate) shutdown_grace: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9187)),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
