package db_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/testdb"
)

// TestThroughPgBouncerInTransactionMode runs the tenant-transaction family through a real
// PgBouncer in transaction mode with two server connections shared by eight clients: the
// pooler is detected, the same statements run again and again on server connections that
// other clients used (named prepared statements would collide or be missing there), and no
// role switch or tenant scope ever leaks to another client's transaction.
func TestThroughPgBouncerInTransactionMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bouncer := startPgBouncer(t, testdb.URL(t))

	pooler, err := db.DetectPooler(ctx, bouncer, db.PoolerAuto)
	require.NoError(t, err)
	require.Equal(t, db.PoolerTransaction, pooler)
	pool, err := db.Open(ctx, bouncer+"&pool_max_conns=8", logging.Discard())
	require.NoError(t, err)
	defer pool.Close()

	var bypass bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = session_user`).Scan(&bypass))
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 8 {
		tenant := fmt.Sprintf("t%d", w%2)
		wg.Go(func() {
			for i := range 25 {
				err := db.InTenant(ctx, pool, tenant, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING`, tenant); err != nil {
						return err
					}
					var role, scope string
					var foreign int
					if err := tx.QueryRow(ctx, `SELECT current_user, current_setting('`+db.TenantSetting+`'),
						(SELECT count(*) FROM workspaces WHERE tenant_id <> $1)`, tenant).Scan(&role, &scope, &foreign); err != nil {
						return err
					}
					if scope != tenant || (bypass && role != db.AppRole) || foreign != 0 {
						return fmt.Errorf("inside the scope of %s: role %s, scope %s, %d rows of others", tenant, role, scope, foreign)
					}
					_, err := tx.Exec(ctx, `INSERT INTO workspaces (tenant_id, flows) VALUES ($1, '{}')
						ON CONFLICT (tenant_id) DO UPDATE SET version = workspaces.version + 1`, tenant)
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("worker %d, round %d: %w", w, i, err)
					return
				}
				// Outside any scope, on whatever server connection comes next.
				var role, scope string
				if err := pool.QueryRow(ctx, `SELECT current_user, coalesce(current_setting('`+db.TenantSetting+`', true), '')`).Scan(&role, &scope); err != nil {
					errs <- err
					return
				}
				if scope != "" || (bypass && role == db.AppRole) {
					errs <- fmt.Errorf("leaked onto an unscoped transaction: role %s, scope %q", role, scope)
					return
				}
				b := db.TenantBatch(tenant)
				b.Queue(`SELECT count(*) FROM workspaces`)
				br, err := db.SendTenantBatch(ctx, pool, b)
				if err != nil {
					errs <- err
					return
				}
				var visible int
				err = br.QueryRow().Scan(&visible)
				if cerr := br.Close(); err == nil {
					err = cerr
				}
				if err != nil || visible != 1 {
					errs <- fmt.Errorf("scoped batch of %s: %d rows visible, err %v", tenant, visible, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// startPgBouncer runs a PgBouncer in transaction mode with two server connections in front
// of the database of target, and returns its URL. It skips the test when pgbouncer is not
// installed (apt-get install pgbouncer). PgBouncer refuses to run as root; as root it runs
// as the postgres user, in a directory that user owns.
func startPgBouncer(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if bin = "/usr/sbin/pgbouncer"; !fileExists(bin) {
			t.Skip("pgbouncer is not installed")
		}
	}
	cfg, err := pgx.ParseConfig(target)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "loopze-pgbouncer-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		require.NoError(t, err, "running as root, pgbouncer needs the postgres user")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(dir, uid, gid))
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())

	server := fmt.Sprintf("host=%s port=%d dbname=%s user=%s", cfg.Host, cfg.Port, cfg.Database, cfg.User)
	if cfg.Password != "" {
		server += " password=" + cfg.Password
	}
	ini := fmt.Sprintf(`[databases]
%s = %s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = 2
max_client_conn = 50
ignore_startup_parameters = extra_float_digits
logfile = %s
`, cfg.Database, server, port, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.log"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "users.txt"), fmt.Appendf(nil, "%q \"\"\n", cfg.User), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644))
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer did not start: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	u := &url.URL{Scheme: "postgres", User: url.User(cfg.User), Host: addr, Path: "/" + cfg.Database, RawQuery: "sslmode=disable"}
	return u.String()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
