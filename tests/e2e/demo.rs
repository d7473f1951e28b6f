//! `leadhook demo`, as a newcomer runs it.

use std::process::{Command, Stdio};

use crate::support::leadhook;

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
    // Its cluster's directories are named after its pid; they must be gone.
    let prefix = format!("leadhook-pg-{pid}-");
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
