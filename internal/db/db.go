// Package db owns the connection to PostgreSQL: opening the pool, running the goose
// migrations under a session lock, readiness, and the transaction helpers every repository
// call goes through. Tenant isolation has two walls: each query filters by tenant_id, and
// row-level security (FORCE, policy on the transaction setting loopze.tenant) refuses
// whatever a query forgot. The second wall only stands for roles that do not bypass RLS, so a
// superuser or BYPASSRLS login drops to the loopze_app role on every connection.
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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

// Open connects a pool to url and checks it answers. Connections of a login that would
// bypass RLS switch to AppRole (when the migrations have created it).
func Open(ctx context.Context, url string, logger *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", redactURLError(err))
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		return dropPrivileges(ctx, c)
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
		return nil, fmt.Errorf("connect to database %s: %w", describe(cfg.ConnConfig), err)
	}
	logger.Debug("database pool open", "target", describe(cfg.ConnConfig), "max_conns", cfg.MaxConns)
	return pool, nil
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
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
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

// Migrate applies pending migrations and returns how many ran.
func Migrate(ctx context.Context, url string, logger *slog.Logger) (int, error) {
	p, sqlDB, err := newProvider(url)
	if err != nil {
		return 0, err
	}
	defer sqlDB.Close()
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

// InTenant runs fn in a transaction scoped to tenant: the RLS setting is local to it.
// The transaction rolls back when fn fails or panics, and commits otherwise.
func InTenant(ctx context.Context, pool *pgxpool.Pool, tenant string, fn func(pgx.Tx) error) error {
	return InTx(ctx, pool, func(tx pgx.Tx) error {
		if err := SetTenant(ctx, tx, tenant); err != nil {
			return err
		}
		return fn(tx)
	})
}

// SetTenant scopes the current transaction to tenant.
func SetTenant(ctx context.Context, tx DBTX, tenant string) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('`+TenantSetting+`', $1, true)`, tenant); err != nil {
		return fmt.Errorf("scope transaction to tenant: %w", err)
	}
	return nil
}

// InTx runs fn in a transaction; rollback runs even when ctx is cancelled.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx) error) (err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
