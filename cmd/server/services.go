package main

import (
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/resolver"
	"github.com/loopze/certstore/internal/workspace"
)

// services are the long-lived pieces every serving process wires together.
type services struct {
	ring     *envelope.Ring
	verifier *auth.Verifier
	roots    material.Roots
	catalog  *catalog.Service
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
	ring, err := envelope.Load(cfg.DataDir, logger)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	return &services{ring: ring, verifier: verifier, roots: roots}, nil
}

// connect builds the database-backed services over pool.
func (s *services) connect(pool *pgxpool.Pool, logger *slog.Logger) {
	s.catalog = &catalog.Service{Pool: pool, Ring: s.ring, Roots: s.roots, Logger: logger}
	s.workspace = &workspace.Service{Pool: pool, Ring: s.ring, Roots: s.roots, Logger: logger,
		Resolver: &resolver.Resolver{Entries: s.catalog, Roots: s.catalog.Roots, Logger: logger}}
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
		Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience, AllowedOrigins: cfg.AllowedOrigins,
	})
	if err != nil {
		return nil, fmt.Errorf("JWT verification: %w", err)
	}
	return v, nil
}
