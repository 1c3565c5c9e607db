package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/config"
	"github.com/loopze/certstore/nodetls"
)

// errUnresolved makes resolve exit 1 after printing its report.
var errUnresolved = errors.New("the tls block does not resolve")

// nodeFlags are the flags resolve and probe share: which file, key and node.
type nodeFlags struct {
	file, key, flow, node string
	roots                 string
	json                  bool
}

func (f *nodeFlags) register(fs *flag.FlagSet, env *environ) {
	dataDir := cmp.Or(env.getenv(config.EnvDataDir), config.DefaultDataDir)
	fs.StringVar(&f.file, "file", filepath.Join(dataDir, "credentials.json"), "the tenant's credentials.json")
	fs.StringVar(&f.key, "key", filepath.Join(dataDir, "loopze.key"), "the master key file (loopze.key.next beside it is read too)")
	fs.StringVar(&f.flow, "flow", "", "flow ID (required)")
	fs.StringVar(&f.node, "node", "", "node ID (required)")
	fs.StringVar(&f.roots, "file-roots", env.getenv(config.EnvFileRoots), "directories file material must lie in, as "+config.EnvFileRoots+" (required for file material of tenants other than default)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
}

// open checks the flags and opens the store.
func (f *nodeFlags) open() (*nodetls.Store, error) {
	if f.flow == "" || f.node == "" {
		return nil, fmt.Errorf("%w: --flow and --node are required", errUsage)
	}
	return nodetls.New(nodetls.Options{File: f.file, KeyFile: f.key, FileRoots: f.roots})
}

// runResolve prints what a node's tls block resolves to from a credentials file: origins,
// fingerprints, subjects, expiry. Never PEM.
func runResolve(ctx context.Context, env *environ, args []string) error {
	var f nodeFlags
	fs := flag.NewFlagSet("resolve", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	f.register(fs, env)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	store, err := f.open()
	if err != nil {
		return err
	}
	defer store.Close()
	parts, err := store.Describe(ctx, f.flow, f.node)
	if err != nil {
		return err
	}
	failed := false
	for _, p := range parts {
		failed = failed || p.Error != ""
	}
	if f.json {
		out := struct {
			Tenant     string         `json:"tenant"`
			Generation int64          `json:"generation"`
			Flow       string         `json:"flow"`
			Node       string         `json:"node"`
			Resolves   bool           `json:"resolves"`
			Parts      []nodetls.Part `json:"parts"`
		}{store.Tenant(), store.Generation(), f.flow, f.node, !failed, parts}
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.stdout, "flow %s, node %s (tenant %s, generation %d)\n", f.flow, f.node, store.Tenant(), store.Generation())
		for _, p := range parts {
			printPart(env.stdout, p)
		}
	}
	if failed {
		return errUnresolved
	}
	return nil
}

func printPart(w io.Writer, p nodetls.Part) {
	from := p.Origin
	switch p.Origin {
	case nodetls.OriginRef:
		from = fmt.Sprintf("entry %s (%s)", p.Ref, p.EntrySource)
	case nodetls.OriginFile:
		from = "files"
	case nodetls.OriginInline:
		from = "inline PEM"
	}
	fmt.Fprintf(w, "%s: %s from %s\n", p.Name, p.Field, from)
	if p.CertPath != "" {
		fmt.Fprintf(w, "  cert file    %s\n", p.CertPath)
	}
	if p.KeyPath != "" {
		fmt.Fprintf(w, "  key file     %s\n", p.KeyPath)
	}
	if p.Error != "" {
		fmt.Fprintf(w, "  DOES NOT RESOLVE: %s\n", p.Error)
		return
	}
	fmt.Fprintf(w, "  subject      %s\n  sha256       %s\n  notAfter     %s\n",
		p.Subject, p.FingerprintSHA256, p.NotAfter.Format(time.RFC3339))
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "  warning      %s\n", strings.TrimSpace(warn))
	}
}
