//! A CA made for one test, and a server certificate it signed for
//! `localhost` and 127.0.0.1: what a TLS PostgreSQL and a TLS (HTTP/2)
//! receiver serve, and what the sidecar is told to trust.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// `ca.pem`, `server.crt` and `server.key` in a directory of their own,
/// removed with it.
pub struct Pki {
    dir: tempfile::TempDir,
    server_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a directory for the certificates");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a key"))
            .expect("the CA");
        let server_key = KeyPair::generate().expect("a key");
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("the server certificate");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write a certificate file");
        };
        write("ca.pem", ca.pem());
        write("server.crt", server.pem());
        write("server.key", server_key.serialize_pem());
        // A PostgreSQL server runs as `postgres` when we are root: it must
        // read the files, and insists its key is private to it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("open the directory");
        let key = dir.path().join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("close the key");
        crate::cluster::give_to_server(&key).expect("give the key to the server user");
        Pki {
            server_der: server.der().to_vec(),
            key_der: server_key.serialize_der(),
            dir,
        }
    }

    /// `ca.pem`, `server.crt` or `server.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rustls server config with the certificate, offering `alpn`
    /// (e.g. `h2`, `http/1.1`) in that order of preference.
    pub fn server_config(&self, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
        crate::install_crypto_provider();
        let chain = vec![CertificateDer::from(self.server_der.clone())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a server config");
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
