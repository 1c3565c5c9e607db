-- A file-sourced entry may name a passphrase file: the passphrase of its PKCS#12 file or
-- of its encrypted key, read with the other files at every connection init. The path is
-- stored, never the passphrase. Migrations run one replica at a time under goose's session
-- lock; IF NOT EXISTS keeps the statement harmless should it meet the column anyway.
-- +goose Up
ALTER TABLE entries ADD COLUMN IF NOT EXISTS passphrase_path text
    CONSTRAINT entries_passphrase_path_file CHECK (passphrase_path IS NULL OR source = 'file');
