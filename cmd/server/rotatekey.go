package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/loopze/certstore/internal/envelope"
	"github.com/loopze/certstore/internal/keyrotation"
)

// runRotateKey rotates the master key, or continues a rotation that was interrupted.
func runRotateKey(ctx context.Context, env *environ, args []string) error {
	var (
		prepare bool
		batch   int
	)
	cfg, logger, _, err := setup(env, "rotate-key", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&prepare, "prepare", false, "only write loopze.key.next (to copy to other replicas first); change no row")
		fs.IntVar(&batch, "batch-size", keyrotation.DefaultBatchSize, "rows rewrapped per transaction")
	})
	if err != nil {
		return err
	}
	if batch <= 0 {
		return fmt.Errorf("%w: --batch-size must be positive", errUsage)
	}
	if err := checkKeyModes(cfg.DataDir); err != nil {
		return err
	}
	r := &keyrotation.Rotator{DataDir: cfg.DataDir, Logger: logger, BatchSize: batch}
	next := filepath.Join(cfg.DataDir, envelope.NextKeyFile)
	if prepare {
		id, created, err := r.Prepare()
		if err != nil {
			return err
		}
		state := "already there"
		if created {
			state = "written"
		}
		fmt.Fprintf(env.stdout, "new key %s %s at %s\ncopy it (mode 0600) to every replica's data directory, then run: loopze-certs rotate-key\n", id, state, next)
		return nil
	}
	st, err := openStore(ctx, cfg, logger, true)
	if err != nil {
		return err
	}
	defer st.Close(ctx)
	r.Pool = st.pool
	rep, err := r.Rotate(operator(ctx, "rotate-key"))
	if err != nil {
		return err
	}
	verb := "rotated"
	if rep.Resumed {
		verb = "rotation finished"
	}
	fmt.Fprintf(env.stdout, "master key %s: now %s; %d row(s) rewrapped, %d file(s) checked\n", verb, rep.NewKeyID, rep.Rewrapped, len(rep.Files))
	printExports(env, rep.Files, false)
	return nil
}
