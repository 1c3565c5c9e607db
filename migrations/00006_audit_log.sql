-- The audit trail: one row per write of a tenant (and per refused delete or deploy), in a
-- hash chain per tenant. Record n carries hash = SHA-256(hash of record n-1 || n as 8
-- big-endian bytes || the record's canonical bytes); record 1 chains from 32 zero bytes.
-- The canonical encoding is defined in docs/audit.md and internal/audit. audit_heads holds
-- each tenant's last sequence number and hash: the upsert of that row is what orders
-- concurrent writers of one tenant, so the chain never forks, and `audit verify` checks
-- the log ends where the head says.
--
-- The log is append-only: the application's role may insert and read it but not update or
-- delete it, and a trigger refuses UPDATE, DELETE and TRUNCATE for every role, the table
-- owner included (a superuser must disable the trigger first, which is what verify detects).
-- +goose Up
CREATE TABLE audit_log (
    tenant_id          text        NOT NULL REFERENCES tenants (id),
    seq                bigint      NOT NULL CHECK (seq > 0),
    at                 timestamptz NOT NULL,
    subject            text        NOT NULL,
    role               text        NOT NULL,
    action             text        NOT NULL,
    target             text        NOT NULL,
    fingerprint_before text        NOT NULL DEFAULT '',
    fingerprint_after  text        NOT NULL DEFAULT '',
    request_id         text        NOT NULL DEFAULT '',
    client_addr        text        NOT NULL DEFAULT '',
    detail             text        NOT NULL DEFAULT '{}',
    prev_hash          bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash               bytea       NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (tenant_id, seq)
);

CREATE INDEX audit_log_at ON audit_log (tenant_id, at);
CREATE INDEX audit_log_target ON audit_log (tenant_id, target, seq);

CREATE TABLE audit_heads (
    tenant_id text   PRIMARY KEY REFERENCES tenants (id),
    seq       bigint NOT NULL,
    prev_hash bytea  NOT NULL,
    hash      bytea  NOT NULL
);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_log_tenant ON audit_log
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));

ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_heads_tenant ON audit_heads
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));

-- +goose StatementBegin
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loopze_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM loopze_app;
        GRANT SELECT, INSERT ON audit_log TO loopze_app;
    END IF;
END
$$;
-- +goose StatementEnd
