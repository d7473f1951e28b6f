//! `leadhook demo`, as a newcomer runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::leadhook;

/// Its cluster's directories are named after its pid; they must be gone.
fn assert_nothing_left_behind(pid: u32) {
    let prefix = format!("leadhook-pg-{pid}-");
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("the temporary directory")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn demo_shows_the_deliveries_and_leaves_nothing_behind() {
    let child = Command::new(leadhook().binary())
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run leadhook demo");
    let pid = child.id();
    let output = child.wait_with_output().expect("wait for leadhook demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for n in 1..=3 {
        assert!(
            stdout.contains(&format!("Webhook {n} received: POST /webhooks/leads")),
            "{stdout}"
        );
    }
    assert!(
        !stdout.contains("Webhook 4"),
        "the delete and the rollback send nothing: {stdout}"
    );
    assert!(
        stdout.contains(r#"{"data":{"email":"ada@example.com","company":"Analytical Engines""#),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"score\":42}}"),
        "the update arrives: {stdout}"
    );
    assert!(
        stdout.contains("status page on http://127.0.0.1:"),
        "the status page's URL: {stdout}"
    );
    assert_nothing_left_behind(pid);
}

#[test]
fn demo_keep_running_keeps_its_status_page_up_until_stopped() {
    let mut child = Command::new(leadhook().binary())
        .args(["demo", "--keep-running"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run leadhook demo --keep-running");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
    let mut page = None;
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("a line of output");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(url) = line.trim().strip_prefix("status page on ") {
            page = url.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("Press Ctrl-C to stop") {
            break;
        }
    }
    let page = page.unwrap_or_else(|| panic!("no status page URL printed: {seen}"));
    // After the steps, the page is still served, with the demo's webhook.
    std::thread::sleep(std::time::Duration::from_secs(3));
    crate::support::install_crypto_provider();
    let html = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async { reqwest::get(&page).await?.text().await })
        .unwrap_or_else(|e| panic!("GET {page}: {e}"));
    assert!(
        html.contains("data-webhook=\"Demo receiver\"") && html.contains("data-state=\"healthy\""),
        "{html}"
    );
    // SAFETY: a plain syscall on our own child's pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait for the demo");
    assert!(status.success(), "{seen}{}", rest.join("\n"));
    assert!(
        rest.iter()
            .any(|l| l.starts_with("Done: 3 webhooks delivered")),
        "{rest:?}"
    );
    assert_nothing_left_behind(pid);
}
