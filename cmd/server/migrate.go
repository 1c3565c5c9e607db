package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/loopze/certstore/internal/db"
)

func runMigrate(ctx context.Context, env *environ, args []string) error {
	var asJSON bool
	cfg, logger, rest, err := setup(env, "migrate", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "status: print the migrations as JSON")
	})
	if err != nil {
		return err
	}
	action := "up"
	if len(rest) > 0 {
		action = rest[0]
	}
	if action == "status" && len(rest) > 1 && rest[1] == "--json" {
		asJSON = true // flags after the action, as in `migrate status --json`
		rest = rest[:1]
	}
	if action != "up" && action != "status" || len(rest) > 1 {
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
	if asJSON {
		type migration struct {
			Version   int64      `json:"version"`
			File      string     `json:"file"`
			Applied   bool       `json:"applied"`
			AppliedAt *time.Time `json:"appliedAt,omitempty"`
		}
		out := struct {
			Migrations []migration `json:"migrations"`
		}{Migrations: make([]migration, 0, len(states))}
		for _, s := range states {
			m := migration{Version: s.Version, File: s.File, Applied: s.Applied}
			if s.Applied {
				at := s.AppliedAt.UTC()
				m.AppliedAt = &at
			}
			out.Migrations = append(out.Migrations, m)
		}
		return writeJSON(env.stdout, out)
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

// writeJSON prints v indented, for the subcommands' --json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
