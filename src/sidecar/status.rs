//! What the running sidecar reports of itself, every couple of seconds:
//! the status page's snapshot (see `admin::status`), and, while this
//! instance is the active one, `<schema>.webhook_status` (see
//! `registry::status`): every webhook wanted, active or not, and every
//! registry row skipped as invalid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

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

/// The dead letters are counted every this many refreshes (a `GROUP BY`
/// over the table, not a read of memory).
const COUNT_DEAD_LETTERS_EVERY: u32 = 5;

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
    /// table only while `health` is ready (a standby's view would
    /// overwrite the active one's); a failure is retried at the next
    /// refresh (and logged once until it works again).
    pub(super) async fn run(self) {
        let mut sql = None;
        let mut warned = false;
        let mut dead_letters: Option<HashMap<String, i64>> = None;
        let mut every = tokio::time::interval(REFRESH_EVERY);
        for tick in 0u32.. {
            every.tick().await;
            let wanted = self.wanted.borrow().clone();
            let running = self.running.borrow().clone();
            let rows = rows(&running, &wanted);
            if sql.is_none() {
                sql = self.db.sql().await.ok();
            }
            if let Some(client) = sql.as_ref()
                && tick % COUNT_DEAD_LETTERS_EVERY == 0
            {
                let table = dead_letter_table(&self.schema);
                dead_letters = crate::registry::list::counts(client, &table).await.ok();
                if dead_letters.is_none() {
                    // Connect again next time (a standby never refreshes the table).
                    sql = None;
                }
            }
            self.board.publish(snapshot(
                &wanted,
                &self.health,
                &running,
                &rows,
                dead_letters.as_ref(),
            ));
            if !self.health.is_ready() {
                continue;
            }
            let Some(client) = sql.as_mut() else { continue };
            match refresh(client, &self.schema, &rows).await {
                Ok(()) => warned = false,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %crate::database::with_causes(&e),
                            "cannot write the webhook status table (leadhook webhooks list shows it as stale); trying again");
                    }
                    warned = true;
                    sql = None;
                }
            }
        }
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
