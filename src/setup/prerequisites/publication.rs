//! The publication: it must include the table, publish inserts and updates,
//! publish a partitioned table under the table's own name, and send every
//! row and every column leadhook maps. A row filter or a column list would
//! silently drop leads or fields, so each is reported with its fix.

use tokio_postgres::Client;

use super::Inspection;
use crate::config::{Config, Shard};
use crate::setup::table::KeyColumn;
use postgres_protocol::escape::escape_identifier;

/// `CREATE PUBLICATION` for the table. A partitioned table's changes are
/// published under the partitions' names unless `publish_via_partition_root`
/// is on, and would then match nothing leadhook follows. A shard's
/// publication has the row filter that gives it its leads.
pub(crate) fn create_statement(config: &Config, partitioned: bool, key: &[KeyColumn]) -> String {
    let with = if partitioned {
        " WITH (publish_via_partition_root = true)"
    } else {
        ""
    };
    let filter = match config.source.shard.filter(|s| s.count > 1) {
        Some(shard) => format!(" WHERE ({})", shard_condition(key, shard, "")),
        None => String::new(),
    };
    format!(
        "CREATE PUBLICATION {} FOR TABLE {}{filter}{with};",
        escape_identifier(&config.source.publication),
        config.table().quoted()
    )
}

/// Whether a lead (of row `row`: `""`, or an alias and a dot) belongs to
/// `shard`: a hash of its primary key, modulo the count. A PostgreSQL 15
/// row filter may call only immutable built-ins: `hashint8` for an integer
/// key, `hashtext` of the text form for any other (and composite) key. The
/// hash is cast to int8 before `abs`, which overflows on the smallest
/// int4. The publication and a backfill's batches use the same condition.
pub(crate) fn shard_condition(key: &[KeyColumn], shard: Shard, row: &str) -> String {
    let column = |k: &KeyColumn| format!("{row}{}", escape_identifier(&k.name));
    let hash = match key {
        [one] if matches!(one.type_name.as_str(), "smallint" | "integer" | "bigint") => {
            format!("hashint8({})", column(one))
        }
        _ => {
            let text: Vec<String> = key.iter().map(|k| format!("{}::text", column(k))).collect();
            format!("hashtext({})", text.join(" || '/' || "))
        }
    };
    format!("abs({hash}::int8) % {} = {}", shard.count, shard.index)
}

pub(super) async fn check(
    sql: &Client,
    config: &Config,
    table_oid: u32,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let (name, table) = (&config.source.publication, config.table());
    let quoted = escape_identifier(name);
    let row = sql
        .query_opt(
            "SELECT p.pubinsert AND p.pubupdate, p.pubviaroot,
                    EXISTS (SELECT 1 FROM pg_publication_tables t
                            JOIN pg_namespace n ON n.nspname = t.schemaname
                            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
                            WHERE t.pubname = p.pubname
                              AND (c.oid = $2 OR c.oid IN (SELECT relid FROM pg_partition_tree($2::oid))))
             FROM pg_publication p WHERE p.pubname = $1",
            &[name, &table_oid],
        )
        .await?;
    let Some(row) = row else {
        return missing(sql, config, table_oid, report).await;
    };
    let (publishes, via_root, includes): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if !includes {
        report.problems.push(format!(
            "publication {name:?} does not include {table}: run ALTER PUBLICATION {quoted} ADD TABLE {table};"
        ));
    } else if !publishes {
        report.problems.push(format!(
            "publication {name:?} does not publish inserts and updates: run ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete, truncate');"
        ));
    } else if report.partitioned && !via_root {
        report.problems.push(format!(
            "publication {name:?} publishes the changes of the partitioned table {table} under the partitions' names, which leadhook does not follow (nothing would be delivered): run ALTER PUBLICATION {quoted} SET (publish_via_partition_root = true);"
        ));
    } else {
        report
            .found
            .push(format!("publication {name:?} includes {table}"));
        check_rows_and_columns(sql, config, report).await?;
    }
    Ok(())
}

