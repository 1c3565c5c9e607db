-- Each entry carries the number of deployed node fields that reference it, kept exact by
-- statement-level triggers on entry_references in the same transaction as every change of
-- the references. Listing, reading and refusing a delete then read one column instead of
-- counting rows: an entry with 100,000 references costs no more to show than one with none.
-- +goose Up
ALTER TABLE entries ADD COLUMN ref_count integer NOT NULL DEFAULT 0 CHECK (ref_count >= 0);

-- The backfill must see every tenant's rows. The table owner is subject to row-level
-- security only while it is FORCEd, so lift that for this transaction's backfill alone.
ALTER TABLE entries NO FORCE ROW LEVEL SECURITY;
ALTER TABLE entry_references NO FORCE ROW LEVEL SECURITY;
UPDATE entries e SET ref_count = r.n
FROM (SELECT tenant_id, entry_id, count(*) AS n FROM entry_references GROUP BY tenant_id, entry_id) r
WHERE e.tenant_id = r.tenant_id AND e.id = r.entry_id;
ALTER TABLE entries FORCE ROW LEVEL SECURITY;
ALTER TABLE entry_references FORCE ROW LEVEL SECURITY;

-- +goose StatementBegin
CREATE FUNCTION entry_references_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE entries e SET ref_count = e.ref_count - d.n
        FROM (SELECT tenant_id, entry_id, count(*) AS n FROM old_rows GROUP BY tenant_id, entry_id) d
        WHERE e.tenant_id = d.tenant_id AND e.id = d.entry_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE entries e SET ref_count = e.ref_count + d.n
        FROM (SELECT tenant_id, entry_id, count(*) AS n FROM new_rows GROUP BY tenant_id, entry_id) d
        WHERE e.tenant_id = d.tenant_id AND e.id = d.entry_id;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER entry_references_count_insert AFTER INSERT ON entry_references
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION entry_references_count();
CREATE TRIGGER entry_references_count_delete AFTER DELETE ON entry_references
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION entry_references_count();
CREATE TRIGGER entry_references_count_update AFTER UPDATE ON entry_references
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION entry_references_count();
