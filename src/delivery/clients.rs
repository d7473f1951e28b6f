//! The reqwest clients webhooks share, for `webhooks test` and for
//! webhooks behind a proxy (deliveries otherwise go through each webhook's
//! own connections, see `transport`): one per network rule (any address,
//! or public addresses only for registry rows, see `guard`) and HTTP
//! version policy (`http2`), each with its own connection pool, so a
//! webhook's connections are never reused under another rule.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::transport::Transport;
use crate::config::{Http2, WebhookConfig};

/// Every client, each built when a webhook first needs it (a build loads
/// the trusted roots, and each pool costs memory), then shared.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clients {
    /// Indexed by [`slot`].
    built: Arc<[OnceLock<reqwest::Client>; SLOTS]>,
}

/// Network rules × version policies.
const SLOTS: usize = 2 * Http2::ALL.len();

impl Clients {
    /// The client `hook`'s requests go through, built if it is the first
    /// webhook under its rule and policy.
    pub(crate) fn of(&self, hook: &WebhookConfig) -> Result<reqwest::Client, reqwest::Error> {
        let slot = &self.built[slot(hook.public_only, hook.http2)];
        if let Some(client) = slot.get() {
            return Ok(client.clone());
        }
        let client = http_client(hook.public_only, hook.http2)?;
        Ok(slot.get_or_init(|| client).clone())
    }

    /// How `hook`'s requests reach its endpoint: its own connections, or
    /// this client when the environment names a proxy for its URL.
    pub(crate) fn transport(&self, hook: &WebhookConfig) -> Result<Transport, reqwest::Error> {
        Transport::new(hook, super::request::own_headers(hook), || self.of(hook))
    }
}

fn slot(public_only: bool, http2: Http2) -> usize {
    let version = match http2 {
        Http2::Auto => 0,
        Http2::Always => 1,
        Http2::Never => 2,
    };
    usize::from(public_only) * Http2::ALL.len() + version
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
    // A timed-out request resets only its stream: without pings a dead
    // HTTP/2 connection would keep taking every request to its host.
    let h2 = |builder: reqwest::ClientBuilder| {
        builder
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_keep_alive_timeout(Duration::from_secs(5))
            .http2_keep_alive_while_idle(true)
    };
    let builder = match http2 {
        // Offers h2 and http/1.1 in ALPN; plain http is HTTP/1.1.
        Http2::Auto => h2(builder),
        Http2::Always => h2(builder).http2_prior_knowledge(),
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
        assert_eq!(slots, (0..SLOTS).collect());
    }

    #[test]
    fn a_client_is_built_once_and_only_for_what_a_webhook_needs() {
        let config = crate::config::Config::from_toml(
            "[database]\nurl = \"postgres://x@h/db\"\n[[webhooks]]\nname = \"a\"\nurl = \"https://a.example/\"\nhttp2 = \"never\"\n",
        )
        .expect("a config");
        let clients = Clients::default();
        let hook = &config.webhooks[0];
        clients.of(hook).expect("a client");
        clients.of(hook).expect("the same client");
        let built: Vec<usize> = (0..SLOTS)
            .filter(|i| clients.built[*i].get().is_some())
            .collect();
        assert_eq!(built, [slot(false, Http2::Never)]);
    }
}
