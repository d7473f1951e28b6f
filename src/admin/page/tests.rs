use std::time::{Duration, SystemTime};

use super::*;

fn status(webhooks: Vec<WebhookStatus>) -> Status {
    Status {
        version: "0.1.0",
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        source: SourceStatus {
            mode: "replication",
            table: "public.leads".into(),
            slot: Some("leadhook".into()),
            connected: true,
            not_ready: None,
            lag_bytes: Some(3 * 1024 * 1024),
        },
        window_minutes: 5,
        webhooks,
    }
}

fn hook(name: &str, state: &'static str) -> WebhookStatus {
    WebhookStatus {
        name: name.into(),
        origin: "file",
        url: "https://partner.example/hooks".into(),
        method: "POST".into(),
        state,
        last_success_at: None,
        last_failure_at: None,
        last_failure: None,
        delivered_recently: 0,
        failed_recently: 0,
        lag_p50_seconds: None,
        lag_p99_seconds: None,
        in_flight: 0,
        spooled: 0,
        dead_letters: None,
        problem: None,
    }
}

#[test]
fn the_page_shows_each_webhook_with_its_state_and_figures() {
    let mut crm = hook("CRM", "failing");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    crm.last_failure_at = Some(now - Duration::from_secs(90));
    crm.last_failure = Some("HTTP 500".into());
    crm.delivered_recently = 12;
    crm.lag_p50_seconds = Some(0.0004);
    crm.lag_p99_seconds = Some(0.25);
    crm.dead_letters = Some(2);
    let page = render(Some(&status(vec![crm, hook("Mailer", "paused")]))).into_string();
    for expected in [
        r#"<meta http-equiv="refresh" content="5">"#,
        r#"<article data-webhook="CRM" data-state="failing">"#,
        r#"data-state="paused""#,
        "1 min ago",
        "HTTP 500",
        "12 in 5 min",
        "400 µs / 250.0 ms",
        "3.0 MiB of WAL",
        "2 webhooks",
        "public.leads",
    ] {
        assert!(page.contains(expected), "{expected:?} in {page}");
    }
    assert!(!page.contains("<script"), "no scripts");
}

#[test]
fn what_an_endpoint_answered_is_escaped_not_markup() {
    let mut evil = hook("<b>x</b>", "failing");
    evil.last_failure = Some("<script>alert(1)</script>".into());
    let page = render(Some(&status(vec![evil]))).into_string();
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("&lt;b&gt;x&lt;/b&gt;"));
}

#[test]
fn before_the_first_snapshot_the_page_says_it_is_starting() {
    let page = render(None).into_string();
    assert!(page.contains("Starting"), "{page}");
    assert!(page.contains("refresh"));
}

#[test]
fn durations_and_sizes_read_as_people_say_them() {
    assert_eq!(ago_text(Duration::from_secs(5)), "5 s ago");
    assert_eq!(
        ago_text(Duration::from_secs(3 * 3600 + 120)),
        "3 h 2 min ago"
    );
    assert_eq!(ago_text(Duration::from_secs(3 * 86400)), "3 days ago");
    assert_eq!(seconds(2.5), "2.50 s");
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
}
