-- Catalogue entries. Inline material is sealed (envelope encryption: see internal/envelope);
-- key_id names the master key that wraps the data keys of this row, so a key rotation can
-- find what is left to rewrap. Metadata columns serve listing and filtering without opening
-- anything.
-- +goose Up
CREATE TABLE entries (
    tenant_id          text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 text        NOT NULL CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name               text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
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
    version            bigint      NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((source = 'inline' AND cert_sealed IS NOT NULL AND key_id IS NOT NULL AND cert_path IS NULL AND key_path IS NULL)
        OR (source = 'file' AND cert_path IS NOT NULL AND cert_sealed IS NULL AND key_sealed IS NULL))
);

CREATE INDEX entries_not_after ON entries (tenant_id, not_after);
CREATE INDEX entries_key_id ON entries (key_id) WHERE key_id IS NOT NULL;

ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE entries FORCE ROW LEVEL SECURITY;
CREATE POLICY entries_tenant ON entries
    USING (tenant_id = current_setting('loopze.tenant', true))
    WITH CHECK (tenant_id = current_setting('loopze.tenant', true));
