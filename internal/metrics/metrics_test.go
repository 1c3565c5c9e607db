package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/metrics"
	"github.com/loopze/certstore/internal/tenantkey/tenantkeytest"
	"github.com/loopze/certstore/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func s(v string) *string { return &v }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// gauge returns the value of the series of name whose labels include want.
func gauge(t *testing.T, m *metrics.Metrics, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			if matches(mt, want) {
				switch {
				case mt.Gauge != nil:
					return mt.Gauge.GetValue(), true
				case mt.Counter != nil:
					return mt.Counter.GetValue(), true
				case mt.Histogram != nil:
					return float64(mt.Histogram.GetSampleCount()), true
				}
			}
		}
	}
	return 0, false
}

func matches(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dir)
	// Tenants other than the default read files only inside LOOPZE_FILE_ROOTS.
	roots := material.Roots{os.TempDir()}
	cat := &catalog.Service{Pool: pool, Keys: keys, Roots: roots, Logger: slog.New(slog.DiscardHandler)}

	inlineEnd := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	cert, key := materialtest.Pair(t, materialtest.Options{NotAfter: inlineEnd})
	_, err = cat.Create(ctx, "acme", catalog.Input{ID: "inline", Name: s("x"), Type: s("client-pair"),
		Source: s("inline"), CertPEM: cert, KeyPEM: key})
	require.NoError(t, err)
	fileDir := t.TempDir()
	firstEnd := time.Now().Add(10 * 24 * time.Hour).Truncate(time.Second)
	cert, key = materialtest.Pair(t, materialtest.Options{NotAfter: firstEnd})
	certPath := materialtest.WriteFile(t, fileDir, "tls.crt", cert)
	keyPath := materialtest.WriteFile(t, fileDir, "tls.key", key)
	_, err = cat.Create(ctx, "acme", catalog.Input{ID: "onfile", Name: s("x"), Type: s("server-pair"),
		Source: s("file"), CertPath: &certPath, KeyPath: &keyPath})
	require.NoError(t, err)

	// A PKCS#12 file entry, opened with its passphrase file.
	p12End := time.Now().Add(40 * 24 * time.Hour).Truncate(time.Second)
	cert, key = materialtest.Pair(t, materialtest.Options{NotAfter: p12End})
	materialtest.WriteFile(t, fileDir, "p12.crt", cert)
	materialtest.WriteFile(t, fileDir, "p12.key", key)
	cmd := exec.Command("openssl", "pkcs12", "-export", "-in", "p12.crt", "-inkey", "p12.key", "-passout", "pass:m3trics#p12", "-out", "edge.p12")
	cmd.Dir = fileDir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "openssl: %s", out)
	p12Path, passPath := filepath.Join(fileDir, "edge.p12"), materialtest.WriteFile(t, fileDir, "edge.pass", []byte("m3trics#p12\n"))
	_, err = cat.Create(ctx, "acme", catalog.Input{ID: "onp12", Name: s("x"), Type: s("client-pair"),
		Source: s("file"), CertPath: &p12Path, PassphrasePath: &passPath})
	require.NoError(t, err)

	clk := &clock{t: time.Now()}
	x := &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: dir, Now: clk.Now}
	m := metrics.New(metrics.Options{Pool: pool, Exporter: x, Roots: roots, Now: clk.Now, ExpiryTTL: time.Minute, Version: "v1.2.3"})

	v, ok := gauge(t, m, "loopze_build_info", map[string]string{"version": "v1.2.3"})
	require.True(t, ok)
	require.Equal(t, 1.0, v)

	// Expiry, with tenant, id, type and source labels.
	v, ok = gauge(t, m, "loopze_cert_not_after_seconds", map[string]string{"tenant": "acme", "id": "inline", "type": "client-pair", "source": "inline"})
	require.True(t, ok)
	require.Equal(t, float64(inlineEnd.Unix()), v)
	v, ok = gauge(t, m, "loopze_cert_not_after_seconds", map[string]string{"tenant": "acme", "id": "onfile", "type": "server-pair", "source": "file"})
	require.True(t, ok)
	require.Equal(t, float64(firstEnd.Unix()), v)
	v, ok = gauge(t, m, "loopze_cert_not_after_seconds", map[string]string{"id": "onp12"})
	require.True(t, ok)
	require.Equal(t, float64(p12End.Unix()), v)
	_, unreadable := gauge(t, m, "loopze_cert_file_unreadable", map[string]string{"id": "onp12"})
	require.False(t, unreadable, "a PKCS#12 file with its passphrase file is readable")

	// The certificate on disk is renewed: cached until the TTL passes, then re-read.
	renewedEnd := time.Now().Add(200 * 24 * time.Hour).Truncate(time.Second)
	cert, key = materialtest.Pair(t, materialtest.Options{NotAfter: renewedEnd})
	require.NoError(t, os.WriteFile(certPath, cert, 0o600))
	require.NoError(t, os.WriteFile(keyPath, key, 0o600))
	v, _ = gauge(t, m, "loopze_cert_not_after_seconds", map[string]string{"id": "onfile"})
	require.Equal(t, float64(firstEnd.Unix()), v, "cached")

	// A new inline entry moves the tenant's generation: it shows at the next scrape, within
	// the TTL, while other tenants' snapshots stay as they were.
	newEnd := time.Now().Add(45 * 24 * time.Hour).Truncate(time.Second)
	cert2, key2 := materialtest.Pair(t, materialtest.Options{NotAfter: newEnd})
	_, err = cat.Create(ctx, "acme", catalog.Input{ID: "fresh", Name: s("x"), Type: s("client-pair"),
		Source: s("inline"), CertPEM: cert2, KeyPEM: key2})
	require.NoError(t, err)
	v, ok = gauge(t, m, "loopze_cert_not_after_seconds", map[string]string{"tenant": "acme", "id": "fresh"})
	require.True(t, ok, "a new entry shows as soon as the generation moves")
	require.Equal(t, float64(newEnd.Unix()), v)

	clk.Add(2 * time.Minute)
	v, _ = gauge(t, m, "loopze_cert_not_after_seconds", map[string]string{"id": "onfile"})
	require.Equal(t, float64(renewedEnd.Unix()), v, "re-read after the TTL")
	_, unreadable = gauge(t, m, "loopze_cert_file_unreadable", map[string]string{"id": "onfile"})
	require.False(t, unreadable)

	// A file that goes away keeps its stored expiry and is flagged.
	require.NoError(t, os.Remove(certPath))
	clk.Add(2 * time.Minute)
	v, _ = gauge(t, m, "loopze_cert_file_unreadable", map[string]string{"tenant": "acme", "id": "onfile"})
	require.Equal(t, 1.0, v)

	// Export lag: a change announced and not written waits; written, it is 0.
	x.MarkPending("acme", clk.Now())
	clk.Add(3 * time.Second)
	v, ok = gauge(t, m, "loopze_export_lag_seconds", map[string]string{"tenant": "acme"})
	require.True(t, ok)
	require.InDelta(t, 3, v, 0.001)
	_, err = x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	v, _ = gauge(t, m, "loopze_export_lag_seconds", map[string]string{"tenant": "acme"})
	require.Zero(t, v)
	v, _ = gauge(t, m, "loopze_export_writes_total", map[string]string{"tenant": "acme"})
	require.Equal(t, 1.0, v)

	// HTTP durations by operation, and the pool.
	m.ObserveHTTP("list-certs", "GET", 200, 5*time.Millisecond)
	v, _ = gauge(t, m, "loopze_http_request_duration_seconds", map[string]string{"operation": "list-certs", "method": "GET", "code": "200"})
	require.Equal(t, 1.0, v)
	v, ok = gauge(t, m, "loopze_db_pool_max_connections", nil)
	require.True(t, ok)
	require.Positive(t, v)

	// The handler speaks the Prometheus text format and lints clean.
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Contains(t, string(body), `loopze_cert_not_after_seconds{id="inline",source="inline",tenant="acme",type="client-pair"}`)
	problems, err := testutil.GatherAndLint(m.Registry())
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestPublicNamesNoTenant: Public serves the build and the process, and no series of the
// full registry that carries a tenant, an entry, an operation or the pool; the full
// handler has them all.
func TestPublicNamesNoTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := db.Open(ctx, testdb.URL(t), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	keys := tenantkeytest.New(t, pool, dir)
	cat := &catalog.Service{Pool: pool, Keys: keys, Logger: slog.New(slog.DiscardHandler)}
	cert, key := materialtest.Pair(t, materialtest.Options{})
	_, err = cat.Create(ctx, "acme", catalog.Input{ID: "edge-client", Name: s("x"), Type: s("client-pair"),
		Source: s("inline"), CertPEM: cert, KeyPEM: key})
	require.NoError(t, err)
	x := &fileexport.Exporter{Pool: pool, Keys: keys, DataDir: dir}
	_, err = x.ExportTenant(ctx, "acme", false)
	require.NoError(t, err)
	m := metrics.New(metrics.Options{Pool: pool, Exporter: x, Version: "v1.2.3"})
	m.ObserveHTTP("listCerts", http.MethodGet, http.StatusOK, time.Millisecond)

	scrape := func(h http.Handler) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		require.Equal(t, http.StatusOK, rec.Code)
		return rec.Body.String()
	}
	full := scrape(m)
	for _, want := range []string{`tenant="acme"`, `id="edge-client"`, `operation="listCerts"`, "loopze_db_pool_max_connections"} {
		require.Contains(t, full, want)
	}
	public := scrape(m.Public())
	require.Contains(t, public, `loopze_build_info{goversion=`)
	require.Contains(t, public, "go_goroutines")
	require.Contains(t, public, "process_resident_memory_bytes")
	for _, never := range []string{"tenant=", "id=", "acme", "edge-client", "operation=", "loopze_db_pool", "loopze_export", "loopze_cert"} {
		require.NotContains(t, public, never)
	}
}
