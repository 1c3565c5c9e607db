package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/fileexport"
	"github.com/loopze/certstore/internal/material"
)

// runImport restores a tenant from a credentials.json file.
func runImport(ctx context.Context, env *environ, args []string) error {
	var (
		tenant, file, keyPath, fromTenant string
		replace                           bool
	)
	cfg, logger, _, err := setup(env, "import", args, func(fs *flag.FlagSet) {
		fs.StringVar(&tenant, "tenant", "", "tenant to restore into (required)")
		fs.StringVar(&file, "file", "", "credentials.json to restore (required)")
		fs.StringVar(&keyPath, "key", "", "master key file that opens --file (default: the data dir's key)")
		fs.StringVar(&fromTenant, "from-tenant", "", "tenant the file belongs to, when restoring it into another tenant")
		fs.BoolVar(&replace, "replace", false, "delete what the tenant holds first (default: refuse a tenant with data)")
	})
	if err != nil {
		return err
	}
	if !validTenant(tenant) || file == "" {
		return fmt.Errorf("%w: import --tenant T --file PATH [--key PATH] [--replace]", errUsage)
	}
	if fromTenant != "" && !validTenant(fromTenant) {
		return fmt.Errorf("%w: --from-tenant %q is not a tenant ID", errUsage, fromTenant)
	}
	roots := material.ParseRoots(cfg.FileRoots)
	if err := roots.Validate(); err != nil {
		return fmt.Errorf("%s: %w", config.EnvFileRoots, err)
	}

	// The data dir's key seals what is restored. Without --key it must open the file too,
	// so it must exist; with --key (a restore onto a new machine) it is created if missing.
	if err := checkKeyModes(cfg.DataDir); err != nil {
		return err
	}
	var ring, fileRing *envelope.Ring
	if keyPath != "" {
		key, err := envelope.ReadKeyFile(keyPath)
		if err != nil {
			return err
		}
		fileRing, err = envelope.NewRing(key)
		clear(key)
		if err != nil {
			return err
		}
		if err := cfg.EnsureDataDir(); err != nil {
			return err
		}
		if ring, err = envelope.Load(cfg.DataDir, logger); err != nil {
			return err
		}
	} else if ring, err = envelope.LoadExisting(cfg.DataDir, logger); err != nil {
		return err
	}

	st, err := openStore(ctx, cfg, logger, true)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	ctx = operator(ctx, "import")
	im := &fileexport.Importer{Pool: st.pool, Catalog: &catalog.Service{Pool: st.pool, Ring: ring, Roots: roots, Logger: logger},
		Ring: ring, FileRing: fileRing, Logger: logger}
	res, err := im.ImportFile(ctx, file, fileexport.ImportOptions{Tenant: tenant, FileTenant: fromTenant, Replace: replace})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "restored tenant %s from %s (file generation %d): %d entries, %d references, %d node credentials",
		res.Tenant, file, res.FileGeneration, res.Entries, res.References, res.NodeCredentials)
	if res.HasWorkspace {
		fmt.Fprint(env.stdout, ", workspace")
	}
	fmt.Fprintf(env.stdout, "; sealed under key %s; tenant generation now %d\n", ring.CurrentKeyID(), res.Generation)
	for _, w := range res.Warnings {
		fmt.Fprintln(env.stdout, "warning:", w)
	}
	return nil
}

// validTenant checks a tenant slug, as tokens do.
func validTenant(t string) bool { return auth.ValidTenant(t) }
