package fileexport

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExportTightensALoosenedFile: a credentials.json someone made readable to others is
// 0600 again after the next write, because every write makes a new file.
func TestExportTightensALoosenedFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.createInline(t, "acme", "edge", "client-pair")
	x := b.exporter(t)
	res, err := x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	require.True(t, res.Written)

	require.NoError(t, os.Chmod(res.Path, 0o644))
	b.createInline(t, "acme", "later", "server-pair")
	res, err = x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	require.True(t, res.Written)
	info, err := os.Stat(res.Path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	readDoc(t, b.keys, b.dataDir, "acme")
}
