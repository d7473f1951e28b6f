//! `sslmode` on both connections, against a cluster serving a certificate
//! signed by a CA made in the test.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use leadhook::throwaway::{Cluster, ClusterOptions};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::support::*;

/// A CA, and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        // The server runs as `postgres` when we are root: it must read the
        // files, and insists its key is private to it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.path().join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path().join("server.key"), Some(uid), Some(gid)).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn cluster(&self) -> Cluster {
        start_cluster(
            ClusterOptions::default()
                .setting("ssl", "on")
                .setting("ssl_cert_file", self.path("server.crt"))
                .setting("ssl_key_file", self.path("server.key")),
        )
    }
}

fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!entry.is_null(), "no postgres user");
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// Whether the sidecar's SQL and replication connections both use TLS.
async fn leadhook_connections_use_tls(db: &TestDb) -> (bool, bool) {
    let row = db
        .sql
        .query_one(
            "SELECT bool_and(s.ssl) FILTER (WHERE a.backend_type = 'walsender'),
                    bool_and(s.ssl) FILTER (WHERE a.backend_type = 'client backend')
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'leadhook'",
            &[],
        )
        .await
        .unwrap();
    (
        row.get::<_, Option<bool>>(0).unwrap_or(false),
        row.get::<_, Option<bool>>(1).unwrap_or(false),
    )
}

async fn streams_over_tls(pki: &Pki, cluster: &Cluster, query: &str) {
    let db = TestDb::create(cluster, "tls").await;
    let receiver = Receiver::start(0).await.unwrap();
    let config = db
        .config(&webhook("hook", &receiver, "/leads"))
        .replace("?sslmode=disable", query);
    let config = config.replace("ROOT", &pki.path("ca.pem"));
    let mut sidecar = Sidecar::start(&config);
    db.wait_streaming(&mut sidecar).await;
    db.sql
        .batch_execute("INSERT INTO leads (email) VALUES ('tls@example.com')")
        .await
        .unwrap();
    let got = receiver
        .wait_for("/leads", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(data(&got[0])["email"], "tls@example.com");
    assert_eq!(
        leadhook_connections_use_tls(&db).await,
        (true, true),
        "both connections encrypted ({query})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_and_verify_full_encrypt_both_connections() {
    let pki = Pki::new();
    let cluster = pki.cluster();
    streams_over_tls(&pki, &cluster, "?sslmode=require").await;
    streams_over_tls(&pki, &cluster, "?sslmode=verify-full&sslrootcert=ROOT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_certificate_it_cannot_trust() {
    let pki = Pki::new();
    let other = Pki::new();
    let cluster = pki.cluster();
    let db = TestDb::create(&cluster, "tls_bad").await;
    let config = db.config("").replace(
        "?sslmode=disable",
        &format!("?sslmode=verify-full&sslrootcert={}", other.path("ca.pem")),
    );
    let (code, stdout, _, _) = run_leadhook(&config, &["check"], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("problem  cannot connect to")
            && stdout.contains("invalid peer certificate"),
        "{stdout}"
    );
}

#[tokio::test]
async fn sslmode_require_fails_against_a_server_without_tls() {
    let db = TestDb::create(shared_cluster(), "tls_none").await;
    let config = db
        .config("")
        .replace("?sslmode=disable", "?sslmode=require");
    let (code, stdout, _, _) = run_leadhook(&config, &["check"], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("problem  cannot connect to") && stdout.contains("TLS"),
        "{stdout}"
    );
}
