package db

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// scopeSQL scopes the current transaction to a tenant ($1) and, for a login that would
// bypass row-level security, switches it to AppRole ($2) for that transaction only. Both
// settings are transaction-local, so neither survives into the next transaction on the
// same server connection: behind a transaction-pooling PgBouncer the next transaction may
// be another client's, and a session-level SET would land on one server connection only.
// The role is decided from session_user on the server connection that runs the statement,
// so it holds whatever the pooler's login is; before the first migration AppRole does not
// exist yet and the role stays.
const scopeSQL = `SELECT set_config('` + TenantSetting + `', $1, true),
	(SELECT set_config('role', $2, true) FROM pg_roles
	 WHERE rolname = session_user AND (rolsuper OR rolbypassrls)
	   AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2))`

// TxOption adjusts a transaction begun by InTenant or InTenantV.
type TxOption func(*pgx.TxOptions)

// Snapshot makes the transaction read-only at repeatable read: every statement sees the
// snapshot taken at the first one, so a value read first (a generation) labels exactly the
// rows read after it.
func Snapshot() TxOption {
	return func(o *pgx.TxOptions) {
		o.IsoLevel = pgx.RepeatableRead
		o.AccessMode = pgx.ReadOnly
	}
}

// InTenant runs fn in a transaction scoped to tenant (row-level security sees only its
// rows). The transaction rolls back when fn fails or panics, and commits otherwise.
func InTenant(ctx context.Context, pool *pgxpool.Pool, tenant string, fn func(pgx.Tx) error, opts ...TxOption) error {
	_, err := InTenantV(ctx, pool, tenant, func(tx pgx.Tx) (struct{}, error) {
		return struct{}{}, fn(tx)
	}, opts...)
	return err
}

// InTenantV is InTenant for a function that returns a value. The rollback runs even when
// ctx is cancelled, so a cancelled request does not leave its connection in a transaction.
func InTenantV[T any](ctx context.Context, pool *pgxpool.Pool, tenant string, fn func(pgx.Tx) (T, error), opts ...TxOption) (res T, err error) {
	var to pgx.TxOptions
	for _, o := range opts {
		o(&to)
	}
	tx, err := pool.BeginTx(ctx, to)
	if err != nil {
		return res, fmt.Errorf("begin transaction: %w", err)
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
	if _, err = tx.Exec(ctx, scopeSQL, tenant, AppRole); err != nil {
		return res, fmt.Errorf("scope transaction to tenant: %w", err)
	}
	if res, err = fn(tx); err != nil {
		return res, err
	}
	if err = tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// TenantBatch starts a batch whose first statement scopes it to tenant. Sent on a pool
// (outside a transaction), PostgreSQL runs the whole batch as one implicit transaction, so
// the transaction-local scope covers every statement queued after it, in one round trip
// where begin, scope, query and commit would take four. Read the results from
// SendTenantBatch, which consumes the scope's own result.
func TenantBatch(tenant string) *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(scopeSQL, tenant, AppRole)
	return b
}

// SendTenantBatch sends a batch begun by TenantBatch and reads the result of its scope
// statement; the caller reads the results of its own statements, in order, then closes.
func SendTenantBatch(ctx context.Context, q DBTX, b *pgx.Batch) (pgx.BatchResults, error) {
	br := q.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, fmt.Errorf("scope batch to tenant: %w", err)
	}
	return br, nil
}
