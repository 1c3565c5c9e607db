package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/fileexport"
)

// startExport restores the default tenant from data/credentials.json when the database is
// empty (the move from a file-backed installation), then starts the loop that keeps every
// tenant's file in step with the database; onWrite hears of every file written, or found
// newer than before (another replica on the volume wrote it). stop ends the loop and waits
// for a write in progress to finish.
// The loop LISTENs on listenURL, a direct connection past any transaction pooler.
func startExport(ctx context.Context, cfg config.Config, svc *services, pool *pgxpool.Pool, listenURL string, logger *slog.Logger, onWrite func(fileexport.Result)) (x *fileexport.Exporter, stop func(), err error) {
	listen, err := pgx.ParseConfig(listenURL)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: malformed connection string", config.EnvListenURL)
	}
	im := &fileexport.Importer{Pool: pool, Catalog: svc.catalog, Keys: svc.keys, Logger: logger}
	res, imported, err := im.BootImport(operator(ctx, "serve"), cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	if imported {
		logger.Info("restored the default tenant from credentials.json into the empty database",
			"path", credfile.Path(cfg.DataDir, credfile.DefaultTenant), "entries", res.Entries,
			"references", res.References, "node_credentials", res.NodeCredentials, "file_generation", res.FileGeneration)
	}
	x = &fileexport.Exporter{Pool: pool, Keys: svc.keys, DataDir: cfg.DataDir, Logger: logger, OnWrite: onWrite}
	sy := &fileexport.Syncer{Exporter: x, ListenConfig: listen, Logger: logger}
	if svc.catalog != nil && svc.catalog.Cache != nil {
		sy.Watcher = svc.catalog.Cache
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = sy.Run(loopCtx)
	}()
	return x, func() { cancel(); <-done }, nil
}
