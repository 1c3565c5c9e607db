package db_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/testdb"
)

// TestTryLock: of two sessions one holds the lock and the other is told so without
// waiting; an unlock frees it, and so does the end of the holder's session without one,
// as when its process is killed.
func TestTryLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.URL(t)
	const key = 42

	first, held, err := db.TryLock(ctx, url, key)
	require.NoError(t, err)
	require.True(t, held)
	_, held, err = db.TryLock(ctx, url, key)
	require.NoError(t, err)
	require.False(t, held, "another session holds it")
	other, held, err := db.TryLock(ctx, url, key+1)
	require.NoError(t, err)
	require.True(t, held, "another key is another lock")
	require.NoError(t, other.Unlock(ctx))

	require.NoError(t, first.Unlock(ctx))
	second, held, err := db.TryLock(ctx, url, key)
	require.NoError(t, err)
	require.True(t, held, "free once unlocked")

	// The holder's session ends without an unlock: the server terminates it, as it would
	// notice a killed process's connection close.
	admin, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer admin.Close(ctx)
	var ended bool
	require.NoError(t, admin.QueryRow(ctx, `SELECT pg_terminate_backend(pid, 10000) FROM pg_locks
		WHERE locktype = 'advisory' AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		key).Scan(&ended))
	require.True(t, ended)
	third, held, err := db.TryLock(ctx, url, key)
	require.NoError(t, err)
	require.True(t, held, "free once the holder's session ended")
	require.NoError(t, third.Unlock(ctx))
	require.Error(t, second.Unlock(ctx), "the terminated session is gone")

	_, _, err = db.TryLock(ctx, "postgres://u:secret-pw@[bad", key)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret-pw")
}
