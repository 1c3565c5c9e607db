package fileexport

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/secret"
)

// rotateMaster moves the master key to a new one, rewraps tenant's key under it and
// retires the old one, as a master key rotation does (there, the files are re-exported
// before the old key goes; nothing here needs it to export them).
func (b *bundle) rotateMaster(t *testing.T, tenant string) {
	t.Helper()
	ctx := context.Background()
	old := b.keys.Master.Current().ID()
	_, err := b.keys.Master.Next()
	require.NoError(t, err)
	var n int
	require.NoError(t, db.InTenant(ctx, b.pool, tenant, func(tx pgx.Tx) error {
		n, err = b.keys.Rewrap(ctx, tx, tenant)
		return err
	}))
	require.Equal(t, 1, n)
	require.NoError(t, b.keys.Master.Retire(old))
}

// A master key rotation moves the wrapping of the tenant's key, not the document: the
// export after it seals the file's document again under the new header, reading no sealed
// row and encoding nothing, and the file holds the same document (its exportedAt too),
// opens with the new master key alone and with a runtime key given out before. A file
// whose ciphertext was damaged, or whose tenant changed meanwhile, is exported in full.
func TestExportAfterMasterRotationResealsTheDocument(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.populate(t, "acme")
	for _, id := range []string{"e1", "e2", "e3"} {
		b.createInline(t, "acme", id, "server-pair")
	}
	_, err := b.exporter(t).ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	path := credfile.Path(b.dataDir, "acme")
	beforeBytes, err := os.ReadFile(path)
	require.NoError(t, err)
	before, bh := readDoc(t, b.keys, b.dataDir, "acme")
	fk, err := b.keys.FileKey(ctx, "acme")
	require.NoError(t, err)
	runtimeKey := &credfile.RuntimeKey{Tenant: "acme", Keys: map[int]secret.Bytes{fk.TenantKey.Version: fk.Key}}

	b.rotateMaster(t, "acme")
	x := b.exporter(t) // the rotation's own, as keyrotation makes it: nothing cached
	res, err := x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	require.True(t, res.Written)
	require.Zero(t, x.rowsRead.Load(), "no sealed row is read")
	require.Zero(t, x.encodedCacheFor().encoded.Load(), "nothing is encoded")

	after, ah := readDoc(t, b.keys, b.dataDir, "acme")
	require.Equal(t, b.keys.Master.Current().ID(), ah.TenantKey.MasterKeyID, "the header carries the new wrapping")
	require.Equal(t, bh.KeyID, ah.KeyID)
	require.Equal(t, bh.Generation, ah.Generation)
	require.Equal(t, before, after, "the same document, exportedAt included")
	afterBytes, err := os.ReadFile(path)
	require.NoError(t, err)
	_, _, err = credfile.Open(credfile.Keys{FileKey: runtimeKey.FileKey}, afterBytes, "acme")
	require.NoError(t, err, "a runtime key given out before the rotation opens it")
	require.False(t, bytes.Contains(afterBytes, ciphertextTail(t, beforeBytes)), "sealed again under a new nonce")

	again, err := x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	require.False(t, again.Written, "a resealed file is current")

	// A damaged ciphertext under a good header is not carried over: the document is read
	// and encoded again.
	b.rotateMaster(t, "acme")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	i := bytes.LastIndex(data, []byte(`"`)) - 100
	c := data[i]
	data[i] = 'A'
	if c == 'A' {
		data[i] = 'B'
	}
	require.NoError(t, WriteAtomic(path, data))
	x = b.exporter(t)
	res, err = x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	require.True(t, res.Written)
	require.Positive(t, x.rowsRead.Load(), "exported in full")
	after, _ = readDoc(t, b.keys, b.dataDir, "acme")
	require.Len(t, after.Entries, len(before.Entries))

	// A change that came with the rotation is in the file.
	b.rotateMaster(t, "acme")
	_, err = b.catalog.Put(ctx, "acme", catalog.Input{ID: "e2", Notes: ptr("renewed")}, catalog.Precondition{})
	require.NoError(t, err)
	_, err = b.exporter(t).ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	after, _ = readDoc(t, b.keys, b.dataDir, "acme")
	require.Equal(t, "renewed", entryByID(after, "e2").Notes)
}

// ciphertextTail is the last 64 characters of a file's ciphertext.
func ciphertextTail(t *testing.T, data []byte) []byte {
	t.Helper()
	end := bytes.LastIndex(data, []byte(`"`))
	require.Greater(t, end, 64)
	return data[end-64 : end]
}
