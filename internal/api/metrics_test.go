package api_test

import (
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

func (r *recorder) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("# metrics\n"))
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
