package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/logging"
)

// TestPanicBecomes500 proves a panicking handler answers 500 with the request id, logs the
// panic (with PEM masked) and leaves the server serving.
func TestPanicBecomes500(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := api.New(api.Deps{Logger: logging.New(&logs, "json", slog.LevelDebug)})
	huma.Register(s.API, huma.Operation{OperationID: "boom", Method: http.MethodGet, Path: "/boom"},
		func(context.Context, *struct{}) (*struct{}, error) {
			panic("exploded near -----BEGIN PRIVATE KEY----- data")
		})
	hs := httptest.NewServer(s.Handler)
	defer hs.Close()

	resp, err := http.Get(hs.URL + "/boom")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	id := resp.Header.Get("X-Request-Id")
	require.NotEmpty(t, id)
	var b map[string]any
	require.NoError(t, json.Unmarshal(body, &b))
	require.Equal(t, "Internal Server Error", b["error"])
	require.Equal(t, id, b["requestId"])
	require.Contains(t, b["message"], id)

	resp, err = http.Get(hs.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	out := logs.String()
	require.Contains(t, out, `"msg":"handler panic"`)
	require.Contains(t, out, id)
	require.NotContains(t, out, "-----BEGIN")
}

// TestRequestLogLine checks the one structured line per request.
func TestRequestLogLine(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := api.New(api.Deps{Logger: logging.New(&logs, "json", slog.LevelDebug)})
	hs := httptest.NewServer(s.Handler)
	defer hs.Close()
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/healthz", nil)
	req.Header.Set("X-Request-Id", "trace-abc")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, "trace-abc", resp.Header.Get("X-Request-Id"))

	var line map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			require.NoError(t, json.Unmarshal([]byte(l), &line))
		}
	}
	require.Equal(t, "GET", line["method"])
	require.Equal(t, "GET /healthz", line["route"])
	require.EqualValues(t, 200, line["status"])
	require.Equal(t, "trace-abc", line["request_id"])
	require.Contains(t, line, "duration_ms")
}

// TestReadyzWithoutDatabase answers 503, in the API's error shape.
func TestReadyzWithoutDatabase(t *testing.T) {
	t.Parallel()
	s := api.New(api.Deps{Logger: logging.Discard()})
	rec := httptest.NewRecorder()
	s.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, rec.Body.String(), `"error":"Service Unavailable"`)
}
