// Package probe opens a real TLS connection with a node's *tls.Config and reports the
// handshake: protocol, cipher, the peer's chain, whether it verifies against the node's own
// roots and server name, the client certificate presented, and a refusal the server sends
// after the handshake. Verification is reported, not enforced, so a failure comes with the
// chain that caused it. `loopze-certs probe` prints it.
package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"

	"github.com/loopze/certstore/internal/material"
)

// Report is what a probe saw.
type Report struct {
	Address    string `json:"address"`
	ServerName string `json:"serverName"`
	Connected  bool   `json:"connected"`
	Error      string `json:"error,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	Cipher     string `json:"cipher,omitempty"`
	PeerChain  []Cert `json:"peerChain,omitempty"`
	Verified   bool   `json:"verified"`
	VerifyErr  string `json:"verifyError,omitempty"`
	// ClientCertRequested says whether the server asked for a client certificate;
	// ClientCert is the one presented, if any.
	ClientCertRequested bool  `json:"clientCertRequested"`
	ClientCert          *Cert `json:"clientCert,omitempty"`
	// Refused is the server's alert after the handshake, when it refused the client
	// certificate (TLS 1.3 says so only then).
	Refused string `json:"refusedByServer,omitempty"`
}

// Cert is a certificate as a report shows it.
type Cert struct {
	Subject           string    `json:"subject"`
	Issuer            string    `json:"issuer"`
	FingerprintSHA256 string    `json:"fingerprintSha256"`
	NotAfter          time.Time `json:"notAfter"`
}

func certOf(c *x509.Certificate) Cert {
	return Cert{Subject: c.Subject.String(), Issuer: c.Issuer.String(), FingerprintSHA256: material.Fingerprint(c), NotAfter: c.NotAfter.UTC()}
}

// Dial dials addr with cfg, for host (the server name when cfg names none), bounded by
// timeout. Verification runs in VerifyConnection with the node's own
// roots and server name, so a failure is reported with the chain that caused it instead
// of ending the handshake unseen.
func Dial(ctx context.Context, addr, host string, cfg *tls.Config, timeout time.Duration) Report {
	rep := Report{Address: addr, ServerName: cfg.ServerName}
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
