//! How a new cluster is configured: `wal_level` and postgresql.conf settings.

use super::ClusterError;

/// Which `wal_level` the cluster runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WalLevel {
    /// What leadhook needs: logical decoding works.
    #[default]
    Logical,
    /// Logical decoding is unavailable; for testing how that is reported.
    Replica,
}

impl WalLevel {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            WalLevel::Logical => "logical",
            WalLevel::Replica => "replica",
        }
    }
}

/// How to configure a new [`Cluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `logical` for the pipeline; `replica` to see leadhook refuse a server
    /// without logical decoding.
    pub wal_level: WalLevel,
    /// Extra postgresql.conf settings, written after the defaults so they
    /// override them, e.g. `("wal_sender_timeout", "4s")`.
    pub settings: Vec<(String, String)>,
    /// Other server binaries than the process's default (`PgBinaries::find`),
    /// e.g. `PgBinaries::find_17()`.
    pub binaries: Option<super::PgBinaries>,
}

impl ClusterOptions {
    /// Runs `binaries` (builder style).
    pub fn binaries(mut self, binaries: super::PgBinaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Adds one postgresql.conf setting (builder style).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// One `name = 'value'` line of postgresql.conf, quoted so any value is taken literally.
pub(super) fn conf_line(name: &str, value: &str) -> Result<String, ClusterError> {
    let bad = |problem| ClusterError::BadSetting {
        name: name.to_owned(),
        problem,
    };
    let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    if name.is_empty() || !name.chars().all(name_ok) {
        return Err(bad(
            "the name has characters postgresql.conf does not allow",
        ));
    }
    if value.contains(['\n', '\r']) {
        return Err(bad("the value contains a line break"));
    }
    let quoted = value.replace('\\', "\\\\").replace('\'', "''");
    Ok(format!("{name} = '{quoted}'\n"))
}
