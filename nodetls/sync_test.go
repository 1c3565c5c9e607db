package nodetls_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/nodetls"
)

// credentialsServer serves the credentials route as the store does: the current file with
// its generation as ETag (quoted, as the store's API documents it), 304 to the If-None-Match
// naming it. requests counts what reached it.
type credentialsServer struct {
	mu       sync.Mutex
	data     []byte
	gen      int64
	requests atomic.Int32
}

func (c *credentialsServer) set(data []byte, gen int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.data, c.gen = data, gen
}

func (c *credentialsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	c.mu.Lock()
	data, gen := c.data, c.gen
	c.mu.Unlock()
	if r.URL.Path != nodetls.CredentialsPath || r.Header.Get("Authorization") != "Bearer runtime-token" {
		http.Error(w, "no", http.StatusForbidden)
		return
	}
	tag := `"` + strconv.FormatInt(gen, 10) + `"`
	w.Header().Set("ETag", tag)
	if r.Header.Get("If-None-Match") == tag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(data)
}

// refuseAll is a transport that records that a request was attempted, and sends nothing.
type refuseAll struct{ attempts atomic.Int32 }

func (r *refuseAll) RoundTrip(*http.Request) (*http.Response, error) {
	r.attempts.Add(1)
	return nil, errors.New("no network in this test")
}

// TestSyncRefusesPlainHTTP: Sync sent the runtime token and took the file over plain
// http:// to any host. Now http:// is refused before any request unless the caller opts in
// with AllowLoopbackHTTP and the host is a loopback address or localhost; a redirect from
// https to http is refused the same way.
func TestSyncRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	f, _, _ := servingFixture(t)
	file, err := os.ReadFile(f.path())
	require.NoError(t, err)
	srv := &credentialsServer{}
	srv.set(file, 5)
	plain := httptest.NewServer(srv)
	t.Cleanup(plain.Close)
	port := plain.URL[strings.LastIndex(plain.URL, ":"):]

	for _, tc := range []struct {
		url   string
		optIn bool
	}{
		{"http://certs.example:8080", false},
		{"http://certs.example:8080", true},
		{"http://10.0.0.5:8080", true},
		{"http://127.0.0.1.nip.io:8080", true},
		{"ftp://certs.example", true},
		{plain.URL, false},
		{"http://localhost" + port, false},
		{"http://[::1]" + port, false},
	} {
		rt := &refuseAll{}
		s := &nodetls.Syncer{BaseURL: tc.url, Token: "runtime-token", Dir: t.TempDir(), AllowLoopbackHTTP: tc.optIn,
			Client: &http.Client{Transport: rt}}
		written, err := s.Once(context.Background())
		require.ErrorIs(t, err, nodetls.ErrInsecureURL, "%s", tc.url)
		require.False(t, written)
		require.Zero(t, rt.attempts.Load(), "%s: no request is attempted, so no token leaves", tc.url)
		require.NotContains(t, err.Error(), "runtime-token")
		require.ErrorIs(t, s.Run(context.Background()), nodetls.ErrInsecureURL, "Run stops: asking again cannot help")
		require.NoFileExists(t, s.Path())
	}
	require.ErrorIs(t, nodetls.Sync(context.Background(), plain.URL, "runtime-token", t.TempDir()), nodetls.ErrInsecureURL)
	require.Zero(t, srv.requests.Load(), "the plain server never heard from a Syncer that did not opt in")

	// Opted in, to a loopback server: taken.
	for _, u := range []string{plain.URL, "http://localhost" + port} {
		s := &nodetls.Syncer{BaseURL: u, Token: "runtime-token", Dir: t.TempDir(), AllowLoopbackHTTP: true}
		written, err := s.Once(context.Background())
		require.NoError(t, err, u)
		require.True(t, written, u)
		got, err := os.ReadFile(s.Path())
		require.NoError(t, err)
		require.Equal(t, file, got)
	}

	// An https server that redirects to the plain one: the redirect is not followed.
	before := srv.requests.Load()
	redirect := httptest.NewTLSServer(http.RedirectHandler(plain.URL+nodetls.CredentialsPath, http.StatusFound))
	t.Cleanup(redirect.Close)
	s := &nodetls.Syncer{BaseURL: redirect.URL, Token: "runtime-token", Dir: t.TempDir(), Client: redirect.Client()}
	_, err = s.Once(context.Background())
	require.ErrorIs(t, err, nodetls.ErrInsecureURL)
	require.Equal(t, before, srv.requests.Load(), "the token did not follow the redirect")
	require.NoFileExists(t, s.Path())
}

// TestSyncRefusesOlderGeneration: Sync wrote whatever parsable file the server sent, so a
// server (or anyone answering for it) could put an older generation back. A file older
// than the floor the runtime's Store keeps beside the local copy is now refused and the
// copy kept, across a restart of the Syncer.
func TestSyncRefusesOlderGeneration(t *testing.T) {
	t.Parallel()
	f, _, _ := servingFixture(t)
	f.doc.Generation = 2
	f.write(t)
	gen2, err := os.ReadFile(f.path())
	require.NoError(t, err)
	f.doc.Generation = 3
	f.write(t)
	gen3, err := os.ReadFile(f.path())
	require.NoError(t, err)

	srv := &credentialsServer{}
	srv.set(gen3, 3)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	first := &nodetls.Syncer{BaseURL: ts.URL, Token: "runtime-token", Dir: dir, AllowLoopbackHTTP: true}
	written, err := first.Once(context.Background())
	require.NoError(t, err)
	require.True(t, written)
	store, err := nodetls.New(nodetls.Options{File: first.Path(), KeyFile: f.keyPath()})
	require.NoError(t, err)
	require.EqualValues(t, 3, store.Generation())

	srv.set(gen2, 2)
	restarted := &nodetls.Syncer{BaseURL: ts.URL, Token: "runtime-token", Dir: dir, AllowLoopbackHTTP: true}
	written, err = restarted.Once(context.Background())
	require.ErrorIs(t, err, nodetls.ErrStaleFile)
	require.ErrorContains(t, err, "generation 2")
	require.ErrorContains(t, err, "generation 3")
	require.False(t, written)
	got, err := os.ReadFile(filepath.Join(dir, credfile.FileName))
	require.NoError(t, err)
	require.Equal(t, gen3, got, "the local copy is kept")
}
