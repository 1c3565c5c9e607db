package fileexport

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/sealing"
)

// After a change, an export encodes only the changed rows, and its file holds exactly what
// an export without any cache writes: updates, deletes, new node credentials and a restore
// all show.
func TestIncrementalExportMatchesFullExport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.populate(t, "acme")
	for _, id := range []string{"e1", "e2", "e3"} {
		b.createInline(t, "acme", id, "server-pair")
	}
	x := b.exporter(t)
	full := &Exporter{Pool: b.pool, Keys: b.keys, DataDir: t.TempDir(), EncodedCacheBytes: -1}

	same := func(t *testing.T) {
		t.Helper()
		_, err := x.ExportTenant(ctx, "acme", false)
		require.NoError(t, err)
		_, err = full.ExportTenant(ctx, "acme", true)
		require.NoError(t, err)
		got, gh := readDoc(t, b.keys, b.dataDir, "acme")
		want, wh := readDoc(t, b.keys, full.DataDir, "acme")
		require.Equal(t, wh.Generation, gh.Generation)
		got.ExportedAt, want.ExportedAt = time.Time{}, time.Time{}
		require.Equal(t, want, got)
	}
	same(t)
	require.EqualValues(t, 6+2, x.cache.encoded.Load(), "first export encodes every entry and node credential")
	before, err := os.ReadFile(credfile.Path(b.dataDir, "acme"))
	require.NoError(t, err)

	encoded, read := x.cache.encoded.Load(), x.rowsRead.Load()
	_, err = b.catalog.Put(ctx, "acme", catalog.Input{ID: "e2", Notes: ptr("renewed")}, catalog.Precondition{})
	require.NoError(t, err)
	same(t)
	require.EqualValues(t, 1, x.cache.encoded.Load()-encoded, "one changed entry, one encoding")
	require.EqualValues(t, 1, x.rowsRead.Load()-read, "one changed entry, one sealed row read")
	doc, _ := readDoc(t, b.keys, b.dataDir, "acme")
	require.Equal(t, "renewed", entryByID(doc, "e2").Notes)

	encoded, read = x.cache.encoded.Load(), x.rowsRead.Load()
	require.NoError(t, b.catalog.Delete(ctx, "acme", "e3", catalog.Precondition{}))
	same(t)
	require.Zero(t, x.cache.encoded.Load()-encoded)
	require.Zero(t, x.rowsRead.Load()-read)

	// A write that leaves the content as it was still writes a new row: it is read again,
	// never taken for the old one.
	require.NoError(t, db.InTenant(ctx, b.pool, "acme", func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, "acme"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE entries SET notes = notes WHERE tenant_id = 'acme' AND id = 'e1'`)
		return err
	}))
	encoded, read = x.cache.encoded.Load(), x.rowsRead.Load()
	same(t)
	require.EqualValues(t, 1, x.cache.encoded.Load()-encoded)
	require.EqualValues(t, 1, x.rowsRead.Load()-read)
	doc, _ = readDoc(t, b.keys, b.dataDir, "acme")
	require.Nil(t, entryByID(doc, "e3"))

	// A node credential sealed again under the same name: re-encoded from its new bytes.
	ring := b.ring(t, "acme")
	sealed, err := ring.Seal([]byte("changed"), sealing.NodeSecret("acme", "n1", "password"))
	require.NoError(t, err)
	require.NoError(t, db.InTenant(ctx, b.pool, "acme", func(tx pgx.Tx) error {
		if _, err := repo.BumpGeneration(ctx, tx, "acme"); err != nil {
			return err
		}
		return repo.UpsertNodeSecrets(ctx, tx, "acme", []repo.NodeSecret{{NodeID: "n1", Name: "password", Sealed: sealed, KeyID: ring.CurrentKeyID()}})
	}))
	encoded = x.cache.encoded.Load()
	same(t)
	require.EqualValues(t, 1, x.cache.encoded.Load()-encoded)
	doc, _ = readDoc(t, b.keys, b.dataDir, "acme")
	require.Contains(t, doc.NodeCredentials, credfile.NodeCredential{NodeID: "n1", Name: "password", Value: "changed"})

	// A restore of the first file brings back rows under the same IDs: nothing stale
	// survives it.
	im := &Importer{Pool: b.pool, Catalog: b.catalog, Keys: b.keys, Logger: testLogger(t)}
	_, err = im.Import(ctx, before, ImportOptions{Tenant: "acme", Replace: true})
	require.NoError(t, err)
	same(t)
	doc, _ = readDoc(t, b.keys, b.dataDir, "acme")
	require.Equal(t, "notes of e2", entryByID(doc, "e2").Notes)
	require.NotNil(t, entryByID(doc, "e3"))
	require.Contains(t, doc.NodeCredentials, credfile.NodeCredential{NodeID: "n1", Name: "password", Value: "s3cret"})
}

// The cache stays within its bound, whatever the tenant's size.
func TestEncodedCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newEncodedCache(64 << 10)
	for i := range 1000 {
		c.put(encodedKey{kind: kindEntry, tenant: "t", id: strconv.Itoa(i)}, stamp{}, make([]byte, 1024))
	}
	c.c.CleanUp()
	require.LessOrEqual(t, c.c.WeightedSize(), uint64(64<<10))
	require.Less(t, c.c.EstimatedSize(), 1000)
	require.Nil(t, newEncodedCache(-1))
}
