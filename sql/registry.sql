-- leadhook's registry table, for `[registry] table = "leadhook.webhooks"`
-- (the default schema "leadhook"): webhooks as rows, which the product's own
-- settings page manages with plain SQL. `leadhook setup --apply` creates the
-- same (for the table and schema of your config); run this as the table's
-- owner if the sidecar's role may not create it. See README, "Managing webhooks".
--
-- Header values and the secret may hold ${LEADHOOK_WEBHOOK_...} references
-- (only variables under [registry] env_prefix), so tokens need not be stored.
CREATE SCHEMA IF NOT EXISTS "leadhook";
CREATE TABLE IF NOT EXISTS "leadhook"."webhooks" (
    name       text        PRIMARY KEY,
    url        text        NOT NULL,
    method     text        NOT NULL DEFAULT 'POST',
    headers    jsonb       NOT NULL DEFAULT '{}',
    enabled    boolean     NOT NULL DEFAULT true,
    secret     text,
    filter     jsonb,
    backfill   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE "leadhook"."webhooks" ADD COLUMN IF NOT EXISTS backfill boolean NOT NULL DEFAULT false;
CREATE SCHEMA IF NOT EXISTS "leadhook";
CREATE OR REPLACE FUNCTION "leadhook".registry_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE OR REPLACE FUNCTION "leadhook".registry_ring() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('leadhook_registry_16e2a69b0a1ed856', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS leadhook_touch ON "leadhook"."webhooks";
CREATE TRIGGER leadhook_touch BEFORE UPDATE ON "leadhook"."webhooks"
    FOR EACH ROW EXECUTE FUNCTION "leadhook".registry_touch();
DROP TRIGGER IF EXISTS leadhook_ring ON "leadhook"."webhooks";
CREATE TRIGGER leadhook_ring AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "leadhook"."webhooks"
    FOR EACH STATEMENT EXECUTE FUNCTION "leadhook".registry_ring();
GRANT USAGE ON SCHEMA "leadhook" TO leadhook;
GRANT SELECT ON "leadhook"."webhooks" TO leadhook;
