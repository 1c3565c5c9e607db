package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/loopze/certstore/internal/api"
	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/metrics"
	"github.com/loopze/certstore/internal/opcua"
)

// shutdownGrace is how long in-flight requests may take to finish on SIGINT/SIGTERM.
const shutdownGrace = 25 * time.Second

func runServe(ctx context.Context, env *environ, args []string) error {
	cfg, logger, _, err := setup(env, "serve", args, nil)
	if err != nil {
		return err
	}
	if err := cfg.EnsureDataDir(); err != nil {
		return err
	}
	if err := checkKeySchedule(cfg, env.getenv); err != nil {
		return err
	}
	applyMemoryLimit(logger)
	// Listen first: a port in use is reported before anything is started.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("listen on %s (%s): %w", cfg.MetricsAddr, config.EnvMetricsAddr, err)
		}
		defer metricsLn.Close()
	}

	svc, err := loadServices(cfg, env.getenv, logger)
	if err != nil {
		return err
	}
	defer svc.master.Close()

	database, err := openDatabase(ctx, cfg, logger, true)
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := database.Close(stopCtx); err != nil {
			logger.Error("stop embedded PostgreSQL", "err", err)
		}
	}()

	pooler, direct, err := database.paths(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if _, err := db.Migrate(ctx, direct, logger); err != nil {
		return err
	}
	pool, err := db.Open(ctx, database.URL, logger, pooler)
	if err != nil {
		return err
	}
	defer pool.Close()

	svc.connect(pool, logger)
	if err := warnFileRoots(ctx, pool, svc.roots, logger); err != nil {
		return err
	}
	stopMigration := startKeyMigration(ctx, cfg, svc, pool, logger)
	defer stopMigration()
	stopPruner := startPruner(ctx, cfg, svc)
	defer stopPruner()
	stopChainer := startChainer(ctx, svc)
	defer stopChainer()
	stopKeySchedule, err := startKeySchedule(ctx, cfg, svc, pool, direct, env.getenv, logger)
	if err != nil {
		return err
	}
	defer stopKeySchedule()
	// The OPC UA migration runs after the schema migrations and before the first request,
	// so no deploy sees a half-migrated workspace from this process.
	mig := &opcua.Migrator{Pool: pool, Catalog: svc.catalog, Workspace: svc.workspace, Logger: logger}
	if _, err := mig.Run(operator(ctx, "serve")); err != nil {
		return err
	}
	creds := &api.Credentials{DataDir: cfg.DataDir, MaxPollsPerTenant: cfg.PollLimitTenant, MaxPollsPerSubject: cfg.PollLimitSubject}
	exporter, stopExport, err := startExport(ctx, cfg, svc, pool, direct, logger, creds.Written)
	if err != nil {
		return err
	}
	defer stopExport()
	mx := metrics.New(metrics.Options{Pool: pool, Exporter: exporter, Roots: svc.roots, KDF: svc.kdf, Logger: logger, Version: version})
	srv := api.New(api.Deps{Logger: logger, Pool: pool, Version: version, Verifier: svc.verifier, Catalog: svc.catalog, Workspace: svc.workspace, Metrics: mx, Credentials: creds,
		AuditKeys:     svc.auditKeys,
		SecureCookies: cfg.SecureCookies, MetricsToken: cfg.MetricsToken, MetricsOwnListener: metricsLn != nil,
		RateLimit: api.RateLimit{TenantRate: cfg.RateLimitTenant, TenantBurst: cfg.RateLimitTenantBurst,
			SubjectRate: cfg.RateLimitSubject, SubjectBurst: cfg.RateLimitSubjectBurst}})
	httpSrv := &http.Server{
		Handler:           srv.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          nil,
	}
	errc := make(chan error, 2)
	go func() { errc <- httpSrv.Serve(ln) }()
	var metricsSrv *http.Server
	if metricsLn != nil {
		metricsSrv = &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 10 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
		go func() { errc <- metricsSrv.Serve(metricsLn) }()
		logger.Info("serving /metrics on its own listener", "metrics_addr", metricsLn.Addr().String())
	}
	logger.Info("serving", "addr", ln.Addr().String(), "version", version, "embedded_db", cfg.Embedded(), "data_dir", cfg.DataDir)

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining in-flight requests", "grace", shutdownGrace)
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shCtx)
	}
	if err := httpSrv.Shutdown(shCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("shutdown did not drain in time", "err", err)
	}
	logger.Info("stopped")
	return nil
}
