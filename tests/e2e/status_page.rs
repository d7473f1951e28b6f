//! The status page (`GET /`) and `GET /api/status`, loaded in a real
//! headless Chromium against a running sidecar with a healthy, a failing
//! and a paused webhook: each state shows, with its figures and its last
//! failure, and no header value, secret, URL credential, query or path
//! token does.

use leadhook_testkit::browser;
use serde_json::Value;

use crate::support::*;

const HEADER_SECRET: &str = "Bearer page-header-s3cret";
const SIGNING_SECRET: &str = "whsec_cGFnZS1zaWduaW5nLXNlY3JldA==";
const URL_PASSWORD: &str = "url-passw0rd";
const QUERY_TOKEN: &str = "query-t0ken";
const PATH_TOKEN: &str = "path-t0ken";

/// The webhook called `name` in the status JSON.
fn webhook<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["webhooks"]
        .as_array()
        .and_then(|hooks| hooks.iter().find(|h| h["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {status:#}"))
}

/// The `<article>` of webhook `name` in the rendered DOM.
fn card<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("data-webhook=\"{name}\""))
        .unwrap_or_else(|| panic!("a card for {name} in the page:\n{dom}"));
    let end = dom[start..]
        .find("</article>")
        .map_or(dom.len(), |end| start + end);
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_healthy_a_failing_and_a_paused_webhook_in_a_real_browser() {
    install_crypto_provider();
    let run = Scenario::new("statuspage")
        .webhook_with("healthy", "/ok", |w| {
            // Credentials in the URL, a header and a signing secret: none
            // may show.
            w.url = w
                .url
                .replacen("http://", &format!("http://partner:{URL_PASSWORD}@"), 1)
                + &format!("?token={QUERY_TOKEN}");
            w.headers
                .insert("Authorization".into(), HEADER_SECRET.into());
            w.secret = Some(SIGNING_SECRET.into());
        })
        // A token in the path, as Slack's and Zapier's hooks have it.
        .webhook_with("failing", &format!("/down/{PATH_TOKEN}"), |w| {
            quick_retries(w);
            // Failing, not yet spooling, however slow the machine.
            w.delivery.spool_after = Some(std::time::Duration::from_secs(600));
        })
        .webhook("paused", "/paused")
        .start(&leadhook())
        .await;
    run.receiver
        .set_responder(|request, _| match request.path.starts_with("/down") {
            true => Reply::status(500),
            false => Reply::ok(),
        });
    run_command(&run.config, &["webhooks", "pause", "paused"])
        .await
        .assert_success();
    run.sidecar
        .wait_log("paused: its changes wait in the spool")
        .await;
    run.db.insert_leads(1..=3).await;
    wait_for_these_scores(&run.receiver, "/ok", 1..=3, &run.sidecar).await;
    let admin = run.sidecar.admin_url().await;

    // The snapshot is taken every 2 s: wait until it shows all three.
    let last = std::sync::Mutex::new(Value::Null);
    eventually(
        "the status shows the three states, the failures and the spooled changes",
        || format!("{:#}", last.lock().expect("the last status")),
        async || {
            let body = reqwest::get(format!("{admin}/api/status"))
                .await
                .expect("GET /api/status")
                .text()
                .await
                .expect("a body");
            let status: Value = serde_json::from_str(&body).expect("JSON");
            let failing = webhook(&status, "failing");
            let shown = webhook(&status, "healthy")["state"] == "healthy"
                && failing["state"] == "failing"
                && failing["failed_recently"].as_u64() >= Some(2)
                && webhook(&status, "paused")["state"] == "paused"
                && webhook(&status, "paused")["spooled"].as_u64() == Some(3);
            *last.lock().expect("the last status") = status;
            shown
        },
    )
    .await;
    let status = last.into_inner().expect("the last status");
    let healthy = webhook(&status, "healthy");
    assert_eq!(healthy["delivered_recently"], 3, "{status:#}");
    assert!(healthy["lag_p99_seconds"].as_f64().is_some_and(|s| s > 0.0));
    assert!(healthy["last_success_at"].is_string());
    assert_eq!(
        healthy["url"],
        run.receiver.url("/ok"),
        "no credentials, no query"
    );
    assert_eq!(
        webhook(&status, "failing")["url"],
        run.receiver.url("/down/…"),
        "the path after its first segment masked"
    );
    assert_eq!(webhook(&status, "failing")["last_failure"], "HTTP 500");
    assert_eq!(status["source"]["mode"], "replication");
    assert_eq!(status["source"]["connected"], true);

    let dom = tokio::task::spawn_blocking({
        let url = format!("{admin}/");
        move || browser::dump_dom(&url)
    })
    .await
    .expect("chromium ran");
    for (name, state) in [
        ("healthy", "healthy"),
        ("failing", "failing"),
        ("paused", "paused"),
    ] {
        let card = card(&dom, name);
        assert!(
            card.contains(&format!("data-state=\"{state}\""))
                && card.contains(&format!("class=\"state {state}\">{state}</span>")),
            "{name} shows {state}: {card}"
        );
    }
    assert!(card(&dom, "failing").contains("HTTP 500"), "{dom}");
    assert!(card(&dom, "healthy").contains("3 in 5 min"), "{dom}");
    assert!(
        card(&dom, "paused").contains("<dt>Spooled</dt><dd>3</dd>"),
        "{dom}"
    );
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "it refreshes itself"
    );
    assert!(dom.contains("name=\"viewport\""), "it reads on a phone");
    assert!(
        !dom.contains("src=") && !dom.contains("<link"),
        "no external assets: {dom}"
    );
    let json = status.to_string();
    for secret in [
        HEADER_SECRET,
        "page-header-s3cret",
        SIGNING_SECRET,
        URL_PASSWORD,
    ] {
        assert!(!dom.contains(secret), "{secret} on the page");
        assert!(!json.contains(secret), "{secret} in /api/status");
    }

    // And as a phone shows it.
    let dir = tempfile::tempdir().expect("a directory");
    let path = dir.path().join("status.png");
    let url = format!("{admin}/");
    let png = tokio::task::spawn_blocking(move || {
        browser::screenshot(&url, &path, (390, 844));
        std::fs::read(&path).expect("the screenshot")
    })
    .await
    .expect("chromium ran");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a PNG with something on it: {} bytes",
        png.len()
    );
}
