//! The clusters tests share, and the usual start of a test: a database of
//! its own, a receiver, and a sidecar streaming to it.

use std::sync::OnceLock;

use crate::cluster::{Cluster, ClusterOptions, WalLevel};
use crate::config::{SidecarConfig, Webhook};
use crate::database::TestDb;
use crate::receiver::{ReceivedRequest, Receiver};
use crate::sidecar::{Leadhook, Sidecar};
use crate::wait::WAIT;

/// Short enough that keepalive bugs show up within a test.
pub const WAL_SENDER_TIMEOUT: &str = "4s";

/// What notify mode logs once it reads the outbox.
pub const DELIVERING_FROM_OUTBOX: &str = "delivering from the outbox";

/// The cluster shared by every test that does not restart or break Postgres
/// (each has its own database, slot and publication).
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
            wal_level: WalLevel::Replica,
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
    Cluster::start(options)
        .unwrap_or_else(|e| panic!("cannot start a private PostgreSQL cluster for the tests: {e}"))
}

/// A test's start, built up: `Scenario::new("flaky").webhook("hook", "/leads")`.
pub struct Scenario<'c> {
    prefix: String,
    /// None: the shared cluster of the mode.
    cluster: Option<&'c Cluster>,
    notify: bool,
    /// SQL run in the new database before the sidecar starts.
    setup: Vec<String>,
    /// Each webhook: its name, its receiver path and its own options; one
    /// plain "hook" at "/leads" if none.
    webhooks: Vec<(String, String, WebhookChange)>,
    changes: Vec<ConfigChange>,
    env: Vec<(String, String)>,
}

type WebhookChange = Box<dyn FnOnce(&mut Webhook)>;
type ConfigChange = Box<dyn FnOnce(&mut SidecarConfig)>;

/// A started scenario: everything a test then drives and asserts on.
pub struct Running {
    pub db: TestDb,
    pub receiver: Receiver,
    pub sidecar: Sidecar,
    /// The config the sidecar runs, for restarts with changes.
    pub config: SidecarConfig,
}

impl<'c> Scenario<'c> {
    /// `prefix` names the test's database (and slot and publication).
    pub fn new(prefix: &str) -> Scenario<'c> {
        Scenario {
            prefix: prefix.to_owned(),
            cluster: None,
            notify: false,
            setup: Vec::new(),
            webhooks: Vec::new(),
            changes: Vec::new(),
            env: Vec::new(),
        }
    }

    /// On a cluster of the test's own.
    pub fn on(mut self, cluster: &'c Cluster) -> Scenario<'c> {
        self.cluster = Some(cluster);
        self
    }

    /// Notify mode, on the shared `wal_level = replica` cluster unless [`Self::on`].
    pub fn notify(mut self) -> Scenario<'c> {
        self.notify = true;
        self
    }

    /// SQL (any number of statements) run in the test's database once it has
    /// the leads table and before the sidecar starts: the other tables,
    /// publications or table changes a test starts from.
    pub fn setup(mut self, sql: impl Into<String>) -> Scenario<'c> {
        self.setup.push(sql.into());
        self
    }

    /// A webhook `name` delivering to the receiver at `path`.
    pub fn webhook(self, name: &str, path: &str) -> Scenario<'c> {
        self.webhook_with(name, path, |_| {})
    }

    /// [`Self::webhook`] with options of its own, e.g.
    /// `.webhook_with("hook", "/leads", |w| w.delivery.max_attempts = Some(2))`:
    /// the receiver's URL is only known once the scenario starts.
    pub fn webhook_with(
        mut self,
        name: &str,
        path: &str,
        change: impl FnOnce(&mut Webhook) + 'static,
    ) -> Scenario<'c> {
        self.webhooks
            .push((name.to_owned(), path.to_owned(), Box::new(change)));
        self
    }

    /// Any other config change, applied after the webhooks are added.
    pub fn configure(mut self, change: impl FnOnce(&mut SidecarConfig) + 'static) -> Scenario<'c> {
        self.changes.push(Box::new(change));
        self
    }

    /// An environment variable for the sidecar.
    pub fn env(mut self, key: &str, value: &str) -> Scenario<'c> {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Creates the database (and runs [`Self::setup`] in it) and the
    /// receiver, starts the sidecar and waits until it captures every change
    /// committed from then on.
    pub async fn start(self, leadhook: &Leadhook) -> Running {
        let cluster = match (self.cluster, self.notify) {
            (Some(cluster), _) => cluster,
            (None, false) => shared_cluster(),
            (None, true) => shared_replica_cluster(),
        };
        let db = TestDb::create(cluster, &self.prefix).await;
        for sql in &self.setup {
            db.sql
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("set up the database with {sql:?}: {e}"));
        }
        let receiver = Receiver::start(0).await.expect("start a receiver");
        let mut config = db.config();
        if self.notify {
            config = config.notify();
        }
        let webhooks = if self.webhooks.is_empty() {
            let plain: WebhookChange = Box::new(|_| {});
            vec![("hook".to_owned(), "/leads".to_owned(), plain)]
        } else {
            self.webhooks
        };
        for (name, path, change) in webhooks {
            config = config.webhook(Webhook::to(&receiver, &name, &path).with(change));
        }
        for change in self.changes {
            change(&mut config);
        }
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let sidecar = leadhook.start_with_env(&config.to_toml(), &env);
        if self.notify {
            sidecar.wait_log(DELIVERING_FROM_OUTBOX).await;
        } else {
            db.wait_streaming(&sidecar).await;
        }
        Running {
            db,
            receiver,
            sidecar,
            config,
        }
    }
}

/// `receiver.wait_for`, but on a timeout prints the server's view (slots,
/// walsenders, sessions) and the sidecar's log before failing (the sidecar
/// adds its stacks and metrics as it is dropped).
pub async fn wait_or_diagnose(
    receiver: &Receiver,
    path: &str,
    n: usize,
    db: &TestDb,
    sidecar: &Sidecar,
) -> Vec<ReceivedRequest> {
    match receiver.wait_for(path, n, WAIT).await {
        Ok(got) => got,
        Err(e) => {
            print_server_view(db).await;
            // The sidecar prints its stacks and metrics as it is dropped.
            panic!("{e:?}; log:\n{}", sidecar.log());
        }
    }
}

async fn print_server_view(db: &TestDb) {
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
}
