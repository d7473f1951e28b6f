//! Finding one PostgreSQL installation's server binaries.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ClusterError;

/// Environment variable naming the directory with `initdb` and `postgres`.
pub(super) const PG_BIN_ENV: &str = "LEADHOOK_PG_BIN";
/// Where a test that needs PostgreSQL 17 looks first.
pub(super) const PG17_BIN_ENV: &str = "LEADHOOK_PG17_BIN";
/// Where `.ci/install-pg17` unpacks PostgreSQL 17.
const PG17_INSTALL_DIR: &str = "/opt/leadhook-pg17/bin";
/// Debian's layout; the last place [`PgBinaries::find`] looks.
pub(super) const DEBIAN_INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// One PostgreSQL installation's server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// Directory holding `initdb` and `postgres`, so both come from one version.
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds server binaries, in order: `$LEADHOOK_PG_BIN` (an error if set but
    /// wrong, so a typo is not silently ignored), `pg_config --bindir`, every
    /// PATH directory with both `initdb` and `postgres`, then
    /// `/usr/lib/postgresql/*/bin`, highest major version first.
    pub fn find() -> Result<PgBinaries, ClusterError> {
        Self::find_with(std::env::var_os(PG_BIN_ENV))
    }

    /// The directory with `initdb` and `postgres`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Server binaries of PostgreSQL 17 or later, for what only they have
    /// (failover slots): `$LEADHOOK_PG17_BIN`, else those [`Self::find`]
    /// finds if new enough, else where `.ci/install-pg17` puts them.
    pub fn find_17() -> Result<PgBinaries, ClusterError> {
        let candidates = std::env::var_os(PG17_BIN_ENV)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .into_iter()
            .chain(Self::find().ok().map(|b| b.dir))
            .chain([PathBuf::from(PG17_INSTALL_DIR)]);
        let mut found = Vec::new();
        for dir in candidates.filter(|dir| has_server_binaries(dir)) {
            let bins = PgBinaries { dir };
            match bins.major_version() {
                Some(major) if major >= 17 => return Ok(bins),
                major => found.push(format!("{} ({major:?})", bins.dir.display())),
            }
        }
        Err(ClusterError::NoVersion {
            wanted: 17,
            found: if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            },
        })
    }

    /// The major version `postgres --version` reports.
    pub fn major_version(&self) -> Option<u32> {
        let output = Command::new(self.tool("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let version = text.split_whitespace().last()?;
        version.split('.').next()?.parse().ok()
    }

    /// [`Self::find`] with the environment value passed in, so tests need not
    /// mutate the process environment.
    pub(super) fn find_with(env_dir: Option<OsString>) -> Result<PgBinaries, ClusterError> {
        if let Some(dir) = env_dir.filter(|dir| !dir.is_empty()) {
            let dir = PathBuf::from(dir);
            if !has_server_binaries(&dir) {
                return Err(ClusterError::BadBinDir(dir));
            }
            return Ok(PgBinaries { dir });
        }
        pg_config_bindir()
            .into_iter()
            .chain(path_dirs())
            .chain(versioned_install_dirs(Path::new(DEBIAN_INSTALL_ROOT)))
            .find(|dir| has_server_binaries(dir))
            .map(|dir| PgBinaries { dir })
            .ok_or(ClusterError::BinariesNotFound)
    }

    pub(super) fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(super) fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// `pg_config --bindir`, if pg_config runs at all; Debian's may name a
/// directory without server binaries, which the caller's check skips.
pub(super) fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

pub(super) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default()
}

/// `ROOT/<version>/bin` for every version-named directory, newest first.
pub(super) fn versioned_install_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// "15" → [15], "9.6" → [9, 6]; anything else is not a version directory.
pub(super) fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}
