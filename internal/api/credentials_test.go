package api_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/apitest"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/nodetls"
)

// generationTag is the ETag the credentials route documents for a file of generation gen,
// spelt out here rather than taken from the server's code: runtimes build it from their
// copy of the file, so it may not change unnoticed.
func generationTag(gen int64) string { return `"` + strconv.FormatInt(gen, 10) + `"` }

// TestCredentialsRoute: the file exactly as on disk with its generation as ETag, 304 while
// it is current, a long poll that returns on the next export, and only runtime and admin
// tokens of the tenant served.
func TestCredentialsRoute(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	editor, runtime := env.Token(t, "acme", "editor"), env.Token(t, "acme", "runtime")
	get := func(tok string, headers map[string]string, query string) *apitest.Response {
		return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/credentials" + query, Token: tok, Headers: headers})
	}
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, editor, inlineCA("root-ca", ca))

	res := get(runtime, nil, "")
	require.Equal(t, http.StatusNotFound, res.Status, "before the first export: %s", res.Body)

	r := env.Export(t, "acme")
	onDisk, err := os.ReadFile(credfile.Path(env.DataDir, "acme"))
	require.NoError(t, err)
	res = get(runtime, nil, "")
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	require.Equal(t, onDisk, res.Body, "the bytes on disk, ciphertext only")
	require.NotContains(t, string(res.Body), "BEGIN")
	etag := res.Header.Get("ETag")
	require.Equal(t, generationTag(r.Generation), etag)

	res = get(runtime, map[string]string{"If-None-Match": etag}, "")
	require.Equal(t, http.StatusNotModified, res.Status)
	require.Empty(t, res.Body)
	res = get(runtime, map[string]string{"If-None-Match": etag}, "?wait=20ms")
	require.Equal(t, http.StatusNotModified, res.Status, "the wait ends with 304 when nothing moved")

	// A long poll returns with the generation the next export writes.
	type answer struct {
		status int
		etag   string
	}
	polled := make(chan answer, 1)
	go func() {
		res := get(runtime, map[string]string{"If-None-Match": etag}, "?wait=60s")
		polled <- answer{res.Status, res.Header.Get("ETag")}
	}()
	post(t, env, editor, inlineCA("second-ca", ca))
	r2 := env.Export(t, "acme")
	got := <-polled
	require.Equal(t, http.StatusOK, got.status)
	require.Equal(t, generationTag(r2.Generation), got.etag)

	// Another replica sharing the directory writes the next file; this server's export
	// then finds it current, and still wakes the poll.
	other := &fileexport.Exporter{Pool: env.Pool, Keys: env.Keys, DataDir: env.DataDir}
	go func() {
		res := get(runtime, map[string]string{"If-None-Match": generationTag(r2.Generation)}, "?wait=60s")
		polled <- answer{res.Status, res.Header.Get("ETag")}
	}()
	post(t, env, editor, inlineCA("third-ca", ca))
	time.Sleep(100 * time.Millisecond) // the poll is waiting (were it not, it would only pass sooner)
	r3, err := other.ExportTenant(context.Background(), "acme", false)
	require.NoError(t, err)
	require.True(t, r3.Written)
	require.False(t, env.Export(t, "acme").Written, "the file is current already")
	select {
	case got = <-polled:
	case <-time.After(30 * time.Second):
		t.Fatal("the poll was not woken by the file another replica wrote")
	}
	require.Equal(t, http.StatusOK, got.status)
	require.Equal(t, generationTag(r3.Generation), got.etag)

	// Admin may read it; viewer and editor may not; another tenant sees only its own.
	require.Equal(t, http.StatusOK, get(env.Token(t, "acme", "admin"), nil, "").Status)
	for _, role := range []string{"viewer", "editor"} {
		res := get(env.Token(t, "acme", role), nil, "")
		require.Equal(t, http.StatusForbidden, res.Status, role)
	}
	res = get(env.Token(t, "globex", "runtime"), nil, "")
	require.Equal(t, http.StatusNotFound, res.Status)
	require.NotContains(t, string(res.Body), "ciphertext")
	require.Equal(t, http.StatusUnauthorized, get("", nil, "").Status)

	for _, bad := range []string{"?wait=2m", "?wait=soon", "?wait=-1s"} {
		res := get(runtime, map[string]string{"If-None-Match": etag}, bad)
		require.Equal(t, http.StatusUnprocessableEntity, res.Status, bad)
		require.Contains(t, string(res.Body), "query.wait", bad)
	}
}

