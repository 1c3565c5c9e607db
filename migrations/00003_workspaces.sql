-- The deployed workspace of each tenant, the references its nodes make to catalogue
-- entries, and the sealed secrets of its nodes (credentials and inline TLS PEM).
-- entry_references has a foreign key to entries with ON DELETE RESTRICT: the database
-- itself refuses a delete that would leave a deployed node pointing at nothing, even when
-- a deploy and a delete race.
-- +goose Up
CREATE TABLE workspaces (
    tenant_id  text        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    flows      jsonb       NOT NULL,
    version    bigint      NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entry_references (
    tenant_id text NOT NULL,
    entry_id  text NOT NULL,
    flow_id   text NOT NULL,
    node_id   text NOT NULL,
    node_type text NOT NULL,
    field     text NOT NULL,
    PRIMARY KEY (tenant_id, entry_id, flow_id, node_id, field),
    FOREIGN KEY (tenant_id, entry_id) REFERENCES entries (tenant_id, id) ON DELETE RESTRICT
);

CREATE TABLE node_secrets (
    tenant_id text  NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    node_id   text  NOT NULL,
    name      text  NOT NULL,
    sealed    bytea NOT NULL,
    key_id    text  NOT NULL,
    PRIMARY KEY (tenant_id, node_id, name)
);
CREATE INDEX node_secrets_key_id ON node_secrets (key_id);

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY workspaces_tenant ON workspaces
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));

ALTER TABLE entry_references ENABLE ROW LEVEL SECURITY;
ALTER TABLE entry_references FORCE ROW LEVEL SECURITY;
CREATE POLICY entry_references_tenant ON entry_references
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));

ALTER TABLE node_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE node_secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY node_secrets_tenant ON node_secrets
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));
