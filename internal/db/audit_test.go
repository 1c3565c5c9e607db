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

	// Chaining under a key and checkpointing need no more than those grants; the key
	// version column is the table's, under the same ones.
	require.NoError(t, audit.RecordAlone(ctx, pool, audit.Event{Tenant: "acme", Action: audit.EntryCreate, Target: "entry:y"}))
	keys := fixedKey{}
	ch := &audit.Chainer{Pool: pool, Keys: keys, CheckpointDir: t.TempDir()}
	_, err = audit.Chain(ctx, pool, keys, "acme")
	require.NoError(t, err)
	cp, err := ch.WriteCheckpoint(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, 1, cp.KeyVersion)
	results, err = (&audit.Service{Pool: pool, Keys: keys}).Verify(ctx, cp)
	require.NoError(t, err)
	require.Equal(t, []audit.TenantResult{{Tenant: "acme", Records: 2, Keyed: 1, Checkpoint: 2}}, results)
	err = db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE audit_log SET key_version = NULL`)
		return err
	})
	require.ErrorContains(t, err, "permission denied")
}

// fixedKey is one audit key, version 1, for every tenant.
type fixedKey struct{}

func (fixedKey) Current(context.Context, string) (int, []byte, error) {
	return 1, []byte("0123456789abcdef0123456789abcdef"), nil
}

func (k fixedKey) Version(ctx context.Context, tenant string, v int) ([]byte, error) {
	_, key, err := k.Current(ctx, tenant)
	return key, err
}
