package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/kdf"
	"github.com/loopze/certstore/internal/keyrotation"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/tenantkey"
	"github.com/loopze/certstore/internal/workspace"
)

// services are the long-lived pieces every serving process wires together.
type services struct {
	// master wraps the tenant keys; legacy opens what earlier releases sealed under the
	// master key file itself (nil when there is none).
	master   masterkey.Keyring
	legacy   *envelope.Ring
	keys     *tenantkey.Keys
	verifier *auth.Verifier
	roots    material.Roots
	// kdf admits every key derivation the server runs for a request or a scrape.
	kdf     *kdf.Budget
	catalog *catalog.Service
	// chainer chains the audit records of this process's writes and checkpoints the
	// tenants' heads in the data directory.
	chainer *audit.Chainer
	// auditKeys are the tenants' audit keys, derived from their tenant keys: the trail is
	// chained by HMAC-SHA-256 under them, so rewriting it takes the master key.
	auditKeys audit.Keys
	dataDir   string
	// workspace deploys the tenants' flows and resolves their TLS.
	workspace *workspace.Service
}

// loadServices loads what needs no database: the master keyring (LOOPZE_MASTER_KEY_URI),
// the JWT keys from the data dir, and the file roots. It runs before the database starts,
// so a missing key, a wrong PIN or a malformed configuration stops the server at once.
func loadServices(cfg config.Config, getenv func(string) string, logger *slog.Logger) (*services, error) {
	roots := material.ParseRoots(cfg.FileRoots)
	if err := roots.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", config.EnvFileRoots, err)
	}
	verifier, err := newVerifier(cfg)
	if err != nil {
		return nil, err
	}
	if err := checkKeyModes(cfg.DataDir); err != nil {
		return nil, err
	}
	master, legacy, err := openMasterKeys(cfg, getenv, logger, true)
	if err != nil {
		return nil, err
	}
	budget := kdf.New(kdf.Config{Memory: int64(cfg.KDFMemoryMiB) << 20, Slots: cfg.KDFConcurrency, Queue: cfg.KDFQueue})
	return &services{master: master, legacy: legacy, verifier: verifier, roots: roots, kdf: budget, dataDir: cfg.DataDir}, nil
}

// openMasterKeys opens the master keyring LOOPZE_MASTER_KEY_URI names (creating loopze.key
// on first boot when create is set and the key lives in a file), and the ring of master
// key files that values of earlier releases were sealed under, when there is one: the
// keyring's own file, or the data directory's loopze.key left beside a key in a token.
func openMasterKeys(cfg config.Config, getenv func(string) string, logger *slog.Logger, create bool) (masterkey.Keyring, *envelope.Ring, error) {
	src, err := masterkey.Locate(cfg.MasterKeyURI, cfg.DataDir, getenv)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", config.EnvMasterKeyURI, err)
	}
	if src.Kind == masterkey.KindFile && !create {
		if _, err := os.Stat(src.Path); err != nil {
			return nil, nil, fmt.Errorf("load master key: %w", err)
		}
	}
	master, err := masterkey.Open(cfg.MasterKeyURI, cfg.DataDir, getenv, logger)
	if err != nil {
		return nil, nil, err
	}
	dir := cfg.DataDir
	if src.Kind == masterkey.KindFile {
		dir = filepath.Dir(src.Path)
	}
	var legacy *envelope.Ring
	if _, err := os.Stat(filepath.Join(dir, envelope.KeyFile)); err == nil {
		if legacy, err = envelope.LoadExisting(dir, logger); err != nil {
			_ = master.Close()
			return nil, nil, fmt.Errorf("load master key: %w", err)
		}
	}
	return master, legacy, nil
}

