-- Keys per tenant. Each tenant has versioned keys of its own (32 random bytes), stored only
-- wrapped under the master key, which the database never sees: master_key_id names the
-- master key that wrapped the row, so a master key rotation finds what is left to rewrap,
-- and rewraps a row in place (the key itself, and so everything derived from it, is
-- unchanged). A tenant's rows, files and audit chain are sealed under keys derived from its
-- current version; older versions stay for opening what was sealed under them and for
-- verifying the audit chain, so a version is never deleted.
-- +goose Up
CREATE TABLE tenant_keys (
    tenant_id     text        NOT NULL REFERENCES tenants (id),
    version       integer     NOT NULL CHECK (version > 0),
    master_key_id text        NOT NULL,
    wrapped       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);
CREATE INDEX tenant_keys_master ON tenant_keys (master_key_id);

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_keys_tenant ON tenant_keys
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loopze_app') THEN
        REVOKE DELETE, TRUNCATE ON tenant_keys FROM loopze_app;
        GRANT SELECT, INSERT, UPDATE ON tenant_keys TO loopze_app;
    END IF;
END
$$;
-- +goose StatementEnd
