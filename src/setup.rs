//! `leadhook setup`: the SQL the configured mode needs, printed for a DBA,
//! applied, or (`--uninstall`) removed again.

use std::io::Write;

use tokio_postgres::Client;

use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};
use crate::dead_letter;
use crate::source::outbox::Outbox;
use crate::source::prerequisites::{self, KeyColumn};
use crate::source::replication::quote_identifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupAction {
    Print,
    Apply,
    Uninstall,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Unmet(String),
    #[error("writing the output: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn setup(
    config: &Config,
    action: SetupAction,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let sql = Database::from_url(config.database.url.expose())?
        .sql()
        .await?;
    match (action, config.source.mode) {
        (SetupAction::Uninstall, SourceMode::Notify) => uninstall_outbox(&sql, config, out).await,
        (SetupAction::Uninstall, SourceMode::Replication) => {
            uninstall_replication(&sql, config, out).await
        }
        (_, mode) => {
            let statements = install_statements(&sql, config, mode).await?;
            for statement in &statements {
                if action == SetupAction::Apply {
                    sql.batch_execute(statement).await.or_else(already_there)?;
                }
                writeln!(out, "{statement}\n")?;
            }
            if action == SetupAction::Apply {
                writeln!(
                    out,
                    "-- applied to {}",
                    Database::from_url(config.database.url.expose())?
                )?;
            }
            Ok(())
        }
    }
}

/// What the mode needs, each entry run on its own (a slot cannot be created
/// in a transaction that has written).
async fn install_statements(
    sql: &Client,
    config: &Config,
    mode: SourceMode,
) -> Result<Vec<String>, SetupError> {
    let table = config.table();
    let leads = format!(
        "{}.{}",
        quote_identifier(&table.schema),
        quote_identifier(&table.name)
    );
    let mut statements = match mode {
        SourceMode::Replication => vec![
            format!(
                "CREATE PUBLICATION {} FOR TABLE {leads};",
                quote_identifier(&config.source.publication)
            ),
            format!(
                "SELECT pg_create_logical_replication_slot('{}', 'pgoutput');",
                config.source.slot.replace('\'', "''")
            ),
        ],
        SourceMode::Notify => {
            vec![Outbox::new(config).install_sql(config, &primary_key(sql, config).await?)]
        }
    };
    statements.push(dead_letter::create_statements(&config.database.schema));
    Ok(statements)
}

async fn primary_key(sql: &Client, config: &Config) -> Result<Vec<KeyColumn>, SetupError> {
    let report = prerequisites::inspect(sql, config).await?;
    if report.key.is_empty() {
        return Err(SetupError::Unmet(format!(
            "{} has no primary key (or does not exist): the capture trigger needs one",
            config.table()
        )));
    }
    Ok(report.key)
}

/// Applying twice is fine: an object that exists is left as it is.
fn already_there(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) {
        Ok(())
    } else {
        Err(e)
    }
}

async fn uninstall_outbox(
    sql: &Client,
    config: &Config,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let outbox = Outbox::new(config);
    let (has_outbox, has_trigger) = outbox.installed(sql).await?;
    if !has_outbox && !has_trigger {
        writeln!(
            out,
            "nothing to remove: no outbox {} and no capture trigger on {}",
            outbox.table(),
            config.table()
        )?;
        return Ok(());
    }
    let pending: i64 = if has_outbox {
        sql.query_one(&format!("SELECT count(*) FROM {}", outbox.table()), &[])
            .await?
            .get(0)
    } else {
        0
    };
    sql.batch_execute(&outbox.uninstall_sql()).await?;
    if has_trigger {
        writeln!(
            out,
            "removed the capture trigger leadhook_capture on {} and its function",
            config.table()
        )?;
    }
    if has_outbox {
        writeln!(
            out,
            "removed the outbox {} ({pending} undelivered change(s) in it)",
            outbox.table()
        )?;
    }
    Ok(())
}

async fn uninstall_replication(
    sql: &Client,
    config: &Config,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let (slot, publication) = (&config.source.slot, &config.source.publication);
    let dropped = sql
        .query_opt(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active",
            &[slot],
        )
        .await?;
    match dropped {
        Some(_) => writeln!(out, "removed the replication slot {slot:?}")?,
        None => writeln!(
            out,
            "no idle replication slot {slot:?} to remove (missing, or in use: stop leadhook first)"
        )?,
    }
    sql.batch_execute(&format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote_identifier(publication)
    ))
    .await?;
    writeln!(
        out,
        "removed the publication {publication:?} (if it existed)"
    )?;
    Ok(())
}
