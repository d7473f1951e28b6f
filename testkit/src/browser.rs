//! Headless Chromium (Debian's `chromium` package): a page loaded, laid out
//! and serialised by a real browser, or photographed, as a person would see
//! it. Each run gets a profile directory of its own, so tests in parallel
//! never share one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "install Debian's chromium package (`apt-get install chromium`), put chromium on PATH, or set LEADHOOK_CHROMIUM to its binary";
/// A page that takes longer than this to load is a failure.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `LEADHOOK_CHROMIUM`, else `chromium` or `chromium-browser` on PATH;
/// panics with how to install it.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("LEADHOOK_CHROMIUM") {
        return PathBuf::from(path);
    }
    ["chromium", "chromium-browser"]
        .into_iter()
        .find_map(crate::on_path)
        .unwrap_or_else(|| panic!("chromium not found: {INSTALL_HINT}"))
}

/// The DOM of `url` after it loaded, as Chromium serialises it.
pub fn dump_dom(url: &str) -> String {
    let output = headless(&["--dump-dom".to_owned(), url.to_owned()]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A PNG of `url` in a window of `width` × `height` pixels, written to `to`.
pub fn screenshot(url: &str, to: &Path, (width, height): (u32, u32)) {
    headless(&[
        format!("--screenshot={}", to.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_owned(),
        url.to_owned(),
    ]);
    assert!(
        to.is_file(),
        "chromium wrote no screenshot to {}",
        to.display()
    );
}

/// Runs Chromium headless with `args`; panics (with its stderr) unless it
/// exits with success within [`TIMEOUT`].
fn headless(args: &[String]) -> Output {
    let profile = tempfile::tempdir().expect("a profile directory");
    let child = Command::new(chromium())
        .args([
            "--headless",
            // Sessions and CI run as root, where the sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromium ({e}): {INSTALL_HINT}"));
    let started = Instant::now();
    let pid = child.id() as libc::pid_t;
    // Read its output while it runs (a large DOM would fill the pipe).
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match output.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("chromium's output"),
        Err(_) => {
            // SAFETY: a plain syscall on the child's pid, still unreaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("chromium {args:?} did not finish within {TIMEOUT:?}");
        }
    };
    assert!(
        output.status.success(),
        "chromium {args:?} failed ({}; {:?} after start): {}",
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