/// PostgreSQL 15 publications may filter rows and list columns.
async fn check_rows_and_columns(
    sql: &Client,
    config: &Config,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let version: i32 = sql
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    if version < 150_000 {
        return Ok(());
    }
    let (name, table) = (&config.source.publication, config.table());
    let row = sql
        .query_opt(
            "SELECT rowfilter, attnames::text[] FROM pg_publication_tables
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[name, &table.schema, &table.name],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let (filter, columns): (Option<String>, Option<Vec<String>>) = (row.get(0), row.get(1));
    let re_add = format!(
        "ALTER PUBLICATION {q} DROP TABLE {table}; ALTER PUBLICATION {q} ADD TABLE {table};",
        q = escape_identifier(name)
    );
    let sharded = config.source.shard.filter(|s| s.count > 1);
    match (&filter, sharded) {
        (Some(filter), Some(shard)) => report.found.push(format!(
            "publication {name:?} is shard {} of {}: WHERE {filter}",
            shard.index, shard.count
        )),
        (None, Some(shard)) => report.problems.push(format!(
            "publication {name:?} is shard {} of {} but has no row filter: it would send every lead to this shard; drop it (DROP PUBLICATION {}) and let leadhook create it",
            shard.index,
            shard.count,
            escape_identifier(name)
        )),
        _ => {}
    }
    if let Some(filter) = filter.filter(|_| sharded.is_none()) {
        report.problems.push(format!(
            "publication {name:?} has a row filter on {table} (WHERE {filter}): leads it filters out would never be sent; to publish every row run {re_add}"
        ));
    }
    let published = columns.unwrap_or_default();
    let needed = config
        .source
        .columns
        .iter()
        .filter_map(|(_, column)| column)
        .chain(report.key.iter().map(|k| k.name.as_str()));
    let mut unlisted: Vec<&str> = needed
        .filter(|column| !published.iter().any(|p| p == column))
        .collect();
    unlisted.dedup();
    if !unlisted.is_empty() {
        report.problems.push(format!(
            "publication {name:?} has a column list on {table} without {}: those fields would be sent as NULL; to publish every column run {re_add}",
            unlisted.join(", ")
        ));
    }
    Ok(())
}

async fn missing(
    sql: &Client,
    config: &Config,
    table_oid: u32,
    report: &mut Inspection,
) -> Result<(), tokio_postgres::Error> {
    let (name, table) = (&config.source.publication, config.table());
    if !config.source.create {
        report.problems.push(format!(
            "publication {name:?} does not exist and source.create = false: create it (sql/setup.sql) or set source.create = true"
        ));
        return Ok(());
    }
    let owner = sql
        .query_one(
            "SELECT pg_has_role(c.relowner, 'USAGE') OR r.rolsuper
             FROM pg_class c, pg_roles r WHERE c.oid = $1 AND r.rolname = current_user",
            &[&table_oid],
        )
        .await?;
    if owner.get(0) {
        report.create_publication = true;
        report.found.push(format!(
            "publication {name:?} is missing and will be created"
        ));
    } else {
        report.problems.push(format!(
            "publication {name:?} is missing and creating it needs ownership of {table}: have the owner run sql/setup.sql"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(columns: &[(&str, &str)]) -> Vec<KeyColumn> {
        columns
            .iter()
            .map(|(name, type_name)| KeyColumn {
                name: (*name).into(),
                type_name: (*type_name).into(),
            })
            .collect()
    }

    #[test]
    fn an_integer_key_is_hashed_as_int8_and_cast_before_abs() {
        let shard = Shard { index: 1, count: 4 };
        assert_eq!(
            shard_condition(&key(&[("id", "bigint")]), shard, ""),
            "abs(hashint8(\"id\")::int8) % 4 = 1"
        );
    }

    #[test]
    fn other_and_composite_keys_are_hashed_as_text() {
        let shard = Shard { index: 0, count: 2 };
        assert_eq!(
            shard_condition(&key(&[("tenant", "integer"), ("id", "uuid")]), shard, "l."),
            "abs(hashtext(l.\"tenant\"::text || '/' || l.\"id\"::text)::int8) % 2 = 0"
        );
    }
}
