//! Why a throwaway cluster could not be found, started or stopped.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::SUPERUSER;
use super::binaries::{DEBIAN_INSTALL_ROOT, PG_BIN_ENV};

/// Why a throwaway cluster could not be found, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No installation anywhere we looked.
    #[error(
        "PostgreSQL server binaries (initdb and postgres) not found via `pg_config --bindir`, \
         PATH or {DEBIAN_INSTALL_ROOT}/*/bin; install them (Debian/Ubuntu: \
         `apt-get install postgresql`, Fedora: `dnf install postgresql-server`, macOS: \
         `brew install postgresql`) or set {PG_BIN_ENV} to the directory containing \
         initdb and postgres"
    )]
    BinariesNotFound,
    /// `LEADHOOK_PG_BIN` names a directory without the server binaries.
    #[error(
        "{PG_BIN_ENV} is {}, but that directory has no initdb and postgres; set it to the \
         directory containing them (e.g. /usr/lib/postgresql/15/bin) or unset it to search \
         automatically",
        .0.display()
    )]
    BadBinDir(PathBuf),
    /// A test needs a newer server than any found (e.g. failover slots: 17).
    #[error(
        "PostgreSQL {wanted} or later server binaries not found (found {found}); run          `.ci/install-pg17` (it unpacks them into /opt/leadhook-pg17 and prints the          directory) or set LEADHOOK_PG17_BIN to a directory with initdb and postgres {wanted}+"
    )]
    NoVersion { wanted: u32, found: String },
    /// Root, and no `postgres` account to drop privileges to.
    #[error(
        "running as root, but there is no `{SUPERUSER}` system user to run PostgreSQL as \
         (initdb and postgres refuse to run as root); create one with \
         `useradd --system {SUPERUSER}` or run as an unprivileged user"
    )]
    NoServerUser,
    /// A [`ClusterOptions::settings`] entry that would corrupt postgresql.conf.
    #[error(
        "invalid PostgreSQL setting {name:?}: {problem}; names are letters, digits, '_' and \
         '.', values are one line"
    )]
    BadSetting { name: String, problem: &'static str },
    /// A file, directory, process or socket operation failed; `action` says which.
    /// initdb ran but failed; `output` is what it printed.
    #[error("could not {action}: {error}")]
    Io { action: String, error: io::Error },
    #[error(
        "initdb failed ({status}); check that the PostgreSQL installation is complete and \
         that the temp dir is usable by the server user. Its output:\n{output}"
    )]
    Initdb { status: String, output: String },
    /// The server exited before it was ready; `log_tail` is the end of this start's log.
    #[error(
        "PostgreSQL exited while starting on port {port} ({status}); fix the cause shown in \
         the last lines of its log:\n{log_tail}"
    )]
    StartFailed {
        port: u16,
        status: String,
        log_tail: String,
    },
    /// The server was still not ready after `timeout`.
    #[error(
        "PostgreSQL did not accept connections on port {port} within {timeout:?}; the machine \
         may be overloaded, or the last lines of its log say why:\n{log_tail}"
    )]
    StartTimeout {
        port: u16,
        timeout: Duration,
        log_tail: String,
    },
    /// A fast shutdown hung, so the server was killed (SIGKILL).
    #[error(
        "PostgreSQL on port {port} ignored a fast shutdown for {timeout:?} and was killed; \
         its log may say why"
    )]
    StopTimeout { port: u16, timeout: Duration },
}

/// Adds what we were doing to an I/O error, for messages that say where it broke.
pub(crate) fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let action = action.into();
    move |error| ClusterError::Io { action, error }
}
