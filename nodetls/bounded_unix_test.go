//go:build unix

package nodetls_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/nodetls"
)

// TestFIFOOverCredentialsFile: a FIFO renamed over credentials.json blocked the open in
// Config, past its context's deadline and with the store's lock held, until a writer
// came. Now Config returns before its deadline, serving the last good snapshot, and Err
// says what the file is.
func TestFIFOOverCredentialsFile(t *testing.T) {
	t.Parallel()
	f, addr, pair := servingFixture(t)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.NoError(t, err)

	fifo := f.path() + ".fifo"
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	require.NoError(t, os.Rename(fifo, f.path()))
	t.Cleanup(func() { // a reader still blocked on the FIFO gets its end of file
		if w, err := os.OpenFile(f.path(), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			_ = w.Close()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cfg *tls.Config
	within(t, "Config over a FIFO", func() { cfg, err = store.Config(ctx, "line-1", "n1") })
	require.NoError(t, ctx.Err(), "returned before the deadline")
	require.NoError(t, err)
	require.Equal(t, fp(pair), dial(t, addr, cfg).presented(t), "the last good snapshot serves")
	require.ErrorIs(t, store.Err(), nodetls.ErrNotCredentialsFile)
	require.ErrorContains(t, store.Err(), "not a regular file (a FIFO)")
	require.EqualValues(t, 5, store.Generation())

	within(t, "New over a FIFO", func() {
		_, err = nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	})
	require.ErrorIs(t, err, nodetls.ErrNotCredentialsFile)
}

// TestDeviceOverCredentialsFile: credentials.json as a symlink to /dev/zero was read until
// the process ran out of memory. Now only a regular file is read.
func TestDeviceOverCredentialsFile(t *testing.T) {
	t.Parallel()
	f, _, _ := servingFixture(t)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.NoError(t, err)
	require.NoError(t, os.Symlink("/dev/zero", f.path()+".new"))
	require.NoError(t, os.Rename(f.path()+".new", f.path()))

	within(t, "Refresh of /dev/zero", func() { err = store.Refresh() })
	require.ErrorIs(t, err, nodetls.ErrNotCredentialsFile)
	require.ErrorContains(t, err, "not a regular file (a device)")
	require.EqualValues(t, 5, store.Generation())
	within(t, "New over /dev/zero", func() {
		_, err = nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	})
	require.ErrorIs(t, err, nodetls.ErrNotCredentialsFile)
}

// TestOversizedCredentialsFile: a sparse file of MaxFileSize+1 bytes cost a read of all of
// them at every reload. Now a file over the cap is refused from its size, before a byte is
// read: a sparse file of a terabyte (which Unix file systems hold in no space) is refused
// as fast, where reading it could not end.
func TestOversizedCredentialsFile(t *testing.T) {
	t.Parallel()
	f, addr, pair := servingFixture(t)
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.NoError(t, err)

	for _, size := range []int64{nodetls.MaxFileSize + 1, 1 << 40} {
		big := filepath.Join(f.dir, "big.json")
		w, err := os.Create(big)
		require.NoError(t, err)
		require.NoError(t, w.Truncate(size))
		require.NoError(t, w.Close())
		require.NoError(t, os.Rename(big, f.path()))

		within(t, "Refresh of an oversized file", func() { err = store.Refresh() })
		require.ErrorIs(t, err, nodetls.ErrTooLarge, "size %d", size)
		require.ErrorContains(t, err, f.path())
		cfg, err := store.Config(context.Background(), "line-1", "n1")
		require.NoError(t, err)
		require.Equal(t, fp(pair), dial(t, addr, cfg).presented(t))

		within(t, "New over an oversized file", func() {
			_, err = nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
		})
		require.ErrorIs(t, err, nodetls.ErrTooLarge)
	}
}