// connect builds the database-backed services over pool.
func (s *services) connect(pool *pgxpool.Pool, logger *slog.Logger) {
	cache := &catalog.Cache{} // serves once the export loop's listener is up
	s.keys = &tenantkey.Keys{Pool: pool, Master: s.master, Legacy: s.legacy, Logger: logger}
	s.auditKeys = s.keys.Audit()
	s.chainer = &audit.Chainer{Pool: pool, Keys: s.auditKeys, CheckpointDir: audit.CheckpointDir(s.dataDir), Logger: logger}
	s.catalog = &catalog.Service{Pool: pool, Keys: s.keys, Roots: s.roots, KDF: s.kdf, Logger: logger, Cache: cache, Chainer: s.chainer}
	s.workspace = &workspace.Service{Pool: pool, Keys: s.keys, Roots: s.roots, KDF: s.kdf, Logger: logger,
		Resolver: &resolver.Resolver{Entries: s.catalog.Entries(), Roots: s.catalog.Roots, KDF: s.kdf, Logger: logger},
		Changed:  func(tenant string) { cache.Changed(tenant); s.chainer.Kick(tenant) }}
}

// checkKeyModes refuses master key files that group or others may read, as a loose
// jwt.secret is refused: whoever reads loopze.key opens every sealed row and every
// credentials.json. Missing files are left to envelope.Load (first boot creates one 0600).
func checkKeyModes(dataDir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	for _, name := range []string{envelope.KeyFile, envelope.NextKeyFile} {
		path := filepath.Join(dataDir, name)
		info, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return fmt.Errorf("load master key: %w", err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			return fmt.Errorf("load master key: %s has mode %04o; it must not be readable by group or others: chmod 600 %s", path, perm, path)
		}
	}
	return nil
}

// warnFileRoots says at start what an installation with tenants other than the default
// and no LOOPZE_FILE_ROOTS cannot do: their file-sourced material is refused.
func warnFileRoots(ctx context.Context, pool *pgxpool.Pool, roots material.Roots, logger *slog.Logger) error {
	if len(roots) > 0 {
		return nil
	}
	tenants, err := repo.ListTenants(ctx, pool)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	others := 0
	for _, t := range tenants {
		if t.ID != material.DefaultTenant {
			others++
		}
	}
	if others > 0 {
		logger.Warn(config.EnvFileRoots+" is unset: tenants other than "+material.DefaultTenant+
			" cannot use file-sourced entries or *File paths until it is set, e.g. "+config.EnvFileRoots+"=/etc/loopze/certs/{tenant}",
			"tenants_without_roots", others)
	}
	return nil
}

func newVerifier(cfg config.Config) (*auth.Verifier, error) {
	var hmac []byte
	if cfg.JWTSecret != "" || cfg.JWTPublicKeys == "" {
		s, err := auth.LoadHMACSecret(cfg.JWTSecret.Reveal(), cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("load JWT secret: %w", err)
		}
		hmac = s
	}
	v, err := auth.NewVerifier(auth.Config{
		HMACSecret: hmac, PublicKeysFile: cfg.JWTPublicKeys,
		Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, AllowedOrigins: cfg.AllowedOrigins, MaxTTL: cfg.JWTMaxTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("JWT verification: %w", err)
	}
	return v, nil
}

// startKeyMigration moves, in the background, what earlier releases sealed under the master
// key itself to each tenant's own key (keyrotation.Rotator.Migrate): every row stays
// readable throughout, and a server stopped halfway finishes at its next start. stop ends
// it and waits.
func startKeyMigration(ctx context.Context, cfg config.Config, svc *services, pool *pgxpool.Pool, logger *slog.Logger) (stop func()) {
	r := &keyrotation.Rotator{Pool: pool, DataDir: cfg.DataDir, Keys: svc.keys, Logger: logger}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := r.Migrate(operator(runCtx, "serve"))
		switch {
		case err != nil && runCtx.Err() == nil:
			logger.Error("moving rows to tenant keys stopped; the next start continues", "moved", n, "err", err)
		case n > 0:
			logger.Info("rows moved to their tenant's key", "rows", n)
		}
	}()
	return func() { cancel(); <-done }
}
