package main

import (
	"context"
	"fmt"
	"os"

	"github.com/loopze/certstore/internal/api"
)

func runOpenAPI(_ context.Context, env *environ, args []string) error {
	fs := newFlagSet(env, "openapi", args)
	format := fs.String("format", "yaml", "yaml or json")
	out := fs.String("o", "", "write to this file instead of stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := api.Spec(*format)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *out == "" {
		_, err = env.stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}
