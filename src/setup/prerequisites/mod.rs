//! What the database must offer before streaming can start, checked over an
//! ordinary SQL connection: `wal_level`, the role's rights, the table, its
//! primary key and the mapped columns, the publication and the slot.
//!
//! `leadhook check` prints the whole inspection; `leadhook run` refuses to
//! start on any problem and then creates what `source.create` allows.

use std::time::Duration;

use tokio_postgres::Client;

use crate::config::{Config, SourceMode};
use postgres_protocol::escape::escape_identifier;

use crate::setup::objects;
use crate::setup::outbox::Outbox;
use crate::setup::table::{KeyColumn, unknown_filter_columns};

pub(crate) mod failover;
pub(crate) mod publication;
mod tables;

/// The findings, one line each, and what streaming needs from them.
#[derive(Debug, Default)]
pub struct Inspection {
    pub found: Vec<String>,
    /// Working, but with a limit the user should know of.
    pub warnings: Vec<String>,
    pub problems: Vec<String>,
    pub(crate) key: Vec<KeyColumn>,
    /// The table is partitioned: its publication must publish via the root.
    pub(crate) partitioned: bool,
    create_publication: bool,
    create_own_tables: bool,
    create_outbox: bool,
    create_registry: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PrerequisiteError {
    #[error("{}", .0.join("\n"))]
    Unmet(Vec<String>),
    #[error("inspecting the database: {}", crate::database::with_causes(.0))]
    Sql(#[from] tokio_postgres::Error),
}

impl PrerequisiteError {
    /// Unmet prerequisites need a person; SQL errors may pass (reconnect).
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, PrerequisiteError::Unmet(_))
    }
}

/// Inspects everything without changing anything.
pub async fn inspect(sql: &Client, config: &Config) -> Result<Inspection, tokio_postgres::Error> {
    let mut report = Inspection::default();
    let replication = config.source.mode == SourceMode::Replication;
    check_server(sql, replication, &mut report).await?;
    if let Some(table_oid) = check_table(sql, config, &mut report).await? {
        check_columns(sql, config, table_oid, &mut report).await?;
        if replication {
            publication::check(sql, config, table_oid, &mut report).await?;
        } else {
            check_outbox(sql, config, table_oid, &mut report).await?;
        }
    }
    if replication {
        check_slot(sql, config, &mut report).await?;
        failover::check(sql, config, &mut report).await?;
    }
    tables::check(sql, config, &mut report).await?;
    Ok(report)
}

/// Inspects, then creates the publication, the outbox and leadhook's own
/// tables if allowed and missing. The slot is `source::slot`'s.
pub(crate) async fn prepare(
    sql: &Client,
    config: &Config,
) -> Result<Inspection, PrerequisiteError> {
    let report = inspect(sql, config).await?;
    if !report.problems.is_empty() {
        return Err(PrerequisiteError::Unmet(report.problems));
    }
    let source = &config.source;
    if report.create_publication {
        let create = publication::create_statement(config, report.partitioned, &report.key);
        sql.batch_execute(&create).await.or_else(ignore_duplicate)?;
        tracing::info!(publication = %source.publication, "created publication");
    }
    if report.create_outbox {
        sql.batch_execute(&Outbox::new(config).install_sql(config, &report.key))
            .await?;
        tracing::info!(outbox = %Outbox::new(config).table(), "installed the outbox and its capture trigger");
    }
    if report.create_own_tables {
        let replication = config.source.mode == SourceMode::Replication;
        let statements = objects::own_table_statements(&config.database.schema, replication);
        sql.batch_execute(&statements)
            .await
            .or_else(ignore_duplicate)?;
        tracing::info!(schema = %config.database.schema, "created leadhook's own tables");
    }
    if replication_mode(config) {
        upgrade_slots_table(sql, &config.database.schema).await?;
    }
    if let Some(registry) = config.registry.as_ref().filter(|_| report.create_registry) {
        let statements = super::registry::statements(&registry.table, &config.database.schema);
        sql.batch_execute(&statements)
            .await
            .or_else(ignore_duplicate)?;
        tracing::info!(table = %registry.table, "created the registry table");
    }
    Ok(report)
}

