//! A private, throwaway PostgreSQL cluster for `leadhook demo`, the tests and
//! the benchmark.
//!
//! Each [`Cluster`] runs its own `postgres` on a random 127.0.0.1 port out of a
//! temporary directory, so nothing touches a system PostgreSQL and nothing is
//! left behind: the directory goes on drop (or at exit, for
//! [`Cluster::keep_until_exit`]) and the server gets SIGINT if the process dies.
//!
//! Everything here blocks (std::process, std::thread). From async code, call it
//! at the top of a test or from `tokio::task::spawn_blocking`; a start blocks
//! its thread for a few hundred milliseconds (about 2 s for the first one in a
//! process, which runs initdb).

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, Once, PoisonError, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod history;
pub use history::DataCopy;

/// Environment variable naming the directory with `initdb` and `postgres`.
const PG_BIN_ENV: &str = "LEADHOOK_PG_BIN";
/// Debian's layout; the last place [`PgBinaries::find`] looks.
const DEBIAN_INSTALL_ROOT: &str = "/usr/lib/postgresql";
/// Superuser name and password of every cluster (also the OS user that runs
/// the server when we are root).
const SUPERUSER: &str = "postgres";
const PASSWORD: &str = "postgres";
const READY_LINE: &str = "database system is ready to accept connections";
/// What a hot standby logs instead.
const STANDBY_READY_LINE: &str = "database system is ready to accept read-only connections";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Attempts at a fresh random port when another process grabbed ours first.
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 30;
/// Prefix of every temporary directory, so stale ones can be recognised.
const DIR_PREFIX: &str = "leadhook-pg-";
/// Longest unix socket path the kernel accepts (sun_path) minus the NUL.
const MAX_SOCKET_PATH: usize = 107;

const PG_HBA: &str = "\
local all all trust
host all all 127.0.0.1/32 md5
host replication all 127.0.0.1/32 md5
";

/// Whether a walsender holds the slot named `$1`, i.e. streams from it.
/// Not `pg_replication_slots.active`: that is also true while the slot is
/// still being created, before its consistent point, when changes committed
/// are not captured.
pub const SLOT_IS_STREAMING: &str = "SELECT EXISTS (SELECT 1 FROM pg_replication_slots s
    JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)";

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
fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let action = action.into();
    move |error| ClusterError::Io { action, error }
}

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

    /// [`Self::find`] with the environment value passed in, so tests need not
    /// mutate the process environment.
    fn find_with(env_dir: Option<OsString>) -> Result<PgBinaries, ClusterError> {
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

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// `pg_config --bindir`, if pg_config runs at all; Debian's may name a
/// directory without server binaries, which the caller's check skips.
fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default()
}

/// `ROOT/<version>/bin` for every version-named directory, newest first.
fn versioned_install_dirs(root: &Path) -> Vec<PathBuf> {
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
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

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
    fn as_str(self) -> &'static str {
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
}

