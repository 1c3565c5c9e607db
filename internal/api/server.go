// Package api is the HTTP face of the certificate store: the Huma v2 operations of
// /api/v1, authentication and roles, the mapping of domain errors to HTTP, request logging
// and panic recovery, and health endpoints. It mounts the web UI (internal/web) on the
// same mux, and /metrics there or on a listener of its own. Register is the single source
// of truth for API routes; the OpenAPI file in openapi/ is generated from it.
package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/secret"
	"github.com/loopze/certstore/internal/web"
	"github.com/loopze/certstore/internal/workspace"
)

// Title and Version describe the API in its OpenAPI document.
const (
	Title      = "LOOPZE certificate store"
	APIVersion = "1.0.0"
)

// Deps is what the handlers need. A zero Deps (but for Logger) still registers every route,
// which is how the OpenAPI document is generated without a database.
type Deps struct {
	Logger   *slog.Logger
	Pool     *pgxpool.Pool
	Version  string
	Verifier *auth.Verifier
	Catalog  *catalog.Service
	// Workspace deploys and reads the tenant's flows.
	Workspace *workspace.Service
	// Credentials serves the tenants' credentials.json files to runtimes; nil answers 503.
	Credentials *Credentials
	// Metrics serves /metrics and records request durations; nil leaves both out. On the
	// main listener without MetricsToken, /metrics serves only its Public series.
	Metrics Metrics
	// MetricsToken, when set, is the bearer token /metrics requires (LOOPZE_METRICS_TOKEN).
	MetricsToken secret.String
	// MetricsOwnListener leaves /metrics off Handler: it is served by MetricsHandler on a
	// listener of its own (LOOPZE_METRICS_ADDR).
	MetricsOwnListener bool
	// SecureCookies marks the session cookie Secure even on plain HTTP, for a server
	// behind a TLS-terminating proxy (LOOPZE_SECURE_COOKIES).
	SecureCookies bool
	// RateLimit sets the per-tenant and per-subject token buckets; zero rates turn them off.
	RateLimit RateLimit
	// AuditKeys are the tenants' audit keys, which the trail's reads chain pending records
	// under (see audit.Chain); nil chains them by plain SHA-256.
	AuditKeys audit.Keys
}

// Server is the assembled HTTP handler and the Huma API behind it.
type Server struct {
	API     huma.API
	Handler http.Handler
	deps    Deps
	ops     map[string]string // route pattern to operation ID, for metrics
	limiter *rateLimiter      // nil when rate limiting is off
}

// New builds the router: every operation registered, wrapped in request id, logging and
// panic recovery.
func New(d Deps) *Server {
	mux := http.NewServeMux()
	cfg := huma.DefaultConfig(Title, APIVersion)
	cfg.Info.Description = "Central catalogue of TLS material (CA bundles, client pairs, server pairs) " +
		"that LOOPZE flow nodes reference by ID. Reads never return private keys; public certificates only from GET /api/v1/certs/{id}/certificate."
	describeDocument(cfg.OpenAPI)
	cfg.CreateHooks = nil // no $schema links in bodies: responses stay as documented
	cfg.Formats = map[string]huma.Format{"application/json": jsonFormat, "json": jsonFormat}
	// Huma's docs page loads its renderer from a CDN; the web UI serves /docs itself so
	// the reference works air-gapped.
	cfg.DocsPath = ""
	hapi := humago.New(mux, cfg)
	s := &Server{API: hapi, deps: d, limiter: newRateLimiter(d.RateLimit)}
	Register(hapi, s)
	s.ops = operationIDs(hapi)
	if d.Metrics != nil && !d.MetricsOwnListener {
		// Whoever reaches the API reaches this listener: unguarded, /metrics names no
		// tenant or entry. The token, or a listener of its own, is what unlocks the rest.
		var h http.Handler = d.Metrics
		if d.MetricsToken == "" {
			h = d.Metrics.Public()
		}
		mux.Handle("GET /metrics", metricsGuard(d.MetricsToken, h))
	}
	wc := web.Config{Logger: d.Logger, Verifier: d.Verifier, SecureCookies: d.SecureCookies, Limit: s.limiter.pageLimit()}
	if d.Catalog != nil {
		wc.Catalog, wc.History, wc.Audit = d.Catalog, d.Catalog, s.audit()
	}
	web.New(wc).Register(mux)
	s.Handler = s.middleware(unmatchedAsJSON(mux))
	return s
}

// MetricsHandler serves /metrics alone, for the listener of LOOPZE_METRICS_ADDR; the token,
// when set, is required there too. Any other path is a 404.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	if s.deps.Metrics != nil {
		mux.Handle("GET /metrics", metricsGuard(s.deps.MetricsToken, s.deps.Metrics))
	}
	return mux
}

// Register adds every operation to api. It is the one list of routes.
func Register(api huma.API, s *Server) {
	addSecuritySchemes(api)
	api.UseMiddleware(s.authMiddleware(api))
	registerHealth(api, s)
	registerCerts(api, s)
	registerFlows(api, s)
	registerHistory(api, s)
	registerAudit(api, s)
	registerCredentials(api, s)
	declareCommon(api)
}

type ctxKey int

const requestIDKey ctxKey = iota

// RequestID returns the request id assigned by the middleware.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status written, for the log line and panic recovery.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (flush, deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// middleware assigns a request id, logs one line per request and turns a panic into a 500
// that names the request id, so one bad request never takes the process down.
func (s *Server) middleware(next http.Handler) http.Handler {
	log := s.deps.Logger
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID.MatchString(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, id))
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				// The panic value and stack are ours, not the request's, but may still
				// carry a string built from input: the logger's safety net masks PEM.
				log.Error("handler panic", "request_id", id, "method", r.Method, "path", r.URL.Path,
					"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if rec.status == 0 {
					writeInternalError(rec, id)
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			log.Info("request", "method", r.Method, "route", route, "path", r.URL.Path,
				"status", rec.status, "duration_ms", float64(time.Since(start).Microseconds())/1000,
				"bytes", rec.bytes, "request_id", id)
			s.observe(r, rec.status, time.Since(start))
		}()
		next.ServeHTTP(rec, r)
	})
}

func writeInternalError(w http.ResponseWriter, id string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `{"error":"Internal Server Error","message":"internal error; see the server log for request %s","requestId":%q}`+"\n", id, id)
}

// Spec renders the OpenAPI document of every registered route, as yaml or json.
func Spec(format string) ([]byte, error) {
	s := New(Deps{Logger: slog.New(slog.DiscardHandler)})
	switch format {
	case "yaml":
		return s.API.OpenAPI().YAML()
	case "json":
		return s.API.OpenAPI().MarshalJSON()
	}
	return nil, fmt.Errorf("unknown format %q: want yaml or json", format)
}

// metricsGuard requires Authorization: Bearer <token> on /metrics when a token is set: the
// series name tenants and entries. Unset, /metrics is open: on a listener of its own, which
// only the monitoring network reaches, or on the main listener with the public series only.
func metricsGuard(token secret.String, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token.Reveal())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="loopze-metrics"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"Unauthorized","message":"/metrics needs the bearer token set in LOOPZE_METRICS_TOKEN"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
