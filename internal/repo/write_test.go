package repo_test

import (
	"context"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
)

// The catalogue writes entries through repo.WriteEntries only; these are its single
// writes, without history or audit, for the tests of the rows themselves.

func insertEntry(ctx context.Context, q db.DBTX, e *repo.Entry) error {
	if e.Version == 0 {
		e.Version = 1
	}
	return repo.WriteEntries(ctx, q, e.TenantID, false, []repo.EntryWrite{{Row: e}})
}

func createEntry(ctx context.Context, q db.DBTX, e *repo.Entry) error {
	if e.Version == 0 {
		e.Version = 1
	}
	return repo.WriteEntries(ctx, q, e.TenantID, true, []repo.EntryWrite{{Row: e}})
}

func updateEntry(ctx context.Context, q db.DBTX, e *repo.Entry) error {
	before := *e
	return repo.WriteEntries(ctx, q, e.TenantID, false, []repo.EntryWrite{{Row: e, Before: &before}})
}

func deleteEntry(ctx context.Context, q db.DBTX, tenant, id string, version int64) error {
	return repo.WriteEntries(ctx, q, tenant, false, []repo.EntryWrite{{Before: &repo.Entry{TenantID: tenant, ID: id, Version: version}}})
}
