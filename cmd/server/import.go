package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/loopze/certstore/internal/auth"
	"github.com/loopze/certstore/internal/catalog"
	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/credfile"
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
		fs.StringVar(&keyPath, "key", "", "key file that opens --file: the master key it was sealed under, or the tenant's runtime key (default: this server's master key)")
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

	// The master key wraps the tenant's key, under which what is restored is sealed.
	// Without --key it must open the file too, so it must exist; with --key (a restore onto
	// a new machine) a key file is created if missing.
	var fileKeys *credfile.Keys
	if keyPath != "" {
		k, err := readKeyFileFor(keyPath)
		if err != nil {
			return err
		}
		fileKeys = &k
		if err := cfg.EnsureDataDir(); err != nil {
			return err
		}
	}
	st, err := openStoreWithKeys(ctx, cfg, env, logger, keyPath != "")
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	keys := st.keys
	ctx = operator(ctx, "import")
	im := &fileexport.Importer{Pool: st.pool, Catalog: &catalog.Service{Pool: st.pool, Keys: keys, Roots: roots, Logger: logger},
		Keys: keys, FileKeys: fileKeys, Logger: logger}
	res, err := im.ImportFile(ctx, file, fileexport.ImportOptions{Tenant: tenant, FileTenant: fromTenant, Replace: replace})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "restored tenant %s from %s (file generation %d): %d entries, %d references, %d node credentials",
		res.Tenant, file, res.FileGeneration, res.Entries, res.References, res.NodeCredentials)
	if res.HasWorkspace {
		fmt.Fprint(env.stdout, ", workspace")
	}
	fmt.Fprintf(env.stdout, "; sealed under the tenant's key; tenant generation now %d\n", res.Generation)
	for _, w := range res.Warnings {
		fmt.Fprintln(env.stdout, "warning:", w)
	}
	return nil
}

// validTenant checks a tenant slug, as tokens do.
func validTenant(t string) bool { return auth.ValidTenant(t) }

// readKeyFileFor reads a key file given to open credentials files: a runtime key file, or a
// master key file (base64 of 32 bytes).
func readKeyFileFor(path string) (credfile.Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return credfile.Keys{}, fmt.Errorf("key file: %w", err)
	}
	defer clear(data)
	if credfile.IsRuntimeKey(data) {
		rk, err := credfile.ParseRuntimeKey(data)
		if err != nil {
			return credfile.Keys{}, fmt.Errorf("key file %s: %w", path, err)
		}
		return credfile.Keys{FileKey: rk.FileKey}, nil
	}
	key, err := envelope.ReadKeyFile(path)
	if err != nil {
		return credfile.Keys{}, err
	}
	defer clear(key)
	ring, err := envelope.NewRing(key)
	if err != nil {
		return credfile.Keys{}, err
	}
	return credfile.Keys{Ring: ring}, nil
}
