-- The workspace document is rewritten whole at every deploy. A few hundred KiB of jsonb
-- compresses with lz4 to about the size pglz gives, in a fraction of the time, so a deploy
-- spends less of its transaction compressing. Only values written from now on use it; a
-- server built without lz4 keeps pglz. The statement changes the column's metadata alone
-- (no rewrite), and migrations run one replica at a time under goose's session lock.
-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    ALTER TABLE workspaces ALTER COLUMN flows SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: workspaces.flows stays compressed with pglz';
END
$$;
-- +goose StatementEnd