impl ClusterOptions {
    /// Adds one postgresql.conf setting (builder style).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// One `name = 'value'` line of postgresql.conf, quoted so any value is taken literally.
fn conf_line(name: &str, value: &str) -> Result<String, ClusterError> {
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

/// The unprivileged account that runs initdb and postgres when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

/// `None` when we are not root: the server then runs as the current user.
fn server_user() -> Result<Option<ServerUser>, ClusterError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(SUPERUSER)
        .map(Some)
        .ok_or(ClusterError::NoServerUser)
}

fn lookup_user(name: &str) -> Option<ServerUser> {
    let name = CString::new(name).ok()?;
    // SAFETY: passwd is plain old data; all-zero is a valid value to be overwritten.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and the buffer length is its real size;
    // getpwnam_r (unlike getpwnam) touches no shared state.
    let status = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    (status == 0 && !found.is_null()).then_some(ServerUser {
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

/// Makes `path` the server user's, so initdb/postgres may use it.
fn give_to(path: &Path, user: Option<ServerUser>) -> Result<(), ClusterError> {
    let Some(user) = user else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_error(format!(
        "hand {} to the postgres user",
        path.display()
    )))
}

/// A command for a PostgreSQL program, run as the server user, in a
/// predictable locale (the log is parsed for English messages).
fn pg_command(program: PathBuf, user: Option<ServerUser>, cwd: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(cwd)
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

/// Makes the child get SIGINT (a fast shutdown) when the thread that spawned
/// it ends, which for a postmaster is its keeper thread: so a killed test
/// process takes its servers with it.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure only makes async-signal-safe calls and does not
        // allocate. std runs it after setuid, which would otherwise clear the setting.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl: then no signal would come.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// A fresh temporary directory named so [`sweep_stale_dirs`] can tell whose it is.
fn temp_dir(kind: &str) -> Result<tempfile::TempDir, ClusterError> {
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-{kind}-", std::process::id()))
        .tempdir()
        .map_err(io_error("create a temporary directory (check TMPDIR)"))
}

/// Removes directories left by processes that were killed before they could
/// clean up, unless a postmaster still runs in one.
fn sweep_stale_dirs() {
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
fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let pid: u32 = name
        .strip_prefix(DIR_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    // 0 and negative pids mean process groups to kill(2), never one process.
    libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 0)
}

fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists; pid is positive.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn postmaster_alive(data_dir: &Path) -> bool {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse().ok())
        .filter(|pid| *pid > 0)
        .is_some_and(process_alive)
}

/// The initdb'd data directory that every cluster in this process copies.
#[derive(Debug, Clone)]
struct Template {
    /// Found once per process; every cluster runs these.
    bins: PgBinaries,
    /// Owner of the template and every copy, found once per process.
    user: Option<ServerUser>,
    /// Directory to delete at exit.
    root: PathBuf,
    /// The initdb'd data directory inside `root`.
    data: PathBuf,
}

/// Not a OnceLock: a failed initdb is not cached, so the error stays typed
/// and a later call may retry. The mutex also makes concurrent first starts
/// wait for one initdb.
static TEMPLATE: Mutex<Option<Template>> = Mutex::new(None);

fn template() -> Result<Template, ClusterError> {
    let mut slot = lock(&TEMPLATE);
    if let Some(template) = slot.as_ref() {
        return Ok(template.clone());
    }
    let template = Template::create()?;
    register_exit_cleanup();
    *slot = Some(template.clone());
    Ok(template)
}

impl Template {
    fn create() -> Result<Template, ClusterError> {
        let bins = PgBinaries::find()?;
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Clusters handed out by [`Cluster::keep_until_exit`], stopped at exit.
static KEPT: Mutex<Vec<&'static Cluster>> = Mutex::new(Vec::new());

fn register_exit_cleanup() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the handler is a plain extern "C" fn that catches every panic.
        if unsafe { libc::atexit(clean_up_at_exit) } != 0 {
            tracing::warn!("could not register exit cleanup; throwaway PostgreSQL directories may be left in the temp dir");
        }
    });
}

extern "C" fn clean_up_at_exit() {
    let _ = std::panic::catch_unwind(clean_up_now);
}

/// Stops kept clusters and removes every directory; try_lock, because a
/// thread killed by exit may still hold a lock and waiting would hang exit.
fn clean_up_now() {
    let kept = match KEPT.try_lock() {
        Ok(mut kept) => std::mem::take(&mut *kept),
        Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => Vec::new(),
    };
    for cluster in kept {
        let _ = cluster.shut_down();
        let _ = fs::remove_dir_all(cluster.dir.path());
    }
    let template = match TEMPLATE.try_lock() {
        Ok(mut template) => template.take(),
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().take(),
        Err(TryLockError::WouldBlock) => None,
    };
    if let Some(template) = template {
        let _ = fs::remove_dir_all(template.root);
    }
}

/// A running (or stopped) private PostgreSQL server and its directory.
pub struct Cluster {
    /// Holds the data dir, socket and log; dropping it is the cleanup.
    dir: tempfile::TempDir,
    /// The binaries the template was made with, so versions never mix.
    bins: PgBinaries,
    /// Who the server runs as (None: the current user).
    user: Option<ServerUser>,
    /// Fixed after the first start so `start_again` comes back where clients expect it.
    port: u16,
    /// The running server; None while stopped. A mutex so exit cleanup can
    /// stop a cluster that is shared as `&'static`.
    postmaster: Mutex<Option<Postmaster>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &lock(&self.postmaster).is_some())
            .finish()
    }
}

