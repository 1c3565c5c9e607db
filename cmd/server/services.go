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
)

// services are the long-lived pieces every serving process wires together.
type services struct {
	ring     *envelope.Ring
	verifier *auth.Verifier
	catalog  *catalog.Service
}

// newServices loads the master key ring and the JWT keys from the data dir and builds the
// catalogue over pool.
func newServices(cfg config.Config, pool *pgxpool.Pool, logger *slog.Logger) (*services, error) {
	ring, err := envelope.Load(cfg.DataDir, logger)
	if err != nil {
		return nil, fmt.Errorf("load master key: %w", err)
	}
	verifier, err := newVerifier(cfg)
	if err != nil {
		return nil, err
	}
	roots := material.ParseRoots(cfg.FileRoots)
	if err := roots.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", config.EnvFileRoots, err)
	}
	return &services{
		ring:     ring,
		verifier: verifier,
		catalog:  &catalog.Service{Pool: pool, Ring: ring, Roots: roots, Logger: logger},
	}, nil
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
