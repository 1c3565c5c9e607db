package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/loopze/certstore/internal/db"
)

func runMigrate(ctx context.Context, env *environ, args []string) error {
	cfg, logger, rest, err := setup(env, "migrate", args, nil)
	if err != nil {
		return err
	}
	action := "up"
	if len(rest) > 0 {
		action = rest[0]
	}
	if action != "up" && action != "status" {
		return fmt.Errorf("%w: migrate up | status (got %q)", errUsage, action)
	}
	database, err := openDatabase(ctx, cfg, logger, false)
	if err != nil {
		return err
	}
	defer database.Close(context.WithoutCancel(ctx))

	if action == "up" {
		n, err := db.Migrate(ctx, database.direct(cfg), logger)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "applied %d migration(s)\n", n)
		return nil
	}
	states, err := db.Status(ctx, database.direct(cfg))
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tSTATE\tAPPLIED AT\tFILE")
	for _, s := range states {
		state, at := "pending", ""
		if s.Applied {
			state, at = "applied", s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Version, state, at, s.File)
	}
	return tw.Flush()
}
