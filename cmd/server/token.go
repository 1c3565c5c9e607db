package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/config"
)

// runToken prints an HS256 token the server accepts, signed with LOOPZE_JWT_SECRET or the
// data dir's jwt.secret (the same one `serve` uses).
func runToken(_ context.Context, env *environ, args []string) error {
	var (
		tenant, role, sub string
		ttl               time.Duration
	)
	cfg, _, _, err := setup(env, "token", args, func(fs *flag.FlagSet) {
		fs.StringVar(&tenant, "tenant", "default", "tenant slug the token is for")
		fs.StringVar(&role, "role", "viewer", "viewer, editor, admin, or runtime (may only sync credentials.json)")
		fs.StringVar(&sub, "sub", "operator", "subject (who the token is for)")
		fs.DurationVar(&ttl, "ttl", time.Hour, "lifetime, e.g. 1h or 720h")
	})
	if err != nil {
		return err
	}
	r, err := auth.ParseRole(role)
	if err != nil {
		return fmt.Errorf("%w: --role %q: want viewer, editor, admin or runtime", errUsage, role)
	}
	if !auth.ValidTenant(tenant) {
		return fmt.Errorf("%w: --tenant %q must match ^[a-z0-9][a-z0-9_-]{0,63}$", errUsage, tenant)
	}
	if ttl <= 0 {
		return fmt.Errorf("%w: --ttl must be positive", errUsage)
	}
	if ttl > cfg.JWTMaxTTL {
		// The server would refuse it: say so now rather than print a token that never works.
		return fmt.Errorf("%w: --ttl %s is longer than the maximum token lifetime %s (%s)", errUsage, ttl, cfg.JWTMaxTTL, config.EnvJWTMaxTTL)
	}
	if err := cfg.EnsureDataDir(); err != nil {
		return err
	}
	secret, err := auth.LoadHMACSecret(cfg.JWTSecret.Reveal(), cfg.DataDir)
	if err != nil {
		return fmt.Errorf("load JWT secret: %w", err)
	}
	tok, err := auth.Mint(secret, auth.Principal{Subject: sub, Tenant: tenant, Role: r}, ttl, cfg.JWTIssuer, cfg.JWTAudience, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, tok)
	return nil
}
