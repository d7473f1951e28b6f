//! `leadhook demo`: a newcomer's first run. A throwaway PostgreSQL with a
//! sample `leads` table, a built-in receiver, and the real sidecar pipeline;
//! a few leads are saved and each webhook is printed as it arrives. Nothing
//! is left running afterwards.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;
use leadhook_testkit::cluster::{Cluster, ClusterOptions};
use leadhook_testkit::database::{LEADS_TABLE, try_slot_is_streaming};
use leadhook_testkit::receiver::{ReceivedRequest, Receiver};

/// What the demo does to the table, and how many webhooks that makes.
const STEPS: [(&str, &str); 4] = [
    (
        "INSERT two leads in one transaction",
        "BEGIN;
         INSERT INTO leads (email, company, first_name, last_name, website, score)
              VALUES ('ada@example.com', 'Analytical Engines', 'Ada', 'Lovelace', 'https://example.com', 10);
         INSERT INTO leads (email, first_name, twitter, score) VALUES ('grace@example.com', 'Grace', '@grace', 0);
         COMMIT;",
    ),
    ("UPDATE a lead's score and notes", "UPDATE leads SET score = 42, notes = 'Met at the conference ✓' WHERE email = 'ada@example.com'"),
    ("DELETE a lead (not an event: nothing is sent)", "DELETE FROM leads WHERE email = 'grace@example.com'"),
    ("ROLLBACK an insert (nothing is sent)", "BEGIN; INSERT INTO leads (email) VALUES ('never@example.com'); ROLLBACK;"),
];
const EXPECTED_DELIVERIES: usize = 3;

/// Runs the demo; with `keep_running`, the sidecar, the receiver and the
/// status page stay up after the steps (printing what arrives) until it
/// completes.
pub async fn run(
    out: &mut impl Write,
    keep_running: Option<impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "leadhook demo: a throwaway PostgreSQL, a receiver, and the real sidecar pipeline.\n"
    )?;
    writeln!(
        out,
        "Starting PostgreSQL (wal_level = logical) in a temporary directory..."
    )?;
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default()))
        .await
        .context("starting PostgreSQL")??;
    let url = format!("{}?sslmode=disable", cluster.url("postgres"));
    let sql = crate::database::Database::from_url(&url)?.sql().await?;
    sql.batch_execute(LEADS_TABLE)
        .await
        .context("creating the sample leads table")?;
    writeln!(out, "  created table leads on port {}", cluster.port())?;

    let receiver = Receiver::start(0)
        .await
        .context("starting the demo receiver")?;
    let mut arrivals = receiver.subscribe();
    let config = Config::from_toml(&demo_config(&url, &receiver.url("/webhooks/leads")))
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    writeln!(
        out,
        "  receiver listening on {}",
        receiver.url("/webhooks/leads")
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound, admin) = tokio::sync::oneshot::channel();
    let mut sidecar = tokio::spawn(crate::sidecar::run(
        config,
        None,
        async {
            let _ = stopped.await;
        },
        Some(bound),
    ));
    let Ok(admin) = admin.await else {
        // It ended before listening: say why.
        sidecar.await.context("the sidecar task failed")??;
        bail!("the sidecar stopped before its admin endpoint listened");
    };
    writeln!(
        out,
        "  status page on http://{admin}/ (up while the demo runs)"
    )?;
    wait_until_streaming(&sql, &sidecar).await?;
    writeln!(out, "  sidecar streaming from slot \"leadhook\"\n")?;

    for (what, statement) in STEPS {
        writeln!(out, "SQL: {what}")?;
        sql.batch_execute(statement)
            .await
            .with_context(|| format!("running: {what}"))?;
    }
    writeln!(out)?;
    for n in 1..=EXPECTED_DELIVERIES {
        let request = tokio::time::timeout(Duration::from_secs(20), arrivals.recv())
            .await
            .with_context(|| {
                format!("webhook {n} of {EXPECTED_DELIVERIES} did not arrive within 20 s")
            })?
            .context("receiver stopped")?;
        print_delivery(out, n, &request)?;
    }
    if let Some(until) = keep_running {
        writeln!(
            out,
            "Still running: the status page is on http://{admin}/ and every lead saved is delivered.\n\
             Try: psql '{url}' -c \"INSERT INTO leads (email, score) VALUES ('you@example.com', 7)\"\n\
             Press Ctrl-C to stop.\n"
        )?;
        out.flush()?;
        tokio::pin!(until);
        let mut n = EXPECTED_DELIVERIES;
        loop {
            tokio::select! {
                () = &mut until => break,
                // Not while it should run: its page would freeze unexplained.
                ended = &mut sidecar => {
                    ended.context("the sidecar task failed")??;
                    bail!("the sidecar stopped while the demo was running");
                }
                request = arrivals.recv() => match request {
                    Ok(request) => {
                        n += 1;
                        print_delivery(out, n, &request)?;
                        out.flush()?;
                    }
                    // Lagged behind the receiver: go on with the next.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }
    // A graceful stop, as SIGTERM does: confirm what was delivered, close.
    let _ = stop.send(());
    sidecar.await.context("the sidecar task failed")??;
    drop(cluster);
    writeln!(
        out,
        "Done: {} webhooks delivered, PostgreSQL stopped and removed.\n\
         Next: point sidecar.toml at your database, then `leadhook check` and `leadhook run`.",
        receiver.requests().len()
    )?;
    Ok(())
}

fn demo_config(database_url: &str, receiver_url: &str) -> String {
    format!(
        r#"
[database]
url = "{database_url}"
[source]
table = "public.leads"
[admin]
listen = "127.0.0.1:0"
[[webhooks]]
name = "Demo receiver"
url = "{receiver_url}"
headers = {{ Authorization = "Bearer demo-token" }}
"#
    )
}

/// Once a walsender holds the slot the sidecar streams, and every change
/// committed from then on is captured.
async fn wait_until_streaming(
    sql: &tokio_postgres::Client,
    sidecar: &tokio::task::JoinHandle<Result<(), crate::sidecar::SidecarError>>,
) -> anyhow::Result<()> {
    for _ in 0..300 {
        if sidecar.is_finished() {
            bail!("the sidecar stopped during startup (see the log above)");
        }
        if try_slot_is_streaming(sql, "leadhook").await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the sidecar did not start streaming within 15 s")
}

fn print_delivery(out: &mut impl Write, n: usize, request: &ReceivedRequest) -> anyhow::Result<()> {
    writeln!(
        out,
        "Webhook {n} received: {} {}",
        request.method, request.path
    )?;
    for name in ["content-type", "authorization", "webhook-id", "user-agent"] {
        if let Some(value) = request.header(name) {
            writeln!(out, "  {name}: {value}")?;
        }
    }
    // The body exactly as delivered (pretty-printing would reorder the keys).
    writeln!(out, "  {}\n", String::from_utf8_lossy(&request.body))?;
    Ok(())
}
