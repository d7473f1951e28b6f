//! The real `leadhook` binary as a child process, running a config written
//! to a temporary file: what every end-to-end test and the benchmark drive.

mod inspect;

pub use inspect::cpu_seconds;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::wait::{WAIT, eventually_within};

/// Where the `leadhook` binary is. Tests pass `env!("CARGO_BIN_EXE_leadhook")`;
/// the benchmark the binary built beside it.
#[derive(Debug, Clone)]
pub struct Leadhook {
    binary: PathBuf,
}

/// What a command that ran to completion did.
#[derive(Debug)]
pub struct Finished {
    /// None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    /// Fails the test, with what the command printed, unless it exited 0.
    pub fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "{}{}", self.stdout, self.stderr);
    }
}

impl Leadhook {
    pub fn at(binary: impl Into<PathBuf>) -> Leadhook {
        Leadhook {
            binary: binary.into(),
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `leadhook run` on `config`; panics (with the reason) if it cannot spawn.
    pub fn start(&self, config: &str) -> Sidecar {
        self.start_with_env(config, &[])
    }

    /// [`Self::start`] with extra environment variables. An empty `RUST_LOG`
    /// means "not set", so the config's `[log] level` applies.
    pub fn start_with_env(&self, config: &str, env: &[(&str, &str)]) -> Sidecar {
        self.spawn(config, env)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()))
    }

    /// [`Self::start_with_env`] for callers that report errors rather than panic.
    pub fn spawn(&self, config: &str, env: &[(&str, &str)]) -> std::io::Result<Sidecar> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("sidecar.toml"), config)?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let child = self.run_command(dir.path(), &env)?.spawn()?;
        Ok(Sidecar {
            leadhook: self.clone(),
            child: Mutex::new(child),
            env,
            dir,
        })
    }

    /// Runs `leadhook ARGS --config FILE` on `config` to completion.
    pub fn run(&self, config: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("sidecar.toml");
        std::fs::write(&path, config).expect("write the config");
        let started = Instant::now();
        let output = Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        Finished {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// `leadhook run --config DIR/sidecar.toml`, stderr to DIR/stderr.log.
    /// The log level is `info` unless `E2E_LOG` says otherwise.
    fn run_command(&self, dir: &Path, env: &[(String, String)]) -> std::io::Result<Command> {
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg("--config")
            .arg(dir.join("sidecar.toml"))
            .env(
                "RUST_LOG",
                std::env::var("E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (key, value) in env {
            if key == "RUST_LOG" && value.is_empty() {
                command.env_remove(key);
            } else {
                command.env(key, value);
            }
        }
        Ok(command)
    }
}

/// A running `leadhook run`. Killed when dropped; its stderr is kept for
/// assertions, and a failing test prints the process's state.
pub struct Sidecar {
    leadhook: Leadhook,
    /// A mutex so that waiting (which checks the process is alive) and
    /// explaining a timeout (which reads the log) can both borrow `self`.
    child: Mutex<Child>,
    /// Kept so [`Self::restart`] starts the process the same way.
    env: Vec<(String, String)>,
    /// The config and the logs; removed with the sidecar.
    dir: tempfile::TempDir,
}

impl Sidecar {
    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// What the sidecar logged so far (stderr) since it last started.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// How the process ended; None while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Panics, with the log, if the process has exited.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            panic!("sidecar exited with {status}; its log:\n{}", self.log());
        }
    }

    /// The admin endpoint's base URL, from the address it logged.
    pub async fn admin_url(&self) -> String {
        eventually_within(
            Duration::from_secs(20),
            "no admin address logged",
            || self.log(),
            async || {
                self.assert_running();
                self.logged_admin_url().is_some()
            },
        )
        .await;
        self.logged_admin_url().unwrap_or_default()
    }

    fn logged_admin_url(&self) -> Option<String> {
        let log = self.log();
        let at = log.find("admin=")?;
        let addr: String = log[at + 6..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        Some(format!("http://{addr}"))
    }

    /// Waits until the log contains `text`.
    pub async fn wait_log(&self, text: &str) {
        self.wait_log_within(text, Duration::from_secs(30)).await;
    }

    /// Waits up to `timeout` until the log contains `text`.
    pub async fn wait_log_within(&self, text: &str, timeout: Duration) {
        let what = format!("never logged {text:?}");
        eventually_within(
            timeout,
            &what,
            || self.log(),
            async || {
                let logged = self.log().contains(text);
                if !logged {
                    self.assert_running();
                }
                logged
            },
        )
        .await;
    }

    /// SIGTERM: the graceful stop.
    pub fn terminate(&self) {
        inspect::signal(self.pid(), libc::SIGTERM);
    }

    /// SIGHUP.
    pub fn hang_up(&self) {
        inspect::signal(self.pid(), libc::SIGHUP);
    }

    /// Waits for the process to exit; its status.
    pub async fn wait_exit(&self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        let what = format!("sidecar did not exit within {timeout:?}");
        eventually_within(
            timeout,
            &what,
            || self.log(),
            async || {
                status = self.exit_status();
                status.is_some()
            },
        )
        .await;
        status.expect("an exit status")
    }

    /// SIGKILL: no chance to confirm or clean up.
    pub fn kill(&self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the process and starts the same config again; the previous
    /// log moves to `previous.log`.
    pub fn restart(&self) {
        self.kill();
        let log = self.log();
        std::fs::write(self.dir.path().join("previous.log"), log).expect("keep the log");
        let child = self
            .leadhook
            .run_command(self.dir.path(), &self.env)
            .and_then(|mut command| command.spawn())
            .expect("restart leadhook");
        *self.child() = child;
    }

    /// Rewrites the config file in place (for a reload or the next restart).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("sidecar.toml"), config).expect("rewrite the config");
    }

    /// Waits until a walsender streams from `slot` on the server behind `sql`.
    pub async fn wait_streaming(&self, sql: &tokio_postgres::Client, slot: &str) {
        eventually_within(
            WAIT,
            "the sidecar did not start streaming",
            || format!("its log:\n{}", self.log()),
            async || {
                self.assert_running();
                crate::database::slot_is_streaming(sql, slot).await
            },
        )
        .await;
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_state();
        }
        self.kill();
    }
}
