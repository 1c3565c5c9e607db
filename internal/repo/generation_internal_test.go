package repo

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/testdb"
)

// TestWritesButCreatesAreOrdered: while one transaction holds a write of the tenant begun
// (BumpGeneration), another write but a create waits for it, and a create commits at once.
func TestWritesButCreatesAreOrdered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t), logging.Discard())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	gen, err := BumpGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 1, gen)

	held, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = held.Rollback(ctx) }()
	gen, err = BumpGeneration(ctx, held, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 2, gen)

	other, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = other.Rollback(ctx) }()
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = BumpGeneration(short, other, "acme")
	require.Error(t, err, "a second writer must wait for the first")
	require.ErrorIs(t, err, context.DeadlineExceeded)

	e := &Entry{TenantID: "acme", ID: "new", Name: "new", Type: "ca-bundle", Source: "file", CertPath: "/x.pem"}
	require.NoError(t, CreateEntry(ctx, pool, e), "a create must not wait for the writer")
	got, err := GetGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 2, got, "the create counted; the held write did not commit")

	require.NoError(t, held.Commit(ctx))
	got, err = GetGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 3, got)
	require.NoError(t, FoldChanges(ctx, pool, "acme"))
	got, err = GetGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 3, got, "folding keeps the generation")
	var rows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenant_changes WHERE tenant_id = 'acme'`).Scan(&rows))
	require.Zero(t, rows)
}
