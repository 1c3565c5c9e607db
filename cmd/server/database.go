package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"slices"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/pgembed"
)

// EmbeddedDatabase is the database name inside the embedded cluster.
const EmbeddedDatabase = "loopze"

// databaseFlags are the settings of a subcommand that works on the database.
var databaseFlags = []string{"data-dir", "database-url", "listen-database-url", "database-pooler", "log-format", "log-level"}

// commandFlags names the configuration flags each subcommand uses; one not listed (serve)
// takes them all.
var commandFlags = map[string][]string{
	"migrate":      databaseFlags,
	"export":       databaseFlags,
	"rotate-key":   databaseFlags,
	"runtime-key":  databaseFlags,
	"audit verify": databaseFlags,
	"audit export": databaseFlags,
	"import":       append(slices.Clone(databaseFlags), "file-roots"),
	"doctor":       append(slices.Clone(databaseFlags), "file-roots"),
	"token":        {"data-dir", "jwt-issuer", "jwt-audience", "jwt-max-ttl", "log-format", "log-level"},
}

// setup parses the shared flags over the environment, validates the configuration and
// builds the logger: the start of every subcommand.
func setup(env *environ, name string, args []string, extra func(*flag.FlagSet)) (config.Config, *slog.Logger, []string, error) {
	cfg := config.FromEnv(env.getenv)
	fs := newFlagSet(env, name, args)
	if names, ok := commandFlags[name]; ok {
		cfg.RegisterFlagsOf(fs, names...)
	} else {
		cfg.RegisterFlags(fs)
	}
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

// paths decides how the parts reach the database: the pool through URL (perhaps a
// transaction pooler), LISTEN and the migrations' session lock through a direct URL. A
// transaction pooler without LOOPZE_LISTEN_DATABASE_URL is refused here, at start, since
// neither LISTEN nor the lock would hold through it.
func (d *database) paths(ctx context.Context, cfg config.Config, logger *slog.Logger) (pooler db.Pooler, direct string, err error) {
	if d.cluster != nil || cfg.Embedded() {
		return db.PoolerNone, d.URL, nil
	}
	declared, err := db.ParsePooler(cfg.DatabasePooler)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", config.EnvPooler, err)
	}
	pooler, err = db.DetectPooler(ctx, d.URL, declared)
	if err != nil {
		return "", "", err
	}
	direct = cfg.DirectDatabaseURL()
	if pooler == db.PoolerTransaction && cfg.ListenDatabaseURL == "" {
		why := "it was declared so by " + config.EnvPooler
		if declared == db.PoolerAuto {
			why = "the server's backend process ID differs from the one the connection announced, as behind PgBouncer"
		}
		return "", "", fmt.Errorf("%s goes through a transaction pooler (%s): LISTEN and the migrations' session lock "+
			"need a direct connection; set %s to a URL past the pooler, or %s=session if the pooler keeps sessions",
			config.EnvDatabaseURL, why, config.EnvListenURL, config.EnvPooler)
	}
	logger.Info("database paths", "pooler", pooler, "listen_direct", cfg.ListenDatabaseURL != "")
	return pooler, direct, nil
}

// direct is the URL for the migrations: the listen URL when one is set, since the
// migrations' advisory lock is session state a transaction pooler would not keep.
func (d *database) direct(cfg config.Config) string {
	if d.cluster != nil || cfg.Embedded() {
		return d.URL
	}
	return cfg.DirectDatabaseURL()
}
