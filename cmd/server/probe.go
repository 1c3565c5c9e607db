package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/loopze/certstore/internal/probe"
)

// errProbeFailed makes probe exit 1 after printing its report.
var errProbeFailed = errors.New("the TLS connection did not pass")

// maxProbeTimeout bounds --timeout: a probe is an operator waiting at a terminal.
const maxProbeTimeout = 2 * time.Minute

// runProbe opens a real TLS connection with a node's config and prints the handshake.
func runProbe(ctx context.Context, env *environ, args []string) error {
	var (
		f       nodeFlags
		timeout time.Duration
	)
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	f.register(fs, env)
	fs.DurationVar(&timeout, "timeout", 10*time.Second, "bound on the connection and handshake (at most 2m)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: probe needs exactly one HOST:PORT after the flags", errUsage)
	}
	addr := fs.Arg(0)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %q is not HOST:PORT", errUsage, addr)
	}
	if timeout <= 0 || timeout > maxProbeTimeout {
		return fmt.Errorf("%w: --timeout must be between 0 and %s", errUsage, maxProbeTimeout)
	}
	store, err := f.open()
	if err != nil {
		return err
	}
	defer store.Close()
	cfg, err := store.Config(ctx, f.flow, f.node)
	if err != nil {
		return err
	}
	rep := probe.Dial(ctx, addr, host, cfg, timeout)
	if f.json {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printProbe(env, rep)
	}
	if !rep.Connected || !rep.Verified || rep.Refused != "" {
		return errProbeFailed
	}
	return nil
}

func printProbe(env *environ, r probe.Report) {
	w := env.stdout
	fmt.Fprintf(w, "address          %s (server name %s)\n", r.Address, r.ServerName)
	if !r.Connected {
		fmt.Fprintf(w, "FAILED           %s\n", r.Error)
		return
	}
	fmt.Fprintf(w, "protocol         %s\ncipher           %s\n", r.Protocol, r.Cipher)
	for i, c := range r.PeerChain {
		fmt.Fprintf(w, "peer[%d]          %s (issuer %s)\n                 sha256 %s, notAfter %s\n", i, c.Subject, c.Issuer,
			c.FingerprintSHA256, c.NotAfter.Format(time.RFC3339))
	}
	if r.Verified {
		fmt.Fprintln(w, "verification     passed")
	} else {
		fmt.Fprintf(w, "verification     FAILED: %s\n", r.VerifyErr)
	}
	switch {
	case !r.ClientCertRequested:
		fmt.Fprintln(w, "client cert      not requested by the server")
	case r.ClientCert == nil:
		fmt.Fprintln(w, "client cert      requested, none configured")
	default:
		fmt.Fprintf(w, "client cert      %s (sha256 %s)\n", r.ClientCert.Subject, r.ClientCert.FingerprintSHA256)
	}
	if r.Refused != "" {
		fmt.Fprintf(w, "REFUSED          the server ended the connection: %s\n", r.Refused)
	}
}
