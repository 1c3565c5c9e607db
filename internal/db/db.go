// Package db owns the connection to PostgreSQL: opening the pool (directly, through a
// multi-host URL, or through a transaction-pooling PgBouncer, which Open detects), running
// the goose migrations under a session lock, readiness and writability, and the
// tenant-transaction helpers every repository call goes through (tx.go). Tenant isolation
// has two walls: each query filters by tenant_id, and row-level security (FORCE, policy on
// the transaction setting loopze.tenant) refuses whatever a query forgot. The second wall
// only stands for roles that do not bypass RLS, so a superuser or BYPASSRLS login drops to
// the loopze_app role: for the session on a direct connection, and for each tenant-scoped
// transaction always, since behind a transaction pooler a session is not ours to keep.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/loopze/certstore/migrations"
)

// AppRole is the role that queries run as when the login role would bypass row-level security.
const AppRole = "loopze_app"

// DefaultMaxConns is the pool size unless the URL's pool_max_conns sets one.
const DefaultMaxConns = 12

// TenantSetting is the transaction-local setting the RLS policies read.
const TenantSetting = "loopze.tenant"

// DBTX is what repository functions take: a pool, a connection or a transaction, so the
// caller decides the transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, tableName pgx.Identifier, columnNames []string, rowSrc pgx.CopyFromSource) (int64, error)
}

// Pooler says what sits between the service and PostgreSQL.
type Pooler string

// The values of LOOPZE_DATABASE_POOLER.
const (
	// PoolerAuto detects a pooler at start (see Open) and treats one as transaction pooling.
	PoolerAuto Pooler = "auto"
	// PoolerNone is a direct connection: session state holds.
	PoolerNone Pooler = "none"
	// PoolerSession is a pooler that keeps a server connection for a client's whole session.
	PoolerSession Pooler = "session"
	// PoolerTransaction is a pooler that hands the server connection to another client
	// after each transaction (PgBouncer pool_mode=transaction): no session state, no
	// named prepared statements (PgBouncer before 1.21), no LISTEN, no session locks.
	PoolerTransaction Pooler = "transaction"
)

// ParsePooler checks a LOOPZE_DATABASE_POOLER value; empty is PoolerAuto.
func ParsePooler(s string) (Pooler, error) {
	switch p := Pooler(s); p {
	case "":
		return PoolerAuto, nil
	case PoolerAuto, PoolerNone, PoolerSession, PoolerTransaction:
		return p, nil
	}
	return "", fmt.Errorf("pooler %q: want auto, none, session or transaction", s)
}

// Sentinel errors of Open and Writable.
var (
	// ErrReadOnly is a database that refuses writes: a standby (in recovery), a server with
	// default_transaction_read_only, or a multi-host URL with target_session_attrs=read-write
	// whose every host is one of those.
	ErrReadOnly = errors.New("database is read-only")
)

// Open connects a pool to url and checks it answers, is writable and is reached the way
// pooler says. With PoolerAuto, a probe connection compares the backend process ID the
// server announced at connect with pg_backend_pid(): a pooler answers the startup itself
// with a key of its own, so the two differ behind PgBouncer (or any pooler) and agree on a
// direct connection. A detected pooler is treated as transaction pooling, the mode that
// keeps no session state; say PoolerSession to keep LISTEN on the main URL behind a
// session pooler.
//
// On a direct or session-pooled connection a login that would bypass RLS switches to
// AppRole for the whole session, so even an unscoped statement meets row-level security.
// Behind a transaction pooler that session-level switch would land on one server
// connection only, so it is left out: every tenant-scoped transaction switches the role
// for itself (scopeSQL), and the queries are sent without named prepared statements
// unless the URL's default_query_exec_mode says otherwise (PgBouncer 1.21 and later with
// max_prepared_statements can take cache_statement).
func Open(ctx context.Context, url string, logger *slog.Logger, pooler ...Pooler) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", redactURLError(err))
	}
	mode := PoolerAuto
	if len(pooler) > 0 && pooler[0] != "" {
		mode = pooler[0]
	}
	if mode == PoolerAuto {
		if mode, err = detectPooler(ctx, cfg.ConnConfig); err != nil {
			return nil, err
		}
	}
	if mode == PoolerTransaction {
		if !strings.Contains(url, "default_query_exec_mode") {
			cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		}
	} else {
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			return dropPrivileges(ctx, c)
		}
	}
	// pgxpool's default (4 on a small machine) leaves too little beside the export job's
	// listener and writer; pool_max_conns in the URL still decides when given.
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = max(cfg.MaxConns, DefaultMaxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, connectError(cfg.ConnConfig, err)
	}
	if err := Writable(pingCtx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s: %w", describe(cfg.ConnConfig), err)
	}
	logger.Debug("database pool open", "target", describe(cfg.ConnConfig), "max_conns", cfg.MaxConns, "pooler", mode)
	return pool, nil
}

