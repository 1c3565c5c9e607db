package db_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/db"
)

// TestAppRoleMayOnlyAppendAudit migrates as a superuser, as the embedded cluster and the
// official image do, so the server's connections drop to the application role: that role
// appends audit records and reads them, but an UPDATE or DELETE is refused by its grants.
func TestAppRoleMayOnlyAppendAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := freshDatabase(t, "audit_grants_test")
	log := slog.New(slog.DiscardHandler)
	_, err := db.Migrate(ctx, url, log)
	require.NoError(t, err)
	pool, err := db.Open(ctx, url, log)
	require.NoError(t, err)
	defer pool.Close()

	var role string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_user`).Scan(&role))
	require.Equal(t, db.AppRole, role)

	ctx = audit.WithActor(ctx, audit.Actor{Subject: "someone", Role: "admin"})
	require.NoError(t, audit.RecordAlone(ctx, pool, audit.Event{Tenant: "acme", Action: audit.EntryCreate, Target: "entry:x"}))
	for _, q := range []string{
		`UPDATE audit_log SET subject = 'mallory'`,
		`DELETE FROM audit_log`,
		`TRUNCATE audit_log`,
	} {
		err := db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, q)
			return err
		})
		require.ErrorContains(t, err, "permission denied", q)
	}
	results, err := (&audit.Service{Pool: pool}).Verify(ctx)
	require.NoError(t, err)
	require.Equal(t, []audit.TenantResult{{Tenant: "acme", Records: 1}}, results)
}
