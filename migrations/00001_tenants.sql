-- The role queries run as when the login role would bypass row-level security (a superuser,
-- as in the embedded cluster and the official container image). Roles are cluster-wide, so
-- another database of the same cluster may have made it already; a login without CREATEROLE
-- (a managed service) does not need it, since row-level security applies to it directly.
-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    CREATE ROLE loopze_app NOLOGIN NOINHERIT;
EXCEPTION
    WHEN duplicate_object OR unique_violation OR insufficient_privilege THEN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loopze_app') THEN
        GRANT USAGE ON SCHEMA public TO loopze_app;
        GRANT SELECT ON goose_db_version TO loopze_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO loopze_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT USAGE, SELECT ON SEQUENCES TO loopze_app;
    END IF;
END
$$;
-- +goose StatementEnd

-- Tenants carry no secrets and are listed across tenants by the export job and key
-- rotation, so this table has no row-level security; everything that belongs to a tenant does.
CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    generation  bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
