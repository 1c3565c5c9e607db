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
		return insertEntry(t.Context(), tx, e)
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
		return insertEntry(t.Context(), tx, fileEntry("tenant-b", "sneaky"))
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

	err := db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return insertEntry(t.Context(), tx, fileEntry("acme", "one")) })
	require.ErrorIs(t, err, repo.ErrDuplicate)

	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
		_, err := repo.GetEntry(t.Context(), tx, "acme", "missing")
		return err
	})
	require.ErrorIs(t, err, repo.ErrNotFound)

	stale := *e
	stale.Version = 7
	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return updateEntry(t.Context(), tx, &stale) })
	require.ErrorIs(t, err, repo.ErrVersionMismatch)

	e.Name = "renamed"
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return updateEntry(t.Context(), tx, e) }))
	require.EqualValues(t, 2, e.Version)

	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return deleteEntry(t.Context(), tx, "acme", "one", 1) })
	require.ErrorIs(t, err, repo.ErrVersionMismatch)
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return deleteEntry(t.Context(), tx, "acme", "one", 2) }))
	err = db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error { return deleteEntry(t.Context(), tx, "acme", "one", 2) })
	require.ErrorIs(t, err, repo.ErrVersionMismatch, "the row is gone")

	gen, err := repo.GetGeneration(t.Context(), pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 1, gen)
}

// TestReferenceCountIsKeptExact: the triggers on entry_references keep entries.ref_count
// equal to the rows, through inserts, deletes and updates in one statement or many.
func TestReferenceCountIsKeptExact(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	insert(t, pool, fileEntry("acme", "ca"))
	insert(t, pool, fileEntry("acme", "other"))
	insert(t, pool, fileEntry("beta", "ca"))

	counts := func() (ca, other int) {
		require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
			var err error
			if ca, err = repo.CountReferences(t.Context(), tx, "acme", "ca"); err != nil {
				return err
			}
			other, err = repo.CountReferences(t.Context(), tx, "acme", "other")
			return err
		}))
		return ca, other
	}
	exec := func(sql string) {
		require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
			_, err := tx.Exec(t.Context(), sql)
			return err
		}))
	}
	exec(`INSERT INTO entry_references (tenant_id, entry_id, flow_id, node_id, node_type, field)
		SELECT 'acme', 'ca', 'f' || (i % 7), 'n' || i, 'tcp-out', 'tls.caBundleRef' FROM generate_series(1, 250) i`)
	exec(`INSERT INTO entry_references VALUES ('acme', 'other', 'f1', 'x', 'mqtt-broker', 'tls.caBundleRef')`)
	ca, other := counts()
	require.Equal(t, 250, ca)
	require.Equal(t, 1, other)

	exec(`DELETE FROM entry_references WHERE entry_id = 'ca' AND node_id IN ('n1', 'n2', 'n3')`)
	exec(`UPDATE entry_references SET entry_id = 'other' WHERE entry_id = 'ca' AND node_id IN ('n4', 'n5')`)
	ca, other = counts()
	require.Equal(t, 245, ca)
	require.Equal(t, 3, other)

	var rows int
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
		return tx.QueryRow(t.Context(), `SELECT count(*) FROM entry_references WHERE entry_id = 'ca'`).Scan(&rows)
	}))
	require.Equal(t, ca, rows)

	// Another tenant's entry of the same ID is untouched, and the list view shows the count.
	require.NoError(t, db.InTenant(t.Context(), pool, "beta", func(tx pgx.Tx) error {
		e, err := repo.GetEntry(t.Context(), tx, "beta", "ca")
		require.Zero(t, e.RefCount)
		return err
	}))
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
		list, _, err := repo.ListEntries(t.Context(), tx, "acme", repo.ListFilter{})
		require.Equal(t, 245, list[0].RefCount)
		return err
	}))
	exec(`DELETE FROM entry_references`)
	ca, other = counts()
	require.Zero(t, ca+other)
}

// TestCreateEntryIsAllOrNothing: the one-round-trip create moves the generation only when
// the entry is stored, and a duplicate leaves both untouched.
func TestCreateEntryIsAllOrNothing(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	e := fileEntry("acme", "one")
	require.NoError(t, createEntry(t.Context(), pool, e))
	require.EqualValues(t, 1, e.Version)
	require.False(t, e.CreatedAt.IsZero())
	gen, err := repo.GetGeneration(t.Context(), pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 1, gen)

	err = createEntry(t.Context(), pool, fileEntry("acme", "one"))
	require.ErrorIs(t, err, repo.ErrDuplicate)
	gen, err = repo.GetGeneration(t.Context(), pool, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 1, gen, "a refused create must not move the generation")

	// The scope is the entry's tenant: row-level security refuses a row of another.
	other := fileEntry("beta", "two")
	require.NoError(t, createEntry(t.Context(), pool, other))
	require.NoError(t, db.InTenant(t.Context(), pool, "acme", func(tx pgx.Tx) error {
		_, err := repo.GetEntry(t.Context(), tx, "acme", "two")
		require.ErrorIs(t, err, repo.ErrNotFound)
		return nil
	}))
}

// TestDataExceptionsAreInvalidData: a value PostgreSQL refuses to store is ErrInvalidData
// (the API answers 422), not an unexplained failure.
func TestDataExceptionsAreInvalidData(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	e := fileEntry("acme", "nul")
	e.Notes = "a\x00b"
	require.ErrorIs(t, createEntry(t.Context(), pool, e), repo.ErrInvalidData)
}
