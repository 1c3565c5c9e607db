package db_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// TestTenantTransactionsBehindATransactionPooler opens the pool as it is opened behind
// PgBouncer in transaction mode: no session-level role switch, so a superuser login is
// itself outside a scope, and every tenant transaction and scoped batch drops to the
// application role for itself only, leaving nothing behind on the server connection.
func TestTenantTransactionsBehindATransactionPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := freshDatabase(t, "pooler_scope_test")
	_, err := db.Migrate(ctx, url, logging.Discard())
	require.NoError(t, err)
	pool, err := db.Open(ctx, url+"&pool_max_conns=1", logging.Discard(), db.PoolerTransaction)
	require.NoError(t, err)
	defer pool.Close()

	var login string
	require.NoError(t, pool.QueryRow(ctx, `SELECT session_user`).Scan(&login))
	current := func(q db.DBTX) (role, tenant string) {
		require.NoError(t, q.QueryRow(ctx, `SELECT current_user, coalesce(current_setting('`+db.TenantSetting+`', true), '')`).Scan(&role, &tenant))
		return role, tenant
	}
	role, _ := current(pool)
	require.Equal(t, login, role, "no session-level SET ROLE behind a transaction pooler")

	got, err := db.InTenantV(ctx, pool, "acme", func(tx pgx.Tx) (string, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO tenants (id) VALUES ('acme')`); err != nil {
			return "", err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO workspaces (tenant_id, flows) VALUES ('acme', '{}')`); err != nil {
			return "", err
		}
		r, tn := current(tx)
		return r + "/" + tn, nil
	})
	require.NoError(t, err)
	require.Equal(t, db.AppRole+"/acme", got)
	role, tenant := current(pool)
	require.Equal(t, login, role, "the role switch ends with the transaction")
	require.Empty(t, tenant, "the tenant scope ends with the transaction")

	// A scoped batch: one implicit transaction, the same scope, nothing left behind.
	b := db.TenantBatch("other")
	b.Queue(`SELECT current_user, (SELECT count(*) FROM workspaces)`)
	br, err := db.SendTenantBatch(ctx, pool, b)
	require.NoError(t, err)
	var visible int
	require.NoError(t, br.QueryRow().Scan(&role, &visible))
	require.NoError(t, br.Close())
	require.Equal(t, db.AppRole, role)
	require.Zero(t, visible, "row-level security applies inside the batch: another tenant sees nothing")
	role, tenant = current(pool)
	require.Equal(t, login, role)
	require.Empty(t, tenant)
}

// TestSnapshotIsReadOnly: the export's snapshot option refuses writes and keeps one view.
func TestSnapshotIsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := freshDatabase(t, "snapshot_test")
	_, err := db.Migrate(ctx, url, logging.Discard())
	require.NoError(t, err)
	pool, err := db.Open(ctx, url, logging.Discard())
	require.NoError(t, err)
	defer pool.Close()

	iso, err := db.InTenantV(ctx, pool, "acme", func(tx pgx.Tx) (string, error) {
		var iso string
		err := tx.QueryRow(ctx, `SHOW transaction_isolation`).Scan(&iso)
		return iso, err
	}, db.Snapshot())
	require.NoError(t, err)
	require.Equal(t, "repeatable read", iso)
	err = db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO tenants (id) VALUES ('acme')`)
		return err
	}, db.Snapshot())
	require.ErrorContains(t, err, "read-only transaction")
}

// TestReadOnlyDatabaseIsRefusedAtStart: a database that takes no writes (as a standby, or
// a multi-host URL with target_session_attrs=read-write whose every host is one) stops the
// start with ErrReadOnly and a message that says so, for the pool and the migrations.
func TestReadOnlyDatabaseIsRefusedAtStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := freshDatabase(t, "read_only_test")
	_, err := db.Migrate(ctx, dbURL, logging.Discard())
	require.NoError(t, err)
	admin, err := pgx.Connect(ctx, testdb.AdminURL(t))
	require.NoError(t, err)
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, `ALTER DATABASE read_only_test SET default_transaction_read_only = on`)
	require.NoError(t, err)

	_, err = db.Open(ctx, dbURL, logging.Discard())
	require.ErrorIs(t, err, db.ErrReadOnly)
	_, err = db.Migrate(ctx, dbURL, logging.Discard())
	require.ErrorIs(t, err, db.ErrReadOnly)

	cfg, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	// Two hosts (the same server twice), both read-only, and a URL that wants a writer.
	multi := (&url.URL{Scheme: "postgres", User: url.UserPassword(cfg.User, cfg.Password),
		Host: fmt.Sprintf("%s:%d,%s:%d", cfg.Host, cfg.Port, cfg.Host, cfg.Port), Path: "/read_only_test",
		RawQuery: "sslmode=disable&target_session_attrs=read-write"}).String()
	if strings.HasPrefix(cfg.Host, "/") { // a unix socket: the keyword form takes host lists too
		multi = fmt.Sprintf("host=%s,%s port=%d,%d user=%s dbname=read_only_test sslmode=disable target_session_attrs=read-write",
			cfg.Host, cfg.Host, cfg.Port, cfg.Port, cfg.User)
		if cfg.Password != "" {
			multi += " password='" + strings.ReplaceAll(cfg.Password, "'", `\'`) + "'"
		}
	}
	_, err = db.Open(ctx, multi, logging.Discard())
	require.ErrorIs(t, err, db.ErrReadOnly)
	require.ErrorContains(t, err, "every host that answered is read-only")
	require.True(t, db.Unavailable(err), "a read-only database is one to wait for, not a bug")
}

