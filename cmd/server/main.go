// Command loopze-certs is the LOOPZE certificate store: one binary holding the HTTP service
// and the operator subcommands. This package only wires: configuration in, packages
// together, exit codes out.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand of the binary.
type command struct {
	summary string
	run     func(ctx context.Context, env *environ, args []string) error
}

// commandHelp is more for `loopze-certs help COMMAND`, where a command has more to say:
// arguments, exit codes.
var commandHelp = map[string]string{
	"migrate": "usage: loopze-certs migrate [flags] [up|status]; status takes --json.",
	"doctor": "Exit codes: 0 when no check failed (warnings, such as entries expiring soon, are printed); " +
		"1 when a check failed, or a check warned under --fail-on-warning; 2 for bad usage.",
}

// environ is what a subcommand sees of the world, so tests can run commands in process.
type environ struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// commands is the one list of subcommands; `serve` is the default.
var commands = map[string]command{
	"serve":       {"run the HTTP service (default)", runServe},
	"migrate":     {"apply database migrations (up) or list them (status)", runMigrate},
	"openapi":     {"print the OpenAPI document (yaml or json)", runOpenAPI},
	"healthcheck": {"exit 0 when the server at --url answers 200 (for container health checks)", runHealthcheck},
	"version":     {"print the version", runVersion},
	"token":       {"print a JWT for a tenant and role (for automation and the web UI sign-in)", runToken},
	"export":      {"write tenants' credentials.json files now and report them", runExport},
	"import":      {"restore a tenant from a credentials.json file", runImport},
	"rotate-key":  {"rotate the master key, or one tenant's key with --tenant (or finish an interrupted rotation)", runRotateKey},
	"runtime-key": {"write the key file a tenant's runtimes open its credentials.json with, and nothing else (--tenant T --out FILE)", runRuntimeKey},
	"doctor":      {"check key and file permissions, key/file/database agreement and expiring entries", runDoctor},
	"audit":       {"verify the audit trail's hash chains (verify) or write a tenant's trail as JSON lines (export --tenant T)", runAudit},
	"resolve":     {"print what a node's tls block resolves to from a credentials.json (never PEM)", runResolve},
	"probe":       {"open a TLS connection with a node's config and print the handshake", runProbe},
}

// errUsage marks errors that are the caller's: printed with the usage hint.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &environ{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, os.Args[1:])
	stop()
	os.Exit(code)
}

func init() { describe = func(name string) command { return commands[name] } }

// describe looks a command up for its usage text (set in init: the commands' functions
// reach it, so the table cannot be read from a package variable's initialiser).
var describe func(name string) command

func run(ctx context.Context, env *environ, args []string) int {
	name := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			usage(env.stdout)
			return 0
		case "-version", "--version":
			args[0] = "version"
		}
	}
	if len(args) > 0 && !isFlag(args[0]) {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		if len(args) == 0 {
			usage(env.stdout)
			return 0
		}
		if _, ok := commands[args[0]]; !ok {
			fmt.Fprintf(env.stderr, "loopze-certs: unknown command %q\n", args[0])
			usage(env.stderr)
			return 2
		}
		name, args = args[0], []string{"-h"}
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(env.stderr, "loopze-certs: unknown command %q\n", name)
		usage(env.stderr)
		return 2
	}
	if err := cmd.run(ctx, env, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(env.stderr, "loopze-certs %s: %v\n", name, err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

func isFlag(s string) bool { return len(s) > 0 && s[0] == '-' }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: loopze-certs [command] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'loopze-certs help COMMAND' (or 'loopze-certs COMMAND -h') for a command's flags; 'loopze-certs --version' prints the version.")
	fmt.Fprintln(w, "Every configuration flag mirrors a LOOPZE_* variable.")
}

// wantsHelp reports whether args ask for the usage (-h), which then goes to stdout.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// newFlagSet is a subcommand's flag set. Its usage names the command and says what it
// does; it goes to stdout when asked for with -h, to stderr after a mistake.
func newFlagSet(env *environ, name string, args []string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	out := env.stderr
	if wantsHelp(args) {
		out = env.stdout
	}
	fs.SetOutput(out)
	fs.Usage = func() {
		summary := describe(name).summary
		if summary == "" { // a subcommand's own subcommand (audit verify): its parent's
			summary = describe(strings.Fields(name)[0]).summary
		}
		fmt.Fprintf(out, "usage: loopze-certs %s [flags]\n\n%s\n", name, summary)
		if h := commandHelp[name]; h != "" {
			fmt.Fprintf(out, "\n%s\n", h)
		}
		fmt.Fprintln(out, "\nflags:")
		fs.PrintDefaults()
	}
	return fs
}

func runVersion(_ context.Context, env *environ, _ []string) error {
	fmt.Fprintln(env.stdout, "loopze-certs", version)
	return nil
}
