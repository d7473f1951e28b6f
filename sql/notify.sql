-- Notify mode for leadhook, for a DBA to run by hand (as the owner of the
-- leads table), when logical replication is not available.
--
-- This is what `leadhook setup` prints for the default config (table
-- public.leads with primary key id, schema leadhook, no [source.columns]);
-- for another table or column mapping, run `leadhook setup --config ...`
-- and use its output instead. leadhook applies it itself at startup when
-- `source.create = true` and the role owns the table.
--
-- The trigger writes every INSERT and UPDATE into the outbox in the same
-- transaction (a rollback leaves nothing), then rings pg_notify. The role
-- leadhook runs as needs SELECT and DELETE on the outbox (and SELECT on the
-- leads table):
--   GRANT USAGE ON SCHEMA "leadhook" TO leadhook;
--   GRANT SELECT, DELETE ON "leadhook".outbox TO leadhook;
--   GRANT SELECT ON public.leads TO leadhook;
-- plus the dead-letter and spool tables of sql/setup.sql, step 5.

-- leadhook notify mode: outbox and capture trigger for "public"."leads".
CREATE SCHEMA IF NOT EXISTS "leadhook";
CREATE TABLE IF NOT EXISTS "leadhook".outbox (
    seq         bigserial   PRIMARY KEY,
    op          text        NOT NULL,
    lead_key    text        NOT NULL,
    lead        jsonb       NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    other_columns jsonb
);
ALTER TABLE "leadhook".outbox ADD COLUMN IF NOT EXISTS other_columns jsonb;
CREATE OR REPLACE FUNCTION "leadhook".capture_lead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO "leadhook".outbox (op, lead_key, lead, other_columns)
    VALUES (lower(TG_OP),
            jsonb_build_array(NEW."id"::text)::text,
            jsonb_build_object('email', NEW."email"::text,
                               'company', NEW."company"::text,
                               'first_name', NEW."first_name"::text,
                               'last_name', NEW."last_name"::text,
                               'phone', NEW."phone"::text,
                               'website', NEW."website"::text,
                               'position', NEW."position"::text,
                               'twitter', NEW."twitter"::text,
                               'linkedin', NEW."linkedin"::text,
                               'notes', NEW."notes"::text,
                               'score', NEW."score"::text),
            (SELECT jsonb_object_agg(key, value)
             FROM jsonb_each_text(to_jsonb(NEW) - ARRAY['email', 'company', 'first_name', 'last_name', 'phone', 'website', 'position', 'twitter', 'linkedin', 'notes', 'score']::text[])));
    PERFORM pg_notify('leadhook_outbox_16e2a69b0a1ed856', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS leadhook_capture ON "public"."leads";
CREATE TRIGGER leadhook_capture AFTER INSERT OR UPDATE ON "public"."leads"
    FOR EACH ROW EXECUTE FUNCTION "leadhook".capture_lead();

-- To remove it again (`leadhook setup --uninstall` does this, and says what
-- it removed; changes still in the outbox are dropped with it):
-- DROP TRIGGER IF EXISTS leadhook_capture ON "public"."leads";
-- DROP FUNCTION IF EXISTS "leadhook".capture_lead();
-- DROP TABLE IF EXISTS "leadhook".outbox;