// TestDetectPoolerDirect: a direct connection is recognised as one.
func TestDetectPoolerDirect(t *testing.T) {
	t.Parallel()
	p, err := db.DetectPooler(context.Background(), testdb.URL(t), db.PoolerAuto)
	require.NoError(t, err)
	require.Equal(t, db.PoolerNone, p)
	p, err = db.DetectPooler(context.Background(), testdb.URL(t), db.PoolerTransaction)
	require.NoError(t, err)
	require.Equal(t, db.PoolerTransaction, p, "a declared pooler is taken as said")
}

// TestUnavailable: what a failover or a pooler without a server looks like is "retry",
// what a query did wrong is not.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		&pgconn.PgError{Code: "08P01", Message: "server conn crashed?"}:                             true,
		&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator"}:      true,
		&pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}: true,
		fmt.Errorf("begin transaction: %w", io.ErrUnexpectedEOF):                                    true,
		fmt.Errorf("wrap: %w", db.ErrReadOnly):                                                      true,
		&pgconn.PgError{Code: "23505"}:                                                              false,
		&pgconn.PgError{Code: "42P01"}:                                                              false,
		errors.New("something else"):                                                                false,
	} {
		require.Equal(t, want, db.Unavailable(err), err.Error())
	}
	_, err := pgx.Connect(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	require.True(t, db.Unavailable(err), "a refused connection")
}

// TestMultiHostURLFindsTheWritableHost: a URL whose first host is down (a failed primary)
// serves the migrations, the pool and a listening connection from the next host, as after
// a failover.
func TestMultiHostURLFindsTheWritableHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := freshDatabase(t, "multi_host_test")
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	multi := fmt.Sprintf("postgres://%s@127.0.0.1:1,%s:%d/multi_host_test?sslmode=disable&target_session_attrs=read-write&connect_timeout=2",
		cfg.User, cfg.Host, cfg.Port)
	if strings.HasPrefix(cfg.Host, "/") {
		multi = fmt.Sprintf("host=/nonexistent-loopze-socket-dir,%s port=%d,%d user=%s dbname=multi_host_test sslmode=disable target_session_attrs=read-write connect_timeout=2",
			cfg.Host, cfg.Port, cfg.Port, cfg.User)
	}
	if cfg.Password != "" {
		u, _ := url2(multi, cfg.Password)
		multi = u
	}
	n, err := db.Migrate(ctx, multi, logging.Discard())
	require.NoError(t, err)
	require.Positive(t, n)
	pool, err := db.Open(ctx, multi, logging.Discard())
	require.NoError(t, err)
	defer pool.Close()
	pending, err := db.Pending(ctx, pool)
	require.NoError(t, err)
	require.False(t, pending)
	listener, err := pgx.Connect(ctx, multi)
	require.NoError(t, err)
	defer listener.Close(ctx)
	_, err = listener.Exec(ctx, "LISTEN loopze_generation")
	require.NoError(t, err)
}

// url2 adds a password to a multi-host URL or keyword string.
func url2(s, password string) (string, error) {
	if strings.HasPrefix(s, "postgres://") {
		user, rest, _ := strings.Cut(strings.TrimPrefix(s, "postgres://"), "@")
		return "postgres://" + user + ":" + url.QueryEscape(password) + "@" + rest, nil
	}
	return s + " password=" + password, nil
}
