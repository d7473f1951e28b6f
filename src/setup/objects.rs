//! The tables leadhook keeps in `database.schema`, by name and DDL, in one
//! place: dead letters, the spool, and what it knows of its slot. (The outbox is in
//! `setup::outbox`, the publication in `setup::prerequisites::publication`.)
//! `sql/setup.sql` carries the same statements; a test keeps them equal.

use postgres_protocol::escape::escape_identifier;

/// The table and its schema; `sql/setup.sql` carries the same statements.
pub(crate) fn dead_letter_statements(schema: &str) -> String {
    let schema = escape_identifier(schema);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
    id               bigserial   PRIMARY KEY,
    webhook          text        NOT NULL,
    webhook_id       text        NOT NULL,
    payload          text        NOT NULL,
    attempts         integer     NOT NULL,
    last_status      integer,
    last_error       text        NOT NULL,
    first_attempt_at timestamptz NOT NULL,
    last_attempt_at  timestamptz NOT NULL,
    UNIQUE (webhook, webhook_id)
);"
    )
}

pub(crate) fn dead_letter_table(schema: &str) -> String {
    format!("{}.dead_letters", escape_identifier(schema))
}

/// The `slots` table: one row per slot leadhook created or followed.
/// `sql/setup.sql` carries the same statement.
pub(crate) fn slots_statement(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.slots (
    slot_name         text        PRIMARY KEY,
    system_identifier text        NOT NULL,
    created_at        timestamptz NOT NULL,
    created_lsn       pg_lsn      NOT NULL,
    confirmed_lsn     pg_lsn      NOT NULL,
    confirmed_at      timestamptz NOT NULL
);",
        escape_identifier(schema)
    )
}

/// What a `slots` table from before commit times needs; run apart from the
/// rest, since it needs the table's owner (see `prerequisites::prepare`).
pub(crate) fn slots_upgrade_statement(schema: &str) -> String {
    format!(
        "ALTER TABLE {}.slots ADD COLUMN IF NOT EXISTS confirmed_commit_at timestamptz;",
        escape_identifier(schema)
    )
}

pub(crate) fn slots_table(schema: &str) -> String {
    format!("{}.slots", escape_identifier(schema))
}

/// The spool: changes waiting for a webhook that is down or cannot keep
/// up (see `delivery::spool`). Ordered by `id` (one writer, so ids follow
/// commit order); a change is in it at most once per webhook. `position`
/// and `position_index` place a change in the stream (commit LSN and index,
/// or outbox sequence), so a change streamed again after a restart is not
/// queued behind a later change of its lead.
/// `sql/setup.sql` carries the same statement.
pub(crate) fn spool_statement(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.spool (
    id               bigserial   NOT NULL,
    webhook          text        NOT NULL,
    webhook_id       text        NOT NULL,
    lead_key         bigint      NOT NULL,
    payload          text        NOT NULL,
    committed_at     timestamptz NOT NULL,
    spooled_at       timestamptz NOT NULL DEFAULT now(),
    first_attempt_at timestamptz,
    attempts         integer     NOT NULL DEFAULT 0,
    position         bigint      NOT NULL,
    position_index   integer     NOT NULL,
    PRIMARY KEY (webhook, id),
    UNIQUE (webhook, webhook_id)
);
CREATE INDEX IF NOT EXISTS spool_lead_position ON {schema}.spool (webhook, lead_key, position, position_index);",
        schema = escape_identifier(schema)
    )
}

pub(crate) fn spool_table(schema: &str) -> String {
    format!("{}.spool", escape_identifier(schema))
}

/// Paused webhooks, by name: durable, so a pause survives restarts and a
/// standby that takes over sees it (see `registry::pauses`).
/// `sql/setup.sql` carries the same statement.
pub(crate) fn pauses_statement(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
    name      text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);",
        pauses_table(schema)
    )
}

pub(crate) fn pauses_table(schema: &str) -> String {
    format!("{}.webhook_pauses", escape_identifier(schema))
}

