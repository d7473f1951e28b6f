//! Every config error stops `run` and `check` at once, naming the key.
//!
//! The configs here are TOML text, not the typed builder: what they test is
//! the file itself (bad syntax, unknown keys, values leadhook must refuse),
//! which the builder cannot and should not express. The one valid config,
//! in the test of what reaches the log, is the builder's.

use std::time::Duration;

use crate::support::*;

const BASE: &str = "[database]\nurl = \"postgres://u@127.0.0.1:1/db\"\n";

fn hook(fields: &str) -> String {
    format!("{BASE}[[webhooks]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/x\"\n{fields}\n")
}

/// Runs both commands on `config`; each must fail fast with `expected` on stderr.
fn assert_rejected(config: &str, env: &[(&str, &str)], expected: &str) {
    for command in ["run", "check"] {
        let Finished {
            code, stderr, took, ..
        } = leadhook().run(config, &[command], env);
        assert_eq!(
            code,
            Some(2),
            "{command}: exit code for {expected:?}; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{command}: expected {expected:?} in:\n{stderr}"
        );
        assert!(took < Duration::from_secs(1), "{command} took {took:?}");
    }
}

#[test]
fn bad_toml_is_reported_with_its_file() {
    assert_rejected("[database\nurl = 1", &[], "sidecar.toml");
}

#[test]
fn an_unknown_key_is_named() {
    assert_rejected(
        &format!("{BASE}[source]\nslot_name = \"x\"\n"),
        &[],
        "source.slot_name: unknown field",
    );
}

#[test]
fn a_bad_webhook_url_is_named() {
    assert_rejected(
        &format!("{BASE}[[webhooks]]\nname = \"a\"\nurl = \"localhost/leads\"\n"),
        &[],
        "webhooks[0].url: not a valid URL",
    );
}

#[test]
fn a_duplicate_webhook_name_is_named() {
    let config = format!(
        "{}[[webhooks]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/y\"\n",
        hook("")
    );
    assert_rejected(
        &config,
        &[],
        "webhooks[1].name: duplicate webhook name \"a\"",
    );
}

#[test]
fn an_unsupported_method_is_named() {
    assert_rejected(
        &hook("method = \"DELETE\""),
        &[],
        "webhooks[0].method: unsupported method \"DELETE\"",
    );
}

#[test]
fn an_unknown_event_is_named() {
    assert_rejected(
        &hook("events = [\"save_lead\", \"delete_lead\"]"),
        &[],
        "webhooks[0].events: unknown event \"delete_lead\"",
    );
}

#[test]
fn a_missing_environment_variable_is_named() {
    assert_rejected(
        &hook("headers = { Authorization = \"Bearer ${LEADHOOK_E2E_UNSET_TOKEN}\" }"),
        &[],
        "webhooks[0].headers.Authorization: environment variable LEADHOOK_E2E_UNSET_TOKEN is not set",
    );
}

#[test]
fn an_unknown_environment_override_is_named() {
    assert_rejected(
        BASE,
        &[("LEADHOOK_DATABASE__URLL", "x")],
        "database.urll: unknown field",
    );
}

#[test]
fn a_missing_config_file_says_how_to_point_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(leadhook().binary())
        .args(["run", "--config"])
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("config file not found (pass --config PATH or set LEADHOOK_CONFIG)")
    );
}

#[test]
fn a_bad_database_url_stops_run_with_the_reason() {
    let Finished {
        code, stderr, took, ..
    } = leadhook().run(
        "[database]\nurl = \"postgres://u@h/db?sslmode=sometimes\"\n",
        &["run"],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("database.url: sslmode=sometimes is not supported"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(1));
}

#[test]
fn secrets_never_reach_the_logs_while_the_database_is_unreachable() {
    // A valid config (the builder's): its subject is the log, not the file.
    let config = SidecarConfig::new("postgres://app:db-pa55word@127.0.0.1:1/app").webhook(
        Webhook::new("a", "http://user:url-pa55word@127.0.0.1:9/x")
            .header("Authorization", "Bearer ${E2E_TOKEN}"),
    );
    let sidecar = leadhook().start_with_env(
        &config.to_toml(),
        &[("E2E_TOKEN", "tok-pa55word"), ("RUST_LOG", "debug")],
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sidecar.exit_status().is_none(),
        "an unreachable database is retried, not fatal"
    );
    sidecar.kill();
    let log = sidecar.log();
    assert!(
        log.contains("reconnecting") && log.contains("postgres://app@127.0.0.1:1/app"),
        "{log}"
    );
    assert!(
        !log.contains("pa55word"),
        "a secret reached the log:\n{log}"
    );
}
