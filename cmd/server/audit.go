package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/loopze/certstore/internal/audit"
	"github.com/loopze/certstore/internal/credfile"
	"github.com/loopze/certstore/internal/repo"
	"github.com/loopze/certstore/internal/tenantkey"
)

// runAudit verifies the audit trail's chains against the data directory's checkpoints, or
// exports a tenant's trail.
func runAudit(ctx context.Context, env *environ, args []string) error {
	const use = "audit verify | audit export --tenant T"
	if len(args) == 0 || isFlag(args[0]) {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	sub, args := args[0], args[1:]
	var tenant string
	var extra func(*flag.FlagSet)
	switch sub {
	case "verify":
	case "export":
		extra = func(fs *flag.FlagSet) {
			fs.StringVar(&tenant, "tenant", "", "tenant whose trail to write as JSON lines (required)")
		}
	default:
		return fmt.Errorf("%w: unknown audit command %q: %s", errUsage, sub, use)
	}
	cfg, logger, _, err := setup(env, "audit "+sub, args, extra)
	if err != nil {
		return err
	}
	if sub == "export" && !validTenant(tenant) {
		return fmt.Errorf("%w: audit export --tenant T", errUsage)
	}
	st, err := openStoreWithKeys(ctx, cfg, env, logger, false)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	keys := st.keys
	// Records pending are chained under the tenants' audit keys, as serve chains them.
	svc := &audit.Service{Pool: st.pool, Keys: keys.Audit()}
	if sub == "export" {
		w := bufio.NewWriter(env.stdout)
		n, err := svc.Export(ctx, tenant, w)
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "%d audit record(s) of tenant %s written\n", n, tenant)
		return nil
	}
	checkpoints, err := audit.ReadCheckpoints(audit.CheckpointDir(cfg.DataDir))
	if err != nil {
		return err
	}
	inFiles, err := fileCheckpoints(ctx, env, st.pool, keys, cfg.DataDir)
	if err != nil {
		return err
	}
	checkpoints = append(checkpoints, inFiles...)
	results, err := svc.Verify(ctx, checkpoints...)
	for _, r := range results {
		state := "ok"
		if r.Broken != nil {
			state = "BROKEN at record " + fmt.Sprint(r.Broken.Seq)
		}
		fmt.Fprintf(env.stdout, "tenant %s: %d record(s) verified: %s (%d keyed, %s)\n", r.Tenant, r.Records, state, r.Keyed, checkpointNote(r))
	}
	var broken *audit.BrokenLinkError
	if errors.As(err, &broken) {
		return fmt.Errorf("first broken link: %w", broken)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%d tenant chain(s) intact\n", len(results))
	return nil
}

// checkpointNote says how far a tenant's trail is anchored outside the database.
func checkpointNote(r audit.TenantResult) string {
	if r.Checkpoint == 0 {
		return "no checkpoint"
	}
	return fmt.Sprintf("checkpoint at record %d", r.Checkpoint)
}

// fileCheckpoints are the audit heads the tenants' credentials files in dataDir carry,
// opened (and so authenticated) with the master key. A missing file is skipped; one that
// does not open is named on stderr and skipped: it proves nothing either way.
func fileCheckpoints(ctx context.Context, env *environ, pool *pgxpool.Pool, keys *tenantkey.Keys, dataDir string) ([]audit.Checkpoint, error) {
	tenants, err := repo.ListTenants(ctx, pool)
	if err != nil {
		return nil, err
	}
	var out []audit.Checkpoint
	for _, t := range tenants {
		path := credfile.Path(dataDir, t.ID)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		doc, _, err := credfile.Open(keys.Opener(), data, t.ID)
		clear(data)
		if err != nil {
			fmt.Fprintf(env.stderr, "%s: not used as an audit checkpoint: %v\n", path, err)
			continue
		}
		head := doc.AuditHead
		if head == nil {
			continue
		}
		mac, err := hex.DecodeString(head.MAC)
		if err != nil || head.Seq < 1 {
			fmt.Fprintf(env.stderr, "%s: not used as an audit checkpoint: its audit head is malformed\n", path)
			continue
		}
		out = append(out, audit.Checkpoint{Tenant: t.ID, Seq: head.Seq, MAC: mac, KeyVersion: head.KeyVersion, Source: path})
	}
	return out, nil
}
