package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
)

// recorder is a Metrics that remembers what it was told.
type recorder struct {
	mu  sync.Mutex
	ops []string
}

// perEntry and public stand for what the real registry serves in full and without the
// series that name tenants and entries.
const (
	perEntry = `loopze_cert_not_after_seconds{id="root-ca",source="inline",tenant="acme",type="ca-bundle"} 1.9e+09` + "\n"
	public   = "loopze_build_info{goversion=\"go\",version=\"test\"} 1\n"
)

func (r *recorder) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte(public + perEntry))
}

func (r *recorder) Public() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(public)) })
}

func (r *recorder) ObserveHTTP(op, method string, status int, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, method+" "+op+" "+http.StatusText(status))
}

func TestMetricsRouteAndDurationsByOperation(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	srv := httptest.NewServer(api.New(api.Deps{Logger: slog.New(slog.DiscardHandler), Metrics: rec}).Handler)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/healthz", "/metrics", "/no/such/thing/123"} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Equal(t, []string{"GET healthz OK", "GET GET /metrics OK", "GET unmatched Not Found"}, rec.ops)
}

func TestMetricsToken(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(api.New(api.Deps{Logger: slog.New(slog.DiscardHandler), Metrics: &recorder{},
		MetricsToken: "scrape-me-0123456789"}).Handler)
	t.Cleanup(srv.Close)
	for auth, want := range map[string]int{
		"":                            http.StatusUnauthorized,
		"Bearer wrong":                http.StatusUnauthorized,
		"scrape-me-0123456789":        http.StatusUnauthorized,
		"Bearer scrape-me-0123456789": http.StatusOK,
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, want, resp.StatusCode, auth)
	}
}

// TestMetricsNameNoTenantByDefault: with neither a metrics token nor a listener of its own,
// the main listener's /metrics serves only the series that name no tenant or entry; with
// the token, or on the metrics listener, the per-entry series are there.
func TestMetricsNameNoTenantByDefault(t *testing.T) {
	t.Parallel()
	scrape := func(h http.Handler, bearer string) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	logger := slog.New(slog.DiscardHandler)

	code, body := scrape(api.New(api.Deps{Logger: logger, Metrics: &recorder{}}).Handler, "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "loopze_build_info")
	require.NotContains(t, body, "tenant=", "an open /metrics on the main listener names no tenant")
	require.NotContains(t, body, "id=", "an open /metrics on the main listener names no entry")

	const token = "scrape-me-0123456789"
	code, body = scrape(api.New(api.Deps{Logger: logger, Metrics: &recorder{}, MetricsToken: token}).Handler, token)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `tenant="acme"`, "with the token, the per-entry series")

	own := api.New(api.Deps{Logger: logger, Metrics: &recorder{}, MetricsOwnListener: true})
	code, body = scrape(own.MetricsHandler(), "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `id="root-ca"`, "on a listener of its own, the per-entry series")
	code, _ = scrape(own.Handler, "")
	require.Equal(t, http.StatusNotFound, code)
}
