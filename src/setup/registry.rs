//! The registry table (`[registry] table`), as SQL: webhooks as rows, which
//! the product's settings page writes with plain SQL. A statement trigger
//! rings a notification on every change, so the sidecar reads the table
//! again at once; it also reads it every `poll_interval` in case one is
//! missed. `leadhook webhooks pause` rings the same channel.

use postgres_protocol::escape::escape_identifier;

use crate::config::TableName;

/// The notification channel of a sidecar schema's registry (and pauses):
/// derived from a hash so it always fits PostgreSQL's 63-byte limit.
pub(crate) fn channel(schema: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(schema.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("leadhook_registry_{hex}")
}

/// The table, its `updated_at` trigger and its notification trigger;
/// idempotent. `sql/registry.sql` carries the same statements.
pub(crate) fn statements(table: &TableName, schema: &str) -> String {
    let quoted = table.quoted();
    let function = |name: &str| format!("{}.{name}", escape_identifier(schema));
    format!(
        "CREATE SCHEMA IF NOT EXISTS {table_schema};
CREATE TABLE IF NOT EXISTS {quoted} (
    name       text        PRIMARY KEY,
    url        text        NOT NULL,
    method     text        NOT NULL DEFAULT 'POST',
    headers    jsonb       NOT NULL DEFAULT '{{}}',
    enabled    boolean     NOT NULL DEFAULT true,
    secret     text,
    filter     jsonb,
    backfill   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE {quoted} ADD COLUMN IF NOT EXISTS backfill boolean NOT NULL DEFAULT false;
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE OR REPLACE FUNCTION {touch}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION {ring}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS leadhook_touch ON {quoted};
CREATE TRIGGER leadhook_touch BEFORE UPDATE ON {quoted}
    FOR EACH ROW EXECUTE FUNCTION {touch}();
DROP TRIGGER IF EXISTS leadhook_ring ON {quoted};
CREATE TRIGGER leadhook_ring AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {quoted}
    FOR EACH STATEMENT EXECUTE FUNCTION {ring}();",
        table_schema = escape_identifier(&table.schema),
        schema = escape_identifier(schema),
        touch = function("registry_touch"),
        ring = function("registry_ring"),
        channel = channel(schema),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dba_script_creates_the_same_registry_as_the_sidecar() {
        let table = TableName {
            schema: "leadhook".into(),
            name: "webhooks".into(),
        };
        assert!(
            include_str!("../../sql/registry.sql").contains(&statements(&table, "leadhook")),
            "sql/registry.sql is out of date"
        );
    }

    #[test]
    fn the_channel_fits_however_long_the_schema_name() {
        assert!(channel(&"s".repeat(63)).len() <= 63);
    }
}
