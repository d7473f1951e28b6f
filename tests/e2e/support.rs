//! Shared test support: one private PostgreSQL cluster for the tests that do
//! not interfere (each gets its own database, slot and publication), the
//! recording receiver, and the real `leadhook` binary run as a child process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use leadhook::throwaway::{Cluster, ClusterOptions, SLOT_IS_STREAMING};
use tokio_postgres::{Client, NoTls};

pub use leadhook::receiver::{ReceivedRequest, Receiver, Reply};

/// The leads table as the product documents it, plus a key and a timestamp.
pub const LEADS_TABLE: &str = "CREATE TABLE leads (
    id bigserial PRIMARY KEY,
    email text, company text, first_name text, last_name text, phone text,
    website text, position text, twitter text, linkedin text, notes text,
    score integer,
    updated_at timestamptz DEFAULT now()
)";

/// How long a test waits for what it expects before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Short enough that keepalive bugs show up within a test.
pub const WAL_SENDER_TIMEOUT: &str = "4s";

/// The cluster shared by every test that does not restart or break Postgres.
pub fn shared_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<&'static Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start_cluster(ClusterOptions::default()).keep_until_exit())
}

/// A shared cluster with `wal_level = replica`, as on databases where logical
/// replication is not allowed: notify mode's home.
pub fn shared_replica_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<&'static Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        start_cluster(ClusterOptions {
            wal_level: leadhook::throwaway::WalLevel::Replica,
            ..ClusterOptions::default()
        })
        .keep_until_exit()
    })
}

/// A cluster of the test's own, for tests that restart or reconfigure it.
pub fn start_cluster(options: ClusterOptions) -> Cluster {
    let options = options
        .setting("wal_sender_timeout", WAL_SENDER_TIMEOUT)
        // Every test on the shared cluster leaves a slot behind.
        .setting("max_replication_slots", "100")
        .setting("max_wal_senders", "50")
        .setting("max_connections", "200");
    match Cluster::start(options) {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start a private PostgreSQL cluster for the tests: {e}"),
    }
}

/// A database of the test's own on a cluster, with the leads table; its
/// name doubles as the slot and publication name.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub sql: Client,
}

impl TestDb {
    pub async fn create(cluster: &Cluster, prefix: &str) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(&cluster.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = cluster.url(&name);
        let sql = connect(&url).await;
        sql.batch_execute(LEADS_TABLE)
            .await
            .expect("create leads table");
        TestDb { name, url, sql }
    }

    /// A config for this database; `webhooks` is appended verbatim.
    pub fn config(&self, webhooks: &str) -> String {
        format!(
            "[database]\nurl = \"{url}?sslmode=disable\"\n\n[source]\nslot = \"{name}\"\npublication = \"{name}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[delivery]\ntimeout = \"2s\"\n\n{webhooks}\n",
            url = self.url,
            name = self.name
        )
    }

    /// A notify-mode config for this database (outbox polled every 200 ms).
    pub fn notify_config(&self, webhooks: &str) -> String {
        self.config(webhooks).replace(
            "[source]\n",
            "[source]\nmode = \"notify\"\npoll_interval = \"200ms\"\n",
        )
    }

    /// Waits until the sidecar streams: a walsender holds the slot. Every
    /// change committed from then on is captured. (`active` alone is not
    /// enough: the slot shows active while it is still being created, and
    /// changes committed before its consistent point are never decoded.)
    pub async fn wait_streaming(&self, sidecar: &mut Sidecar) {
        wait_slot_streaming(&self.sql, &self.name, sidecar).await;
    }

    /// Commits one lead per score in `scores`, each in its own transaction.
    pub async fn insert_scores(&self, scores: std::ops::RangeInclusive<i32>) {
        insert_scores(&self.sql, scores).await;
    }

    /// The end of everything written so far: the insert position (with
    /// `synchronous_commit = off` the write position can trail a commit).
    pub async fn insert_lsn(&self) -> String {
        wal_insert_lsn(&self.sql).await
    }

    /// Whether this database's slot has confirmed everything up to `lsn`.
    pub async fn confirmed_past(&self, lsn: &str) -> bool {
        slot_confirmed_past(&self.sql, &self.name, lsn).await
    }

    /// WAL the slot still retains: the server's position minus the confirmed one.
    pub async fn retained_wal(&self) -> i64 {
        let row = self
            .sql
            .query_one(
                "SELECT (pg_current_wal_insert_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.name],
            )
            .await
            .expect("query slot");
        row.get(0)
    }
}

/// The server's WAL insert position.
pub async fn wal_insert_lsn(sql: &Client) -> String {
    sql.query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0)
}

