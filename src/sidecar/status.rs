//! Keeps `<schema>.webhook_status` current while the sidecar runs (see
//! `registry::status`): every webhook wanted, active or not, and every
//! registry row skipped as invalid.

use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::Health;
use crate::database::Database;
use crate::delivery::Webhooks;
use crate::registry::Wanted;
use crate::registry::status::{REFRESH_EVERY, StatusRow, refresh};

/// Refreshes the table until aborted from the webhooks running (replaced at
/// every reload) and those wanted (with the invalid rows), while this
/// instance is the active one (`health` ready: a standby's view would
/// overwrite the active one's); a failure is retried at the next refresh
/// (and logged once until it works again).
pub(super) async fn report(
    db: Database,
    schema: String,
    health: Arc<Health>,
    running: watch::Receiver<Webhooks>,
    wanted: watch::Receiver<Arc<Wanted>>,
) {
    let mut sql = None;
    let mut warned = false;
    let mut every = tokio::time::interval(REFRESH_EVERY);
    loop {
        every.tick().await;
        if !health.is_ready() {
            continue;
        }
        let rows = rows(&running.borrow(), &wanted.borrow());
        if sql.is_none() {
            sql = db.sql().await.ok();
        }
        let Some(client) = sql.as_mut() else { continue };
        match refresh(client, &schema, &rows).await {
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
