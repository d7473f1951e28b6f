//! The leads table as the catalog describes it, beyond what config says:
//! its primary key, which reading a row back and the outbox trigger use.

/// A primary-key column: reading a row back needs its name and SQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    pub(crate) name: String,
    pub(crate) type_name: String,
}

/// The names of the table's columns (`None` if there is no such table):
/// what a webhook filter may name.
pub(crate) async fn column_names(
    sql: &tokio_postgres::Client,
    table: &crate::config::TableName,
) -> Result<Option<std::collections::BTreeSet<String>>, tokio_postgres::Error> {
    let rows = sql
        .query(
            "SELECT attname::text FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table.quoted()],
        )
        .await?;
    Ok((!rows.is_empty()).then(|| rows.iter().map(|r| r.get(0)).collect()))
}

/// Each filter column of `hook` the table does not have, as a problem under `key`.
pub(crate) fn unknown_filter_columns(
    key: &str,
    hook: &crate::config::WebhookConfig,
    columns: &std::collections::BTreeSet<String>,
    table: &crate::config::TableName,
) -> Vec<String> {
    hook.filter
        .conditions()
        .iter()
        .filter(|c| !columns.contains(&c.column))
        .map(|c| {
            format!(
                "{key}.filter: column {:?} not found in {table}; a filter compares columns of the leads table",
                c.column
            )
        })
        .collect()
}
