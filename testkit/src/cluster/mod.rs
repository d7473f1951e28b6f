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

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self};
use std::time::{Duration, Instant};

mod binaries;
mod error;
mod history;
mod options;
mod postmaster;
mod server_user;
mod template;
#[cfg(test)]
mod tests;

pub use binaries::PgBinaries;
pub use error::ClusterError;
pub(crate) use error::io_error;
pub use history::DataCopy;
use options::conf_line;
pub use options::{ClusterOptions, WalLevel};
use postmaster::Postmaster;
use server_user::{ServerUser, die_with_parent, give_to, pg_command, server_user};
use template::{KEPT, register_exit_cleanup, temp_dir, template};

/// Superuser name and password of every cluster (also the OS user that runs
/// the server when we are root).
pub(crate) const SUPERUSER: &str = "postgres";
pub(crate) const PASSWORD: &str = "postgres";
const READY_LINE: &str = "database system is ready to accept connections";
/// What a hot standby logs instead.
const STANDBY_READY_LINE: &str = "database system is ready to accept read-only connections";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Attempts at a fresh random port when another process grabbed ours first.
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 30;
/// Longest unix socket path the kernel accepts (sun_path) minus the NUL.
const MAX_SOCKET_PATH: usize = 107;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Makes `path` the server's own, for files a test points the server at and
/// it insists on owning (a TLS key): as root, every cluster's server runs as
/// `postgres`; otherwise it runs as the current user and nothing changes.
pub fn give_to_server(path: &Path) -> Result<(), ClusterError> {
    give_to(path, server_user()?)
}

impl Cluster {
    /// Copies the process's initdb'd template (running initdb the first time),
    /// configures it and starts `postgres` on a free 127.0.0.1 port. Blocks
    /// until the server accepts connections; see the module docs for async use.
    pub fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let template = template(options.binaries.as_ref())?;
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
            eprintln!("throwaway PostgreSQL did not shut down cleanly: {error}");
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
