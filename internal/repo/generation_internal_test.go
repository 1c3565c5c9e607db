package repo

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/testdb"
)

// openPool opens a pool on a fresh test database, closed with the test.
func openPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := db.Open(context.Background(), testdb.URL(t), logging.Discard())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestWritesButCreatesAreOrdered: while one transaction holds a write of the tenant begun
// (BumpGeneration), another write but a create waits for it, a create commits at once, and
// folding skips the tenant without waiting.
func TestWritesButCreatesAreOrdered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := openPool(t)
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

	e := &Entry{TenantID: "acme", ID: "new", Name: "new", Type: "ca-bundle", Source: "file", CertPath: "/x.pem", Version: 1}
	require.NoError(t, WriteEntries(ctx, pool, "acme", true, []EntryWrite{{Row: e}}), "a create must not wait for the writer")
	got, err := GetGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 2, got, "the create counted; the held write did not commit")
	changeRows := func() (n int) {
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenant_changes WHERE tenant_id = 'acme'`).Scan(&n))
		return n
	}
	require.Equal(t, 2, changeRows())
	bounded, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	require.NoError(t, FoldChanges(bounded, pool, "acme"), "a fold must not wait for the writer")
	require.Equal(t, 2, changeRows(), "nothing folded while the writer holds the tenant")

	require.NoError(t, held.Commit(ctx))
	got, err = GetGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 3, got)
	require.NoError(t, FoldChanges(ctx, pool, "acme"))
	got, err = GetGeneration(ctx, pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 3, got, "folding keeps the generation")
	require.Zero(t, changeRows())
}
