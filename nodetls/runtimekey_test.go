package nodetls_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/credfile/credfiletest"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/nodetls"
)

// TestRuntimeKeyOpensItsTenantOnly: tenant acme's runtime key resolves acme's file and
// nothing of beta's, whether beta's file is given as it is or with its header claiming
// to be acme's; the master key is not needed on the runtime.
func TestRuntimeKeyOpensItsTenantOnly(t *testing.T) {
	t.Parallel()
	master := newKey(t) // the server's; never written where the runtime is
	dir := t.TempDir()
	ca := materialtest.NewCA(t, materialtest.Options{CommonName: "Acme Root"})
	acme := &credfile.Document{Tenant: "acme", Generation: 3, Entries: []credfile.Entry{{ID: "root", Name: "root",
		Type: string(material.CABundle), Source: "inline", CertPEM: string(ca.CertPEM())}},
		Workspace: []byte(`{"flows":[{"id":"f","nodes":[{"id":"n","type":"tcp-out","tls":{"caBundleRef":"root"}}]}]}`)}
	beta := &credfile.Document{Tenant: "beta", Generation: 3, Entries: acme.Entries, Workspace: acme.Workspace}
	acmeFile, betaFile := filepath.Join(dir, "acme.json"), filepath.Join(dir, "beta.json")
	require.NoError(t, os.WriteFile(acmeFile, credfiletest.Seal(t, master, acme), 0o600))
	require.NoError(t, os.WriteFile(betaFile, credfiletest.Seal(t, master, beta), 0o600))
	key := filepath.Join(dir, "acme.runtime-key")
	require.NoError(t, os.WriteFile(key, credfiletest.RuntimeKey(t, master, "acme", 1), 0o600))

	store, err := nodetls.Open(acmeFile, key)
	require.NoError(t, err)
	defer store.Close()
	cfg, err := store.Config(context.Background(), "f", "n")
	require.NoError(t, err)
	require.NotNil(t, cfg.RootCAs)

	_, err = nodetls.Open(betaFile, key)
	require.ErrorIs(t, err, nodetls.ErrWrongTenant, "beta's file")
	// beta's file claiming acme in its header: its key is not acme's.
	betaAsAcme := []byte(strings.Replace(string(mustRead(t, betaFile)), `"tenant": "beta"`, `"tenant": "acme"`, 1))
	require.NoError(t, os.WriteFile(betaFile, betaAsAcme, 0o600))
	_, err = nodetls.Open(betaFile, key)
	require.ErrorIs(t, err, nodetls.ErrUnknownKey, "beta's file relabelled acme's")
}

// TestRuntimeKeyAfterATenantKeyRotation: a runtime holding the previous runtime key keeps
// serving its last good snapshot when the file moves to a new tenant key version, says
// which version it lacks, and takes the file as soon as it is given its new key.
func TestRuntimeKeyAfterATenantKeyRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	f.inline("root", material.CABundle, ca, false)
	f.workspace(t, node("n", "tcp-out", map[string]any{"caBundleRef": "root"}))
	f.write(t)
	key := filepath.Join(f.dir, "acme.runtime-key")
	require.NoError(t, os.WriteFile(key, credfiletest.RuntimeKey(t, f.key, "acme", 1), 0o600))
	store, err := nodetls.Open(f.path(), key)
	require.NoError(t, err)
	defer store.Close()

	f.doc.Generation = 2
	mv(t, f.path(), credfiletest.SealVersion(t, f.key, f.doc, 2))
	_, err = store.Config(context.Background(), "line-1", "n")
	require.NoError(t, err, "the last good snapshot keeps serving")
	require.EqualValues(t, 1, store.Generation())
	require.ErrorIs(t, store.Err(), nodetls.ErrUnknownKey)
	require.ErrorContains(t, store.Err(), "version 2 of acme's key")
	require.ErrorContains(t, store.Err(), "holds version(s) 1")

	mv(t, key, credfiletest.RuntimeKey(t, f.key, "acme", 1, 2))
	_, err = store.Config(context.Background(), "line-1", "n")
	require.NoError(t, err)
	require.EqualValues(t, 2, store.Generation())
	require.NoError(t, store.Err())
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
