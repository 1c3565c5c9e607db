-- A listing of an entry's history (GET /api/v1/certs/{id}/versions, the History page) reads
-- a summary of each version: the change, who and when, name, type, source, fingerprint and
-- expiry. This index holds those columns beside the primary key's, so a page is an
-- index-only scan of a few adjacent index pages instead of one heap row per version, each
-- carrying the version's sealed material, and each on its own page once an entry's versions
-- were written months apart between other entries'.
--
-- It is built CONCURRENTLY, so replicas still running the previous release keep writing
-- versions meanwhile; that cannot run in a transaction. Replicas starting at once migrate
-- one after the other under goose's session lock. A build that was interrupted leaves an
-- invalid index that goose did not record as applied: the next start drops it and builds
-- it again.
-- +goose NO TRANSACTION
-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS entry_versions_listing;

CREATE INDEX CONCURRENTLY entry_versions_listing ON entry_versions (tenant_id, entry_id, version)
    INCLUDE (action, entry_version, restored_from, changed_at, changed_by, name, type, source, fingerprint_sha256, not_after);
