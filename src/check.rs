//! `leadhook check`: validates the config and the database prerequisites and
//! prints what it found, one line per finding or problem.

use std::io::{self, Write};

use crate::config::Config;
use crate::database::Database;
use crate::delivery::Webhooks;
use crate::delivery::pause::Pauses;
use crate::setup::prerequisites;

/// Prints the findings; returns whether everything needed is in place.
pub async fn check(config: &Config, out: &mut impl Write) -> io::Result<bool> {
    let mut problems = Vec::new();
    match Webhooks::new(Pauses::default()).rebuilt(&config.webhooks) {
        Ok(webhooks) => {
            for hook in webhooks.describe() {
                writeln!(out, "ok       webhook {hook}")?;
            }
            let disabled = config.webhooks.len() - webhooks.len();
            if disabled > 0 {
                writeln!(
                    out,
                    "ok       {disabled} webhook(s) disabled or not subscribed to save_lead"
                )?;
            }
            if webhooks.len() == 0 {
                writeln!(
                    out,
                    "warning  no enabled webhook receives save_lead: changes would be confirmed without delivery"
                )?;
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    match inspect_database(config).await {
        Ok(report) => {
            for line in report.found {
                writeln!(out, "ok       {line}")?;
            }
            for line in report.warnings {
                writeln!(out, "warning  {line}")?;
            }
            problems.extend(report.problems);
        }
        Err(problem) => problems.push(problem),
    }
    if config.registry.is_some() {
        match crate::registry::check_table(config).await {
            Ok((valid, invalid)) => {
                for hook in &valid {
                    let state = if hook.enabled { "enabled" } else { "disabled" };
                    writeln!(out, "ok       registry row {:?} ({state})", hook.name)?;
                }
                // Skipped at run time, never stopping the others: a warning.
                for problem in invalid.values().flatten() {
                    writeln!(out, "warning  {problem} (the row is skipped)")?;
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    for problem in &problems {
        writeln!(out, "problem  {problem}")?;
    }
    Ok(problems.is_empty())
}

async fn inspect_database(config: &Config) -> Result<prerequisites::Inspection, String> {
    let db = Database::from_url(config.database.url.expose()).map_err(|e| e.to_string())?;
    let sql = db.sql().await.map_err(|e| e.to_string())?;
    prerequisites::inspect(&sql, config)
        .await
        .map_err(|e| format!("inspecting {db}: {e}"))
}
