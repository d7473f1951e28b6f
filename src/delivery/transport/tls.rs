//! TLS for webhooks: the system's trusted roots (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` are honoured), loaded once, with the ALPN offer of each
//! `http2` policy.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};

use crate::config::Http2;

/// The settings of each policy, in [`Http2::ALL`]'s order; or why there
/// are none.
type Configs = [Result<Arc<ClientConfig>, String>; Http2::ALL.len()];

/// The TLS settings of connections under `http2`: `auto` offers h2 and
/// http/1.1, `always` h2, `never` http/1.1.
pub(super) fn config(http2: Http2) -> Result<Arc<ClientConfig>, String> {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        let roots = Arc::new(system_roots());
        Http2::ALL.map(|policy| build(policy, &roots).map(Arc::new))
    });
    let index = Http2::ALL.iter().position(|p| *p == http2).unwrap_or(0);
    configs[index].clone()
}

fn build(http2: Http2, roots: &Arc<RootCertStore>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = match http2 {
        Http2::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Http2::Always => vec![b"h2".to_vec()],
        Http2::Never => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}

fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "a trusted root certificate could not be loaded");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    roots
}
