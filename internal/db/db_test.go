package db_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/testdb"
	"github.com/loopze/certstore/migrations"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestReplicasMigrateAtOnce starts several migrations against one empty database at the
// same time, as replicas booting together do: goose's session lock serialises them, every
// one succeeds, and the schema is applied exactly once.
func TestReplicasMigrateAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := freshDatabase(t, "replicas_migrate_test")

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

// TestReferenceCountBackfill upgrades a database that already holds references from
// before the ref_count column (migration 4): the backfill counts every tenant's rows,
// whatever row-level security would show the migrating role.
func TestReferenceCountBackfill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := freshDatabase(t, "refcount_backfill_test")
	sqlDB, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer sqlDB.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS)
	require.NoError(t, err)
	_, err = p.UpTo(ctx, 3)
	require.NoError(t, err)
	for _, stmt := range []string{
		`INSERT INTO tenants (id) VALUES ('acme'), ('beta')`,
		`INSERT INTO entries (tenant_id, id, name, type, source, cert_path, fingerprint_sha256, subject, issuer,
			serial_number, not_before, not_after, cert_count, key_algorithm, has_private_key)
		 SELECT t, e, e, 'ca-bundle', 'file', '/x.pem', 'AA', 'CN=x', 'CN=x', '01', now(), now(), 1, 'Ed25519', false
		 FROM (VALUES ('acme'), ('beta')) tt(t), (VALUES ('ca'), ('unused')) ee(e)`,
		`INSERT INTO entry_references SELECT 'acme', 'ca', 'f', 'n' || i, 'tcp-out', 'tls.caBundleRef' FROM generate_series(1, 12) i`,
		`INSERT INTO entry_references SELECT 'beta', 'ca', 'f', 'n' || i, 'tcp-out', 'tls.caBundleRef' FROM generate_series(1, 5) i`,
	} {
		_, err := sqlDB.ExecContext(ctx, stmt)
		require.NoError(t, err)
	}
	_, err = db.Migrate(ctx, url, logging.Discard())
	require.NoError(t, err)

	rows, err := sqlDB.QueryContext(ctx, `SELECT tenant_id || '/' || id, ref_count FROM entries ORDER BY 1`)
	require.NoError(t, err)
	got := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		require.NoError(t, rows.Scan(&k, &n))
		got[k] = n
	}
	require.NoError(t, rows.Err())
	require.Equal(t, map[string]int{"acme/ca": 12, "acme/unused": 0, "beta/ca": 5, "beta/unused": 0}, got)
}

// freshDatabase creates an empty database on the test server as its superuser.
func freshDatabase(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testdb.AdminURL(t))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), testdb.AdminURL(t))
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(context.Background())
		}
	})
	cfg := admin.Config()
	u := &url.URL{Scheme: "postgres", User: url.UserPassword(cfg.User, cfg.Password), Path: "/" + name,
		RawQuery: url.Values{"host": {cfg.Host}, "port": {fmt.Sprint(cfg.Port)}, "sslmode": {"disable"}}.Encode()}
	if cfg.Password == "" {
		u.User = url.User(cfg.User)
	}
	return u.String()
}
