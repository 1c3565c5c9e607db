package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/pgembed"
)

// EmbeddedDatabase is the database name inside the embedded cluster.
const EmbeddedDatabase = "loopze"

// setup parses the shared flags over the environment, validates the configuration and
// builds the logger: the start of every subcommand.
func setup(env *environ, name string, args []string, extra func(*flag.FlagSet)) (config.Config, *slog.Logger, []string, error) {
	cfg := config.FromEnv(env.getenv)
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfg.RegisterFlags(fs)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, nil, nil, err
		}
		return cfg, nil, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, nil, nil, err
	}
	level, _ := config.ParseLevel(cfg.LogLevel)
	return cfg, logging.New(env.stderr, cfg.LogFormat, level), fs.Args(), nil
}

// database is a connection string and what to do when the command is done with it.
type database struct {
	URL     string
	cluster *pgembed.Cluster
}

// Close stops the embedded cluster when this process started (or adopted) it.
func (d *database) Close(ctx context.Context) error {
	if d.cluster == nil {
		return nil
	}
	return d.cluster.Stop(ctx)
}

// openDatabase returns the database to use. With LOOPZE_DATABASE_URL it is that. Otherwise
// it is the embedded cluster in DataDir/pg: `serve` starts it (adopting one a killed server
// left running); other commands borrow a running server's cluster through its socket, and
// start it for their own duration when none runs.
func openDatabase(ctx context.Context, cfg config.Config, logger *slog.Logger, serve bool) (*database, error) {
	if !cfg.Embedded() {
		return &database{URL: cfg.DatabaseURL}, nil
	}
	if !serve {
		if raw, up := pgembed.Probe(ctx, cfg.ClusterDir()); up {
			u, err := url.Parse(raw)
			if err != nil {
				return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
			}
			u.Path = "/" + EmbeddedDatabase // Probe names the maintenance database
			logger.Debug("using the running embedded cluster", "dir", cfg.ClusterDir())
			return &database{URL: u.String()}, nil
		}
	}
	if err := cfg.EnsureDataDir(); err != nil {
		return nil, err
	}
	c, err := pgembed.Start(ctx, pgembed.Options{
		DataDir:      cfg.ClusterDir(),
		Database:     EmbeddedDatabase,
		Logger:       logger,
		StopAttached: serve,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
	}
	return &database{URL: c.URL(EmbeddedDatabase), cluster: c}, nil
}
