package material

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
)

// checks are the warnings that explain why a peer may refuse valid material: a leaf whose
// extended key usage does not allow its role, a server certificate no hostname can match,
// SHA-1 signatures. (Expiry, weak RSA keys, broken chains and non-CA certificates in a
// bundle are warned about in warnings.)
func checks(k Kind, certs []*x509.Certificate, field string) []Issue {
	var ws []Issue
	warn := func(format string, args ...any) {
		ws = append(ws, Issue{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if len(certs) == 0 {
		return nil
	}
	leaf := certs[0]
	allows := func(u x509.ExtKeyUsage) bool {
		return len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 ||
			slices.Contains(leaf.ExtKeyUsage, u) || slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny)
	}
	switch k {
	case ClientPair:
		if !allows(x509.ExtKeyUsageClientAuth) {
			warn("%s has an extended key usage without clientAuth: TLS servers will refuse it as a client certificate", certName(0, leaf))
		}
	case ServerPair:
		if !allows(x509.ExtKeyUsageServerAuth) {
			warn("%s has an extended key usage without serverAuth: TLS clients will refuse it as a server certificate", certName(0, leaf))
		}
		if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
			warn("%s has no DNS or IP subject alternative name: TLS clients match hostnames against those only, not the CN", certName(0, leaf))
		}
	}
	for i, c := range certs {
		switch c.SignatureAlgorithm {
		case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1:
			// A root's signature on itself is never checked; every other one is.
			if c.IsCA && bytes.Equal(c.RawIssuer, c.RawSubject) {
				continue
			}
			warn("%s is signed with SHA-1, which TLS peers (Go, browsers, OpenSSL at security level 1+) refuse", certName(i, c))
		}
	}
	return ws
}
