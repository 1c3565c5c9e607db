package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/db"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/tenantkey"
)

// runExport writes tenants' credentials.json files now and reports what it wrote.
func runExport(ctx context.Context, env *environ, args []string) error {
	var (
		tenant string
		asJSON bool
	)
	cfg, logger, _, err := setup(env, "export", args, func(fs *flag.FlagSet) {
		fs.StringVar(&tenant, "tenant", "", "export only this tenant (default: every tenant)")
		fs.BoolVar(&asJSON, "json", false, "print what was exported as JSON")
	})
	if err != nil {
		return err
	}
	if tenant != "" && !validTenant(tenant) {
		return fmt.Errorf("%w: --tenant %q must match ^[a-z0-9][a-z0-9_-]{0,63}$", errUsage, tenant)
	}
	st, err := openStore(ctx, cfg, logger, true)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	keys, err := openKeys(cfg, env, logger, st.pool, false)
	if err != nil {
		return err
	}
	defer keys.Master.Close()
	x := &fileexport.Exporter{Pool: st.pool, Keys: keys, DataDir: cfg.DataDir, Logger: logger}
	var results []fileexport.Result
	if tenant != "" {
		r, err := x.ExportTenant(ctx, tenant, true)
		if err != nil {
			return err
		}
		results = append(results, r)
	} else {
		results, err = x.ExportAll(ctx, true)
		defer printExports(env, results, asJSON)
		return err
	}
	printExports(env, results, asJSON)
	return nil
}

func printExports(env *environ, results []fileexport.Result, asJSON bool) {
	if asJSON {
		type export struct {
			Tenant          string `json:"tenant"`
			File            string `json:"file"`
			Generation      int64  `json:"generation"`
			KeyID           string `json:"keyId"`
			Entries         int    `json:"entries"`
			References      int    `json:"references"`
			NodeCredentials int    `json:"nodeCredentials"`
			Written         bool   `json:"written"` // false when the file was already current
		}
		out := struct {
			Exports []export `json:"exports"`
		}{Exports: make([]export, 0, len(results))}
		for _, r := range results {
			out.Exports = append(out.Exports, export{Tenant: r.Tenant, File: r.Path, Generation: r.Generation, KeyID: r.KeyID,
				Entries: r.Entries, References: r.References, NodeCredentials: r.NodeCredentials, Written: r.Written})
		}
		_ = writeJSON(env.stdout, out)
		return
	}
	if len(results) == 0 {
		fmt.Fprintln(env.stdout, "no tenants to export")
		return
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tGENERATION\tENTRIES\tREFERENCES\tNODE CREDENTIALS\tKEY ID\tFILE")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", r.Tenant, r.Generation, r.Entries, r.References,
			r.NodeCredentials, r.KeyID, r.Path)
	}
	_ = tw.Flush()
}

// store is a migrated database pool and what closing it takes.
type store struct {
	pool     *pgxpool.Pool
	database *database
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

// Close closes the pool and stops a cluster this command started.
func (s *store) Close(ctx context.Context) {
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
