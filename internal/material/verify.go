package material

import (
	"crypto/x509"
	"errors"
	"time"
)

// Reasons a pair does not chain to a CA bundle, for clients that branch on them.
const (
	ReasonUnknownAuthority = "unknown-authority"
	ReasonExpired          = "expired"
	ReasonNameConstraints  = "name-constraints"
	ReasonNotCA            = "not-authorized-to-sign"
	ReasonOther            = "other"
)

// Verification says whether a pair's leaf chains to a CA bundle.
type Verification struct {
	// Chains is true when a path from the leaf to a certificate of the bundle verifies.
	Chains bool
	// Path is the subjects from the leaf to the bundle's CA, when it chains.
	Path []string
	// Reason is one of the Reason constants when it does not; Message explains it.
	Reason, Message string
}

// VerifyWith checks, at now, whether pair's leaf chains to a certificate of bundle, through
// the pair's own chain as intermediates. Key usage is not a reason here: checks warns
// about it, and a peer's own policy decides.
func VerifyWith(pair, bundle *Material, now time.Time) Verification {
	if pair == nil || len(pair.Certs) == 0 || bundle == nil {
		return Verification{Reason: ReasonOther, Message: "nothing to verify"}
	}
	inter := x509.NewCertPool()
	for _, c := range pair.Certs[1:] {
		inter.AddCert(c)
	}
	chains, err := pair.Certs[0].Verify(x509.VerifyOptions{
		Roots: bundle.CertPool(), Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil && len(chains) > 0 {
		v := Verification{Chains: true}
		for _, c := range chains[0] {
			v.Path = append(v.Path, nameText(c.Subject.String()))
		}
		return v
	}
	var (
		ua x509.UnknownAuthorityError
		ci x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &ua):
		return Verification{Reason: ReasonUnknownAuthority, Message: "unknown authority: no certificate of the bundle issued " +
			nameText(issuerOfChain(pair).Issuer.String()) + ", directly or through the pair's chain"}
	case errors.As(err, &ci):
		who := "a certificate of the chain"
		if ci.Cert != nil {
			who = nameText(ci.Cert.Subject.String())
		}
		switch ci.Reason {
		case x509.Expired:
			return Verification{Reason: ReasonExpired, Message: who + " is expired or not yet valid at the time of the check"}
		case x509.CANotAuthorizedForThisName, x509.CANotAuthorizedForExtKeyUsage, x509.NameConstraintsWithoutSANs, x509.UnconstrainedName:
			return Verification{Reason: ReasonNameConstraints, Message: "name constraints: " + errText(err)}
		case x509.NotAuthorizedToSign:
			return Verification{Reason: ReasonNotCA, Message: who + " is not a CA and cannot sign certificates"}
		}
	}
	msg := "does not verify"
	if err != nil {
		msg = errText(err)
	}
	return Verification{Reason: ReasonOther, Message: msg}
}

// issuerOfChain is the issuer of the last certificate of the pair's chain: the CA the
// bundle would have to hold.
func issuerOfChain(m *Material) *x509.Certificate {
	return m.Certs[len(m.Certs)-1]
}
