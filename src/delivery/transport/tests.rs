use super::*;

fn endpoint(url: &str) -> Endpoint {
    let toml = format!(
        "[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\nname = \"a\"\nurl = \"{url}\"\n"
    );
    let config = crate::config::Config::from_toml(&toml).expect("a config");
    let hook = &config.webhooks[0];
    Endpoint::new(hook.url.expose(), hook, &HeaderMap::new())
}

#[test]
fn the_request_target_and_host_are_prepared_from_the_url_once() {
    let plain = endpoint("http://partner.example:8080/hooks/leads?tenant=7");
    assert_eq!(plain.target, "/hooks/leads?tenant=7");
    assert_eq!(plain.host_header, "partner.example:8080");
    assert_eq!(
        plain.absolute,
        "http://partner.example:8080/hooks/leads?tenant=7"
    );
    let default_port = endpoint("https://partner.example/");
    assert_eq!(default_port.target, "/");
    assert_eq!(default_port.host_header, "partner.example");
    // A fragment is the sender's business, never sent.
    assert_eq!(endpoint("https://partner.example/in#part").target, "/in");
}

#[test]
fn credentials_leave_the_url_and_become_a_sensitive_basic_authorization() {
    let with = endpoint("https://partner:s%3Acret@partner.example/leads");
    let authorization = with
        .authorization
        .as_ref()
        .expect("an Authorization header");
    // base64("partner:s:cret")
    assert_eq!(authorization, "Basic cGFydG5lcjpzOmNyZXQ=");
    assert!(authorization.is_sensitive());
    assert_eq!(with.absolute, "https://partner.example/leads");
    assert_eq!(with.host_header, "partner.example");
    assert!(
        endpoint("https://partner.example/leads")
            .authorization
            .is_none()
    );
}

#[test]
fn a_configured_authorization_header_wins_over_credentials_in_the_url() {
    let with = endpoint("https://partner:secret@partner.example/leads");
    let mut configured = HeaderMap::new();
    configured.insert(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer configured"),
    );
    with.authorize(&mut configured);
    assert_eq!(
        configured[reqwest::header::AUTHORIZATION],
        "Bearer configured"
    );
    assert_eq!(configured.len(), 1);
    let mut none = HeaderMap::new();
    with.authorize(&mut none);
    assert_eq!(
        none[reqwest::header::AUTHORIZATION],
        "Basic cGFydG5lcjpzZWNyZXQ="
    );
}