impl Cluster {
    /// Copies the process's initdb'd template (running initdb the first time),
    /// configures it and starts `postgres` on a free 127.0.0.1 port. Blocks
    /// until the server accepts connections; see the module docs for async use.
    pub fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let template = template()?;
        let dir = temp_dir("cluster")?;
        give_to(dir.path(), template.user)?;
        let mut cluster = Cluster {
            dir,
            bins: template.bins,
            user: template.user,
            port: 0,
            postmaster: Mutex::new(None),
        };
        copy_dir(&template.data, &cluster.data_dir())?;
        cluster.write_config(&options)?;
        cluster.launch_on_free_port()?;
        Ok(cluster)
    }

    /// The TCP port on 127.0.0.1; stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres:postgres@127.0.0.1:PORT/DBNAME`
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{}/{dbname}",
            self.port
        )
    }

    /// Fast shutdown (SIGINT), waiting until the server has exited; the data
    /// stays for [`Self::start_again`]. Does nothing if already stopped.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        self.shut_down()
    }

    /// Starts the stopped server again, same port and settings. Does nothing
    /// if it is running.
    pub fn start_again(&mut self) -> Result<(), ClusterError> {
        if lock(&self.postmaster).is_some() {
            return Ok(());
        }
        self.launch()
    }

    /// [`Self::stop`] then [`Self::start_again`]: "PostgreSQL restarted mid-stream".
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.stop()?;
        self.start_again()
    }

    /// The server log so far, across restarts.
    pub fn server_log(&self) -> String {
        self.log_since(0)
    }

    /// Keeps this cluster for the rest of the process, e.g. in a test binary's
    /// static: it is stopped and its directory removed when the process exits
    /// normally (an atexit handler), since statics are never dropped.
    pub fn keep_until_exit(self) -> &'static Cluster {
        let kept: &'static Cluster = Box::leak(Box::new(self));
        lock(&KEPT).push(kept);
        register_exit_cleanup();
        kept
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The cluster's directory, or '' (no unix socket) when TMPDIR is too
    /// deep for a socket path.
    fn socket_dir(&self) -> String {
        let dir = self.dir.path().to_string_lossy();
        let fits = dir.len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH;
        if fits {
            dir.into_owned()
        } else {
            String::new()
        }
    }

    fn write_config(&self, options: &ClusterOptions) -> Result<(), ClusterError> {
        let socket_dir = self.socket_dir();
        let socket_dir = socket_dir.as_str();
        let defaults = [
            ("listen_addresses", "127.0.0.1"),
            ("unix_socket_directories", socket_dir),
            ("fsync", "off"),
            ("full_page_writes", "off"),
            ("synchronous_commit", "off"),
            ("wal_level", options.wal_level.as_str()),
            ("max_wal_senders", "20"),
            ("max_replication_slots", "20"),
            ("wal_sender_timeout", "5s"),
            ("logging_collector", "off"),
            ("lc_messages", "C"),
        ];
        let extra = options
            .settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        let mut config = String::from("\n# leadhook throwaway cluster\n");
        for (name, value) in defaults.into_iter().chain(extra) {
            config.push_str(&conf_line(name, value)?);
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(format!("open {}", path.display())))?;
        io::Write::write_all(&mut file, config.as_bytes())
            .map_err(io_error(format!("write {}", path.display())))
    }

    /// Starts on a random free port, trying another if someone else binds it
    /// between our probe and the server's bind.
    fn launch_on_free_port(&mut self) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            match self.launch() {
                Err(ClusterError::StartFailed { log_tail, .. })
                    if log_tail.contains("could not bind") && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn launch(&self) -> Result<(), ClusterError> {
        let log_start = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        let mut postmaster = Postmaster::spawn(self.postgres_command()?)?;
        if let Err(error) = self.wait_until_ready(&mut postmaster, log_start) {
            let _ = postmaster.shut_down(self.port);
            return Err(error);
        }
        *lock(&self.postmaster) = Some(postmaster);
        Ok(())
    }

    fn postgres_command(&self) -> Result<Command, ClusterError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_error("open the server log"))?;
        let log_for_stdout = log.try_clone().map_err(io_error("open the server log"))?;
        let mut command = pg_command(self.bins.tool("postgres"), self.user, self.dir.path());
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .stdout(log_for_stdout)
            .stderr(log);
        die_with_parent(&mut command);
        Ok(command)
    }

    /// Ready = the log (from this start on) says so and the port takes a TCP connection.
    fn wait_until_ready(
        &self,
        postmaster: &mut Postmaster,
        log_start: u64,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = postmaster.exit_status() {
                return Err(ClusterError::StartFailed {
                    port: self.port,
                    status,
                    log_tail: self.log_tail(log_start),
                });
            }
            let log = self.log_since(log_start);
            let log_says_ready = log.contains(READY_LINE) || log.contains(STANDBY_READY_LINE);
            if log_says_ready && TcpStream::connect_timeout(&address, START_TIMEOUT).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::StartTimeout {
                    port: self.port,
                    timeout: START_TIMEOUT,
                    log_tail: self.log_tail(log_start),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The log from byte `start` on (where one start of the server began).
    fn log_since(&self, start: u64) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        String::from_utf8_lossy(log.get(start..).unwrap_or_default()).into_owned()
    }

    fn log_tail(&self, start: u64) -> String {
        let log = self.log_since(start);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// `&self` so the exit cleanup can stop a cluster shared as `&'static`.
    fn shut_down(&self) -> Result<(), ClusterError> {
        let postmaster = lock(&self.postmaster).take();
        match postmaster {
            Some(postmaster) => postmaster.shut_down(self.port),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    /// Fast shutdown; the TempDir field then removes the directory.
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            tracing::warn!(%error, "throwaway PostgreSQL did not shut down cleanly");
        }
    }
}

fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(io_error("find a free port on 127.0.0.1"))
}

