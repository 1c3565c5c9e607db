package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/masterkey"
)

// checkKeySchedule refuses, before anything starts, a schedule (LOOPZE_KEY_ROTATE_EVERY)
// for a master key store serve cannot rotate unattended.
func checkKeySchedule(cfg config.Config, getenv func(string) string) error {
	if cfg.KeyRotateEvery <= 0 {
		return nil
	}
	src, err := masterkey.Locate(cfg.MasterKeyURI, cfg.DataDir, getenv)
	if err != nil {
		return fmt.Errorf("%s: %w", config.EnvMasterKeyURI, err)
	}
	if err := keyrotation.CheckSchedulable(src); err != nil {
		return fmt.Errorf("%s: %w", config.EnvKeyRotateEvery, err)
	}
	return nil
}

// startKeySchedule starts the checks of the master key schedule (LOOPZE_KEY_ROTATE_EVERY),
// which also register this replica's keyring for the replicas that rotate, with or without
// a schedule here. lockURL is the direct connection of paths, past any transaction pooler,
// as for LISTEN. stop ends the checks, waiting for a rotation under way to stop at its
// next step.
func startKeySchedule(ctx context.Context, cfg config.Config, svc *services, pool *pgxpool.Pool, lockURL string,
	getenv func(string) string, logger *slog.Logger) (stop func(), err error) {
	src, err := masterkey.Locate(cfg.MasterKeyURI, cfg.DataDir, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.EnvMasterKeyURI, err)
	}
	host, _ := os.Hostname()
	dir, _ := filepath.Abs(cfg.DataDir)
	label := host + ":" + dir
	store, err := keyrotation.StoreID(src)
	if err != nil {
		if cfg.KeyRotateEvery > 0 {
			return nil, fmt.Errorf("%s: %w", config.EnvKeyRotateEvery, err)
		}
		// A store no other replica can claim to share: replicas that rotate on a schedule
		// refuse to while this one is live, which is what an unknown store calls for.
		logger.Warn("the master key store cannot be named; replicas rotating the master key on a schedule will wait for this one to stop", "err", err)
		store = "unnamed:" + label
	}
	s := &keyrotation.Scheduler{
		Rotator: &keyrotation.Rotator{Pool: pool, DataDir: cfg.DataDir, Keys: svc.keys, Logger: logger},
		Every:   cfg.KeyRotateEvery, LockURL: lockURL, Store: store, Label: label,
	}
	if cfg.KeyRotateEvery > 0 {
		logger.Info("the master key rotates on a schedule", "every", cfg.KeyRotateEvery.String(),
			"check_every", keyrotation.CheckInterval(cfg.KeyRotateEvery).String(), "key_store", store)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(operator(runCtx, "serve"))
	}()
	return func() { cancel(); <-done }, nil
}
