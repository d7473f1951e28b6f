//! The HTTP clients webhooks share: one per network rule (any address, or
//! public addresses only for registry rows, see `guard`) and HTTP version
//! policy (`http2`), each with its own connection pool, so a webhook's
//! connections are never reused under another rule.

use std::time::Duration;

use crate::config::{Http2, WebhookConfig};

/// Every client, built once per process (a build loads the trusted roots).
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// Indexed by [`slot`].
    clients: [reqwest::Client; 6],
}

impl Clients {
    pub(crate) fn new() -> Result<Clients, reqwest::Error> {
        let build = |index: usize| http_client(index >= 3, Http2::ALL[index % 3]);
        Ok(Clients {
            clients: [
                build(0)?,
                build(1)?,
                build(2)?,
                build(3)?,
                build(4)?,
                build(5)?,
            ],
        })
    }

    /// The client `hook`'s requests go through.
    pub(crate) fn of(&self, hook: &WebhookConfig) -> &reqwest::Client {
        &self.clients[slot(hook.public_only, hook.http2)]
    }
}

fn slot(public_only: bool, http2: Http2) -> usize {
    let version = match http2 {
        Http2::Auto => 0,
        Http2::Always => 1,
        Http2::Never => 2,
    };
    usize::from(public_only) * 3 + version
}

/// A client for webhooks under this rule and version policy; the one place
/// the webhook client's settings live, so the guarded and the ordinary
/// client never drift apart.
pub(crate) fn http_client(
    public_only: bool,
    http2: Http2,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::database::install_crypto_provider();
    let builder = reqwest::Client::builder()
        .user_agent(concat!("leadhook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(30));
    let builder = match http2 {
        // Offers h2 and http/1.1 in ALPN; plain http is HTTP/1.1.
        Http2::Auto => builder,
        Http2::Always => builder.http2_prior_knowledge(),
        Http2::Never => builder.http1_only(),
    };
    match public_only {
        true => super::guard::guarded(builder).build(),
        false => builder.build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_and_version_has_a_client_of_its_own() {
        let slots: std::collections::HashSet<usize> = [false, true]
            .into_iter()
            .flat_map(|public| Http2::ALL.map(|v| slot(public, v)))
            .collect();
        assert_eq!(slots, (0..6).collect());
        assert_eq!(
            slot(false, Http2::Auto),
            0,
            "Clients::new builds slot i as i"
        );
        assert_eq!(slot(true, Http2::Never), 5);
        let started = std::time::Instant::now();
        Clients::new().expect("the clients");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
