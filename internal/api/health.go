package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/db"
)

// HealthOutput is the body of /healthz and /readyz.
type HealthOutput struct {
	Body struct {
		Status string            `json:"status" example:"ok"`
		Checks map[string]string `json:"checks,omitempty"`
	}
}

func registerHealth(api huma.API, s *Server) {
	huma.Register(api, huma.Operation{
		OperationID: "healthz",
		Method:      http.MethodGet,
		Path:        "/healthz",
		Summary:     "Liveness: the process is up",
		Description: "Answers 200 while the process serves HTTP, whatever the database does. Needs no token and is never rate limited.",
		Tags:        []string{"health"},
		Security:    []map[string][]string{},
	}, func(ctx context.Context, _ *struct{}) (*HealthOutput, error) {
		out := &HealthOutput{}
		out.Body.Status = "ok"
		return out, nil
	})

	huma.Register(api, huma.Operation{
		OperationID: "readyz",
		Method:      http.MethodGet,
		Path:        "/readyz",
		Summary:     "Readiness: the database answers, takes writes and its migrations are current",
		Description: "Answers 200 when the database answers within 2 s, is writable (not a standby) and every migration is applied, 503 otherwise. Needs no token and is never rate limited.",
		Tags:        []string{"health"},
		Security:    []map[string][]string{},
		Errors:      []int{http.StatusServiceUnavailable},
	}, func(ctx context.Context, _ *struct{}) (*HealthOutput, error) {
		if s.deps.Pool == nil {
			return nil, newError(http.StatusServiceUnavailable, "no database configured")
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := s.deps.Pool.Ping(ctx); err != nil {
			s.deps.Logger.Warn("readiness: database unreachable", "err", err)
			return nil, newError(http.StatusServiceUnavailable, "database unreachable")
		}
		if err := db.Writable(ctx, s.deps.Pool); err != nil {
			// A standby (before or after a failover) or a read-only server: this replica
			// could not take a write, so the load balancer should send none to it.
			s.deps.Logger.Warn("readiness: no writable database", "err", err)
			return nil, newError(http.StatusServiceUnavailable, "no writable database")
		}
		pending, err := db.Pending(ctx, s.deps.Pool)
		if err != nil {
			s.deps.Logger.Warn("readiness: migration state unknown", "err", err)
			return nil, newError(http.StatusServiceUnavailable, "migration state unknown")
		}
		if pending {
			return nil, newError(http.StatusServiceUnavailable, "database migrations are not current")
		}
		out := &HealthOutput{}
		out.Body.Status = "ok"
		out.Body.Checks = map[string]string{"database": "ok", "writable": "yes", "migrations": "current"}
		return out, nil
	})
}
