package nodetls_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/nodetls"
)

// TestGenerationFloorSurvivesRestart replays the rollback: a copy of the file at
// generation 2 put back over generation 3 was accepted by a Store opened afresh, and by
// one still serving generation 2. The highest generation accepted is now kept beside the
// file, so both refuse it, and Err names the two generations; deleting the floor file is
// the deliberate way back.
func TestGenerationFloorSurvivesRestart(t *testing.T) {
	t.Parallel()
	f, addr, pair := servingFixture(t)
	f.doc.Generation = 2
	f.write(t)
	gen2, err := os.ReadFile(f.path())
	require.NoError(t, err)
	old, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.NoError(t, err)
	require.EqualValues(t, 2, old.Generation())

	// Another runtime (or this one after a restart) takes generation 3.
	f.doc.Generation = 3
	f.write(t)
	current, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.NoError(t, err)
	require.EqualValues(t, 3, current.Generation())
	floor := f.path() + ".floor"
	info, err := os.Stat(floor)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	var recorded struct{ Tenants map[string]int64 }
	data, err := os.ReadFile(floor)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &recorded))
	require.Equal(t, map[string]int64{"acme": 3}, recorded.Tenants)

	mv(t, f.path(), gen2)
	err = old.Refresh()
	require.ErrorIs(t, err, nodetls.ErrStaleFile, "a store still at generation 2 refuses the copy too")
	require.ErrorContains(t, old.Err(), "generation 2")
	require.ErrorContains(t, old.Err(), "generation 3")
	require.ErrorContains(t, old.Err(), floor)
	cfg, err := old.Config(context.Background(), "line-1", "n1")
	require.NoError(t, err, "the last good snapshot keeps serving")
	require.Equal(t, fp(pair), dial(t, addr, cfg).presented(t))
	require.EqualValues(t, 2, old.Generation())
	require.ErrorIs(t, current.Refresh(), nodetls.ErrStaleFile)

	_, err = nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.ErrorIs(t, err, nodetls.ErrStaleFile, "a store opened after a restart refuses it")
	require.ErrorContains(t, err, "generation 2")
	require.ErrorContains(t, err, "generation 3")

	// A floor file that is not one refuses everything, rather than guarding nothing.
	require.NoError(t, os.WriteFile(floor, []byte("not json"), 0o600))
	_, err = nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.ErrorContains(t, err, floor)

	// Rolling back on purpose: remove the floor, then open.
	require.NoError(t, os.Remove(floor))
	rolled, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath()})
	require.NoError(t, err)
	require.EqualValues(t, 2, rolled.Generation())
}
