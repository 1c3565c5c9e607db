package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"github.com/loopze/certstore/internal/durable"
	"github.com/loopze/certstore/internal/repo"
)

// runRuntimeKey writes a tenant's runtime key: the file keys of every version of its key,
// which open its credentials.json and nothing else. It is what a runtime is given in place
// of the master key.
func runRuntimeKey(ctx context.Context, env *environ, args []string) error {
	var (
		tenant, out string
		force       bool
	)
	cfg, logger, _, err := setup(env, "runtime-key", args, func(fs *flag.FlagSet) {
		fs.StringVar(&tenant, "tenant", "", "tenant whose runtimes get the key (required)")
		fs.StringVar(&out, "out", "", "file to write, mode 0600 (required)")
		fs.BoolVar(&force, "force", false, "replace the file when it exists")
	})
	if err != nil {
		return err
	}
	if !validTenant(tenant) || out == "" {
		return fmt.Errorf("%w: runtime-key --tenant T --out FILE", errUsage)
	}
	st, err := openStoreWithKeys(ctx, cfg, env, logger, false)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	keys := st.keys
	// A tenant name mistyped would otherwise get a key (and a row) of its own.
	tenants, err := repo.ListTenants(ctx, st.pool)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(tenants, func(t repo.Tenant) bool { return t.ID == tenant }) {
		return fmt.Errorf("%w: tenant %s has nothing stored here (check the name, or write its first entry first)", errUsage, tenant)
	}
	rk, err := keys.RuntimeKey(ctx, tenant)
	if err != nil {
		return err
	}
	data, err := rk.Marshal()
	if err != nil {
		return err
	}
	defer clear(data)
	if force {
		err = durable.Replace(out, data)
	} else {
		err = durable.CreateExclusive(out, data)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s exists; --force replaces it", errUsage, out)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	fmt.Fprintf(env.stdout, "runtime key of tenant %s written to %s (versions 1 to %d): it opens %s's credentials.json and nothing else; give it to its runtimes in place of loopze.key\n",
		tenant, out, slices.Max(slices.Collect(maps.Keys(rk.Keys))), tenant)
	return nil
}
