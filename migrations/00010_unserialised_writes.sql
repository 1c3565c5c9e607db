-- Writes of one tenant that do not queue behind one another.
--
-- Until now every write moved tenants.generation and appended to the tenant's audit chain
-- through audit_heads, so each held two rows of its tenant locked until its commit had
-- reached the disk, and the creates of one tenant committed one at a time. Both move to
-- tables that writers only insert into:
--
-- tenant_changes holds one row per committed change (n = 1; a restore adds more, to move
-- the generation past a file's). A tenant's generation is tenants.generation plus the sum
-- of its rows' n. In one snapshot that sum counts exactly the changes committed before it,
-- and a later snapshot sees every change an earlier one saw, so generations never go back
-- and two reads with the same generation read the same data. Before it reads a tenant, the
-- export folds its rows into tenants.generation, in one statement, so no reader sees a
-- different sum.
--
-- audit_pending holds the audit records of committed writes not yet in the chain, stored in
-- the write's own transaction. A chainer moves them into audit_log in the order of id, under
-- the lock of the tenant's head, numbering and hashing each as before; every read of the
-- trail (listing, export, verify) chains what is pending first. The chain's format and
-- hashes do not change.
--
-- Replicas of the previous release keep working while others run this one: their writes
-- move tenants.generation and append to the chain directly, which this release counts and
-- chains after. They read only tenants.generation, which lags by the changes not folded
-- yet: see docs/operations.md on upgrading.
-- +goose Up
CREATE TABLE tenant_changes (
    tenant_id text   NOT NULL,
    n         bigint NOT NULL DEFAULT 1 CHECK (n > 0)
);
CREATE INDEX tenant_changes_tenant ON tenant_changes (tenant_id) INCLUDE (n);

CREATE TABLE audit_pending (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id          text        NOT NULL REFERENCES tenants (id),
    at                 timestamptz NOT NULL,
    subject            text        NOT NULL,
    role               text        NOT NULL,
    action             text        NOT NULL,
    target             text        NOT NULL,
    fingerprint_before text        NOT NULL DEFAULT '',
    fingerprint_after  text        NOT NULL DEFAULT '',
    request_id         text        NOT NULL DEFAULT '',
    client_addr        text        NOT NULL DEFAULT '',
    detail             text        NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_pending_tenant ON audit_pending (tenant_id, id);

ALTER TABLE audit_pending ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_pending FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_pending_tenant ON audit_pending
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));
