//! The trigger outbox of notify mode, as SQL: an outbox table in the
//! sidecar's schema and an `AFTER INSERT OR UPDATE` row trigger on the leads
//! table that writes each change into it, in the same transaction (so a
//! rollback leaves nothing), then rings `pg_notify`.
//!
//! The trigger is generated from the config: it stores the mapped columns
//! under their payload names, each as `column::text` (the column type's own
//! output function, exactly what pgoutput sends), so a payload built from
//! the outbox is byte-identical to one built from the replication stream.

use crate::config::{Config, TableName};
use crate::field::ColumnMap;
use crate::setup::table::KeyColumn;
use postgres_protocol::escape::{escape_identifier, escape_literal};

/// The outbox, the function and the trigger of one config.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    schema: String,
    table: TableName,
}

impl Outbox {
    pub(crate) fn new(config: &Config) -> Outbox {
        Outbox {
            schema: config.database.schema.clone(),
            table: config.table(),
        }
    }

    /// `"schema".outbox`
    pub(crate) fn table(&self) -> String {
        format!("{}.outbox", escape_identifier(&self.schema))
    }

    /// The notification channel: one per sidecar schema. Derived from a hash
    /// of the schema's name so it always fits PostgreSQL's 63-byte channel
    /// limit (a longer one would make the trigger, and so the application's
    /// own writes, fail).
    pub(crate) fn channel(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.schema.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("leadhook_outbox_{hex}")
    }

    fn function(&self) -> String {
        format!("{}.capture_lead", escape_identifier(&self.schema))
    }

    fn trigger(&self) -> &'static str {
        "leadhook_capture"
    }

    fn leads(&self) -> String {
        format!(
            "{}.{}",
            escape_identifier(&self.table.schema),
            escape_identifier(&self.table.name)
        )
    }

    /// Key for `pg_try_advisory_lock`: one delivering instance per outbox.
    pub(crate) fn lock_name(&self) -> String {
        format!("leadhook outbox {}", self.table())
    }

    /// Everything notify mode needs, idempotent (safe to run again after
    /// changing `[source.columns]`).
    pub(crate) fn install_sql(&self, config: &Config, key: &[KeyColumn]) -> String {
        let columns = &config.source.columns;
        let key: Vec<String> = key
            .iter()
            .map(|k| format!("NEW.{}::text", escape_identifier(&k.name)))
            .collect();
        let body = format!(
            "
BEGIN
    INSERT INTO {outbox} (op, lead_key, lead, other_columns)
    VALUES (lower(TG_OP),
            jsonb_build_array({key})::text,
            {fields},
            {others});
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END
",
            outbox = self.table(),
            channel = self.channel(),
            key = key.join(", "),
            fields = lead_object(columns, "NEW", ",\n                               "),
            others = other_columns_object(columns, "NEW", "\n             "),
        );
        let tag = dollar_tag(&body);
        format!(
            "-- leadhook notify mode: outbox and capture trigger for {leads}.
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {outbox} (
    seq         bigserial   PRIMARY KEY,
    op          text        NOT NULL,
    lead_key    text        NOT NULL,
    lead        jsonb       NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    other_columns jsonb
);
ALTER TABLE {outbox} ADD COLUMN IF NOT EXISTS other_columns jsonb;
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS {tag}{body}{tag};
DROP TRIGGER IF EXISTS {trigger} ON {leads};
CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE ON {leads}
    FOR EACH ROW EXECUTE FUNCTION {function}();
",
            schema = escape_identifier(&self.schema),
            outbox = self.table(),
            function = self.function(),
            trigger = self.trigger(),
            leads = self.leads(),
        )
    }

    /// Removes the trigger, its function and the outbox (and the changes
    /// still in it: uninstall only once they are delivered, or not needed).
    pub(crate) fn uninstall_sql(&self) -> String {
        format!(
            "DROP TRIGGER IF EXISTS {trigger} ON {leads};
DROP FUNCTION IF EXISTS {function}();
DROP TABLE IF EXISTS {outbox};
",
            trigger = self.trigger(),
            leads = self.leads(),
            function = self.function(),
            outbox = self.table(),
        )
    }

    /// Whether the outbox exists, and whether the capture trigger does in
    /// its current form: one installed before filters existed does not
    /// capture the unmapped columns (`other_columns`), so it counts as
    /// missing and is installed again.
    pub(crate) async fn installed(
        &self,
        sql: &tokio_postgres::Client,
    ) -> Result<(bool, bool), tokio_postgres::Error> {
        let row = sql
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL,
                        EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = $2 AND tgrelid = to_regclass($3) AND NOT tgisinternal)
                        AND EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'other_columns' AND NOT attisdropped)
                        AND coalesce((SELECT prosrc LIKE '%other_columns%' FROM pg_proc WHERE oid = to_regproc($4)), false)",
                &[&self.table(), &self.trigger(), &self.leads(), &self.function()],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// The payload's fields of row `row` (`NEW` in the trigger, a table alias
