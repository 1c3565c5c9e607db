package repo_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
)

// inlineEntry is an entry whose "sealed" bytes stand in for envelope blobs: the repo
// stores them opaquely.
func inlineEntry(tenant, id, keyID string) *repo.Entry {
	e := fileEntry(tenant, id)
	e.Source, e.CertPath, e.Sealed = "inline", "", sealing.Pair{Cert: []byte("sealed " + id), KeyID: keyID}
	return e
}

func TestExportRestoreAndRewrapQueries(t *testing.T) {
	t.Parallel()
	pool := setup(t)
	ctx := t.Context()
	for i, id := range []string{"a", "b", "c", "d"} {
		insert(t, pool, inlineEntry("acme", id, []string{"old", "old", "old", "new"}[i]))
	}
	insert(t, pool, fileEntry("acme", "f"))
	insert(t, pool, inlineEntry("other", "x", "old"))
	in := func(tenant string, fn func(tx pgx.Tx) error) {
		t.Helper()
		require.NoError(t, db.InTenant(ctx, pool, tenant, fn))
	}

	in("acme", func(tx pgx.Tx) error {
		all, err := repo.ExportEntries(ctx, tx, "acme")
		require.NoError(t, err)
		require.Len(t, all, 5, "one tenant's rows only")
		require.NoError(t, repo.ImportNodeSecrets(ctx, tx, "acme", []repo.NodeSecret{
			{NodeID: "n1", Name: "password", Sealed: []byte("s1"), KeyID: "old"},
			{NodeID: "n2", Name: "token", Sealed: []byte("s2"), KeyID: "new"},
		}))
		usage, err := repo.KeyUsage(ctx, tx, "acme")
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"old": 4, "new": 2}, usage, "file entries have no key")

		// Rewrap in batches: the limit holds, and rewrapped rows leave the selection.
		batch, err := repo.EntriesToRewrap(ctx, tx, "acme", "new", 2)
		require.NoError(t, err)
		require.Len(t, batch, 2)
		for _, e := range batch {
			e.Sealed.Cert, e.Sealed.KeyID = []byte("rewrapped"), "new"
		}
		require.NoError(t, repo.RewrapEntries(ctx, tx, batch))
		rest, err := repo.EntriesToRewrap(ctx, tx, "acme", "new", 10)
		require.NoError(t, err)
		require.Len(t, rest, 1)
		secrets, err := repo.NodeSecretsToRewrap(ctx, tx, "acme", "new", 10)
		require.NoError(t, err)
		require.Equal(t, []repo.NodeSecret{{NodeID: "n1", Name: "password", Sealed: []byte("s1"), KeyID: "old"}}, secrets)
		secrets[0].Sealed, secrets[0].KeyID = []byte("s1'"), "new"
		require.NoError(t, repo.RewrapNodeSecrets(ctx, tx, "acme", secrets))
		usage, err = repo.KeyUsage(ctx, tx, "acme")
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"old": 1, "new": 5}, usage)

		expiry, err := repo.ListExpiry(ctx, tx, "acme")
		require.NoError(t, err)
		require.Len(t, expiry, 5)
		require.Equal(t, "/etc/loopze/f.pem", expiry[4].CertPath)
		return nil
	})

	// Restore: data is detected, cleared, and the generation moves past the file's.
	in("acme", func(tx pgx.Tx) error {
		has, err := repo.TenantHasData(ctx, tx, "acme")
		require.NoError(t, err)
		require.True(t, has)
		require.NoError(t, repo.ClearTenantData(ctx, tx, "acme"))
		has, err = repo.TenantHasData(ctx, tx, "acme")
		require.NoError(t, err)
		require.False(t, has)
		gen, err := repo.RaiseGeneration(ctx, tx, "acme", 100)
		require.NoError(t, err)
		require.EqualValues(t, 101, gen)
		gen, err = repo.RaiseGeneration(ctx, tx, "acme", 3)
		require.NoError(t, err)
		require.EqualValues(t, 102, gen, "never backwards")

		e := inlineEntry("acme", "restored", "new")
		require.NoError(t, insertEntry(ctx, tx, e))
		require.NoError(t, repo.ImportWorkspace(ctx, tx, "acme", []byte(`{"flows":[]}`)))
		require.NoError(t, repo.ImportReferences(ctx, tx, "acme", []repo.Reference{
			{EntryID: "restored", FlowID: "f", NodeID: "n", NodeType: "tcp-out", Field: "tls.caBundleRef"}}))
		ws, err := repo.ExportWorkspace(ctx, tx, "acme")
		require.NoError(t, err)
		require.JSONEq(t, `{"flows":[]}`, string(ws))
		refs, err := repo.ExportReferences(ctx, tx, "acme")
		require.NoError(t, err)
		require.Len(t, refs, 1)
		return nil
	})
	gen, err := repo.RaiseGeneration(ctx, pool, "fresh", 7)
	require.NoError(t, err)
	require.EqualValues(t, 8, gen, "a new tenant starts past the floor")
	in("other", func(tx pgx.Tx) error {
		ws, err := repo.ExportWorkspace(ctx, tx, "other")
		require.NoError(t, err)
		require.Nil(t, ws, "no workspace yet")
		all, err := repo.ExportEntries(ctx, tx, "other")
		require.NoError(t, err)
		require.Len(t, all, 1, "untouched by acme's restore")
		return nil
	})
}
