package repo_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/testdb"
)

func TestSaveWorkspaceVersions(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := t.Context()
	save := func(ifVersion int64) (int64, error) {
		var v int64
		err := db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
			if err := bump(ctx, tx, "acme"); err != nil {
				return err
			}
			var err error
			v, _, err = repo.SaveWorkspace(ctx, tx, "acme", []byte(`{"flows":[]}`), ifVersion)
			return err
		})
		return v, err
	}
	_, err := save(3)
	require.ErrorIs(t, err, repo.ErrVersionMismatch, "nothing is stored at version 3")
	v, err := save(0)
	require.NoError(t, err)
	require.EqualValues(t, 1, v)
	v, err = save(1)
	require.NoError(t, err)
	require.EqualValues(t, 2, v)
	_, err = save(1)
	require.ErrorIs(t, err, repo.ErrVersionMismatch)
	require.NoError(t, db.InTenant(ctx, pool, "other", func(tx pgx.Tx) error {
		_, err := repo.GetWorkspace(ctx, tx, "other")
		require.ErrorIs(t, err, repo.ErrNotFound)
		return nil
	}))
}

func TestReferenceRows(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := t.Context()
	insert(t, pool, fileEntry("acme", "ca"))
	e := fileEntry("acme", "pair")
	e.Type = material.ClientPair
	insert(t, pool, e)
	insert(t, pool, fileEntry("other", "ca"))
	r1 := repo.Reference{EntryID: "ca", FlowID: "f", NodeID: "n1", NodeType: "tcp-out", Field: "tls.caBundleRef"}
	r2 := repo.Reference{EntryID: "pair", FlowID: "f", NodeID: "n1", NodeType: "tcp-out", Field: "tls.clientCertRef"}
	r3 := repo.Reference{EntryID: "ca", FlowID: "g", NodeID: "n2", NodeType: "mqtt-broker", Field: "tls.caBundleRef"}

	require.NoError(t, db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		kinds, err := repo.EntryKinds(ctx, tx, "acme", []string{"ca", "pair", "gone"})
		require.NoError(t, err)
		require.Equal(t, map[string]material.Kind{"ca": material.CABundle, "pair": material.ClientPair}, kinds)

		require.NoError(t, repo.InsertReferences(ctx, tx, "acme", []repo.Reference{r1, r2, r3}))
		require.NoError(t, repo.DeleteReferences(ctx, tx, "acme", []repo.Reference{r2}))
		got, err := repo.ListTenantReferences(ctx, tx, "acme")
		require.NoError(t, err)
		require.ElementsMatch(t, []repo.Reference{r1, r3}, got)
		n, err := repo.CountReferences(ctx, tx, "acme", "ca")
		require.NoError(t, err)
		require.Equal(t, 2, n)
		return nil
	}))
	// The foreign key refuses a reference to nothing, and the delete of a referenced entry.
	err := db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		return repo.InsertReferences(ctx, tx, "acme", []repo.Reference{{EntryID: "gone", FlowID: "f", NodeID: "n9", NodeType: "t", Field: "tls.caBundleRef"}})
	})
	require.ErrorIs(t, err, repo.ErrReferenced)
	err = db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error { return deleteEntry(ctx, tx, "acme", "ca", 1) })
	require.ErrorIs(t, err, repo.ErrReferenced)
	// Another tenant's entry of the same ID is not this tenant's to reference.
	require.NoError(t, db.InTenant(ctx, pool, "other", func(tx pgx.Tx) error {
		got, err := repo.ListTenantReferences(ctx, tx, "other")
		require.Empty(t, got)
		return err
	}))
}

func TestNodeSecretRows(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := t.Context()
	require.NoError(t, db.InTenant(ctx, pool, "acme", func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, "acme"); err != nil {
			return err
		}
		require.NoError(t, repo.UpsertNodeSecrets(ctx, tx, "acme", []repo.NodeSecret{
			{NodeID: "n1", Name: "credentials.password", Sealed: []byte("a"), KeyID: "k1"},
			{NodeID: "n1", Name: "tls.clientKeyPem", Sealed: []byte("b"), KeyID: "k1"},
			{NodeID: "n2", Name: "credentials.token", Sealed: []byte("c"), KeyID: "k1"},
		}))
		require.NoError(t, repo.UpsertNodeSecrets(ctx, tx, "acme", []repo.NodeSecret{
			{NodeID: "n1", Name: "credentials.password", Sealed: []byte("a2"), KeyID: "k2"},
		}))
		require.NoError(t, repo.DeleteNodeSecrets(ctx, tx, "acme", []repo.NodeSecretKey{{NodeID: "n2", Name: "credentials.token"}}))
		keys, err := repo.ListNodeSecretKeys(ctx, tx, "acme")
		require.NoError(t, err)
		require.Equal(t, []repo.NodeSecretKey{{"n1", "credentials.password"}, {"n1", "tls.clientKeyPem"}}, keys)
		one, err := repo.ListNodeSecrets(ctx, tx, "acme", "n1")
		require.NoError(t, err)
		require.Equal(t, repo.NodeSecret{NodeID: "n1", Name: "credentials.password", Sealed: []byte("a2"), KeyID: "k2"}, one[0])
		return nil
	}))
}

// TestLookupEntriesScopesOneBatch: the one-round-trip lookup sees its tenant's rows only,
// and its tenant setting does not outlive the batch on the pooled connection.
func TestLookupEntriesScopesOneBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t)+"&pool_max_conns=1", logging.Discard())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	insert(t, pool, fileEntry("acme", "ca"))
	insert(t, pool, fileEntry("other", "other-ca"))

	got, err := repo.LookupEntries(ctx, pool, "acme", []string{"ca", "other-ca"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "ca", got[0].ID)
	got, err = repo.LookupEntries(ctx, pool, "other", []string{"ca"})
	require.NoError(t, err)
	require.Empty(t, got)

	// Same (only) connection, no tenant scope: row-level security shows nothing.
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM entries`).Scan(&n))
	require.Zero(t, n)
}

// bump creates the tenant's row on its first write, as every write does.
func bump(ctx context.Context, tx pgx.Tx, tenant string) error {
	_, err := repo.BumpGeneration(ctx, tx, tenant)
	return err
}