// TestLongPollEndsWithTheClient: a client that goes away ends its long poll; the server
// stays responsive and answers the next one.
func TestLongPollEndsWithTheClient(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	runtime := env.Token(t, "acme", "runtime")
	post(t, env, env.Token(t, "acme", "editor"), inlineCA("root-ca", materialtest.NewCA(t, materialtest.Options{})))
	r := env.Export(t, "acme")
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/api/v1/credentials?wait=60s", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+runtime)
	req.Header.Set("If-None-Match", generationTag(r.Generation))
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/credentials", Token: runtime})
	require.Equal(t, http.StatusOK, res.Status)
}

// TestRuntimeTokenRefusedElsewhere sends a runtime token to every other operation of the
// API and to the web UI: each refuses it.
func TestRuntimeTokenRefusedElsewhere(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	runtime := env.Token(t, "acme", "runtime")
	param := regexp.MustCompile(`\{[^}]+\}`)
	checked := 0
	for path, item := range env.Server.API.OpenAPI().Paths {
		for method, op := range map[string]*huma.Operation{http.MethodGet: item.Get, http.MethodPost: item.Post,
			http.MethodPut: item.Put, http.MethodDelete: item.Delete, http.MethodPatch: item.Patch} {
			if op == nil || len(op.Security) == 0 || op.OperationID == "getCredentials" {
				continue
			}
			res := env.Do(t, apitest.Request{Method: method, Path: param.ReplaceAllString(path, "x"), Token: runtime, Body: map[string]any{}})
			require.Equal(t, http.StatusForbidden, res.Status, "%s %s: %s", method, path, res.Body)
			checked++
		}
	}
	require.Greater(t, checked, 5)

	// The web UI: a runtime token cannot sign in, nor serve as a session cookie.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	form := url.Values{"token": {runtime}, "next": {"/certs"}}
	req, _ := http.NewRequest(http.MethodPost, env.URL+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", env.URL)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	req, _ = http.NewRequest(http.MethodGet, env.URL+"/certs", nil)
	req.AddCookie(&http.Cookie{Name: "loopze_session", Value: runtime})
	resp, err = client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Location"), "/login")
}

// TestSyncerAsksForChangesOnly: the If-None-Match a runtime's Syncer sends, built from the
// generation of its copy, is one the credentials route matches: once the copy is current,
// the server answers 304 and the file is not written again, also by a Syncer started anew
// over the same directory; the next export is written.
func TestSyncerAsksForChangesOnly(t *testing.T) {
	t.Parallel()
	env := apitest.New(t)
	editor := env.Token(t, "acme", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, editor, inlineCA("root-ca", ca))
	env.Export(t, "acme")
	dir := t.TempDir()
	syncer := func() *nodetls.Syncer {
		return &nodetls.Syncer{BaseURL: env.URL, Token: env.Token(t, "acme", "runtime"), Dir: dir, AllowLoopbackHTTP: true, Wait: 10 * time.Millisecond}
	}
	first := syncer()
	written, err := first.Once(t.Context())
	require.NoError(t, err)
	require.True(t, written)
	for name, s := range map[string]*nodetls.Syncer{"the same Syncer": first, "a Syncer started anew": syncer()} {
		written, err = s.Once(t.Context())
		require.NoError(t, err, name)
		require.False(t, written, "%s: the server answered the current copy in full", name)
	}

	post(t, env, editor, inlineCA("second-ca", ca))
	r := env.Export(t, "acme")
	var got int64
	first.OnWrite = func(gen int64) { got = gen }
	written, err = first.Once(t.Context())
	require.NoError(t, err)
	require.True(t, written)
	require.Equal(t, r.Generation, got)
}

// TestPutReachesRuntime: a PUT of an inline entry on the server reaches a runtime's
// package through the export job, both on the server's own file and on a copy kept by
// Sync over the credentials route; the next connection presents the new pair.
func TestPutReachesRuntime(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{ExportLoop: true})
	editor := env.Token(t, "default", "editor")
	ca := materialtest.NewCA(t, materialtest.Options{})
	addr := peerServer(t, ca)
	v1, v2 := ca.Issue(t, materialtest.Options{CommonName: "edge-v1"}), ca.Issue(t, materialtest.Options{CommonName: "edge-v2"})
	post(t, env, editor, inlineCA("root-ca", ca))
	post(t, env, editor, inlinePair("edge-client", v1))
	res := deploy(t, env, editor, workspaceOf(flow("line-1", node("tcp-out-1", "tcp-out",
		obj{"tls": obj{"caBundleRef": "root-ca", "clientCertRef": "edge-client", "serverName": "localhost"}}))))
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)

	// A remote runtime: its own directory with its tenant's runtime key, kept current by
	// Sync. The runtime on the server's host reads the server's file with the same key.
	remote := t.TempDir()
	rk, err := env.Keys.RuntimeKey(context.Background(), "default")
	require.NoError(t, err)
	keyData, err := rk.Marshal()
	require.NoError(t, err)
	runtimeKey := filepath.Join(t.TempDir(), "default.runtime-key")
	require.NoError(t, os.WriteFile(runtimeKey, keyData, 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	syncDone := make(chan error, 1)
	syncer := &nodetls.Syncer{BaseURL: env.URL, Token: env.Token(t, "default", "runtime"), Dir: remote, AllowLoopbackHTTP: true}
	go func() { syncDone <- syncer.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-syncDone) })

	presented := func(store *nodetls.Store) string {
		cfg, err := store.Config(context.Background(), "line-1", "tcp-out-1")
		require.NoError(t, err)
		return dial(t, addr, cfg).presented(t)
	}
	open := func(dir string) *nodetls.Store {
		var store *nodetls.Store
		require.Eventually(t, func() bool {
			s, err := nodetls.Open(filepath.Join(dir, credfile.FileName), runtimeKey)
			if err != nil {
				return false
			}
			if _, err := s.Config(context.Background(), "line-1", "tcp-out-1"); err != nil {
				return false // the deploy is not exported yet
			}
			store = s
			return true
		}, 15*time.Second, 10*time.Millisecond)
		return store
	}
	onServer, onRemote := open(env.DataDir), open(remote)
	require.Equal(t, fingerprint(v1), presented(onServer))
	require.Equal(t, fingerprint(v1), presented(onRemote))
	before := onServer.Generation()

	res = env.Do(t, apitest.Request{Method: http.MethodPut, Path: "/api/v1/certs/edge-client", Token: editor,
		Body: obj{"certPem": string(v2.ChainPEM()), "keyPem": string(v2.KeyPEM())}})
	require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	for name, store := range map[string]*nodetls.Store{"server's file": onServer, "synced copy": onRemote} {
		require.Eventually(t, func() bool {
			require.NoError(t, store.Refresh())
			return store.Generation() > before
		}, 15*time.Second, 10*time.Millisecond, name)
		require.Equal(t, fingerprint(v2), presented(store), name)
	}
	require.NotContains(t, env.Logs.String(), "BEGIN")
}

