-- The schedule of master key rotations (LOOPZE_KEY_ROTATE_EVERY), kept in the database so
-- that every replica counts from the same instant and a restart does not reset the count.
--
-- master_key_schedule has one row: when the last master key rotation completed (or, before
-- any, when a server of this release first started), and the key it moved to. It is
-- written only once a rotation has finished, so a rotation killed half way is still due at
-- the next check of any replica, which finishes it.
--
-- master_key_holders lists the serving processes and the master keyring each holds: the
-- store it is read from (a random ID kept beside loopze.key, or the token a PKCS#11 URI
-- names), its current key and every key it holds, refreshed at each check and dropped once
-- its lease ran out. A scheduled rotation runs only when every live replica reads the same
-- store, and rewraps only once every one of them holds the new key: a replica that cannot
-- see the new key would lose every tenant key the rotation rewraps.
--
-- Neither table belongs to a tenant or holds a secret (key IDs, host names and paths), and
-- both are read and written across tenants, so, like tenants, they have no row-level
-- security. The application role may read and write them; the schedule's row is never
-- deleted.
-- +goose Up
CREATE TABLE master_key_schedule (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    rotated_at timestamptz NOT NULL,
    key_id     text        NOT NULL DEFAULT ''
);

CREATE TABLE master_key_holders (
    replica        text        PRIMARY KEY,
    label          text        NOT NULL,
    store          text        NOT NULL,
    current_key_id text        NOT NULL,
    key_ids        text[]      NOT NULL,
    seen_at        timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loopze_app') THEN
        REVOKE DELETE, TRUNCATE ON master_key_schedule FROM loopze_app;
        GRANT SELECT, INSERT, UPDATE ON master_key_schedule TO loopze_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON master_key_holders TO loopze_app;
    END IF;
END
$$;
-- +goose StatementEnd
