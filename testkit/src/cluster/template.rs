//! The initdb'd template every cluster of the process copies, and the
//! cleanup of temporary directories: at exit, and of processes killed earlier.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, TryLockError};

use super::binaries::PgBinaries;
use super::server_user::{ServerUser, give_to, pg_command, server_user};
use super::{Cluster, ClusterError, PASSWORD, SUPERUSER, io_error, lock};

/// Prefix of every temporary directory, so stale ones can be recognised.
pub(super) const DIR_PREFIX: &str = "leadhook-pg-";

pub(super) const PG_HBA: &str = "\
local all all trust
host all all 127.0.0.1/32 md5
host replication all 127.0.0.1/32 md5
";

/// A fresh temporary directory named so [`sweep_stale_dirs`] can tell whose it is.
pub(super) fn temp_dir(kind: &str) -> Result<tempfile::TempDir, ClusterError> {
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-{kind}-", std::process::id()))
        .tempdir()
        .map_err(io_error("create a temporary directory (check TMPDIR)"))
}

/// Removes directories left by processes that were killed before they could
/// clean up, unless a postmaster still runs in one.
pub(super) fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        let owner = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(owner_pid);
        let Some(owner) = owner else { continue };
        if !process_alive(owner) && !postmaster_alive(&path.join("data")) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// The pid in `leadhook-pg-<pid>-...`.
pub(super) fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let pid: u32 = name
        .strip_prefix(DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    // 0 and negative pids mean process groups to kill(2), never one process.
    libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 0)
}

pub(super) fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; pid is positive.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub(super) fn postmaster_alive(data_dir: &Path) -> bool {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok())
        .filter(|pid| *pid > 0)
        .is_some_and(process_alive)
}

/// The initdb'd data directory that every cluster in this process copies.
#[derive(Debug, Clone)]
pub(super) struct Template {
    /// Found once per process; every cluster runs these.
    pub(super) bins: PgBinaries,
    /// Owner of the template and every copy, found once per process.
    pub(super) user: Option<ServerUser>,
    /// Directory to delete at exit.
    pub(super) root: PathBuf,
    /// The initdb'd data directory inside `root`.
    pub(super) data: PathBuf,
}

/// One per installation used (usually one). Not a OnceLock: a failed initdb
/// is not cached, so the error stays typed and a later call may retry. The
/// mutex also makes concurrent first starts wait for one initdb.
pub(super) static TEMPLATES: Mutex<Vec<Template>> = Mutex::new(Vec::new());

/// The template of `bins` (`None`: the process's default installation).
pub(super) fn template(bins: Option<&PgBinaries>) -> Result<Template, ClusterError> {
    let bins = match bins {
        Some(bins) => bins.clone(),
        None => PgBinaries::find()?,
    };
    let mut templates = lock(&TEMPLATES);
    if let Some(template) = templates.iter().find(|t| t.bins == bins) {
        return Ok(template.clone());
    }
    let template = Template::create(bins)?;
    register_exit_cleanup();
    templates.push(template.clone());
    Ok(template)
}

impl Template {
    fn create(bins: PgBinaries) -> Result<Template, ClusterError> {
        let user = server_user()?;
        sweep_stale_dirs();
        let root = temp_dir("template")?.keep();
        let data = root.join("data");
        let template = Template {
            bins,
            user,
            root,
            data,
        };
        if let Err(error) = template.initdb() {
            let _ = fs::remove_dir_all(&template.root);
            return Err(error);
        }
        Ok(template)
    }

    fn initdb(&self) -> Result<(), ClusterError> {
        give_to(&self.root, self.user)?;
        let password_file = self.root.join("password");
        fs::write(&password_file, PASSWORD).map_err(io_error("write initdb's password file"))?;
        give_to(&password_file, self.user)?;
        let output = pg_command(self.bins.tool("initdb"), self.user, &self.root)
            .arg("--pgdata")
            .arg(&self.data)
            .arg("--pwfile")
            .arg(&password_file)
            .args([
                "--username",
                SUPERUSER,
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ])
            .args(["--auth-local", "trust", "--auth-host", "md5", "--no-sync"])
            .output()
            .map_err(io_error(format!(
                "run {}",
                self.bins.tool("initdb").display()
            )))?;
        if !output.status.success() {
            return Err(ClusterError::Initdb {
                status: output.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            });
        }
        fs::write(self.data.join("pg_hba.conf"), PG_HBA).map_err(io_error("write pg_hba.conf"))
    }
}

/// Clusters handed out by [`Cluster::keep_until_exit`], stopped at exit.
pub(super) static KEPT: Mutex<Vec<&'static Cluster>> = Mutex::new(Vec::new());

pub(super) fn register_exit_cleanup() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handler is a plain extern "C" fn that catches every panic.
        if unsafe { libc::atexit(clean_up_at_exit) } != 0 {
            eprintln!("could not register exit cleanup; throwaway PostgreSQL directories may be left in the temp dir");
        }
    });
}

extern "C" fn clean_up_at_exit() {
    let _ = std::panic::catch_unwind(clean_up_now);
}

/// Stops kept clusters and removes every directory; try_lock, because a
/// thread killed by exit may still hold a lock and waiting would hang exit.
pub(super) fn clean_up_now() {
    let kept = match KEPT.try_lock() {
        Ok(mut kept) => std::mem::take(&mut *kept),
        Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => Vec::new(),
    };
    for cluster in kept {
        let _ = cluster.shut_down();
        let _ = fs::remove_dir_all(cluster.dir.path());
    }
    let templates = match TEMPLATES.try_lock() {
        Ok(mut templates) => std::mem::take(&mut *templates),
        Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => Vec::new(),
    };
    for template in templates {
        let _ = fs::remove_dir_all(template.root);
    }
}
