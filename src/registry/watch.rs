//! The task that keeps [`Wanted`] and the pauses up to date: it reads the
//! registry table, the pauses and the leads table's columns (at once when
//! the registry's channel rings, else every `poll_interval`), and reloads
//! the config file on SIGHUP. Reading goes on through database outages
//! (reconnecting); a reload of the file needs no database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::table::{self, RawRow, TableError};
use super::{Wanted, check_rows, pauses};
use crate::config::Config;
use crate::database::Database;

/// The longest wait between attempts to reach the database.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How often the pauses are read without a registry.
const POLL: Duration = Duration::from_secs(1);

/// What the sidecar watches: the webhooks wanted and the paused names.
pub(crate) struct Registry {
    pub(crate) wanted: watch::Receiver<Arc<Wanted>>,
    pub(crate) pauses: watch::Receiver<BTreeSet<String>>,
}

/// One look at the database.
struct Fetched {
    /// `None` without a `[registry]`.
    rows: Option<Vec<RawRow>>,
    pauses: BTreeSet<String>,
    columns: Option<BTreeSet<String>>,
}

/// Starts watching. `path` is the config file to read again on SIGHUP
/// (`None`: reloading is off, as for the demo).
pub(crate) fn start(config: Config, path: Option<PathBuf>, db: Database) -> Registry {
    let (fetched_tx, fetched) = mpsc::channel(1);
    tokio::spawn(fetch(config.clone(), db, fetched_tx));
    let wanted = Wanted {
        config,
        rows: Vec::new(),
        invalid: BTreeMap::new(),
        looked: false,
    };
    let (wanted_tx, wanted_rx) = watch::channel(Arc::new(wanted));
    let (pauses_tx, pauses_rx) = watch::channel(BTreeSet::new());
    let invalid_rows = metrics::counter!("leadhook_registry_invalid_rows_total");
    let combiner = Combiner {
        rows: Vec::new(),
        columns: None,
        wanted: wanted_tx,
        pauses: pauses_tx,
        reported: BTreeMap::new(),
        invalid_rows,
        looked: false,
    };
    tokio::spawn(combiner.run(fetched, path));
    Registry {
        wanted: wanted_rx,
        pauses: pauses_rx,
    }
}

struct Combiner {
    /// The registry rows last read.
    rows: Vec<RawRow>,
    /// The leads table's columns, once read.
    columns: Option<BTreeSet<String>>,
    wanted: watch::Sender<Arc<Wanted>>,
    pauses: watch::Sender<BTreeSet<String>>,
    /// Invalid rows already reported, so each is logged once.
    reported: BTreeMap<String, Vec<String>>,
    invalid_rows: metrics::Counter,
    /// Whether the database was looked at yet (see [`Wanted::looked`]).
    looked: bool,
}

impl Combiner {
    async fn run(mut self, mut fetched: mpsc::Receiver<Fetched>, path: Option<PathBuf>) {
        let mut hangups = hangups(path.is_some());
        loop {
            let config = self.wanted.borrow().config.clone();
            let config = tokio::select! {
                looked = fetched.recv() => {
                    let Some(looked) = looked else { return };
                    self.pauses.send_if_modified(|paused| {
                        std::mem::replace(paused, looked.pauses) != *paused
                    });
                    if let Some(rows) = looked.rows {
                        self.rows = rows;
                    }
                    self.columns = looked.columns.or(self.columns.take());
                    self.looked = true;
                    config
                }
                Some(()) = next_hangup(&mut hangups) => match &path {
                    Some(path) => self.reload(&config, path),
                    None => config,
                },
            };
            self.publish(config);
        }
    }

