package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/testdb"
)

func get(t *testing.T, url, bearer string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
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

// TestMetricsListenerAndFileRootsWarning runs the binary twice over one database. With
// LOOPZE_METRICS_ADDR, /metrics answers only on that listener (with LOOPZE_METRICS_TOKEN
// too, there and only with the token) and the main listener no longer has it. Once a
// tenant other than the default exists and LOOPZE_FILE_ROOTS is unset, serve says so at
// start.
func TestMetricsListenerAndFileRootsWarning(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	base := []string{"LOOPZE_DATA_DIR=" + dataDir, "LOOPZE_DATABASE_URL=" + testdb.URL(t), "LOOPZE_LOG_FORMAT=json"}
	metricsAddr := freeAddr(t)

	s := start(t, append(base, "LOOPZE_METRICS_ADDR="+metricsAddr))
	s.waitReady(t)
	code, body := get(t, "http://"+metricsAddr+"/metrics", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "loopze_")
	code, _ = get(t, "http://"+s.addr+"/metrics", "")
	require.Equal(t, http.StatusNotFound, code, "the main listener no longer serves /metrics")
	code, _ = get(t, "http://"+metricsAddr+"/api/v1/certs", "")
	require.Equal(t, http.StatusNotFound, code, "the metrics listener serves nothing else")
	require.NotContains(t, s.stderr.String(), "LOOPZE_FILE_ROOTS is unset", "no tenant other than the default yet")

	tok := runCLI(t, base, "token", "--tenant", "acme", "--role", "editor", "--sub", "ci")
	ca := materialtest.NewCA(t, materialtest.Options{})
	entry, _ := json.Marshal(map[string]string{"id": "root", "name": "root", "type": "ca-bundle", "source": "inline",
		"certPem": string(materialtest.EncodeCert(ca.Cert))})
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/api/v1/certs", bytes.NewReader(entry))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	s.stop(t, syscall.SIGTERM)

	const token = "scrape-token-0123456789abcdef"
	metricsAddr = freeAddr(t)
	s = start(t, append(base, "LOOPZE_METRICS_ADDR="+metricsAddr, "LOOPZE_METRICS_TOKEN="+token))
	s.waitReady(t)
	code, _ = get(t, "http://"+metricsAddr+"/metrics", "")
	require.Equal(t, http.StatusUnauthorized, code)
	code, body = get(t, "http://"+metricsAddr+"/metrics", token)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `tenant="acme"`)
	code, _ = get(t, "http://"+s.addr+"/metrics", token)
	require.Equal(t, http.StatusNotFound, code)
	var warned bool
	for line := range strings.SplitSeq(s.stderr.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "LOOPZE_FILE_ROOTS is unset") &&
			strings.Contains(line, "/etc/loopze/certs/{tenant}") {
			warned = true
		}
	}
	require.True(t, warned, "serve warns at start:\n%s", s.stderr.String())
	s.stop(t, syscall.SIGTERM)
	require.NotContains(t, s.stderr.String(), token)

	// The token alone: the main listener serves /metrics to the token only, per entry.
	s = start(t, append(base, "LOOPZE_METRICS_TOKEN="+token))
	s.waitReady(t)
	code, _ = get(t, "http://"+s.addr+"/metrics", "")
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, http.StatusOK, put(t, s.addr, tok, entry), "a request, for the durations")
	require.Eventually(t, func() bool {
		_, body = get(t, "http://"+s.addr+"/metrics", token)
		return strings.Contains(body, `loopze_export_lag_seconds{tenant="acme"}`)
	}, 15*time.Second, 20*time.Millisecond, "the export job reports the tenant:\n%s", body)
	require.Contains(t, body, `loopze_cert_not_after_seconds{id="root",source="inline",tenant="acme",type="ca-bundle"}`)
	require.Contains(t, body, `loopze_http_request_duration_seconds_count{code="200",method="PUT"`)
	require.Contains(t, body, `loopze_db_pool_max_connections`)
	s.stop(t, syscall.SIGTERM)
	require.NotContains(t, s.stderr.String(), token)
}

// put replaces the entry root (or creates it), and returns the status.
func put(t *testing.T, addr, bearer string, entry []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/api/v1/certs/root", bytes.NewReader(entry))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}
