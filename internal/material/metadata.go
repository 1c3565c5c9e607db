package material

import (
	"crypto"
	"crypto/dsa" //lint:ignore SA1019 only to name DSA keys found in old CA bundles
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
)

// metadataOf derives the metadata of certs, leaf first. certs is never empty here: Inspect
// refuses material without a certificate.
func metadataOf(certs []*x509.Certificate, hasKey bool) Metadata {
	leaf := certs[0]
	dns := make([]string, len(leaf.DNSNames))
	copy(dns, leaf.DNSNames)
	return Metadata{
		FingerprintSHA256: Fingerprint(leaf),
		Subject:           leaf.Subject.String(),
		Issuer:            leaf.Issuer.String(),
		SerialNumber:      serialHex(leaf),
		NotBefore:         leaf.NotBefore.UTC(),
		NotAfter:          leaf.NotAfter.UTC(),
		DNSNames:          dns,
		CertCount:         len(certs),
		KeyAlgorithm:      keyAlgorithm(leaf.PublicKey),
		HasPrivateKey:     hasKey,
	}
}

// Fingerprint returns the SHA-256 fingerprint of c's DER encoding as
// `openssl x509 -noout -fingerprint -sha256` prints it: uppercase hex, colon separated.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return colonHex(sum[:])
}

func serialHex(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	b := c.SerialNumber.Bytes()
	if len(b) == 0 {
		b = []byte{0}
	}
	s := colonHex(b)
	if c.SerialNumber.Sign() < 0 {
		s = "-" + s
	}
	return s
}

func colonHex(b []byte) string {
	const digits = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(b) * 3)
	for i, v := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteByte(digits[v>>4])
		sb.WriteByte(digits[v&0x0f])
	}
	return sb.String()
}

// keyAlgorithm names a public key the way the store shows it: "RSA-2048", "ECDSA-P256",
// "Ed25519".
func keyAlgorithm(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k.Curve == nil {
			return "ECDSA"
		}
		return "ECDSA-" + strings.ReplaceAll(k.Curve.Params().Name, "-", "")
	case ed25519.PublicKey:
		return "Ed25519"
	case *dsa.PublicKey:
		return fmt.Sprintf("DSA-%d", k.P.BitLen())
	}
	return "unknown"
}