/// What the running sidecar reports of each webhook, for `leadhook
/// webhooks list` (see `registry::status`). `sql/setup.sql` carries the
/// same statement.
pub(crate) fn status_statement(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
    name            text        PRIMARY KEY,
    origin          text        NOT NULL,
    enabled         boolean     NOT NULL,
    paused          boolean     NOT NULL,
    state           text        NOT NULL,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_failure    text,
    in_flight       integer     NOT NULL,
    problem         text,
    updated_at      timestamptz NOT NULL
);",
        status_table(schema)
    )
}

pub(crate) fn status_table(schema: &str) -> String {
    format!("{}.webhook_status", escape_identifier(schema))
}

/// Backfill runs (`leadhook backfill`, and those leadhook files itself) and
/// each shard's progress through them (see `backfill::runs`). A run's
/// `webhooks` NULL means every webhook; `auto_for` names the webhook a
/// `backfill = true` run was filed for, once. `sql/setup.sql` carries the
/// same statements.
pub(crate) fn backfill_statements(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.backfills (
    id           bigserial   PRIMARY KEY,
    webhooks     text[],
    where_sql    text,
    batch        integer     NOT NULL,
    rate         integer,
    shards       integer     NOT NULL DEFAULT 1,
    reason       text        NOT NULL,
    auto_for     text,
    shard        integer,
    requested_at timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS backfills_auto_for ON {schema}.backfills (auto_for) WHERE auto_for IS NOT NULL;
CREATE TABLE IF NOT EXISTS {schema}.backfill_progress (
    run          bigint      NOT NULL REFERENCES {schema}.backfills (id) ON DELETE CASCADE,
    shard        integer     NOT NULL,
    state        text        NOT NULL,
    last_key     text[],
    rows_done    bigint      NOT NULL DEFAULT 0,
    rows_total   bigint,
    error        text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (run, shard)
);",
        schema = escape_identifier(schema)
    )
}

pub(crate) fn backfills_table(schema: &str) -> String {
    format!("{}.backfills", escape_identifier(schema))
}

pub(crate) fn backfill_progress_table(schema: &str) -> String {
    format!("{}.backfill_progress", escape_identifier(schema))
}

/// Every table of leadhook's own, for creating them at startup.
pub(crate) fn own_table_statements(schema: &str, replication: bool) -> String {
    let mut statements = vec![
        dead_letter_statements(schema),
        spool_statement(schema),
        pauses_statement(schema),
        status_statement(schema),
    ];
    if replication {
        statements.push(slots_statement(schema));
        statements.push(backfill_statements(schema));
    }
    statements.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = include_str!("../../sql/setup.sql");

    #[test]
    fn the_dba_script_creates_the_same_table_as_the_sidecar() {
        assert!(
            SCRIPT.contains(&dead_letter_statements("leadhook")),
            "sql/setup.sql is out of date"
        );
    }

    #[test]
    fn the_dba_script_creates_the_same_spool_as_the_sidecar() {
        assert!(
            SCRIPT.contains(&spool_statement("leadhook")),
            "sql/setup.sql is out of date"
        );
    }

    #[test]
    fn the_dba_script_creates_the_same_pause_and_status_tables_as_the_sidecar() {
        assert!(SCRIPT.contains(&pauses_statement("leadhook")));
        assert!(SCRIPT.contains(&status_statement("leadhook")));
    }

    #[test]
    fn the_dba_script_creates_the_same_backfill_tables_as_the_sidecar() {
        assert!(
            SCRIPT.contains(&backfill_statements("leadhook")),
            "sql/setup.sql is out of date"
        );
    }

    #[test]
    fn the_dba_script_creates_the_same_slot_table_as_the_sidecar() {
        assert!(
            SCRIPT.contains(&slots_statement("leadhook"))
                && SCRIPT.contains(&slots_upgrade_statement("leadhook")),
            "sql/setup.sql is out of date"
        );
    }
}
