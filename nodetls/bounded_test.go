package nodetls_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/nodetls"
)

// servingFixture is a credentials file at generation 5 whose node n1 presents pair, and a
// peer that tells which certificate a connection presented.
func servingFixture(t *testing.T) (f *fixture, addr string, pair *materialtest.Cert) {
	t.Helper()
	f = newFixture(t)
	ca := materialtest.NewCA(t, materialtest.Options{})
	pair = ca.Issue(t, materialtest.Options{CommonName: "last-good"})
	f.inline("root-ca", material.CABundle, ca, false)
	f.inline("edge", material.ClientPair, pair, true)
	f.workspace(t, node("n1", "tcp-out", map[string]any{"caBundleRef": "root-ca", "clientCertRef": "edge", "serverName": "localhost"}))
	f.doc.Generation = 5
	f.write(t)
	return f, peerServer(t, ca), pair
}

// within runs call and fails the test unless it returns within a generous bound: proof it
// returns at all, not a measure of speed.
func within(t *testing.T, what string, call func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		call()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// TestReloadWaitHonoursContext: a Config that finds the file changed while another call
// holds the reload waits for it no longer than its own context allows.
func TestReloadWaitHonoursContext(t *testing.T) {
	t.Parallel()
	f, _, _ := servingFixture(t)
	refused, release := make(chan struct{}), make(chan struct{})
	store, err := nodetls.New(nodetls.Options{File: f.path(), KeyFile: f.keyPath(), OnRefused: func(error) {
		close(refused)
		<-release // a slow reload, holding the store's lock
	}})
	require.NoError(t, err)

	mv(t, f.path(), []byte(`{"format": "torn`))
	first := make(chan error, 1)
	go func() {
		_, err := store.Config(context.Background(), "line-1", "n1")
		first <- err
	}()
	<-refused
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	within(t, "Config waiting for another reload", func() {
		_, err = store.Config(ctx, "line-1", "n1")
	})
	close(release)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, f.path())
	require.NoError(t, <-first, "the reload that held the lock serves the last good snapshot")
	require.ErrorIs(t, store.Err(), nodetls.ErrNotCredentialsFile)
}
