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
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/workspace"
)

// services are the long-lived pieces every serving process wires together.
type services struct {
	ring     *envelope.Ring
	verifier *auth.Verifier
	roots    material.Roots
	// kdf admits every key derivation the server runs for a request or a scrape.
	kdf     *kdf.Budget
	catalog *catalog.Service
	// chainer chains the audit records of this process's writes and checkpoints the
	// tenants' heads in the data directory.
	chainer *audit.Chainer
	// auditKeys are the tenants' audit keys. Nil until per-tenant keys exist: the trail is
	// then chained by plain SHA-256, and its checkpoints are what finds a rewrite.
	auditKeys audit.Keys
	dataDir   string
	// workspace deploys the tenants' flows and resolves their TLS.
	workspace *workspace.Service
}

// loadServices loads what needs no database: the master key ring and the JWT keys from
// the data dir, and the file roots. It runs before the database starts, so a malformed
// key file or configuration stops the server at once.
func loadServices(cfg config.Config, logger *slog.Logger) (*services, error) {
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
	ring, err := envelope.Load(cfg.DataDir, logger)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	budget := kdf.New(kdf.Config{Memory: int64(cfg.KDFMemoryMiB) << 20, Slots: cfg.KDFConcurrency, Queue: cfg.KDFQueue})
	return &services{ring: ring, verifier: verifier, roots: roots, kdf: budget, dataDir: cfg.DataDir}, nil
}

// connect builds the database-backed services over pool.
func (s *services) connect(pool *pgxpool.Pool, logger *slog.Logger) {
	cache := &catalog.Cache{} // serves once the export loop's listener is up
	s.chainer = &audit.Chainer{Pool: pool, Keys: s.auditKeys, CheckpointDir: audit.CheckpointDir(s.dataDir), Logger: logger}
	s.catalog = &catalog.Service{Pool: pool, Ring: s.ring, Roots: s.roots, KDF: s.kdf, Logger: logger, Cache: cache, Chainer: s.chainer}
	s.workspace = &workspace.Service{Pool: pool, Ring: s.ring, Roots: s.roots, KDF: s.kdf, Logger: logger,
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

// checkMasterKeySource refuses a master key anywhere but DataDir/loopze.key: the envelope
// ring seals under that file only until per-tenant keys wrap under a masterkey.Keyring, and
// a server that ignored LOOPZE_MASTER_KEY_URI or a systemd credential would seal under a
// key the operator did not choose (or create one beside the credential).
func checkMasterKeySource(cfg config.Config, getenv func(string) string) error {
	src, err := masterkey.Locate(cfg.MasterKeyURI, cfg.DataDir, getenv)
	if err != nil {
		return fmt.Errorf("%s: %w", config.EnvMasterKeyURI, err)
	}
	here := filepath.Join(cfg.DataDir, envelope.KeyFile)
	switch {
	case src.Kind == masterkey.KindPKCS11:
		return fmt.Errorf("%s: a pkcs11: master key takes effect with per-tenant keys, which this version does not have; "+
			"unset it to keep the master key in %s", config.EnvMasterKeyURI, here)
	case src.Credential:
		return fmt.Errorf("systemd passes the credential %s: a master key in a credential takes effect with per-tenant keys, "+
			"which this version does not have; drop LoadCredentialEncrypted=%s from the unit to keep the master key in %s",
			src.Path, envelope.KeyFile, here)
	case !samePath(src.Path, here):
		return fmt.Errorf("%s: a master key file other than %s takes effect with per-tenant keys, which this version does not have; "+
			"unset it, or move the key and set %s", config.EnvMasterKeyURI, here, config.EnvDataDir)
	}
	return nil
}

// samePath compares two paths as absolute, so ./data/loopze.key and its absolute spelling
// are one file.
func samePath(a, b string) bool {
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
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
