//! What the running sidecar reports of itself, every couple of seconds:
//! the status page's snapshot (see `admin::status`), and, while this
//! instance is the active one, `<schema>.webhook_status` (see
//! `registry::status`): every webhook wanted, active or not, and every
//! registry row skipped as invalid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::admin::Health;
use crate::admin::status::{SourceStatus, Status, StatusBoard, WebhookStatus};
use crate::config::SourceMode;
use crate::database::Database;
use crate::delivery::Webhooks;
use crate::delivery::activity::WINDOW_MINUTES;
use crate::registry::Wanted;
use crate::registry::status::{REFRESH_EVERY, StatusRow, refresh};
use crate::setup::objects::dead_letter_table;

/// How often the dead letters are counted (a `GROUP BY` over the table,
/// not a read of memory).
const COUNT_DEAD_LETTERS_EVERY: Duration = Duration::from_secs(10);
/// A statement of the reporter's that takes longer is given up (and the
/// connection with it): the database is stalled.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reporter works from.
pub(super) struct Reporter {
    pub(super) db: Database,
    pub(super) schema: String,
    pub(super) health: Arc<Health>,
    pub(super) board: Arc<StatusBoard>,
    /// The webhooks running (replaced at every reload).
    pub(super) running: watch::Receiver<Webhooks>,
    /// Those wanted, with the invalid rows and the config.
    pub(super) wanted: watch::Receiver<Arc<Wanted>>,
}

impl Reporter {
    /// Publishes a snapshot and refreshes the table until aborted. The
    /// snapshot comes from memory first, so the page never waits for the
    /// database; the table only while `health` is ready (a standby's view
    /// would overwrite the active one's); a failure is retried at the next
    /// refresh (and logged once until it works again).
    pub(super) async fn run(self) {
        let dead_letters = DeadLetterCounts::default();
        let counting = tokio::spawn(dead_letters.clone().follow(
            self.db.clone(),
            self.schema.clone(),
            self.health.clone(),
        ));
        let _stop_counting = AbortOnDrop(counting);
        let mut sql = None;
        let mut warned = false;
        let mut every = tokio::time::interval(REFRESH_EVERY);
        loop {
            every.tick().await;
            let wanted = self.wanted.borrow().clone();
            let running = self.running.borrow().clone();
            let rows = rows(&running, &wanted);
            let counts = dead_letters.latest();
            self.board.publish(snapshot(
                &wanted,
                &self.health,
                &running,
                &rows,
                counts.as_deref(),
            ));
            if !self.health.is_ready() {
                continue;
            }
            if sql.is_none() {
                sql = self.db.sql().await.ok();
            }
            let Some(client) = sql.as_mut() else { continue };
            match tokio::time::timeout(STATEMENT_TIMEOUT, refresh(client, &self.schema, &rows))
                .await
            {
                Ok(Ok(())) => warned = false,
                failed => {
                    if !warned {
                        let error = match failed {
                            Ok(Err(e)) => crate::database::with_causes(&e),
                            _ => format!("no answer within {STATEMENT_TIMEOUT:?}"),
                        };
                        tracing::warn!(%error,
                            "cannot write the webhook status table (leadhook webhooks list shows it as stale); trying again");
                    }
                    warned = true;
                    sql = None;
                }
            }
        }
    }
}

/// The dead letters stored per webhook, counted apart from the snapshot
/// (a `GROUP BY` over the table, which may be slow or hang with the
/// database): `None` until counted, and again when a count failed.
#[derive(Clone, Default)]
struct DeadLetterCounts(Arc<std::sync::Mutex<Option<Arc<Counts>>>>);

/// Dead letters per webhook name.
type Counts = HashMap<String, i64>;

impl DeadLetterCounts {
    fn latest(&self) -> Option<Arc<Counts>> {
        self.0.lock().ok().and_then(|counts| counts.clone())
    }