// TestWokenPollsShareOneRead: long polls woken by one export all answer 200 with the new
// file, and the server opened and read that file once for all of them.
func TestWokenPollsShareOneRead(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	env := apitest.New(t, apitest.Options{Credentials: func(c *api.Credentials) {
		c.OnRead = func(tenant string) {
			if tenant == "acme" {
				reads.Add(1)
			}
		}
	}})
	editor, runtime := env.Token(t, "acme", "editor"), env.Token(t, "acme", "runtime")
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, editor, inlineCA("root-ca", ca))
	etag := generationTag(env.Export(t, "acme").Generation)

	const polls = 20
	answers := make(chan *apitest.Response, polls)
	for range polls {
		go func() {
			answers <- env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/credentials?wait=60s", Token: runtime,
				Headers: map[string]string{"If-None-Match": etag}})
		}()
	}
	require.Eventually(t, func() bool { return env.Credentials.Waiting("acme") == polls }, 15*time.Second, 5*time.Millisecond)
	before := reads.Load()
	post(t, env, editor, inlineCA("second-ca", ca))
	r := env.Export(t, "acme")
	onDisk, err := os.ReadFile(credfile.Path(env.DataDir, "acme"))
	require.NoError(t, err)
	for range polls {
		res := <-answers
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
		require.Equal(t, generationTag(r.Generation), res.Header.Get("ETag"))
		require.Equal(t, onDisk, res.Body)
	}
	require.Equal(t, int64(1), reads.Load()-before, "the woken polls share one read of the new file")
	require.Zero(t, env.Credentials.Waiting("acme"))
}

