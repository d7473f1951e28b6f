//! The postmaster process and the keeper thread that owns it.

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};

use super::{ClusterError, POLL_INTERVAL, STOP_TIMEOUT, io_error};

/// A postmaster and the keeper thread that spawned it and alone reaps it.
///
/// The keeper exists because PDEATHSIG fires when the spawning *thread*
/// exits, and test runners give each test its own thread; the keeper lives
/// exactly as long as the server. Signals go through the keeper too, since
/// only the thread that reaps a pid can signal it without racing pid reuse.
pub(super) struct Postmaster {
    /// Signals for the keeper to deliver to the postmaster.
    signals: mpsc::Sender<libc::c_int>,
    /// The exit status, sent by the keeper once the postmaster is gone.
    exit: mpsc::Receiver<String>,
    /// Joined after exit, so nothing of the server outlives a stop.
    keeper: JoinHandle<()>,
}

impl Postmaster {
    pub(super) fn spawn(command: Command) -> Result<Postmaster, ClusterError> {
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
    pub(super) fn exit_status(&mut self) -> Option<String> {
        match self.exit.try_recv() {
            Ok(status) => Some(status),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some("exited".to_owned()),
        }
    }

    /// Fast shutdown (SIGINT); SIGKILL if that takes longer than STOP_TIMEOUT.
    pub(super) fn shut_down(self, port: u16) -> Result<(), ClusterError> {
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
pub(super) fn keep(
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

pub(super) fn wait_delivering_signals(
    child: &mut Child,
    signals: &mpsc::Receiver<libc::c_int>,
) -> String {
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

pub(super) fn send_signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: the child is not reaped yet (only this thread reaps it), so the
    // pid is still ours and cannot have been reused.
    unsafe { libc::kill(pid, signal) };
}