    fn set(&self, counts: Option<Counts>) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = counts.map(Arc::new);
        }
    }

    /// Counts every [`COUNT_DEAD_LETTERS_EVERY`] while this instance is the
    /// active one (a standby leaves the database alone).
    async fn follow(self, db: Database, schema: String, health: Arc<Health>) {
        let table = dead_letter_table(&schema);
        let mut sql = None;
        let mut every = tokio::time::interval(COUNT_DEAD_LETTERS_EVERY);
        loop {
            every.tick().await;
            if !health.is_ready() {
                continue;
            }
            if sql.is_none() {
                sql = tokio::time::timeout(STATEMENT_TIMEOUT, db.sql())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let Some(client) = sql.as_ref() else {
                self.set(None);
                continue;
            };
            let counted = tokio::time::timeout(
                STATEMENT_TIMEOUT,
                crate::registry::list::counts(client, &table),
            )
            .await;
            match counted {
                Ok(Ok(counts)) => self.set(Some(counts)),
                _ => {
                    self.set(None);
                    sql = None;
                }
            }
        }
    }
}

/// Aborts the task when the reporter is aborted (it owns the counting).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The page's view: the table's rows, with what only memory knows (the
/// recent figures, the spool's depth) and the dead letters last counted.
fn snapshot(
    wanted: &Wanted,
    health: &Health,
    running: &Webhooks,
    rows: &[StatusRow],
    dead_letters: Option<&HashMap<String, i64>>,
) -> Status {
    let config = &wanted.config;
    let not_ready = health.reason();
    let replication = config.source.mode == SourceMode::Replication;
    let webhooks = rows
        .iter()
        .map(|row| {
            let hook = running.iter().find(|h| h.name == row.name);
            let recent = hook.map(|h| h.activity.recent()).unwrap_or_default();
            // An invalid row has no URL that may be shown.
            let configured = wanted.webhooks().find(|w| w.name == row.name);
            WebhookStatus {
                name: row.name.clone(),
                origin: row.origin,
                url: configured.map(|c| c.shown_url()).unwrap_or_default(),
                method: configured.map(|c| c.method.to_string()).unwrap_or_default(),
                state: row.state,
                last_success_at: row.last_success,
                last_failure_at: row.last_failure.as_ref().map(|f| f.0),
                last_failure: row.last_failure.as_ref().map(|f| f.1.clone()),
                delivered_recently: recent.delivered,
                failed_recently: recent.failed,
                lag_p50_seconds: recent.lag_p50.map(|d| d.as_secs_f64()),
                lag_p99_seconds: recent.lag_p99.map(|d| d.as_secs_f64()),
                in_flight: u64::try_from(row.in_flight).unwrap_or(0),
                spooled: hook.map(|h| h.spool.rows()).unwrap_or(0),
                dead_letters: dead_letters.map(|d| d.get(&row.name).copied().unwrap_or(0)),
                problem: row.problem.clone(),
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        taken_at: SystemTime::now(),
        source: SourceStatus {
            mode: if replication { "replication" } else { "notify" },
            table: format!(
                "{}.{}",
                config.source.table.schema, config.source.table.name
            ),
            slot: replication.then(|| config.source.slot.clone()),
            connected: not_ready.is_none(),
            not_ready,
            lag_bytes: if replication { health.lag() } else { None },
        },
        window_minutes: WINDOW_MINUTES,
        webhooks,
    }
}

fn rows(running: &Webhooks, wanted: &Wanted) -> Vec<StatusRow> {
    let mut rows: Vec<StatusRow> = wanted
        .webhooks()
        .map(|config| {
            let active = running.iter().find(|h| h.name == config.name);
            let (state, in_flight, last) = match active {
                Some(hook) => {
                    let (state, in_flight) = hook.gate.snapshot();
                    let state = if hook.is_paused() {
                        "paused"
                    } else {
                        state.label()
                    };
                    (state, in_flight as i32, hook.activity.last())
                }
                None => ("disabled", 0, Default::default()),
            };
            StatusRow {
                name: config.name.clone(),
                origin: config.origin.as_str(),
                enabled: config.enabled,
                paused: active.is_some_and(|h| h.is_paused()),
                state,
                last_success: last.success,
                last_failure: last.failure,
                in_flight,
                problem: None,
            }
        })
        .collect();
    for (name, problems) in &wanted.invalid {
        rows.push(StatusRow {
            name: name.clone(),
            origin: "table",
            enabled: false,
            paused: false,
            state: "invalid",
            last_success: None,
            last_failure: None,
            in_flight: 0,
            problem: Some(problems.join("; ")),
        });
    }
    rows
}
