//go:build linux

package material_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

// TestReadFileDirectorySwapRace replays the escape by directory swap: inside acme's root,
// lnk -> d, while a loop exchanges d with d_alt (renameat2 RENAME_EXCHANGE), a symlink to
// globex's root. A read that resolved d as a directory and then opened the name again
// followed the symlink now in its place into globex's root. Every read must return acme's
// file or the answer for a file that is not there, never a byte of globex's.
func TestReadFileDirectorySwapRace(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	acme := filepath.Join(base, "acme")
	mt.WriteFile(t, acme, "d/cert.pem", []byte("acme-cert"))
	mt.WriteFile(t, base, "globex/cert.pem", []byte("globex-secret"))
	d, alt := filepath.Join(acme, "d"), filepath.Join(acme, "d_alt")
	require.NoError(t, os.Symlink(filepath.Join(base, "globex"), alt))
	require.NoError(t, os.Symlink("d", filepath.Join(acme, "lnk")))
	// The same swap through a relative link that climbs out of the root.
	mt.WriteFile(t, acme, "e/cert.pem", []byte("acme-cert"))
	e, ealt := filepath.Join(acme, "e"), filepath.Join(acme, "e_alt")
	require.NoError(t, os.Symlink("../globex", ealt))
	roots := material.Roots{filepath.Join(base, "{tenant}")}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, pair := range [][2]string{{d, alt}, {e, ealt}} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := unix.Renameat2(unix.AT_FDCWD, pair[0], unix.AT_FDCWD, pair[1], unix.RENAME_EXCHANGE); err != nil {
					t.Errorf("renameat2: %v", err)
					return
				}
			}
		})
	}
	const reads = 1500
	var (
		read, leaked int
		errs         []error
	)
	for range reads {
		for _, p := range []string{filepath.Join(acme, "lnk/cert.pem"), filepath.Join(d, "cert.pem"), filepath.Join(e, "cert.pem")} {
			data, err := roots.ReadFile("acme", p)
			switch {
			case err != nil:
				errs = append(errs, err)
			case string(data) == "acme-cert":
				read++
			default:
				leaked++
			}
		}
	}
	close(stop)
	wg.Wait()
	require.Zero(t, leaked, "reads that returned another root's file (of %d)", 3*reads)
	require.Positive(t, read, "some reads find acme's directory in place")
	for _, err := range errs {
		require.ErrorIs(t, err, material.ErrNotInRoots)
		require.NotContains(t, err.Error(), "globex")
	}
}

// TestReadFileSymlinksBetweenRoots: links from one of a tenant's roots into another of its
// roots are followed, absolute or relative, while a link into a directory of no root is
// not, even when that directory holds a link back into a root.
func TestReadFileSymlinksBetweenRoots(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	mt.WriteFile(t, base, "le/archive/example.com/fullchain1.pem", []byte("chain"))
	live := filepath.Join(base, "le/live/example.com")
	require.NoError(t, os.MkdirAll(live, 0o700))
	require.NoError(t, os.Symlink("../../archive/example.com/fullchain1.pem", filepath.Join(live, "relative.pem")))
	require.NoError(t, os.Symlink(filepath.Join(base, "le/archive/example.com/fullchain1.pem"), filepath.Join(live, "absolute.pem")))
	// A hop through a directory outside both roots, back into one.
	require.NoError(t, os.MkdirAll(filepath.Join(base, "le/outside"), 0o700))
	require.NoError(t, os.Symlink(filepath.Join(base, "le/archive/example.com/fullchain1.pem"), filepath.Join(base, "le/outside/back.pem")))
	require.NoError(t, os.Symlink("../../outside/back.pem", filepath.Join(live, "via-outside.pem")))
	// A loop.
	require.NoError(t, os.Symlink("loop-b.pem", filepath.Join(live, "loop-a.pem")))
	require.NoError(t, os.Symlink("loop-a.pem", filepath.Join(live, "loop-b.pem")))
	roots := material.Roots{filepath.Join(base, "le/live"), filepath.Join(base, "le/archive")}

	for _, name := range []string{"relative.pem", "absolute.pem"} {
		data, err := roots.ReadFile("acme", filepath.Join(live, name))
		require.NoError(t, err, name)
		require.Equal(t, "chain", string(data), name)
	}
	_, err := roots.ReadFile("acme", filepath.Join(live, "via-outside.pem"))
	require.ErrorIs(t, err, material.ErrNotInRoots)
	_, err = roots.ReadFile("acme", filepath.Join(live, "loop-a.pem"))
	require.ErrorIs(t, err, unix.ELOOP)
	require.False(t, errors.Is(err, material.ErrNotInRoots))
}
