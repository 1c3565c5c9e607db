package api

import (
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// Metrics is the metrics registry as the API sees it: the handler mounted at /metrics, and
// the sink for request durations.
type Metrics interface {
	// ServeHTTP serves every series, those naming tenants and entries included.
	http.Handler
	// Public serves only the series that name no tenant or entry.
	Public() http.Handler
	ObserveHTTP(operation, method string, status int, d time.Duration)
}

// operationIDs maps the mux's route patterns ("GET /api/v1/certs/{id}") to OpenAPI
// operation IDs, so durations are labelled by operation, with a bounded label set.
func operationIDs(api huma.API) map[string]string {
	out := map[string]string{}
	for path, item := range api.OpenAPI().Paths {
		for method, op := range map[string]*huma.Operation{
			http.MethodGet: item.Get, http.MethodPut: item.Put, http.MethodPost: item.Post,
			http.MethodDelete: item.Delete, http.MethodPatch: item.Patch, http.MethodHead: item.Head,
		} {
			if op != nil && op.OperationID != "" {
				out[method+" "+path] = op.OperationID
			}
		}
	}
	return out
}

// observe records a request's duration when metrics are on. Requests the mux matched no
// route for share one label, so arbitrary paths cannot grow the series.
func (s *Server) observe(r *http.Request, status int, d time.Duration) {
	if s.deps.Metrics == nil {
		return
	}
	op := s.ops[r.Pattern]
	switch {
	case op != "":
	case r.Pattern != "":
		op = r.Pattern
	default:
		op = "unmatched"
	}
	if status == 0 {
		status = http.StatusOK
	}
	s.deps.Metrics.ObserveHTTP(op, r.Method, status, d)
}
