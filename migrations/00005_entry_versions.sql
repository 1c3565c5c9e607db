-- The history of every catalogue entry: one immutable row per create, update, delete and
-- restore, holding the entry as it was after the change (for a delete: as it was when
-- deleted). Inline material is sealed again under its own data key, with AAD naming the
-- tenant, the entry, this version and the field, so a version's ciphertext opens nowhere
-- else. Versions are numbered per entry ID from 1 and outlive the entry: a deleted entry's
-- history stays until the retention prunes it. Only key rotation updates a row (to rewrap
-- its data keys), and only the retention deletes rows.
-- +goose Up
CREATE TABLE entry_versions (
    tenant_id          text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entry_id           text        NOT NULL CHECK (entry_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    version            bigint      NOT NULL CHECK (version > 0),
    action             text        NOT NULL CHECK (action IN ('create', 'update', 'delete', 'restore', 'baseline')),
    entry_version      bigint      NOT NULL,
    restored_from      bigint,
    name               text        NOT NULL,
    type               text        NOT NULL CHECK (type IN ('ca-bundle', 'client-pair', 'server-pair')),
    source             text        NOT NULL CHECK (source IN ('inline', 'file')),
    notes              text        NOT NULL DEFAULT '',
    cert_path          text,
    key_path           text,
    cert_sealed        bytea,
    key_sealed         bytea,
    key_id             text,
    fingerprint_sha256 text        NOT NULL,
    subject            text        NOT NULL,
    issuer             text        NOT NULL,
    serial_number      text        NOT NULL,
    not_before         timestamptz NOT NULL,
    not_after          timestamptz NOT NULL,
    dns_names          text[]      NOT NULL DEFAULT '{}',
    cert_count         integer     NOT NULL,
    key_algorithm      text        NOT NULL,
    has_private_key    boolean     NOT NULL,
    changed_at         timestamptz NOT NULL DEFAULT now(),
    changed_by         text        NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, entry_id, version),
    CHECK ((source = 'inline' AND cert_sealed IS NOT NULL AND key_id IS NOT NULL AND cert_path IS NULL AND key_path IS NULL)
        OR (source = 'file' AND cert_path IS NOT NULL AND cert_sealed IS NULL AND key_sealed IS NULL))
);

CREATE INDEX entry_versions_key_id ON entry_versions (key_id) WHERE key_id IS NOT NULL;

ALTER TABLE entry_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE entry_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY entry_versions_tenant ON entry_versions
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));
