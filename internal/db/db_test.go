package db_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestReplicasMigrateAtOnce starts several migrations against one empty database at the
// same time, as replicas booting together do: goose's session lock serialises them, every
// one succeeds, and the schema is applied exactly once.
func TestReplicasMigrateAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testdb.AdminURL(t))
	require.NoError(t, err)
	defer admin.Close(ctx)
	name := "replicas_migrate_test"
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	cfg := admin.Config()
	url := fmt.Sprintf("postgres://%s@/%s?host=%s&port=%d&sslmode=disable", cfg.User, name, cfg.Host, cfg.Port)
	if cfg.Password != "" {
		url = fmt.Sprintf("postgres://%s:%s@/%s?host=%s&port=%d&sslmode=disable", cfg.User, cfg.Password, name, cfg.Host, cfg.Port)
	}

	const replicas = 4
	var (
		wg      sync.WaitGroup
		applied = make([]int, replicas)
		errs    = make([]error, replicas)
	)
	for i := range replicas {
		wg.Go(func() { applied[i], errs[i] = db.Migrate(ctx, url, logging.Discard()) })
	}
	wg.Wait()
	total := 0
	for i := range replicas {
		require.NoError(t, errs[i])
		total += applied[i]
	}
	states, err := db.Status(ctx, url)
	require.NoError(t, err)
	require.Equal(t, len(states), total, "each migration ran exactly once across the replicas")
	for _, s := range states {
		require.True(t, s.Applied, s.File)
	}

	pool, err := db.Open(ctx, url, logging.Discard())
	require.NoError(t, err)
	defer pool.Close()
	pending, err := db.Pending(ctx, pool)
	require.NoError(t, err)
	require.False(t, pending)

	// The login here is a superuser, as in the embedded cluster: its sessions drop to the
	// application role, so row-level security still applies.
	var role string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_user`).Scan(&role))
	require.Equal(t, db.AppRole, role)
	require.NoError(t, db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenants (id) VALUES ('acme')`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO workspaces (tenant_id, flows) VALUES ('acme', '{}')`)
		return err
	}))
	var visible int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&visible))
	require.Zero(t, visible, "unscoped superuser session must see no tenant rows")
	require.NoError(t, db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&visible)
	}))
	require.Equal(t, 1, visible)
}
