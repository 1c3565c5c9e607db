package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/loopze/certstore/internal/material"
)

// errProbeFailed makes probe exit 1 after printing its report.
var errProbeFailed = errors.New("the TLS connection did not pass")

// maxProbeTimeout bounds --timeout: a probe is an operator waiting at a terminal.
const maxProbeTimeout = 2 * time.Minute

// probeReport is what probe prints.
type probeReport struct {
	Address    string      `json:"address"`
	ServerName string      `json:"serverName"`
	Connected  bool        `json:"connected"`
	Error      string      `json:"error,omitempty"`
	Protocol   string      `json:"protocol,omitempty"`
	Cipher     string      `json:"cipher,omitempty"`
	PeerChain  []probeCert `json:"peerChain,omitempty"`
	Verified   bool        `json:"verified"`
	VerifyErr  string      `json:"verifyError,omitempty"`
	// ClientCertRequested says whether the server asked for a client certificate;
	// ClientCert is the one presented, if any.
	ClientCertRequested bool       `json:"clientCertRequested"`
	ClientCert          *probeCert `json:"clientCert,omitempty"`
	// Refused is the server's alert after the handshake, when it refused the client
	// certificate (TLS 1.3 says so only then).
	Refused string `json:"refusedByServer,omitempty"`
}

type probeCert struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	FingerprintSHA256 string    `json:"fingerprintSha256"`
	NotAfter          time.Time `json:"notAfter"`
}

func certOf(c *x509.Certificate) probeCert {
	return probeCert{Subject: c.Subject.String(), Issuer: c.Issuer.String(), FingerprintSHA256: material.Fingerprint(c), NotAfter: c.NotAfter.UTC()}
}

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
	rep := probe(ctx, addr, host, cfg, timeout)
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

// probe dials addr with cfg. Verification runs in VerifyConnection with the node's own
// roots and server name, so a failure is reported with the chain that caused it instead
// of ending the handshake unseen.
func probe(ctx context.Context, addr, host string, cfg *tls.Config, timeout time.Duration) probeReport {
	rep := probeReport{Address: addr, ServerName: cfg.ServerName}
	if rep.ServerName == "" {
		rep.ServerName = host
	}
	c := cfg.Clone()
	c.ServerName = rep.ServerName
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			rep.VerifyErr = "the server sent no certificate"
			return nil
		}
		opts := x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: rep.ServerName, Intermediates: x509.NewCertPool()}
		for _, ic := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(ic)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			rep.VerifyErr = err.Error()
		} else {
			rep.Verified = true
		}
		return nil
	}
	if get := cfg.GetClientCertificate; get != nil {
		c.GetClientCertificate = func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			rep.ClientCertRequested = true
			cert, err := get(info)
			if err == nil && cert != nil && cert.Leaf != nil {
				pc := certOf(cert.Leaf)
				rep.ClientCert = &pc
			}
			return cert, err
		}
	} else {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			rep.ClientCertRequested = true
			return &tls.Certificate{}, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: c}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	defer nc.Close()
	conn := nc.(*tls.Conn)
	rep.Connected = true
	cs := conn.ConnectionState()
	rep.Protocol, rep.Cipher = tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite)
	for _, pc := range cs.PeerCertificates {
		rep.PeerChain = append(rep.PeerChain, certOf(pc))
	}
	// Under TLS 1.3 a server that refuses the client certificate says so only after the
	// handshake: a short read shows its alert. Silence (a timeout) means it accepted.
	_ = conn.SetReadDeadline(time.Now().Add(min(timeout, 500*time.Millisecond)))
	var alert tls.AlertError
	if _, err := conn.Read(make([]byte, 1)); errors.As(err, &alert) {
		rep.Refused = err.Error()
	}
	return rep
}

func printProbe(env *environ, r probeReport) {
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