fn replication_mode(config: &Config) -> bool {
    config.source.mode == SourceMode::Replication
}

/// Adds `confirmed_commit_at` to a `slots` table from before it, when it is
/// missing and the role owns the table; otherwise the slot's record goes
/// on without it (a lost slot's gap then starts at the time the position
/// was recorded, later than its commit), and `sql/setup.sql` adds it.
async fn upgrade_slots_table(sql: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    let missing: bool = sql
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'confirmed_commit_at')",
            &[&objects::slots_table(schema)],
        )
        .await?
        .get(0);
    if !missing {
        return Ok(());
    }
    match sql
        .batch_execute(&objects::slots_upgrade_statement(schema))
        .await
    {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!(table = %objects::slots_table(schema), "the slot record table has no confirmed_commit_at column and the role may not add it: have a DBA run sql/setup.sql (until then a lost slot's gap is timed less exactly)");
            Ok(())
        }
        other => other,
    }
}

/// How often to send a status update even when nothing happens, so the
/// server's `wal_sender_timeout` never fires while deliveries are slow.
pub(crate) async fn heartbeat_interval(sql: &Client) -> Result<Duration, tokio_postgres::Error> {
    let row = sql
        .query_one(
            "SELECT setting::int8 FROM pg_settings WHERE name = 'wal_sender_timeout'",
            &[],
        )
        .await?;
    let timeout_ms: i64 = row.get(0);
    let interval = if timeout_ms <= 0 {
        10_000
    } else {
        (timeout_ms / 4).clamp(100, 10_000)
    };
    Ok(Duration::from_millis(interval as u64))
}

/// Another instance creating the same object at the same time is fine.
pub(crate) fn ignore_duplicate(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match e.code() {
        Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => Ok(()),
        _ => Err(e),
    }
}

