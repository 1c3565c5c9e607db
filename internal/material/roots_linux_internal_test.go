//go:build linux

package material

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadDirect proves the openat2 shortcut reads only a regular file reached without a
// symlink, and leaves everything else to the general path (which follows links, refuses
// FIFOs and says what is wrong).
func TestReadDirect(t *testing.T) {
	t.Parallel()
	if noOpenat2.Load() {
		t.Skip("openat2 is not available here")
	}
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	require.NoError(t, os.Mkdir(real, 0o700))
	plain := filepath.Join(real, "cert.pem")
	content := bytes.Repeat([]byte("certificate bytes\n"), 100)
	require.NoError(t, os.WriteFile(plain, content, 0o600))
	require.NoError(t, os.Symlink(plain, filepath.Join(dir, "link.pem")))
	require.NoError(t, os.Symlink(real, filepath.Join(dir, "live")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	big := filepath.Join(dir, "big.pem")
	require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte("A"), MaxSize+1), 0o600))
	exact := filepath.Join(dir, "exact.pem")
	require.NoError(t, os.WriteFile(exact, bytes.Repeat([]byte("A"), MaxSize), 0o600))
	empty := filepath.Join(dir, "empty.pem")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))

	resolved, data, ok := readDirect(real + "/./cert.pem")
	require.True(t, ok)
	require.Equal(t, plain, resolved, "the cleaned path")
	require.Equal(t, content, data)
	_, data, ok = readDirect(exact)
	require.True(t, ok)
	require.Len(t, data, MaxSize)
	_, data, ok = readDirect(empty)
	require.True(t, ok)
	require.Empty(t, data)
	// The cleaned path is the one read: the roots admitted it, and ".." moves nothing.
	resolved, data, ok = readDirect(plain + "/../cert.pem")
	require.True(t, ok)
	require.Equal(t, plain, resolved)
	require.Equal(t, content, data)

	for _, p := range []string{
		filepath.Join(dir, "link.pem"),         // the file is a symlink
		filepath.Join(dir, "live", "cert.pem"), // a directory on the way is
		filepath.Join(dir, "fifo"),
		real,
		big,
		filepath.Join(dir, "missing.pem"),
		plain + "/cert.pem", // a file used as a directory
	} {
		_, _, ok := readDirect(p)
		require.False(t, ok, p)
	}
	require.False(t, noOpenat2.Load())
}
