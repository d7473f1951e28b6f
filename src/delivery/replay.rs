//! `leadhook dead-letters replay`: dead letters delivered once more, to the
//! webhook of the same name as configured now (in the file or, through
//! `registry::replay`, the registry table), unless it is paused.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use bytes::Bytes;

use super::{Webhook, request};
use crate::config::{Config, WebhookConfig};
use crate::dead_letter::{DeadLetterError, select, table};

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Where letters may go back to now, beside the file's webhooks.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    /// The registry table's valid rows.
    pub(crate) rows: Vec<WebhookConfig>,
    /// Paused webhooks: their letters are skipped until they are resumed.
    pub(crate) paused: BTreeSet<String>,
}

/// `leadhook dead-letters replay`: sends each matching letter once more,
/// with its original `webhook-id`, and deletes it only once delivered.
pub(crate) async fn replay(
    config: &Config,
    targets: &Targets,
    webhook: Option<&str>,
    id: Option<&str>,
    out: &mut impl Write,
) -> Result<ReplayReport, DeadLetterError> {
    let (sql, rows) = select(config, "id, webhook, webhook_id, payload", webhook, id).await?;
    let table = table(&config.database.schema);
    let clients = super::clients::Clients::default();
    let mut hooks: HashMap<String, Result<Webhook, String>> = HashMap::new();
    let mut report = ReplayReport::default();
    for row in rows {
        let (row_id, name, webhook_id, payload): (i64, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let hook = hooks
            .entry(name.clone())
            .or_insert_with(|| replay_target(config, targets, &name, &clients));
        let hook = match hook {
            Ok(hook) => hook,
            Err(why) => {
                report.skipped += 1;
                writeln!(out, "skipped    {webhook_id} for {name:?}: {why}")?;
                continue;
            }
        };
        let header = reqwest::header::HeaderValue::from_str(&webhook_id)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid"));
        match request::attempt(hook, &header, &Bytes::from(payload))
            .await
            .0
        {
            Ok(()) => {
                sql.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&row_id])
                    .await?;
                report.delivered += 1;
                writeln!(out, "delivered  {webhook_id} to {name:?} (removed)")?;
            }
            Err(failure) => {
                report.failed += 1;
                writeln!(out, "failed     {webhook_id} to {name:?}: {failure} (kept)")?;
            }
        }
    }
    writeln!(
        out,
        "replayed: {} delivered and removed, {} failed and kept, {} skipped",
        report.delivered, report.failed, report.skipped
    )?;
    Ok(report)
}

/// The webhook a letter goes back to, by name, as configured now.
fn replay_target(
    config: &Config,
    targets: &Targets,
    name: &str,
    clients: &super::clients::Clients,
) -> Result<Webhook, String> {
    let hook = config
        .webhooks
        .iter()
        .chain(&targets.rows)
        .find(|h| h.name == name)
        .ok_or_else(|| "no webhook of that name in the config or the registry".to_owned())?;
    if !hook.receives_save_lead() {
        return Err("the webhook is disabled or not subscribed to save_lead".to_owned());
    }
    if targets.paused.contains(name) {
        return Err("the webhook is paused (leadhook webhooks resume NAME first)".to_owned());
    }
    let transport = clients
        .transport(hook)
        .map_err(|e| format!("cannot build its HTTP client: {e}"))?;
    Ok(Webhook::new(
        hook,
        &super::pause::Pauses::default(),
        transport,
    ))
}
