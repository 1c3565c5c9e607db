package main

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/tenantkey"
)

// store is a migrated database pool, the keys a command opens over it (openStoreWithKeys),
// and what closing them takes.
type store struct {
	pool     *pgxpool.Pool
	database *database
	keys     *tenantkey.Keys
}

// openStore opens the configured database (borrowing or starting the embedded cluster, as
// every subcommand does), migrates it when asked, and opens a pool.
func openStore(ctx context.Context, cfg config.Config, logger *slog.Logger, migrate bool) (*store, error) {
	database, err := openDatabase(ctx, cfg, logger, false)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*store, error) {
		_ = database.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	pooler, direct, err := database.paths(ctx, cfg, logger)
	if err != nil {
		return fail(err)
	}
	if migrate {
		if _, err := db.Migrate(ctx, direct, logger); err != nil {
			return fail(err)
		}
	}
	pool, err := db.Open(ctx, database.URL, logger, pooler)
	if err != nil {
		return fail(err)
	}
	return &store{pool: pool, database: database}, nil
}

// openStoreWithKeys opens and migrates the database as openStore does, and the keys over
// it as openKeys does: what the commands that read or write sealed material start with.
// Close closes both.
func openStoreWithKeys(ctx context.Context, cfg config.Config, env *environ, logger *slog.Logger, create bool) (*store, error) {
	st, err := openStore(ctx, cfg, logger, true)
	if err != nil {
		return nil, err
	}
	if st.keys, err = openKeys(cfg, env, logger, st.pool, create); err != nil {
		st.Close(ctx)
		return nil, err
	}
	return st, nil
}

// Close closes the keys and the pool, and stops a cluster this command started.
func (s *store) Close(ctx context.Context) {
	if s.keys != nil {
		_ = s.keys.Master.Close()
	}
	s.pool.Close()
	_ = s.database.Close(context.WithoutCancel(ctx))
}

// openKeys opens the master keyring (LOOPZE_MASTER_KEY_URI; a key file is created only
// when create is set) and the tenant keys under it, for a command over pool. The caller
// closes keys.Master.
func openKeys(cfg config.Config, env *environ, logger *slog.Logger, pool *pgxpool.Pool, create bool) (*tenantkey.Keys, error) {
	if err := checkKeyModes(cfg.DataDir); err != nil {
		return nil, err
	}
	master, legacy, err := openMasterKeys(cfg, env.getenv, logger, create)
	if err != nil {
		return nil, err
	}
	return &tenantkey.Keys{Pool: pool, Master: master, Legacy: legacy, Logger: logger}, nil
}
