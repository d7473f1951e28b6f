-- Least-privilege setup for leadhook (replication mode), for a DBA to run by hand.
--
-- Edit the names first: role `leadhook`, database `app`, table `public.leads`,
-- publication `leadhook_leads`, slot `leadhook` (they must match sidecar.toml).
-- Run as a superuser, or split: the role statements need CREATEROLE, the
-- publication needs ownership of the table, the slot needs REPLICATION.
--
-- The server itself needs `wal_level = logical` (ALTER SYSTEM SET wal_level =
-- logical; then a restart) and free `max_replication_slots`/`max_wal_senders`.

-- 1. A login role that may stream changes, and read the leads table (to read
--    back large values an UPDATE left untouched). Nothing else.
CREATE ROLE leadhook WITH LOGIN REPLICATION PASSWORD 'change-me';
GRANT CONNECT ON DATABASE app TO leadhook;
GRANT USAGE ON SCHEMA public TO leadhook;
GRANT SELECT ON public.leads TO leadhook;

-- 2. The publication: which table's changes are streamed (as the table owner).
--    For a partitioned leads table, add WITH (publish_via_partition_root = true),
--    or its changes are published under the partitions' names and never delivered.
CREATE PUBLICATION leadhook_leads FOR TABLE public.leads;

-- 3. The slot: where the server keeps leadhook's position. Changes committed
--    before it is created are not captured. It waits for every transaction
--    open in the cluster to end first. From its creation on, the server
--    retains WAL until leadhook confirms it: drop the slot
--    (SELECT pg_drop_replication_slot('leadhook');) if you retire leadhook.
SELECT pg_create_logical_replication_slot('leadhook', 'pgoutput');

-- 4. Optional: send whole old rows with each UPDATE, so large unchanged
--    values (e.g. long notes) come with the change, exactly as they were,
--    instead of being read back by primary key (which gives the current value,
--    possibly newer than the change). Costs extra WAL on every UPDATE and
--    DELETE. For a partitioned table, run it on each partition too.
-- ALTER TABLE public.leads REPLICA IDENTITY FULL;

-- 5. leadhook's own tables, in its schema (database.schema): dead letters,
--    the changes a webhook gave up on (see README, "Delivery"), the spool,
--    where a failing webhook's backlog waits so the slot moves on, the paused
--    webhooks and the webhook status (see README, "Managing webhooks"), and
--    slots, what leadhook knows of its slot (so a lost slot is noticed and
--    reported), and backfills, the runs that deliver existing leads (see
--    README, "Backfill").
--    leadhook creates them at startup when the role may; otherwise create
--    them here.
CREATE SCHEMA IF NOT EXISTS "leadhook";
CREATE TABLE IF NOT EXISTS "leadhook".dead_letters (
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
);
GRANT USAGE ON SCHEMA "leadhook" TO leadhook;
GRANT SELECT, INSERT, UPDATE, DELETE ON "leadhook".dead_letters TO leadhook;
GRANT USAGE ON SEQUENCE "leadhook".dead_letters_id_seq TO leadhook;
CREATE TABLE IF NOT EXISTS "leadhook".spool (
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
CREATE INDEX IF NOT EXISTS spool_lead_position ON "leadhook".spool (webhook, lead_key, position, position_index);
GRANT SELECT, INSERT, UPDATE, DELETE ON "leadhook".spool TO leadhook;
GRANT USAGE ON SEQUENCE "leadhook".spool_id_seq TO leadhook;
CREATE TABLE IF NOT EXISTS "leadhook".webhook_pauses (
    name      text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS "leadhook".webhook_status (
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
);
GRANT SELECT, INSERT, DELETE ON "leadhook".webhook_pauses TO leadhook;
GRANT SELECT, INSERT, UPDATE, DELETE ON "leadhook".webhook_status TO leadhook;
CREATE TABLE IF NOT EXISTS "leadhook".slots (
    slot_name         text        PRIMARY KEY,
    system_identifier text        NOT NULL,
    created_at        timestamptz NOT NULL,
    created_lsn       pg_lsn      NOT NULL,
    confirmed_lsn     pg_lsn      NOT NULL,
    confirmed_at      timestamptz NOT NULL
);
ALTER TABLE "leadhook".slots ADD COLUMN IF NOT EXISTS confirmed_commit_at timestamptz;
GRANT SELECT, INSERT, UPDATE ON "leadhook".slots TO leadhook;
CREATE TABLE IF NOT EXISTS "leadhook".backfills (
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
CREATE UNIQUE INDEX IF NOT EXISTS backfills_auto_for ON "leadhook".backfills (auto_for) WHERE auto_for IS NOT NULL;
CREATE TABLE IF NOT EXISTS "leadhook".backfill_progress (
    run          bigint      NOT NULL REFERENCES "leadhook".backfills (id) ON DELETE CASCADE,
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
);
GRANT SELECT, INSERT, UPDATE ON "leadhook".backfills, "leadhook".backfill_progress TO leadhook;
GRANT USAGE ON SEQUENCE "leadhook".backfills_id_seq TO leadhook;

-- With all of the above in place, set `create = false` in [source].
