package material

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/loopze/certstore/internal/secret"
)

// Inspect validates PEM material for an entry of kind k. It returns every problem at once,
// each naming its field (errs non-empty means invalid; m is nil then). now is used for the
// validity warnings, which never make material invalid: test setups use expired
// certificates on purpose.
//
// The certificate field holds the leaf first, then its chain; a ca-bundle may hold many
// CAs. The key field holds exactly one unencrypted private key (PKCS#1, PKCS#8 or SEC1;
// RSA, ECDSA or Ed25519) for a pair, and nothing for a ca-bundle.
func Inspect(k Kind, cert, key secret.PEM, f Fields, now time.Time) (m *Material, errs []Issue) {
	return inspect(k, cert, key, f, now, nil)
}

func inspect(k Kind, cert, key secret.PEM, f Fields, now time.Time, sigs *sigChecks) (m *Material, errs []Issue) {
	f = f.withDefaults()
	in := inspection{f: f}
	if !k.Valid() {
		in.fail(FieldType, "unknown type %s: want ca-bundle, client-pair or server-pair", blockLabel(string(k)))
	}
	certs := in.parseCerts(cert)
	var priv crypto.Signer
	switch {
	case k.IsPair():
		if len(bytes.TrimSpace(key)) == 0 {
			in.fail(f.Key, "a %s needs a private key", k)
		} else {
			priv = in.parseKey(key)
		}
	case k == CABundle:
		if len(bytes.TrimSpace(key)) > 0 {
			in.fail(f.Key, "a ca-bundle carries no private key: leave %s empty", f.Key)
		}
	}
	if priv != nil && len(certs) > 0 {
		if !publicKeysEqual(certs[0].PublicKey, priv.Public()) {
			in.fail(f.Key, "private key does not match the certificate's public key (certificate: %s, private key: %s)",
				keyAlgorithm(certs[0].PublicKey), keyAlgorithm(priv.Public()))
		}
	}
	if len(in.errs) > 0 {
		return nil, in.errs
	}
	m = &Material{
		Metadata: metadataOf(certs, priv != nil),
		Certs:    certs,
		Warnings: warnings(k, certs, f.Cert, now, sigs),
	}
	if priv != nil {
		m.Key = priv
	}
	return m, nil
}

// inspection collects the issues of one Inspect call.
type inspection struct {
	f    Fields
	errs []Issue
}

