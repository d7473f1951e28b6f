//! Who runs the server: as root, initdb and postgres run as the `postgres`
//! account; every PostgreSQL program runs in the C locale and dies with us.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ClusterError, SUPERUSER, io_error};

/// The unprivileged account that runs initdb and postgres when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServerUser {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// `None` when we are not root: the server then runs as the current user.
pub(super) fn server_user() -> Result<Option<ServerUser>, ClusterError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(SUPERUSER)
        .map(Some)
        .ok_or(ClusterError::NoServerUser)
}

pub(super) fn lookup_user(name: &str) -> Option<ServerUser> {
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
pub(super) fn give_to(path: &Path, user: Option<ServerUser>) -> Result<(), ClusterError> {
    let Some(user) = user else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_error(format!(
        "hand {} to the postgres user",
        path.display()
    )))
}

/// A command for a PostgreSQL program, run as the server user, in a
/// predictable locale (the log is parsed for English messages).
pub(super) fn pg_command(program: PathBuf, user: Option<ServerUser>, cwd: &Path) -> Command {
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
pub(super) fn die_with_parent(command: &mut Command) {
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
