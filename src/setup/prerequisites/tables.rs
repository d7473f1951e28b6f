//! leadhook's own tables in `database.schema`: dead letters, the spool, and (in
//! replication mode) what it knows of its slot. Each must be present with
//! the rights to use it, or creatable.

use tokio_postgres::Client;

use super::Inspection;
use crate::config::{Config, SourceMode};
use crate::setup::objects::{
    backfill_progress_table, backfills_table, dead_letter_table, pauses_table, slots_table,
    spool_table, status_table,
};

/// One of leadhook's tables, as `check` describes it.
struct OwnTable {
    what: &'static str,
    table: String,
    rights: &'static str,
    /// The extra GRANT a role needs beyond the table's rights.
    extra_grant: Option<String>,
    /// What is unavailable without it, when the sidecar can run without
    /// it (a warning then, not a problem).
    optional: Option<&'static str>,
}

pub(super) async fn check(
    sql: &Client,
    config: &Config,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let schema = &config.database.schema;
    let mut tables = vec![OwnTable {
        what: "dead-letter table",
        table: dead_letter_table(schema),
        rights: "SELECT, INSERT, UPDATE, DELETE",
        extra_grant: Some(format!(
            "GRANT USAGE ON SEQUENCE {schema}.dead_letters_id_seq TO <role>;"
        )),
        optional: None,
    }];
    // Needed once any webhook may spool (a spool left from before is
    // drained whatever the config says).
    let spools = config
        .webhooks
        .iter()
        .any(|h| h.receives_save_lead() && h.policy.spool);
    if spools {
        tables.push(OwnTable {
            what: "spool",
            table: spool_table(schema),
            rights: "SELECT, INSERT, UPDATE, DELETE",
            extra_grant: Some(format!(
                "GRANT USAGE ON SEQUENCE {schema}.spool_id_seq TO <role>;"
            )),
            optional: None,
        });
    }
    tables.push(OwnTable {
        what: "webhook pause table",
        table: pauses_table(schema),
        rights: "SELECT, INSERT, DELETE",
        extra_grant: None,
        optional: None,
    });
    tables.push(OwnTable {
        what: "webhook status table",
        table: status_table(schema),
        rights: "SELECT, INSERT, UPDATE, DELETE",
        extra_grant: None,
        optional: None,
    });
    if config.source.mode == SourceMode::Replication {
        tables.push(OwnTable {
            what: "slot record table",
            table: slots_table(schema),
            rights: "SELECT, INSERT, UPDATE",
            extra_grant: None,
            optional: None,
        });
        tables.push(OwnTable {
            what: "backfill table",
            table: backfills_table(schema),
            rights: "SELECT, INSERT, UPDATE",
            extra_grant: Some(format!(
                "GRANT USAGE ON SEQUENCE {schema}.backfills_id_seq TO <role>;"
            )),
            optional: Some("backfills"),
        });
        tables.push(OwnTable {
            what: "backfill progress table",
            table: backfill_progress_table(schema),
            rights: "SELECT, INSERT, UPDATE",
            extra_grant: None,
            optional: Some("backfills"),
        });
    }
    for own in tables {
        report.create_own_tables |= check_one(sql, schema, &own, report).await?;
    }
    if let Some(registry) = &config.registry {
        let own = OwnTable {
            what: "registry table",
            table: registry.table.quoted(),
            rights: "SELECT",
            extra_grant: None,
            optional: None,
        };
        report.create_registry = check_one(sql, &registry.table.schema, &own, report).await?;
    }
    Ok(())
}

/// Reports on one table; true when it is missing and will be created.
async fn check_one(
    sql: &Client,
    schema: &str,
    own: &OwnTable,
    report: &mut Inspection,
) -> Result<bool, tokio_postgres::Error> {
    let OwnTable {
        what,
        table,
        rights,
        ..
    } = own;
    let row = sql
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL,
                    coalesce((SELECT bool_and(has_table_privilege(to_regclass($1), right_name))
                              FROM unnest(string_to_array($3, ', ')) right_name), false),
                    coalesce((SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = $2),
                             has_database_privilege(current_database(), 'CREATE'))",
            &[table, &schema, rights],
        )
        .await?;
    let (exists, usable, creatable): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    match (exists, usable, creatable) {
        (true, true, _) => report.found.push(format!("{what} {table} is ready")),
        (true, false, _) => report.problems.push(format!(
            "the role may not use the {what} {table}: GRANT {rights} ON {table} TO <role>;{} (see sql/setup.sql)",
            own.extra_grant.as_deref().map(|g| format!(" and {g}")).unwrap_or_default()
        )),
        (false, _, true) => {
            report
                .found
                .push(format!("{what} {table} is missing and will be created"));
            return Ok(true);
        }
        (false, _, false) => {
            let missing = format!(
                "the {what} {table} is missing and the role may not create it (database.schema = {schema:?}): have a DBA run sql/setup.sql"
            );
            match own.optional {
                Some(feature) => report.warnings.push(format!("{missing}; until then {feature} are unavailable")),
                None => report.problems.push(missing),
            }
        }
    }
    Ok(false)
}