func (in *inspection) fail(field, format string, args ...any) {
	in.errs = append(in.errs, Issue{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (in *inspection) failed(field string) bool {
	for _, e := range in.errs {
		if e.Field == field {
			return true
		}
	}
	return false
}

// checkSize reports data over MaxSize, which is then not parsed at all.
func (in *inspection) checkSize(field string, data []byte) bool {
	if len(data) > MaxSize {
		in.fail(field, "%s is %d bytes, over the %d KiB limit", field, len(data), MaxSize>>10)
		return false
	}
	return true
}

func (in *inspection) parseCerts(data []byte) []*x509.Certificate {
	field := in.f.Cert
	if !in.checkSize(field, data) {
		return nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		in.fail(field, "no certificate given")
		return nil
	}
	blocks, problems := scanPEM(data)
	for _, p := range problems {
		in.fail(field, "%s", p)
	}
	var certs []*x509.Certificate
	for _, b := range blocks {
		switch {
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				in.fail(field, "certificate in PEM block %d does not parse: %s", b.n, errText(err))
				continue
			}
			certs = append(certs, c)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			in.fail(field, "PEM block %d is a private key, not a certificate: the key belongs in %s", b.n, in.f.Key)
		default:
			// The label is not quoted back: for a file it would tell the caller what the
			// server holds at a path it may not read.
			in.fail(field, "PEM block %d is not a CERTIFICATE", b.n)
		}
	}
	if len(certs) == 0 && !in.failed(field) {
		in.fail(field, "no certificate found")
	}
	return certs
}

func (in *inspection) parseKey(data []byte) crypto.Signer {
	field := in.f.Key
	if !in.checkSize(field, data) {
		return nil
	}
	before := len(in.errs)
	blocks, problems := scanPEM(data)
	for _, p := range problems {
		in.fail(field, "%s", p)
	}
	var (
		keys  []crypto.Signer
		nKeys int
	)
	for _, b := range blocks {
		switch {
		case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
			nKeys++
			in.fail(field, "private key in PEM block %d is encrypted: encrypted keys are not supported, decrypt it first (openssl pkey -in key.pem -out plain.pem)", b.n)
		case b.Type == "EC PARAMETERS":
			// `openssl ecparam -genkey` writes the curve before the key; the key names it too.
		case b.Type == "CERTIFICATE":
			in.fail(field, "PEM block %d is a certificate: %s must hold only the private key, certificates belong in %s", b.n, field, in.f.Cert)
		case strings.Contains(b.Type, "PUBLIC KEY"):
			in.fail(field, "PEM block %d is a public key: a private key is needed", b.n)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			nKeys++
			k, msg := parsePrivateKey(b.Block)
			if msg != "" {
				in.fail(field, "private key in PEM block %d %s", b.n, msg)
				continue
			}
			keys = append(keys, k)
		default:
			in.fail(field, "PEM block %d is not a private key", b.n)
		}
	}
	switch {
	case nKeys > 1:
		in.fail(field, "%s holds %d private keys: exactly one is allowed", field, nKeys)
	case nKeys == 0 && len(in.errs) == before:
		in.fail(field, "no private key found")
	}
	if nKeys == 1 && len(keys) == 1 && len(in.errs) == before {
		return keys[0]
	}
	return nil
}

// parsePrivateKey parses an unencrypted key. Like crypto/tls it tries every encoding whatever
// the label says, because mislabelled keys are common and the label adds no security.
// The returned message completes "private key in PEM block N ..." and is empty on success.
func parsePrivateKey(b *pem.Block) (crypto.Signer, string) {
	if b.Type == "OPENSSH PRIVATE KEY" {
		return nil, "is in OpenSSH format, which is not supported: convert it to PKCS#8 (ssh-keygen -p -m PKCS8 -f key)"
	}
	return parseKeyDER(b.Bytes)
}

// parseKeyDER parses an unencrypted PKCS#1, PKCS#8 or SEC1 key; the message completes
// "private key ..." and is empty on success.
func parseKeyDER(der []byte) (crypto.Signer, string) {
	var key any
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(der); err == nil {
		key = k
	} else {
		return nil, "does not parse as PKCS#1, PKCS#8 or SEC1"
	}
	return checkKeyType(key)
}

// checkKeyType accepts the key algorithms TLS material may use.
func checkKeyType(key any) (crypto.Signer, string) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, ""
	case *ecdsa.PrivateKey:
		return k, ""
	case ed25519.PrivateKey:
		return k, ""
	}
	return nil, "uses an unsupported algorithm: RSA, ECDSA or Ed25519 keys are supported"
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// errText bounds a library error for an issue message. crypto/x509 errors describe
// structure, not bytes, but a length cap and a PEM check keep that true whatever they say.
func errText(err error) string {
	s := err.Error()
	if secret.LooksLikePEM(s) {
		return "malformed data"
	}
	const limit = 160
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// warnings lists what is wrong with valid material without making it invalid. Certificates
// are numbered from 1 in the order given; the leaf is certificate 1.
func warnings(k Kind, certs []*x509.Certificate, field string, now time.Time, sigs *sigChecks) []Issue {
	var ws []Issue
	warn := func(format string, args ...any) {
		ws = append(ws, Issue{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	for i, c := range certs {
		name := certName(i, c)
		switch {
		case now.After(c.NotAfter):
			warn("%s expired on %s", name, c.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(c.NotBefore):
			warn("%s is not valid before %s", name, c.NotBefore.UTC().Format(time.RFC3339))
		}
		if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && pub.N.BitLen() < 2048 {
			warn("%s has a weak %s key: use at least 2048 bits", name, keyAlgorithm(pub))
		}
		if k == CABundle && !c.IsCA {
			warn("%s is not a CA certificate (CA:FALSE): it can only pin a peer presenting that exact certificate", name)
		}
	}
	if k.IsPair() {
		// Only the first break is reported: everything after it is unverifiable anyway.
		for i := 0; i+1 < len(certs); i++ {
			if err := sigs.check(certs[i], certs[i+1]); err != nil {
				at := -1
				for j, c := range certs {
					if j != i && bytes.Equal(certs[i].RawIssuer, c.RawSubject) && sigs.check(certs[i], c) == nil {
						at = j
						break
					}
				}
				switch {
				case at >= 0:
					warn("the chain does not link: certificate %d is not signed by certificate %d; its issuer is certificate %d (out of order)", i+1, i+2, at+1)
				case !bytes.Equal(certs[i].RawIssuer, certs[i+1].RawSubject):
					warn("the chain does not link: the issuer of certificate %d, %s, is missing (certificate %d is %s)",
						i+1, nameText(certs[i].Issuer.String()), i+2, nameText(certs[i+1].Subject.String()))
				default:
					warn("the chain does not link: certificate %d is not signed by certificate %d (%s)", i+1, i+2, errText(err))
				}
				break
			}
		}
	}
	return append(ws, checks(k, certs, field)...)
}

// nameText bounds a distinguished name for a message.
func nameText(s string) string {
	if s == "" {
		return "an empty name"
	}
	const limit = 120
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

func certName(i int, c *x509.Certificate) string {
	s := c.Subject.String()
	if s == "" {
		return fmt.Sprintf("certificate %d", i+1)
	}
	const limit = 120
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return fmt.Sprintf("certificate %d (%s)", i+1, s)
}
