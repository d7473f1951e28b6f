//! `leadhook setup`: the SQL the configured mode needs, printed for a DBA,
//! applied, or (`--uninstall`) removed again.

use std::io::Write;

use tokio_postgres::Client;

use crate::config::{Config, SourceMode};
use crate::database::{Database, DatabaseError};
use postgres_protocol::escape::escape_identifier;

use crate::setup::table::KeyColumn;

pub(crate) mod objects;
pub(crate) mod outbox;
pub mod prerequisites;
pub(crate) mod registry;
pub(crate) mod table;

use outbox::Outbox;
use prerequisites::publication;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupAction {
    Print,
    Apply,
    Uninstall,
}

/// What `leadhook setup` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupOptions {
    pub action: SetupAction,
    /// Also make the table (and its partitions) `REPLICA IDENTITY FULL`, so
    /// unchanged large values come with each change rather than read back.
    pub replica_identity_full: bool,
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
    options: SetupOptions,
    out: &mut impl Write,
) -> Result<(), SetupError> {
    let action = options.action;
    let sql = Database::from_url(config.database.url.expose())?
        .sql()
        .await?;
    match (action, config.source.mode) {
        (SetupAction::Uninstall, SourceMode::Notify) => uninstall_outbox(&sql, config, out).await,
        (SetupAction::Uninstall, SourceMode::Replication) => {
            uninstall_replication(&sql, config, out).await
        }
        (_, mode) => {
            let statements = install_statements(&sql, config, mode, options).await?;
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
    options: SetupOptions,
) -> Result<Vec<String>, SetupError> {
    let report = prerequisites::inspect(sql, config).await?;
    let schema = &config.database.schema;
    let mut statements = match mode {
        SourceMode::Replication => {
            let version = prerequisites::failover::server_version(sql).await?;
            let failover = prerequisites::failover::wanted(config, version);
            // Every shard's publication and slot, so each instance finds its own.
            let (_, shards) = config.source.shard_of();
            (0..shards)
                .map(|index| config.for_shard(index))
                .flat_map(|shard| {
                    [
                        publication::create_statement(&shard, report.partitioned, &report.key),
                        slot_statement(&shard.source.slot, failover),
                    ]
                })
                .collect()
        }
        SourceMode::Notify => {
            vec![Outbox::new(config).install_sql(config, &primary_key(config, report)?)]
        }
    };
    statements.push(objects::dead_letter_statements(schema));
    statements.push(objects::spool_statement(schema));
    statements.push(objects::pauses_statement(schema));
    statements.push(objects::status_statement(schema));
    if let Some(registry) = &config.registry {
        statements.push(registry::statements(&registry.table, schema));
    }
    if mode == SourceMode::Replication {
        statements.push(objects::slots_statement(schema));
        statements.push(objects::slots_upgrade_statement(schema));
        statements.push(objects::backfill_statements(schema));
        if options.replica_identity_full {
            statements.push(replica_identity_full(sql, config).await?);
        }
    }
    Ok(statements)
}

/// Creates a slot (a failover slot where the server has them and the
/// config wants one), as the sidecar would.
fn slot_statement(name: &str, failover: bool) -> String {
    let name = postgres_protocol::escape::escape_literal(name);
    match failover {
        true => format!(
            "SELECT pg_create_logical_replication_slot({name}, 'pgoutput', false, false, true);"
        ),
        false => format!("SELECT pg_create_logical_replication_slot({name}, 'pgoutput');"),
    }
}

/// `ALTER TABLE … REPLICA IDENTITY FULL` for the table and, when it is
/// partitioned, each partition (the setting is per partition, and is not
/// inherited by partitions created later).
async fn replica_identity_full(sql: &Client, config: &Config) -> Result<String, SetupError> {
    let rows = sql
        .query(
            "SELECT format('ALTER TABLE %s REPLICA IDENTITY FULL;', t.relid)
             FROM (SELECT to_regclass($1) AS relid, 0 AS level
                   UNION SELECT relid, level FROM pg_partition_tree(to_regclass($1)) WHERE level > 0) t
             ORDER BY t.level, t.relid::text",
            &[&config.table().quoted()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn primary_key(
    config: &Config,
    report: prerequisites::Inspection,
) -> Result<Vec<KeyColumn>, SetupError> {
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
    // Without its record, a slot created later is a new one, not a lost one.
    let record = objects::slots_table(&config.database.schema);
    let has_record: bool = sql
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&record])
        .await?
        .get(0);
    if dropped.is_some() && has_record {
        sql.execute(
            &format!("DELETE FROM {record} WHERE slot_name = $1"),
            &[slot],
        )
        .await?;
    }
    match dropped {
        Some(_) => writeln!(out, "removed the replication slot {slot:?}")?,
        None => writeln!(
            out,
            "no idle replication slot {slot:?} to remove (missing, or in use: stop leadhook first)"
        )?,
    }
    sql.batch_execute(&format!(
        "DROP PUBLICATION IF EXISTS {}",
        escape_identifier(publication)
    ))
    .await?;
    writeln!(
        out,
        "removed the publication {publication:?} (if it existed)"
    )?;
    Ok(())
}