/// in a backfill) as a JSON object of text: one definition, so a captured
/// lead and a backfilled one are the same bytes. `separator` lays out the
/// trigger's source.
pub(crate) fn lead_object(columns: &ColumnMap, row: &str, separator: &str) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|(field, column)| match column {
            Some(column) => format!("'{field}', {row}.{}::text", escape_identifier(column)),
            None => format!("'{field}', NULL::text"),
        })
        .collect();
    format!("jsonb_build_object({})", fields.join(separator))
}

/// The columns of row `row` that no field maps, as a JSON object of text
/// under their own names (for webhook filters; mapped ones are in the lead).
pub(crate) fn other_columns_object(columns: &ColumnMap, row: &str, newline: &str) -> String {
    let mapped: Vec<String> = columns
        .iter()
        .filter_map(|(_, column)| column.map(escape_literal))
        .collect();
    format!(
        "(SELECT jsonb_object_agg(key, value){newline}FROM jsonb_each_text(to_jsonb({row}) - ARRAY[{}]::text[]))",
        mapped.join(", ")
    )
}

/// A dollar-quote tag that does not occur in `body`: names come from the
/// config, and a `$$` in one must not end the function body early.
fn dollar_tag(body: &str) -> String {
    (0..)
        .map(|n| match n {
            0 => "$$".to_owned(),
            n => format!("$leadhook{n}$"),
        })
        .find(|tag| !body.contains(tag.as_str()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_config() -> Config {
        Config::from_toml("[database]\nurl = \"postgres://leadhook@localhost/app\"\n[source]\nmode = \"notify\"\n").unwrap()
    }

    #[test]
    fn the_dba_script_is_the_sql_for_the_default_config() {
        let config = default_config();
        let key = [KeyColumn {
            name: "id".into(),
            type_name: "bigint".into(),
        }];
        let outbox = Outbox::new(&config);
        let script = include_str!("../../sql/notify.sql");
        assert!(
            script.contains(&outbox.install_sql(&config, &key)),
            "sql/notify.sql is out of date"
        );
        let commented: String = outbox
            .uninstall_sql()
            .lines()
            .map(|l| format!("-- {l}\n"))
            .collect();
        assert!(
            script.contains(&commented),
            "sql/notify.sql's uninstall part is out of date"
        );
    }

    #[test]
    fn the_channel_fits_however_long_the_schema_name() {
        let config = Config::from_toml(&format!(
            "[database]\nurl = \"postgres://x@h/db\"\nschema = \"{}\"\n[source]\nmode = \"notify\"\n",
            "s".repeat(63)
        ))
        .unwrap();
        let channel = Outbox::new(&config).channel();
        assert!(channel.len() <= 63, "{channel}");
        assert_ne!(channel, Outbox::new(&default_config()).channel());
    }

    #[test]
    fn a_dollar_quote_in_a_name_cannot_end_the_function_body() {
        assert_eq!(dollar_tag("plain"), "$$");
        assert_eq!(dollar_tag(r#"NEW."e$$mail""#), "$leadhook1$");
        assert_eq!(dollar_tag("$$ $leadhook1$"), "$leadhook2$");
    }

    #[test]
    fn renamed_and_absent_columns_are_captured_under_their_payload_names() {
        let config = Config::from_toml(
            "[database]\nurl = \"postgres://x@h/db\"\n[source]\nmode = \"notify\"\n[source.columns]\nemail = \"mail\"\ntwitter = false\n",
        )
        .unwrap();
        let sql = Outbox::new(&config).install_sql(
            &config,
            &[KeyColumn {
                name: "id".into(),
                type_name: "int".into(),
            }],
        );
        assert!(sql.contains(r#"'email', NEW."mail"::text"#), "{sql}");
        assert!(sql.contains("'twitter', NULL::text"), "{sql}");
        assert!(
            sql.contains(r#"jsonb_build_array(NEW."id"::text)"#),
            "{sql}"
        );
    }
}