/// Whether `slot` on the server behind `sql` has confirmed everything up to `lsn`.
pub async fn slot_confirmed_past(sql: &Client, slot: &str, lsn: &str) -> bool {
    sql.query_one(
        "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot, &lsn],
    )
    .await
    .expect("query slots")
    .get(0)
}

/// Waits until a walsender holds `slot` on the server behind `sql`.
pub async fn wait_slot_streaming(sql: &Client, slot: &str, sidecar: &mut Sidecar) {
    let deadline = Instant::now() + WAIT;
    loop {
        sidecar.assert_running();
        let streaming: bool = sql
            .query_one(SLOT_IS_STREAMING, &[&slot])
            .await
            .expect("query slots")
            .get(0);
        if streaming {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar did not start streaming; its log:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commits one lead per score, each in its own transaction.
pub async fn insert_scores(sql: &Client, scores: std::ops::RangeInclusive<i32>) {
    for score in scores {
        sql.execute(
            "INSERT INTO leads (email, score) VALUES ('lead' || $1::int || '@example.com', $1)",
            &[&score],
        )
        .await
        .expect("insert lead");
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The common start of a test: a database on the shared cluster, a
/// receiver, and a sidecar streaming to it as webhook "hook" at `/leads`.
pub async fn streaming_to_one_webhook(prefix: &str) -> (TestDb, Receiver, Sidecar) {
    let db = TestDb::create(shared_cluster(), prefix).await;
    let receiver = Receiver::start(0).await.expect("start receiver");
    let mut sidecar = Sidecar::start(&db.config(&webhook("hook", &receiver, "/leads")));
    db.wait_streaming(&mut sidecar).await;
    (db, receiver, sidecar)
}

/// A webhook entry pointing at `receiver` under `path`.
pub fn webhook(name: &str, receiver: &Receiver, path: &str) -> String {
    format!(
        "[[webhooks]]\nname = \"{name}\"\nurl = \"{}\"\n",
        receiver.url(path)
    )
}

/// The real `leadhook` binary, running a config written to a temp file.
/// Killed when dropped; its stderr is kept for assertions and failure output.
pub struct Sidecar {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sidecar {
    pub fn start(config: &str) -> Sidecar {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("sidecar.toml"), config).expect("write config");
        let child = leadhook_command(dir.path(), &["run"], env)
            .spawn()
            .expect("spawn leadhook");
        Sidecar { child, dir }
    }

    /// What the sidecar logged so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("sidecar exited with {status}; its log:\n{}", self.log());
        }
    }

    /// The admin endpoint's base URL, from the address it logged.
    pub async fn admin_url(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.assert_running();
            let log = self.log();
            if let Some(at) = log.find("admin=") {
                let addr: String = log[at + 6..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                return format!("http://{addr}");
            }
            assert!(Instant::now() < deadline, "no admin address logged:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the log contains `text`.
    pub async fn wait_log(&mut self, text: &str) {
        self.wait_log_within(text, Duration::from_secs(30)).await;
    }

    /// Waits up to `timeout` until the log contains `text`.
    pub async fn wait_log_within(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "never logged {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM: the graceful stop.
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGTERM) },
            0,
            "kill -TERM {pid}"
        );
    }

    /// Waits for the process to exit; its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to confirm or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same config again (after a kill).
    pub fn restart(&mut self) {
        self.kill();
        let log = self.log();
        std::fs::write(self.dir.path().join("previous.log"), log).expect("keep log");
        self.child = leadhook_command(self.dir.path(), &["run"], &[])
            .spawn()
            .expect("spawn leadhook");
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_state();
        }
        self.kill();
    }
}

impl Sidecar {
    /// For a failed test: the sidecar's threads' stacks (when gdb is
    /// installed) and its metrics, to tell where it was stuck.
    fn dump_state(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            if let Ok(out) = Command::new("gdb")
                .args(["-p", &pid, "-batch", "-ex", "thread apply all bt 30"])
                .output()
            {
                eprintln!(
                    "DIAG stacks of leadhook {pid}:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
        let log = self.log();
        if let Some(at) = log.find("admin=") {
            let addr: String = log[at + 6..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            if let Ok(out) = Command::new("curl")
                .args(["-s", &format!("http://{addr}/metrics")])
                .output()
            {
                for line in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
                {
                    eprintln!("DIAG metric {line}");
                }
            }
        }
    }
}

/// `leadhook ARGS --config DIR/sidecar.toml`, stderr to DIR/stderr.log.
pub fn leadhook_command(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadhook"));
    command
        .args(args)
        .arg("--config")
        .arg(dir.join("sidecar.toml"))
        .env(
            "RUST_LOG",
            std::env::var("E2E_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (key, value) in env {
        // An empty RUST_LOG means "not set": the config's [log] level applies.
        if *key == "RUST_LOG" && value.is_empty() {
            command.env_remove(key);
        } else {
            command.env(key, value);
        }
    }
    command
}

/// Runs `leadhook ARGS` on a config to completion: (exit code, stdout, stderr, time taken).
pub fn run_leadhook(
    config: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("sidecar.toml"), config).expect("write config");
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadhook"));
    command
        .args(args)
        .arg("--config")
        .arg(dir.path().join("sidecar.toml"))
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run leadhook");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// The distinct `score`s among delivered payloads (tests number leads by score).
pub fn scores_of(got: &[ReceivedRequest]) -> std::collections::HashSet<i64> {
    got.iter()
        .map(|r| data(r)["score"].as_i64().expect("score"))
        .collect()
}

/// Waits until every score 1..=n has arrived at `path` (redeliveries make
/// plain counts ambiguous); returns everything that arrived there.
pub async fn wait_for_scores(
    receiver: &Receiver,
    path: &str,
    n: i64,
    sidecar: &Sidecar,
) -> Vec<ReceivedRequest> {
    wait_for_these_scores(receiver, path, 1..=n, sidecar).await
}

/// Waits until every score in `scores` has arrived at `path`; returns
/// everything that arrived there.
pub async fn wait_for_these_scores(
    receiver: &Receiver,
    path: &str,
    scores: impl IntoIterator<Item = i64>,
    sidecar: &Sidecar,
) -> Vec<ReceivedRequest> {
    let wanted: Vec<i64> = scores.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = receiver.requests_to(path);
        let arrived = scores_of(&got);
        let missing: Vec<i64> = wanted
            .iter()
            .copied()
            .filter(|s| !arrived.contains(s))
            .collect();
        if missing.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "changes lost: scores {missing:?} never arrived; log:\n{}",
            sidecar.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `webhook-id`s of what arrived at `path`.
pub fn ids_of(got: &[ReceivedRequest]) -> std::collections::HashSet<String> {
    got.iter()
        .map(|r| r.header("webhook-id").expect("webhook-id").to_owned())
        .collect()
}

/// `receiver.wait_for`, but on a timeout prints the server's view (slots,
/// walsenders, sessions) and the sidecar's log before failing.
pub async fn wait_or_diagnose(
    receiver: &Receiver,
    path: &str,
    n: usize,
    db: &TestDb,
    sidecar: &Sidecar,
) -> Vec<ReceivedRequest> {
    match receiver.wait_for(path, n, Duration::from_secs(60)).await {
        Ok(got) => got,
        Err(e) => {
            for q in [
                "SELECT slot_name::text, active::text, coalesce(active_pid::text,''), restart_lsn::text, confirmed_flush_lsn::text, coalesce(catalog_xmin::text,'') FROM pg_replication_slots",
                "SELECT pid::text, application_name, state, sent_lsn::text, write_lsn::text, flush_lsn::text FROM pg_stat_replication",
                "SELECT pid::text, coalesce(datname::text,''), backend_type, coalesce(state,''), coalesce(wait_event_type,'') || ':' || coalesce(wait_event,''), left(coalesce(query,''), 80), coalesce(backend_xmin::text,''), coalesce(backend_xid::text,'') FROM pg_stat_activity",
                "SELECT pg_current_wal_insert_lsn()::text",
            ] {
                for row in db.sql.query(q, &[]).await.unwrap_or_default() {
                    let cols: Vec<String> = (0..row.len())
                        .map(|i| row.get::<_, Option<String>>(i).unwrap_or_default())
                        .collect();
                    eprintln!("DIAG {}", cols.join(" | "));
                }
            }
            let log = sidecar.log();
            if let Some(at) = log.find("admin=") {
                let addr: String = log[at + 6..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                if let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await {
                    let text = response.text().await.unwrap_or_default();
                    for line in text
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
                    {
                        eprintln!("DIAG metric {line}");
                    }
                }
            }
            panic!("{e:?}; log:\n{log}");
        }
    }
}

/// The `data` object of a delivered payload.
pub fn data(request: &ReceivedRequest) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("payload is JSON");
    body["data"].clone()
}

pub fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A scraped sample: metric name, labels, value.
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

pub async fn scrape(admin: &str) -> Vec<Sample> {
    leadhook_crypto();
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// The value of the series `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// One series' value from the sidecar's `/metrics` (0 when absent).
pub async fn metric(admin: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(admin).await, name, labels).unwrap_or(0.0)
}

/// reqwest (built without a default provider, like leadhook) needs one.
pub fn leadhook_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