/// `cp -a`: keeps ownership and the 0700 mode postgres insists on.
fn copy_dir(from: &Path, to: &Path) -> Result<(), ClusterError> {
    let action = || format!("copy {} to {}", from.display(), to.display());
    let output = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|error| io_error(action())(error))?;
    if output.status.success() {
        return Ok(());
    }
    Err(ClusterError::Io {
        action: action(),
        error: io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
    })
}

/// A postmaster and the keeper thread that spawned it and alone reaps it.
///
/// The keeper exists because PDEATHSIG fires when the spawning *thread*
/// exits, and test runners give each test its own thread; the keeper lives
/// exactly as long as the server. Signals go through the keeper too, since
/// only the thread that reaps a pid can signal it without racing pid reuse.
struct Postmaster {
    /// Signals for the keeper to deliver to the postmaster.
    signals: mpsc::Sender<libc::c_int>,
    /// The exit status, sent by the keeper once the postmaster is gone.
    exit: mpsc::Receiver<String>,
    /// Joined after exit, so nothing of the server outlives a stop.
    keeper: JoinHandle<()>,
}

impl Postmaster {
    fn spawn(command: Command) -> Result<Postmaster, ClusterError> {
        let (signals, signal_rx) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel();
        let (spawned_tx, spawned) = mpsc::channel();
        let keeper = thread::Builder::new()
            .name("leadhook-pg-keeper".to_owned())
            .spawn(move || keep(command, &spawned_tx, &signal_rx, &exit_tx))
            .map_err(io_error("start a thread to own the postgres process"))?;
        let spawn_result = spawned.recv().unwrap_or_else(|_| {
            Err(io::Error::other(
                "the keeper thread died before spawning postgres",
            ))
        });
        if let Err(error) = spawn_result {
            let _ = keeper.join();
            return Err(io_error("run postgres")(error));
        }
        Ok(Postmaster {
            signals,
            exit,
            keeper,
        })
    }

    /// Some(status) once the postmaster has exited.
    fn exit_status(&mut self) -> Option<String> {
        match self.exit.try_recv() {
            Ok(status) => Some(status),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some("exited".to_owned()),
        }
    }