// TestPollCaps: past the waiting polls allowed per subject, or per tenant, a long poll is
// answered 429 with Retry-After in the API's error shape; requests that do not wait, polls
// of other tenants and polls after the wake are served.
func TestPollCaps(t *testing.T) {
	t.Parallel()
	env := apitest.New(t, apitest.Options{Credentials: func(c *api.Credentials) {
		c.MaxPollsPerTenant, c.MaxPollsPerSubject = 3, 2
	}})
	editor := env.Token(t, "acme", "editor")
	runtime, admin := env.Token(t, "acme", "runtime"), env.Token(t, "acme", "admin") // two subjects
	ca := materialtest.NewCA(t, materialtest.Options{})
	post(t, env, editor, inlineCA("root-ca", ca))
	etag := generationTag(env.Export(t, "acme").Generation)
	get := func(tok, tag, query string) *apitest.Response {
		h := map[string]string{}
		if tag != "" {
			h["If-None-Match"] = tag
		}
		return env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/credentials" + query, Token: tok, Headers: h})
	}
	waiting := make(chan *apitest.Response, 3)
	poll := func(tok string, want int) {
		go func() { waiting <- get(tok, etag, "?wait=60s") }()
		require.Eventually(t, func() bool { return env.Credentials.Waiting("acme") == want }, 15*time.Second, 5*time.Millisecond)
	}
	refused := func(tok, why string) {
		t.Helper()
		res := get(tok, etag, "?wait=60s")
		require.Equal(t, http.StatusTooManyRequests, res.Status, "%s: %s", why, res.Body)
		require.Equal(t, "Too Many Requests", res.JSON(t)["error"])
		require.Contains(t, res.JSON(t)["message"], "long polls")
		after, err := strconv.Atoi(res.Header.Get("Retry-After"))
		require.NoError(t, err)
		require.Greater(t, after, 0)
	}

	poll(runtime, 1)
	poll(runtime, 2)
	refused(runtime, "a third poll of the subject")
	poll(admin, 3)
	refused(admin, "a fourth poll of the tenant")

	// Requests that do not wait are not polls; another tenant has caps of its own.
	require.Equal(t, http.StatusNotModified, get(runtime, etag, "").Status)
	require.Equal(t, http.StatusOK, get(runtime, "", "?wait=60s").Status, "no ETag: answered at once")
	require.Equal(t, http.StatusOK, get(runtime, `"0"`, "?wait=60s").Status, "an old ETag: answered at once")
	globex := env.Token(t, "globex", "runtime")
	post(t, env, env.Token(t, "globex", "editor"), inlineCA("root-ca", ca))
	gEtag := generationTag(env.Export(t, "globex").Generation)
	res := env.Do(t, apitest.Request{Method: http.MethodGet, Path: "/api/v1/credentials?wait=20ms", Token: globex,
		Headers: map[string]string{"If-None-Match": gEtag}})
	require.Equal(t, http.StatusNotModified, res.Status, "%s", res.Body)

	// The next file wakes the three; their places are free again.
	post(t, env, editor, inlineCA("second-ca", ca))
	r := env.Export(t, "acme")
	for range 3 {
		res := <-waiting
		require.Equal(t, http.StatusOK, res.Status, "%s", res.Body)
	}
	require.Zero(t, env.Credentials.Waiting("acme"))
	res = get(runtime, generationTag(r.Generation), "?wait=20ms")
	require.Equal(t, http.StatusNotModified, res.Status, "%s", res.Body)
}