async fn check_server(
    sql: &Client,
    replication_mode: bool,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let row = sql
        .query_one(
            "SELECT current_setting('server_version'), current_setting('wal_level'), current_user::text,
                    r.rolsuper, r.rolreplication
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let (version, wal_level, user): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let (superuser, replication): (bool, bool) = (row.get(3), row.get(4));
    report
        .found
        .push(format!("PostgreSQL {version}, connected as {user}"));
    if !replication_mode {
        // Notify mode works with any wal_level and needs no replication right.
        report.found.push(format!(
            "notify mode (wal_level = {wal_level}, no replication needed)"
        ));
        return Ok(());
    }
    if wal_level == "logical" {
        report.found.push("wal_level = logical".into());
    } else {
        report.problems.push(format!(
            "wal_level is {wal_level:?}, logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        ));
    }
    if superuser || replication {
        report.found.push(format!("role {user} may replicate"));
    } else {
        report.problems.push(format!(
            "role {user} may not replicate: run ALTER ROLE {} REPLICATION; as a superuser (see sql/setup.sql)",
            escape_identifier(&user)
        ));
    }
    Ok(())
}

/// Returns the table's oid when it exists and can be read.
async fn check_table(
    sql: &Client,
    config: &Config,
    report: &mut Inspection,
) -> Result<Option<u32>, tokio_postgres::Error> {
    let table = config.table();
    let row = sql
        .query_opt(
            "SELECT c.oid, c.relkind = 'p', has_table_privilege(c.oid, 'SELECT'),
                    CASE WHEN c.relkind = 'p'
                         THEN (SELECT CASE WHEN bool_and(p.relreplident = 'f') THEN 'f' ELSE 'd' END
                               FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf)
                         ELSE c.relreplident::text END
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await?;
    let Some(row) = row else {
        report.problems.push(format!(
            "source.table: table {table} does not exist (check the name and schema)"
        ));
        return Ok(None);
    };
    let (oid, partitioned, readable): (u32, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let identity: Option<String> = row.get(3);
    report.partitioned = partitioned;
    if !readable {
        report.problems.push(format!(
            "the role may not SELECT from {table}: run GRANT SELECT ON {table} TO <role>; (needed to read unchanged large values)"
        ));
    }
    let key = sql
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attnum = k.attnum
             WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = $1
             ORDER BY k.ord",
            &[&oid],
        )
        .await?;
    report.key = key
        .iter()
        .map(|r| KeyColumn {
            name: r.get(0),
            type_name: r.get(1),
        })
        .collect();
    if report.key.is_empty() {
        report.problems.push(format!(
            "table {table} has no primary key: leadhook needs one to keep a lead's changes in order and to read unchanged large values; add one (ALTER TABLE {table} ADD PRIMARY KEY (...))"
        ));
    } else {
        let key: Vec<&str> = report.key.iter().map(|k| k.name.as_str()).collect();
        let kind = if partitioned {
            "partitioned table"
        } else {
            "table"
        };
        let identity = match identity.as_deref() {
            Some("f") => "full (unchanged large values come with the change)",
            Some("d") | None => "default (unchanged large values are read back by primary key)",
            Some("i") => "index",
            _ => "nothing",
        };
        report.found.push(format!(
            "{kind} {table}: primary key ({}), replica identity {identity}",
            key.join(", ")
        ));
        // A shard's row filter names the key, which must be in the replica
        // identity, or the application's UPDATEs and DELETEs would fail.
        let sharded = config.source.shard.is_some_and(|s| s.count > 1);
        if sharded && matches!(identity, "index" | "nothing") {
            report.problems.push(format!(
                "source.shard: {table} has replica identity {identity}, and a shard's row filter on the primary key would make the application's UPDATEs and DELETEs fail: run ALTER TABLE {table} REPLICA IDENTITY DEFAULT; (or FULL)"
            ));
        }
        if !identity.starts_with("full") && config.source.mode == SourceMode::Replication {
            report.warnings.push(format!(
                "an UPDATE that leaves a large value (e.g. long notes) untouched does not carry it under this replica identity, so leadhook reads the row's current value back: it may be newer than the change delivered. For exact values run ALTER TABLE {table} REPLICA IDENTITY FULL;{} (or `leadhook setup --replica-identity-full --apply`)",
                if partitioned { " on the table and each partition" } else { "" }
            ));
        }
    }
    Ok(Some(oid))
}

async fn check_columns(
    sql: &Client,
    config: &Config,
    table_oid: u32,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let table = config.table();
    let rows = sql
        .query(
            "SELECT attname::text, atttypid, format_type(atttypid, atttypmod)
             FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[&table_oid],
        )
        .await?;
    let mut mapped = Vec::new();
    for (field, column) in config.source.columns.iter() {
        let Some(column) = column else {
            mapped.push(format!("{field} = (absent)"));
            continue;
        };
        let Some(row) = rows.iter().find(|r| r.get::<_, &str>(0) == column) else {
            report.problems.push(format!(
                "source.columns.{field}: column {column:?} not found in {table}; map it to another column ({field} = \"...\") or declare it absent ({field} = false)"
            ));
            continue;
        };
        let (type_oid, type_name): (u32, String) = (row.get(1), row.get(2));
        // Only an integer field can refuse a type.
        if !field.kind().accepts(type_oid) {
            report.problems.push(format!(
                "source.columns.{field}: column {column:?} has type {type_name}; {field} needs smallint, integer or bigint"
            ));
        }
        mapped.push(format!("{field} = {column} ({type_name})"));
    }
    report.found.push(format!("columns: {}", mapped.join(", ")));
    if let Some(column) = &config.source.changed_at {
        match rows.iter().find(|r| r.get::<_, &str>(0) == column) {
            // timestamp, timestamptz, date
            Some(row) if [1114u32, 1184, 1082].contains(&row.get(1)) => report.found.push(format!(
                "source.changed_at: {column} bounds the backfill of a lost slot's gap"
            )),
            Some(row) => report.problems.push(format!(
                "source.changed_at: column {column:?} has type {}; it must be a timestamp the application sets on every save",
                row.get::<_, String>(2)
            )),
            None => report.problems.push(format!(
                "source.changed_at: column {column:?} not found in {table}; name the timestamp column the application sets on every save"
            )),
        }
    }
    let names = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    for (i, hook) in config.webhooks.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        report
            .problems
            .extend(unknown_filter_columns(&key, hook, &names, &table));
    }
    Ok(())
}

async fn check_slot(
    sql: &Client,
    config: &Config,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let name = &config.source.slot;
    let row = sql
        .query_opt(
            "SELECT plugin::text, database::text, current_database()::text, active, confirmed_flush_lsn::text
             FROM pg_replication_slots WHERE slot_name = $1",
            &[name],
        )
        .await?;
    match row {
        Some(row) => {
            let (plugin, database, current): (Option<String>, Option<String>, String) = (row.get(0), row.get(1), row.get(2));
            let (active, confirmed): (bool, Option<String>) = (row.get(3), row.get(4));
            if plugin.as_deref() != Some("pgoutput") {
                report.problems.push(format!(
                    "replication slot {name:?} uses plugin {plugin:?}, not pgoutput: choose another source.slot, or drop it with SELECT pg_drop_replication_slot('{name}');"
                ));
            } else if database.as_deref() != Some(current.as_str()) {
                report.problems.push(format!(
                    "replication slot {name:?} belongs to database {database:?}, not {current:?}: choose another source.slot"
                ));
            } else {
                let state = if active { "in use by another connection" } else { "idle" };
                let at = confirmed.unwrap_or_default();
                report.found.push(format!("replication slot {name:?} exists ({state}), confirmed up to {at}"));
            }
        }
        None if config.source.create => {
            report.found.push(format!("replication slot {name:?} is missing and will be created"));
        }
        None => report.problems.push(format!(
            "replication slot {name:?} does not exist and source.create = false: create it (sql/setup.sql) or set source.create = true"
        )),
    }
    Ok(())
}

/// Notify mode: the outbox and the capture trigger, installed or installable.
async fn check_outbox(
    sql: &Client,
    config: &Config,
    table_oid: u32,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let outbox = Outbox::new(config);
    let table = outbox.table();
    let (has_outbox, has_trigger) = outbox.installed(sql).await?;
    if has_outbox && has_trigger {
        let row = sql
            .query_one(
                "SELECT has_table_privilege(to_regclass($1), 'SELECT, DELETE')",
                &[&table],
            )
            .await?;
        if row.get(0) {
            report.found.push(format!(
                "outbox {table} and its capture trigger are installed"
            ));
        } else {
            report.problems.push(format!("the role may not read and delete from {table}: GRANT SELECT, DELETE ON {table} TO <role>;"));
        }
        return Ok(());
    }
    let row = sql
        .query_one(
            "SELECT pg_has_role(c.relowner, 'USAGE') OR r.rolsuper,
                    coalesce((SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = $2),
                             has_database_privilege(current_database(), 'CREATE'))
             FROM pg_class c, pg_roles r WHERE c.oid = $1 AND r.rolname = current_user",
            &[&table_oid, &config.database.schema],
        )
        .await?;
    let (owner, creatable): (bool, bool) = (row.get(0), row.get(1));
    if config.source.create && owner && creatable {
        report.create_outbox = true;
        report.found.push(format!(
            "outbox {table} and its capture trigger are missing (or from an older leadhook) and will be installed"
        ));
    } else {
        report.problems.push(format!(
            "notify mode needs the outbox {table} and a current capture trigger on {} (one from before webhook filters does not capture the unmapped columns): have the table owner run `leadhook setup --apply` (or sql/notify.sql), or set source.create = true as the owner",
            config.table()
        ));
    }
    Ok(())
}
