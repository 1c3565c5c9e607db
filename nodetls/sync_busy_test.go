package nodetls_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/nodetls"
)

// TestSyncWaitsRetryAfter: a server past its cap of waiting long polls answers 429 with
// Retry-After; Sync asks again no sooner than that, not at its own shorter backoff.
func TestSyncWaitsRetryAfter(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		times []time.Time
	)
	second := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			w.Header().Set("Retry-After", "2")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":"Too Many Requests","message":"this token subject has 8 long polls waiting already"}`))
			return
		}
		if len(times) == 2 {
			close(second)
		}
		w.WriteHeader(http.StatusNotModified)
	}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	var errs []error
	s := &nodetls.Syncer{BaseURL: srv.URL, Token: "runtime-token", Dir: t.TempDir(), Wait: time.Second, AllowLoopbackHTTP: true,
		OnError: func(err error) { errs = append(errs, err) }}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-second:
	case <-time.After(30 * time.Second):
		t.Fatal("Sync did not ask again")
	}
	cancel()
	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, times[1].Sub(times[0]), 2*time.Second, "the second request came before Retry-After")
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], nodetls.ErrServerBusy)
	require.NotContains(t, errs[0].Error(), "runtime-token")
}
