//! `leadhook dead-letters replay`: dead letters delivered once more, to the
//! webhook of the same name as configured now.

use std::collections::HashMap;
use std::io::Write;

use bytes::Bytes;

use super::{Webhook, request};
use crate::config::Config;
use crate::dead_letter::{DeadLetterError, select, table};

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// `leadhook dead-letters replay`: sends each matching letter once more,
/// with its original `webhook-id`, and deletes it only once delivered.
pub async fn replay(
    config: &Config,
    webhook: Option<&str>,
    id: Option<&str>,
    out: &mut impl Write,
) -> Result<ReplayReport, DeadLetterError> {
    let (sql, rows) = select(config, "id, webhook, webhook_id, payload", webhook, id).await?;
    let table = table(&config.database.schema);
    let client = crate::delivery::http_client()?;
    let mut hooks: HashMap<String, Result<Webhook, String>> = HashMap::new();
    let mut report = ReplayReport::default();
    for row in rows {
        let (row_id, name, webhook_id, payload): (i64, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let hook = hooks
            .entry(name.clone())
            .or_insert_with(|| replay_target(config, &name));
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
        match request::attempt(hook, &client, &header, &Bytes::from(payload)).await {
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
fn replay_target(config: &Config, name: &str) -> Result<Webhook, String> {
    let hook = config
        .webhooks
        .iter()
        .find(|h| h.name == name)
        .ok_or_else(|| "no webhook of that name in the config".to_owned())?;
    if !hook.receives_save_lead() {
        return Err("the webhook is disabled or not subscribed to save_lead".to_owned());
    }
    Ok(Webhook::new(hook, &super::pause::Pauses::default()))
}
