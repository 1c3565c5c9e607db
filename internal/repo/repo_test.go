package repo_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func setup(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := db.Open(context.Background(), testdb.URL(t), logging.Discard())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func fileEntry(tenant, id string) *repo.Entry {
	return &repo.Entry{TenantID: tenant, ID: id, Name: id, Type: material.CABundle, Source: "file",
		CertPath: "/etc/loopze/" + id + ".pem",
		Meta: material.Metadata{FingerprintSHA256: "AA", Subject: "CN=x", Issuer: "CN=x", SerialNumber: "01",
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), CertCount: 1, KeyAlgorithm: "Ed25519"}}
}

func insert(t *testing.T, pool *pgxpool.Pool, e *repo.Entry) {
	t.Helper()
	require.NoError(t, db.InTenant(t.Context(), pool, e.TenantID, func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(t.Context(), tx, e.TenantID); err != nil {
			return err
		}
		return repo.InsertEntry(t.Context(), tx, e)
	}))
}

// TestRowLevelSecurity proves the second wall: a query that forgets its tenant filter still
// sees only the rows of the tenant its transaction is scoped to, and cannot write another's.
func TestRowLevelSecurity(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	insert(t, pool, fileEntry("tenant-a", "a1"))
	insert(t, pool, fileEntry("tenant-a", "a2"))
	insert(t, pool, fileEntry("tenant-b", "b1"))

	ids := func(tenant string) []string {
		var out []string
		require.NoError(t, db.InTenant(t.Context(), pool, tenant, func(tx pgx.Tx) error {
			rows, err := tx.Query(t.Context(), `SELECT id FROM entries ORDER BY id`) // no tenant filter
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		}))
		return out
	}
	require.Equal(t, []string{"a1", "a2"}, ids("tenant-a"))
	require.Equal(t, []string{"b1"}, ids("tenant-b"))
	require.Empty(t, ids("tenant-c"))

	// Outside a scoped transaction nothing is visible at all.
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM entries`).Scan(&n))
	require.Zero(t, n)

	// Writing a row for another tenant from tenant-a's transaction is refused.
	err := db.InTenant(t.Context(), pool, "tenant-a", func(tx pgx.Tx) error {
		return repo.InsertEntry(t.Context(), tx, fileEntry("tenant-b", "sneaky"))
	})
	require.Error(t, err)
	// And updating or deleting another tenant's row touches nothing.
	require.NoError(t, db.InTenant(t.Context(), pool, "tenant-a", func(tx pgx.Tx) error {
		tag, err := tx.Exec(t.Context(), `DELETE FROM entries WHERE id = 'b1'`)
		require.Zero(t, tag.RowsAffected())
		return err
	}))
	require.Equal(t, []string{"b1"}, ids("tenant-b"))
}

func TestEntrySentinels(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	e := fileEntry("acme", "one")
	insert(t, pool, e)
	require.EqualValues(t, 1, e.Version)

	err := db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return repo.InsertEntry(t.Context(), tx, fileEntry("acme", "one")) })
	require.ErrorIs(t, err, repo.ErrDuplicate)

	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
		_, err := repo.GetEntry(t.Context(), tx, "acme", "missing")
		return err
	})
	require.ErrorIs(t, err, repo.ErrNotFound)

	stale := *e
	stale.Version = 7
	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return repo.UpdateEntry(t.Context(), tx, &stale) })
	require.ErrorIs(t, err, repo.ErrVersionMismatch)

	e.Name = "renamed"
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return repo.UpdateEntry(t.Context(), tx, e) }))
	require.EqualValues(t, 2, e.Version)

	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return repo.DeleteEntry(t.Context(), tx, "acme", "one", 1) })
	require.ErrorIs(t, err, repo.ErrVersionMismatch)
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return repo.DeleteEntry(t.Context(), tx, "acme", "one", 2) }))
	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return repo.DeleteEntry(t.Context(), tx, "acme", "one", 0) })
	require.ErrorIs(t, err, repo.ErrNotFound)

	gen, err := repo.GetGeneration(t.Context(), pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 1, gen)
}