// DetectPooler resolves PoolerAuto for url the way Open does, so a caller can decide what
// else needs a direct connection (LISTEN, migrations) before it opens anything; other
// values come back as they are.
func DetectPooler(ctx context.Context, url string, p Pooler) (Pooler, error) {
	if p != PoolerAuto && p != "" {
		return p, nil
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("parse database URL: %w", redactURLError(err))
	}
	return detectPooler(ctx, cfg)
}

// connectError says what failed to connect, and says it plainly when every host answered
// but none was writable (a URL of standbys with target_session_attrs=read-write).
func connectError(c *pgx.ConnConfig, err error) error {
	if errors.Is(err, pgconn.ErrReadOnlyConnection) {
		return fmt.Errorf("connect to database %s: no writable host, every host that answered is read-only "+
			"(a standby; target_session_attrs=read-write refuses it): %w", describe(c), ErrReadOnly)
	}
	return fmt.Errorf("connect to database %s: %w", describe(c), err)
}

// detectPooler opens one connection and compares the backend PID of the startup with the
// server's own; it runs in the simple protocol, which leaves no prepared statement behind
// on a pooled server connection.
func detectPooler(ctx context.Context, c *pgx.ConnConfig) (Pooler, error) {
	probe := c.Copy()
	probe.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, probe)
	if err != nil {
		return "", connectError(c, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var pid uint32
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return "", fmt.Errorf("probe database %s for a pooler: %w", describe(c), err)
	}
	if pid != conn.PgConn().PID() {
		return PoolerTransaction, nil
	}
	return PoolerNone, nil
}

// Writable reports ErrReadOnly when the server behind pool would refuse a write: it is a
// standby, or read-only by default. /readyz calls it, so a replica whose database was
// demoted or not yet promoted is taken out of the load balancer.
func Writable(ctx context.Context, pool *pgxpool.Pool) error {
	var ro bool
	err := pool.QueryRow(ctx, `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool`).Scan(&ro)
	if err != nil {
		return fmt.Errorf("check the database is writable: %w", err)
	}
	if ro {
		return ErrReadOnly
	}
	return nil
}

// Unavailable reports whether err means the database could not be reached or could not
// take the statement just now (a failover, a restart, a pooler without a server): a caller
// may retry later, and the API answers 503, not 500.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrReadOnly) || errors.Is(err, pgconn.ErrReadOnlyConnection) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection exception (PgBouncer's errors too)
			return true
		case pgErr.Code == "25006": // read_only_sql_transaction: the server is a standby now
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutting down, starting up
			return true
		case pgErr.Code == "40001" && strings.Contains(pgErr.Message, "recovery"): // conflict with recovery
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// dropPrivileges switches a superuser or BYPASSRLS session to AppRole so that row-level
// security applies to it too. Before the first migration the role does not exist yet; that
// session then keeps its login role (it is only used to migrate).
func dropPrivileges(ctx context.Context, c *pgx.Conn) error {
	var bypass, roleExists bool
	err := c.QueryRow(ctx, `
		SELECT r.rolsuper OR r.rolbypassrls,
		       EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
		FROM pg_roles r WHERE r.rolname = current_user`, AppRole).Scan(&bypass, &roleExists)
	if err != nil {
		return fmt.Errorf("inspect login role: %w", err)
	}
	if bypass && roleExists {
		if _, err := c.Exec(ctx, "SET ROLE "+AppRole); err != nil {
			return fmt.Errorf("switch to role %s: %w", AppRole, err)
		}
	}
	return nil
}