    /// The file read again, if it is valid: else the running config stays.
    fn reload(&self, running: &Config, path: &std::path::Path) -> Config {
        tracing::info!(config = %path.display(), "SIGHUP: reading the config file again");
        let new = match Config::load(path) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(config = %path.display(), problems = %e.problems().join("; "),
                    "the new config is invalid and was not applied; the running config stays");
                return running.clone();
            }
        };
        if let Some(columns) = &self.columns {
            let table = running.table();
            let problems: Vec<String> = new
                .webhooks
                .iter()
                .enumerate()
                .flat_map(|(i, hook)| {
                    let key = format!("webhooks[{i}]");
                    crate::setup::table::unknown_filter_columns(&key, hook, columns, &table)
                })
                .collect();
            if !problems.is_empty() {
                tracing::error!(config = %path.display(), problems = %problems.join("; "),
                    "the new config is invalid and was not applied; the running config stays");
                return running.clone();
            }
        }
        for section in running.restart_needed(&new) {
            tracing::warn!(%section, "changes to this section take effect only after a restart; ignored until then");
        }
        running.reload(new)
    }

    /// Sends the webhooks wanted under `config`, if they changed.
    fn publish(&mut self, config: Config) {
        let env = |name: &str| std::env::var(name).ok();
        let (rows, invalid) = check_rows(&config, &self.rows, self.columns.as_ref(), &env);
        for (name, problems) in &invalid {
            if self.reported.get(name) != Some(problems) {
                self.invalid_rows.increment(1);
                tracing::warn!(webhook = %name, problems = %problems.join("; "),
                    "skipping an invalid registry row; the other webhooks go on");
            }
        }
        self.reported = invalid.clone();
        let next = Wanted {
            config,
            rows,
            invalid,
            looked: self.looked,
        };
        self.wanted.send_if_modified(|wanted| {
            let differs = next.differs_from(wanted)
                || next.invalid != wanted.invalid
                || next.looked != wanted.looked;
            if differs {
                *wanted = Arc::new(next);
            }
            differs
        });
    }
}

/// SIGHUP as a stream, when reloading is on.
fn hangups(on: bool) -> Option<tokio::signal::unix::Signal> {
    if !on {
        return None;
    }
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading the config file is off");
            None
        }
    }
}

async fn next_hangup(hangups: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads the database (at once when rung, else every poll interval) and
/// hands each look on; reconnects with backoff.
async fn fetch(config: Config, db: Database, looked: mpsc::Sender<Fetched>) {
    let schema = config.database.schema.clone();
    let poll = config.registry.as_ref().map_or(POLL, |r| r.poll_interval);
    let mut delay = Duration::from_millis(500);
    loop {
        let (sql, doorbell) = match db.sql_with_doorbell().await {
            Ok(connected) => connected,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay,
                    "cannot read the webhooks and pauses from the database; reconnecting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
                continue;
            }
        };
        let listen = format!("LISTEN {}", crate::setup::registry::channel(&schema));
        if let Err(e) = sql.batch_execute(&listen).await {
            tracing::debug!(error = %e, "registry: cannot listen");
            tokio::time::sleep(delay).await;
            continue;
        }
        let mut warned = false;
        loop {
            match look(&sql, &config, &mut warned).await {
                Ok(fetched) => {
                    delay = Duration::from_millis(500);
                    if looked.send(fetched).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "registry: reading failed; reconnecting");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                    break;
                }
            }
            tokio::select! {
                () = doorbell.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum Look {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
}

/// One look: the table's rows (none while the table is missing, which is
/// said once: the first session creates it when the role may), the pauses
/// and the leads table's columns.
async fn look(
    sql: &tokio_postgres::Client,
    config: &Config,
    warned: &mut bool,
) -> Result<Fetched, Look> {
    let rows = match &config.registry {
        Some(registry) => match table::read(sql, &registry.table).await {
            Ok(rows) => Some(rows),
            Err(e @ TableError::Missing(_)) => {
                if !std::mem::replace(warned, true) {
                    tracing::warn!("{e}");
                }
                Some(Vec::new())
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let pauses = pauses::read(sql, &config.database.schema).await?;
    let columns = crate::setup::table::column_names(sql, &config.table()).await?;
    Ok(Fetched {
        rows,
        pauses,
        columns,
    })
}
