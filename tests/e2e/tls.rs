//! `sslmode` on both connections, against a cluster serving a certificate
//! signed by a CA made in the test.

use std::time::Duration;

use leadhook_testkit::pki::Pki;

use crate::support::*;

/// A cluster serving `pki`'s server certificate.
fn tls_cluster(pki: &Pki) -> Cluster {
    start_cluster(
        ClusterOptions::default()
            .setting("ssl", "on")
            .setting(
                "ssl_cert_file",
                pki.path("server.crt").display().to_string(),
            )
            .setting("ssl_key_file", pki.path("server.key").display().to_string()),
    )
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
    let tls = query.replace("ROOT", &pki.path("ca.pem").display().to_string());
    let Running {
        db,
        receiver,
        sidecar: _sidecar,
        ..
    } = Scenario::new("tls")
        .on(cluster)
        .configure(move |c| c.database.url = c.database.url.replace("?sslmode=disable", &tls))
        .start(&leadhook())
        .await;
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
    let cluster = tls_cluster(&pki);
    streams_over_tls(&pki, &cluster, "?sslmode=require").await;
    streams_over_tls(&pki, &cluster, "?sslmode=verify-full&sslrootcert=ROOT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_certificate_it_cannot_trust() {
    let pki = Pki::new();
    let other = Pki::new();
    let cluster = tls_cluster(&pki);
    let db = TestDb::create(&cluster, "tls_bad").await;
    let config = db.config().with(|c| {
        c.database.url = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            db.url,
            other.path("ca.pem").display()
        );
    });
    let Finished { code, stdout, .. } = leadhook().run(&config.to_toml(), &["check"], &[]);
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
        .config()
        .with(|c| c.database.url = format!("{}?sslmode=require", db.url));
    let Finished { code, stdout, .. } = leadhook().run(&config.to_toml(), &["check"], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("problem  cannot connect to") && stdout.contains("TLS"),
        "{stdout}"
    );
}