func describe(c *pgx.ConnConfig) string {
	hosts := fmt.Sprintf("%s:%d", c.Host, c.Port)
	for _, f := range c.Fallbacks {
		hosts += fmt.Sprintf(",%s:%d", f.Host, f.Port)
	}
	return fmt.Sprintf("%s@%s/%s", c.User, hosts, c.Database)
}

// redactURLError keeps a password in a malformed URL out of the message.
func redactURLError(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return errors.New("malformed connection string")
	}
	return err
}

// newProvider opens a goose provider over the embedded migrations with a session advisory
// lock, so replicas starting at once migrate one after the other.
func newProvider(url string) (*goose.Provider, *sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, nil, fmt.Errorf("parse database URL: %w", redactURLError(err))
	}
	sqlDB := stdlib.OpenDB(*cfg)
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		_ = sqlDB.Close()
		return nil, nil, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		_ = sqlDB.Close()
		return nil, nil, fmt.Errorf("load migrations: %w", err)
	}
	return p, sqlDB, nil
}

// preflight connects before goose does, so an unreachable or read-only database is
// reported as such instead of as a failed migration lock.
func preflight(ctx context.Context, sqlDB *sql.DB, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parse database URL: %w", redactURLError(err))
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var ro bool
	err = sqlDB.QueryRowContext(ctx, `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool`).Scan(&ro)
	if err != nil {
		return connectError(cfg, err)
	}
	if ro {
		return fmt.Errorf("migrate database %s: %w", describe(cfg), ErrReadOnly)
	}
	return nil
}

// Migrate applies pending migrations and returns how many ran.
func Migrate(ctx context.Context, url string, logger *slog.Logger) (int, error) {
	p, sqlDB, err := newProvider(url)
	if err != nil {
		return 0, err
	}
	defer sqlDB.Close()
	if err := preflight(ctx, sqlDB, url); err != nil {
		return 0, err
	}
	res, err := p.Up(ctx)
	if err != nil {
		return 0, fmt.Errorf("apply migrations: %w", err)
	}
	for _, r := range res {
		logger.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return len(res), nil
}

// MigrationState is one migration's status, for `migrate status`.
type MigrationState struct {
	Version   int64
	File      string
	Applied   bool
	AppliedAt time.Time
}

// Status lists every known migration and whether it is applied.
func Status(ctx context.Context, url string) ([]MigrationState, error) {
	p, sqlDB, err := newProvider(url)
	if err != nil {
		return nil, err
	}
	defer sqlDB.Close()
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]MigrationState, 0, len(st))
	for _, s := range st {
		out = append(out, MigrationState{
			Version: s.Source.Version, File: s.Source.Path,
			Applied: s.State == goose.StateApplied, AppliedAt: s.AppliedAt,
		})
	}
	return out, nil
}

// Pending reports whether migrations are missing, for /readyz.
func Pending(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	want := latestVersion()
	var have int64
	err := pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&have)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table: never migrated
			return true, nil
		}
		return false, fmt.Errorf("read migration version: %w", err)
	}
	return have < want, nil
}

func latestVersion() int64 {
	entries, err := migrations.FS.ReadDir(".")
	if err != nil {
		return 0
	}
	var max int64
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err == nil && v > max {
			max = v
		}
	}
	return max
}
