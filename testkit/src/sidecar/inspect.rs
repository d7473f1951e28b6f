//! Looking at the sidecar from outside, as an operator would: signals, its
//! memory and CPU from /proc, and its stacks and metrics when a test fails.

use std::process::Command;

use super::Sidecar;

/// Sends `signal` to our own child `pid`.
pub(super) fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: signalling our own child process, which is not reaped yet.
    let status = unsafe { libc::kill(pid, signal) };
    assert_eq!(status, 0, "kill -{signal} {pid}");
}

impl Sidecar {
    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        kib(status_field(self.pid(), "VmRSS:"))
    }

    /// The kernel's high-water mark of resident memory, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        kib(status_field(self.pid(), "VmHWM:"))
    }

    /// User + system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// For a failed test: the threads' stacks (when gdb is installed) and the
    /// metrics, to tell where it was stuck.
    pub(super) fn dump_state(&self) {
        let running = matches!(self.child().try_wait(), Ok(None));
        if running {
            let pid = self.pid().to_string();
            if let Ok(out) = Command::new("gdb")
                .args(["-p", &pid, "-batch", "-ex", "thread apply all bt 30"])
                .output()
            {
                eprintln!(
                    "DIAG stacks of leadhook {pid}:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        if let Some(admin) = self.logged_admin_url()
            && let Ok(out) = Command::new("curl")
                .args(["-s", &format!("{admin}/metrics")])
                .output()
        {
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
            {
                eprintln!("DIAG metric {line}");
            }
        }
    }
}

fn kib(value: Option<u64>) -> f64 {
    value.unwrap_or(0) as f64 / 1024.0
}

/// A `kB` field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User + system CPU seconds process `pid` has used, from /proc (0 when it
/// is gone). A child that exited but is not reaped yet still has its
/// figures there: that is how the benchmark reads what `wrk` used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let ticks = field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second.max(1.0)
}
