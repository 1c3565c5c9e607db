package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/loopze/certstore/internal/fileexport"
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
	st, err := openStoreWithKeys(ctx, cfg, env, logger, false)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	keys := st.keys
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
