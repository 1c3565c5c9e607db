package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/internal/doctor"
	"github.com/loopze/certstore/internal/masterkey"
	"github.com/loopze/certstore/internal/material"
)

// errProblems is doctor's failure: the report says what.
var errProblems = errors.New("problems found (see above)")

// runDoctor checks the installation: non-zero when a check failed, or when one warned
// and --fail-on-warning is set.
func runDoctor(ctx context.Context, env *environ, args []string) error {
	var (
		asJSON, verbose, failOnWarning bool
		within                         = doctor.DefaultExpiringWithin
	)
	cfg, logger, _, err := setup(env, "doctor", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
		fs.BoolVar(&verbose, "v", false, "list passing checks too")
		fs.BoolVar(&failOnWarning, "fail-on-warning", false, "exit 1 on warnings (such as entries expiring soon) too")
		fs.DurationVar(&within, "expiring-within", within, "report entries expiring within this long (negative: skip)")
	})
	if err != nil {
		return err
	}
	roots := material.ParseRoots(cfg.FileRoots)
	if err := roots.Validate(); err != nil {
		return fmt.Errorf("%s: %w", config.EnvFileRoots, err)
	}
	d := &doctor.Doctor{DataDir: cfg.DataDir, Roots: roots, ExpiringWithin: within, Logger: logger}
	// A URI that does not parse fails the key check through openKeys below.
	d.MasterKey, _ = masterkey.Locate(cfg.MasterKeyURI, cfg.DataDir, env.getenv)
	if st, err := openStore(ctx, cfg, logger, false); err != nil {
		d.PoolErr = err
	} else {
		defer st.Close(ctx)
		d.Pool = st.pool
		if d.Keys, d.KeysErr = openKeys(cfg, env, logger, st.pool, false); d.Keys != nil {
			d.Keys.ReadOnly = true // doctor changes nothing, not even a tenant's first key
			defer d.Keys.Master.Close()
		}
	}
	rep := d.Run(ctx)
	if asJSON {
		err = rep.WriteJSON(env.stdout)
	} else {
		err = rep.WriteTable(env.stdout, verbose)
	}
	if err != nil {
		return err
	}
	if !rep.OK || (failOnWarning && rep.Warnings > 0) {
		return errProblems
	}
	return nil
}
