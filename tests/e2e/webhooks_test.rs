//! `leadhook webhooks test NAME`: one sample `save_lead`, sent as a delivery
//! is, and what came back. It needs no database, so these tests have none:
//! the config's database URL points where nothing answers.

use std::io::ErrorKind;
use std::net::TcpListener;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::support::*;

/// Nothing listens here; a command that needed the database would fail.
const NO_DATABASE: &str = "postgres://leadhook@127.0.0.1:1/leads";
/// The Standard Webhooks reference secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "Bearer s3cret-token";
/// The documented payload with the sample values, exactly.
const SAMPLE: &str = r#"{"data":{"email":"jane.doe@example.com","company":"Example Corp","first_name":"Jane","last_name":"Doe","phone":"+1 555 0100","website":"https://example.com","position":"Head of Partnerships","twitter":"@janedoe","linkedin":"https://www.linkedin.com/in/janedoe","notes":"Test event sent by leadhook webhooks test","score":42}}"#;

/// `leadhook webhooks test NAME` on `config`, off the test's thread: the
/// receiver it talks to runs on that thread.
async fn webhooks_test(config: &SidecarConfig, name: &str) -> Finished {
    let (config, name) = (config.to_toml(), name.to_owned());
    tokio::task::spawn_blocking(move || leadhook().run(&config, &["webhooks", "test", &name], &[]))
        .await
        .expect("the command ran")
}

/// A port nothing listens on: bound, then closed again.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The lines of the output that start with `prefix`.
fn lines<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test]
async fn a_test_event_reaches_a_disabled_webhook_once_with_its_method_headers_signature_and_the_sample_payload()
 {
    let receiver = Receiver::start(0).await.unwrap();
    // A database that accepts connections and records them: there must be none.
    let database = TcpListener::bind("127.0.0.1:0").unwrap();
    database.set_nonblocking(true).unwrap();
    let url = format!(
        "postgres://leadhook@{}/leads",
        database.local_addr().unwrap()
    );
    let hook = Webhook::to(&receiver, "crm", "/leads")
        .header("Authorization", TOKEN)
        .secret(SECRET)
        .with(|w| {
            w.method = Some("PUT".into());
            w.enabled = Some(false);
        });
    let Finished {
        code,
        stdout,
        stderr,
        ..
    } = webhooks_test(&SidecarConfig::new(url).webhook(hook), "crm").await;

    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let status = lines(&stdout, "< HTTP/");
    assert_eq!(status.len(), 1, "{stdout}");
    assert!(status[0].starts_with("< HTTP/1.1 200 OK in "), "{stdout}");
    assert!(lines(&stdout, "hint:").is_empty(), "{stdout}");
    assert!(stdout.contains("is disabled"), "{stdout}");
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "exactly one request: {got:?}");
    let request = &got[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.header("authorization"), Some(TOKEN));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let id = request.header("webhook-id").unwrap();
    assert!(id.starts_with("test_"), "{id}");
    assert!(
        stdout.contains(&format!("sending test event {id} ")),
        "{stdout}"
    );
    assert_eq!(std::str::from_utf8(&request.body).unwrap(), SAMPLE);
    let key = STANDARD.decode(&SECRET["whsec_".len()..]).unwrap();
    assert_signed(request, &key);
    assert_eq!(
        database.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "the command connected to the database"
    );
}

#[tokio::test]
async fn the_output_names_the_request_headers_but_never_shows_their_values_the_secret_or_the_url_credentials()
 {
    let receiver = Receiver::start(0).await.unwrap();
    let url = format!(
        "http://partner:pa55word@{}/leads?key=query-s3cret",
        receiver.addr()
    );
    let hook = Webhook::new("crm", url)
        .header("Authorization", TOKEN)
        .secret(SECRET);
    let Finished {
        code,
        stdout,
        stderr,
        ..
    } = webhooks_test(&SidecarConfig::new(NO_DATABASE).webhook(hook), "crm").await;

    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(receiver.requests().len(), 1);
    let shown = format!("> POST http://{}/leads\n", receiver.addr());
    assert!(stdout.contains(&shown), "{stdout}");
    for header in ["authorization", "webhook-id", "webhook-signature"] {
        let line = format!("> {header}: [redacted]\n");
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
    }
    for secret in ["s3cret-token", &SECRET[6..], "pa55word", "query-s3cret"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret:?} shown in:\n{stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn a_receiver_answering_500_fails_the_test_once_with_a_hint_that_deliveries_would_be_retried()
{
    let receiver = Receiver::start(0).await.unwrap();
    receiver.set_responder(|_, _| Reply::status(500).with_header("x-request-id", "r-17"));
    let hook = Webhook::to(&receiver, "crm", "/leads");
    let Finished {
        code,
        stdout,
        stderr,
        ..
    } = webhooks_test(&SidecarConfig::new(NO_DATABASE).webhook(hook), "crm").await;

    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(receiver.requests().len(), 1, "a test is never retried");
    let status = lines(&stdout, "< HTTP/");
    assert_eq!(status.len(), 1, "{stdout}");
    assert!(
        status[0].starts_with("< HTTP/1.1 500 Internal Server Error in "),
        "{stdout}"
    );
    assert!(stdout.contains("< x-request-id: r-17\n"), "{stdout}");
    let hints = lines(&stdout, "hint:");
    assert_eq!(hints.len(), 1, "{stdout}");
    assert!(
        hints[0].contains("receiver error") && hints[0].contains("retried"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_closed_port_fails_the_test_with_a_hint_about_the_refused_connection() {
    let url = format!("http://127.0.0.1:{}/leads", closed_port());
    let config = SidecarConfig::new(NO_DATABASE).webhook(Webhook::new("crm", url));
    let Finished {
        code,
        stdout,
        stderr,
        ..
    } = webhooks_test(&config, "crm").await;

    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(lines(&stdout, "< HTTP/").is_empty(), "{stdout}");
    assert_eq!(lines(&stdout, "! no answer after ").len(), 1, "{stdout}");
    let hints = lines(&stdout, "hint:");
    assert_eq!(hints.len(), 1, "{stdout}");
    assert!(hints[0].contains("connection refused"), "{stdout}");
}

#[tokio::test]
async fn an_unknown_webhook_name_is_an_error_that_lists_the_configured_names() {
    let config = SidecarConfig::new(NO_DATABASE)
        .webhook(Webhook::new("crm", "http://127.0.0.1:9/a"))
        .webhook(Webhook::new("erp", "http://127.0.0.1:9/b"));
    let Finished {
        code,
        stdout,
        stderr,
        ..
    } = webhooks_test(&config, "cmr").await;

    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(r#"no webhook named "cmr" in the config; configured: "crm", "erp""#),
        "{stderr}"
    );
}
