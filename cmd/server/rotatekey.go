package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/loopze/certstore/internal/keyrotation"
)

// runRotateKey rotates the master key (or one tenant's key with --tenant), or finishes a
// rotation that was interrupted.
func runRotateKey(ctx context.Context, env *environ, args []string) error {
	var (
		prepare bool
		batch   int
		tenant  string
	)
	cfg, logger, _, err := setup(env, "rotate-key", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&prepare, "prepare", false, "only make the new master key (loopze.key.next, to copy to other replicas first); change nothing else")
		fs.IntVar(&batch, "batch-size", keyrotation.DefaultBatchSize, "rows rewrapped per transaction")
		fs.StringVar(&tenant, "tenant", "", "rotate this tenant's key instead of the master key")
	})
	if err != nil {
		return err
	}
	if batch <= 0 {
		return fmt.Errorf("%w: --batch-size must be positive", errUsage)
	}
	if tenant != "" && (!validTenant(tenant) || prepare) {
		return fmt.Errorf("%w: rotate-key --tenant T takes a tenant ID, and no --prepare", errUsage)
	}
	if prepare {
		master, _, err := openMasterKeys(cfg, env.getenv, logger, false)
		if err != nil {
			return err
		}
		defer master.Close()
		next, err := master.Next()
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "new master key %s made; give it to every replica (copy loopze.key.next, mode 0600, when it is a file), then run: loopze-certs rotate-key\n", next.ID())
		return nil
	}
	st, err := openStoreWithKeys(ctx, cfg, env, logger, false)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	keys := st.keys
	r := &keyrotation.Rotator{Pool: st.pool, DataDir: cfg.DataDir, Keys: keys, Logger: logger, BatchSize: batch}
	ctx = operator(ctx, "rotate-key")
	if tenant != "" {
		rep, err := r.RotateTenant(ctx, tenant)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "key of tenant %s rotated: now %s; %d row(s) rewrapped; give its runtimes their new runtime key (loopze-certs runtime-key --tenant %s)\n",
			tenant, rep.NewKeyID, rep.Rewrapped, tenant)
		printExports(env, rep.Files, false)
		return nil
	}
	rep, err := r.Rotate(ctx)
	if err != nil {
		return err
	}
	if err := keyrotation.MarkRotated(ctx, st.pool, rep.NewKeyID, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "master key rotated: now %s; %d tenant key(s) rewrapped, %d row(s) moved to tenant keys, %d file(s) checked\n",
		rep.NewKeyID, rep.TenantKeys, rep.Rewrapped, len(rep.Files))
	printExports(env, rep.Files, false)
	return nil
}
