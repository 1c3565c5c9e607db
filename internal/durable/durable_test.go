package durable_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/durable"
)

func TestReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "credentials.json")
	require.Error(t, durable.Replace(path, []byte("x")), "the directory must exist unless DirMode says")

	var steps []durable.Step
	require.NoError(t, durable.Replace(path, []byte("one"), durable.DirMode(0o700), durable.Hook(func(s durable.Step) { steps = append(steps, s) })))
	require.Equal(t, []durable.Step{durable.TempCreated, durable.TempPartial, durable.TempWritten, durable.TempSynced, durable.Installed}, steps)
	require.NoError(t, durable.Replace(path, []byte("two")))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "two", string(got))
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), info.Mode().Perm())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temp file left behind")

	require.NoError(t, durable.Replace(path, []byte("three"), durable.Mode(0o640)))
	info, err = os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o640), info.Mode().Perm())
}

// TestCreateExclusiveOneWinner: of many concurrent creators exactly one succeeds, the
// others learn fs.ErrExist, and the file holds the winner's bytes whole.
func TestCreateExclusiveOneWinner(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "loopze.key")
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		wins, exist int
		winner      string
	)
	for i := range 16 {
		wg.Go(func() {
			data := []byte{byte('a' + i), '\n'}
			err := durable.CreateExclusive(path, data)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
				winner = string(data)
			case errors.Is(err, fs.ErrExist):
				exist++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, wins)
	require.Equal(t, 15, exist)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, winner, string(got))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temp file left behind")
}

func TestRenameAndRemoveTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "loopze.key.next"), filepath.Join(dir, "loopze.key")
	require.NoError(t, os.WriteFile(a, []byte("next"), 0o600))
	require.NoError(t, durable.Rename(a, b))
	got, err := os.ReadFile(b)
	require.NoError(t, err)
	require.Equal(t, "next", string(got))

	leftover := filepath.Join(dir, durable.TempPrefix(b)+"123")
	require.NoError(t, os.WriteFile(leftover, nil, 0o600))
	durable.RemoveTemps(b)
	_, err = os.Stat(leftover)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(b)
	require.NoError(t, err)
}
