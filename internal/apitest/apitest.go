// Package apitest runs the real HTTP API over a real, migrated PostgreSQL database of the
// test's own, for black-box tests that talk to it the way clients do: JSON over HTTP with a
// bearer token or the session cookie. Every log line the server writes is captured, so a
// test can assert that no PEM or key material ever reaches a log.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/kdf"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
	"github.com/loopze/certstore/internal/workspace"
)

// Env is one running API and everything behind it.
type Env struct {
	URL     string
	DBURL   string
	DataDir string
	Pool    *pgxpool.Pool
	// Keys seal and open every tenant's values and files.
	Keys    *tenantkey.Keys
	Catalog *catalog.Service
	// Workspace is the deploy service behind /api/v1/flows.
	Workspace *workspace.Service
	Server    *api.Server
	// Credentials serves GET /api/v1/credentials from DataDir; the export job wakes it.
	Credentials *api.Credentials
	// Exporter writes the tenants' credentials.json into DataDir (see Export and
	// Options.ExportLoop).
	Exporter *fileexport.Exporter
	Logs     *Buffer
	Logger   *slog.Logger
	secret   []byte
}

// Options adjust the environment.
type Options struct {
	// FileRoots is LOOPZE_FILE_ROOTS.
	FileRoots string
	// RateLimit sets the token buckets; the zero value leaves rate limiting off.
	RateLimit api.RateLimit
	// ExportLoop runs the export job (LISTEN/NOTIFY and reconcile) as serve does, so
	// every change reaches DataDir's credentials.json files.
	ExportLoop bool
	// KDF is the key derivation budget; nil is one sized as serve's defaults size it.
	KDF material.Budget
	// Credentials, when set, adjusts the credentials route (its poll caps, its hooks)
	// before the server starts.
	Credentials func(*api.Credentials)
	// AuditKeys are the audit keys the API chains the trail under; nil means the tenants'
	// own (Env.Keys.Audit()), as serve chains it.
	AuditKeys audit.Keys
}

// Buffer is a goroutine-safe log sink.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything logged so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// New starts an API over a fresh database. The server, pool and database go away with the test.
func New(t testing.TB, opts ...Options) *Env {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	ctx := context.Background()
	url := testdb.URL(t)
	logs := &Buffer{}
	logger := logging.New(io.MultiWriter(logs, testWriter{t}), "json", slog.LevelDebug)
	pool, err := db.Open(ctx, url, logger)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	dataDir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dataDir)
	secret := []byte("apitest-hmac-secret-0123456789abcdef")
	verifier, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	require.NoError(t, err)
	roots := material.ParseRoots(o.FileRoots)
	budget := o.KDF
	if budget == nil {
		budget = kdf.New(kdf.Config{})
	}
	cat := &catalog.Service{Pool: pool, Keys: keys, Roots: roots, KDF: budget, Logger: logger}
	ws := &workspace.Service{Pool: pool, Keys: keys, Roots: roots, KDF: budget, Logger: logger,
		Resolver: &resolver.Resolver{Entries: cat.Entries(), Roots: cat.Roots, KDF: budget, Logger: logger}}
	creds := &api.Credentials{DataDir: dataDir}
	if o.Credentials != nil {
		o.Credentials(creds)
	}
	exporter := &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: dataDir, Logger: logger, OnWrite: creds.Written}
	auditKeys := o.AuditKeys
	if auditKeys == nil {
		auditKeys = keys.Audit()
	}
	srv := api.New(api.Deps{Logger: logger, Pool: pool, Version: "test", Verifier: verifier, Catalog: cat, Workspace: ws,
		RateLimit: o.RateLimit, Credentials: creds, AuditKeys: auditKeys})
	hs := httptest.NewServer(Contract(t, srv.Handler))
	t.Cleanup(hs.Close)
	if o.ExportLoop {
		loopCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		sy := &fileexport.Syncer{Exporter: exporter, Logger: logger, Debounce: 10 * time.Millisecond}
		go func() {
			defer close(done)
			_ = sy.Run(loopCtx)
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	return &Env{URL: hs.URL, DBURL: url, DataDir: dataDir, Pool: pool, Keys: keys, Catalog: cat,
		Workspace: ws, Server: srv, Credentials: creds, Exporter: exporter, Logs: logs, Logger: logger, secret: secret}
}

// testWriter shows server logs in verbose test output.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// Export writes tenant's credentials.json now, as the export job does.
func (e *Env) Export(t testing.TB, tenant string) fileexport.Result {
	t.Helper()
	r, err := e.Exporter.ExportTenant(context.Background(), tenant, false)
	require.NoError(t, err)
	return r
}

// Token mints a token for tenant and role ("viewer", "editor", "admin", "runtime").
func (e *Env) Token(t testing.TB, tenant, role string) string {
	t.Helper()
	r, err := auth.ParseRole(role)
	require.NoError(t, err)
	tok, err := auth.Mint(e.secret, auth.Principal{Subject: "test-" + role, Tenant: tenant, Role: r}, time.Hour, "", "", time.Now())
	require.NoError(t, err)
	return tok
}

// Response is what came back.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r *Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &m), "body: %s", r.Body)
	return m
}

// Decode decodes the body into v.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Body, v), "body: %s", r.Body)
}

// Request is one call. Token goes in Authorization unless Cookie is set.
type Request struct {
	Method  string
	Path    string
	Token   string
	Cookie  bool
	Body    any // marshalled as JSON unless it is []byte or string
	Headers map[string]string
}

// Do sends the request and reads the whole answer.
func (e *Env) Do(t testing.TB, r Request) *Response {
	t.Helper()
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(t, err)
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequest(r.Method, e.URL+r.Path, body)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		if r.Cookie {
			req.AddCookie(&http.Cookie{Name: auth.CookieName, Value: r.Token})
		} else {
			req.Header.Set("Authorization", "Bearer "+r.Token)
		}
	}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// WriteFile writes data to dir/name with mode 0600 and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}