    /// Fast shutdown (SIGINT); SIGKILL if that takes longer than STOP_TIMEOUT.
    fn shut_down(self, port: u16) -> Result<(), ClusterError> {
        let _ = self.signals.send(libc::SIGINT);
        let result = match self.exit.recv_timeout(STOP_TIMEOUT) {
            Ok(_) | Err(RecvTimeoutError::Disconnected) => Ok(()),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.signals.send(libc::SIGKILL);
                let _ = self.exit.recv();
                Err(ClusterError::StopTimeout {
                    port,
                    timeout: STOP_TIMEOUT,
                })
            }
        };
        let _ = self.keeper.join();
        result
    }
}

/// The keeper thread: spawn, then deliver signals until the child exits.
fn keep(
    mut command: Command,
    spawned: &mpsc::Sender<io::Result<()>>,
    signals: &mpsc::Receiver<libc::c_int>,
    exit: &mpsc::Sender<String>,
) {
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = spawned.send(Err(error));
            return;
        }
    };
    let _ = spawned.send(Ok(()));
    let status = wait_delivering_signals(&mut child, signals);
    let _ = exit.send(status);
}

fn wait_delivering_signals(child: &mut Child, signals: &mpsc::Receiver<libc::c_int>) -> String {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => {}
            Err(error) => return format!("unknown ({error})"),
        }
        match signals.recv_timeout(POLL_INTERVAL) {
            Ok(signal) => send_signal(child, signal),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return child
                    .wait()
                    .map_or_else(|error| format!("unknown ({error})"), |s| s.to_string());
            }
        }
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: the child is not reaped yet (only this thread reaps it), so the
    // pid is still ours and cannot have been reused.
    unsafe { libc::kill(pid, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::sync::OnceLock;
    use tokio_postgres::{Client, NoTls};

    type TestResult = Result<(), Box<dyn Error>>;

    async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn show(client: &Client, setting: &str) -> Result<String, tokio_postgres::Error> {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
        row.try_get(0)
    }

    /// One cluster for tests that only read, kept the way test binaries will keep theirs.
    fn shared_cluster() -> Result<&'static Cluster, ClusterError> {
        static SHARED: OnceLock<&'static Cluster> = OnceLock::new();
        if let Some(cluster) = SHARED.get() {
            return Ok(cluster);
        }
        let cluster = Cluster::start(ClusterOptions::default())?;
        Ok(SHARED.get_or_init(|| cluster.keep_until_exit()))
    }

    #[tokio::test]
    async fn a_new_cluster_takes_password_logins_and_decodes_logically() -> TestResult {
        let cluster = shared_cluster()?;
        let client = connect(&cluster.url("postgres")).await?;
        assert_eq!(show(&client, "wal_level").await?, "logical");
        assert_eq!(show(&client, "fsync").await?, "off");
        assert_eq!(show(&client, "wal_sender_timeout").await?, "5s");
        assert!(cluster.server_log().contains(READY_LINE));
        assert_eq!(
            cluster.url("leads"),
            format!(
                "postgres://postgres:postgres@127.0.0.1:{}/leads",
                cluster.port()
            )
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_role_stored_as_md5_can_log_in() -> TestResult {
        let cluster = shared_cluster()?;
        let admin = connect(&cluster.url("postgres")).await?;
        admin
            .batch_execute(
                "SET password_encryption = 'md5'; \
                 CREATE ROLE legacy LOGIN PASSWORD 'legacy-secret'",
            )
            .await?;
        let stored: String = admin
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy'",
                &[],
            )
            .await?
            .try_get(0)?;
        assert!(stored.starts_with("md5"), "stored as {stored}");
        let url = format!(
            "postgres://legacy:legacy-secret@127.0.0.1:{}/postgres",
            cluster.port()
        );
        let legacy = connect(&url).await?;
        let user: String = legacy
            .query_one("SELECT current_user::text", &[])
            .await?
            .try_get(0)?;
        assert_eq!(user, "legacy");
        Ok(())
    }

    #[tokio::test]
    async fn options_set_wal_level_and_extra_settings() -> TestResult {
        let options = ClusterOptions {
            wal_level: WalLevel::Replica,
            ..ClusterOptions::default()
        }
        .setting("wal_sender_timeout", "4s");
        let cluster = Cluster::start(options)?;
        let client = connect(&cluster.url("postgres")).await?;
        assert_eq!(show(&client, "wal_level").await?, "replica");
        assert_eq!(show(&client, "wal_sender_timeout").await?, "4s");
        Ok(())
    }

    #[tokio::test]
    async fn data_survives_a_restart_on_the_same_port() -> TestResult {
        let mut cluster = Cluster::start(ClusterOptions::default())?;
        let port = cluster.port();
        let client = connect(&cluster.url("postgres")).await?;
        client
            .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
            .await?;
        cluster.restart()?;
        assert_eq!(cluster.port(), port);
        let client = connect(&cluster.url("postgres")).await?;
        let id: i32 = client
            .query_one("SELECT id FROM kept", &[])
            .await?
            .try_get(0)?;
        assert_eq!(id, 42);
        Ok(())
    }

    #[test]
    fn a_stopped_cluster_refuses_connections_and_a_dropped_one_leaves_nothing() -> TestResult {
        let mut cluster = Cluster::start(ClusterOptions::default())?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port()));
        cluster.stop()?;
        let refused = TcpStream::connect(address).map_err(|error| error.kind());
        assert_eq!(refused.err(), Some(io::ErrorKind::ConnectionRefused));
        cluster.start_again()?;
        let dir = cluster.dir.path().to_owned();
        drop(cluster);
        assert!(!dir.exists(), "{} was left behind", dir.display());
        assert!(TcpStream::connect(address).is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_cluster_outlives_the_thread_that_started_it() -> TestResult {
        // PDEATHSIG fires when the spawning thread ends; test threads end early.
        let cluster = thread::spawn(|| Cluster::start(ClusterOptions::default()))
            .join()
            .map_err(|_| "the starting thread panicked")??;
        thread::sleep(Duration::from_millis(200));
        let client = connect(&cluster.url("postgres")).await?;
        client.batch_execute("SELECT 1").await?;
        Ok(())
    }

    #[test]
    fn a_bogus_leadhook_pg_bin_is_an_error_that_says_what_to_set() {
        let bogus = OsString::from("/nonexistent/pg/bin");
        let error = PgBinaries::find_with(Some(bogus)).map(|_| ());
        let Err(error @ ClusterError::BadBinDir(_)) = error else {
            panic!("expected BadBinDir, got {error:?}");
        };
        let message = error.to_string();
        assert!(
            message.contains("LEADHOOK_PG_BIN is /nonexistent/pg/bin"),
            "{message}"
        );
        assert!(message.contains("directory containing"), "{message}");
    }

    #[test]
    fn install_dirs_are_tried_newest_version_first() -> TestResult {
        let root = tempfile::tempdir()?;
        for name in ["9.6", "15", "13", "common"] {
            fs::create_dir(root.path().join(name))?;
        }
        let found = versioned_install_dirs(root.path());
        let expected: Vec<PathBuf> = ["15", "13", "9.6"]
            .iter()
            .map(|v| root.path().join(v).join("bin"))
            .collect();
        assert_eq!(found, expected);
        Ok(())
    }

    #[test]
    fn settings_are_quoted_and_line_breaks_rejected() {
        let line = conf_line("application_name", r"it's a\b").map_err(|e| e.to_string());
        assert_eq!(line, Ok("application_name = 'it''s a\\\\b'\n".to_owned()));
        assert!(conf_line("work_mem", "1MB\nfsync = on").is_err());
        assert!(conf_line("bad name", "x").is_err());
    }

    #[test]
    fn only_our_directory_names_yield_an_owner_pid() {
        assert_eq!(owner_pid("leadhook-pg-1234-cluster-abc"), Some(1234));
        assert_eq!(owner_pid("leadhook-pg-0-cluster-abc"), None);
        assert_eq!(owner_pid("other-1234"), None);
    }
}
