package material_test

import (
	"bytes"
	"math/big"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

// TestMetadataMatchesOpenSSL holds the fingerprint and serial to what operators compare
// them with: `openssl x509 -noout -fingerprint -sha256 -serial`.
func TestMetadataMatchesOpenSSL(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	for _, serial := range []*big.Int{big.NewInt(1), big.NewInt(0x8F01), new(big.Int).Lsh(big.NewInt(0xAB), 120)} {
		c := mt.NewSelfSigned(t, mt.Options{Serial: serial})
		path := mt.WriteFile(t, t.TempDir(), "cert.pem", c.CertPEM())
		out, err := exec.Command(openssl, "x509", "-in", filepath.Clean(path), "-noout", "-fingerprint", "-sha256", "-serial").Output()
		require.NoError(t, err)

		m, errs := material.Inspect(material.CABundle, c.CertPEM(), nil, material.Fields{}, time.Now())
		require.Empty(t, errs)
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		require.Len(t, lines, 2)
		require.Equal(t, "sha256 Fingerprint="+m.Metadata.FingerprintSHA256, lines[0])
		require.Equal(t, "serial="+strings.ReplaceAll(m.Metadata.SerialNumber, ":", ""), lines[1])
	}
}

func TestKeyAlgorithm(t *testing.T) {
	t.Parallel()
	for _, k := range []mt.KeyType{mt.RSA1024, mt.RSA2048, mt.ECDSAP256, mt.ECDSAP384, mt.Ed25519} {
		c := mt.NewSelfSigned(t, mt.Options{Key: k})
		m, errs := material.Inspect(material.ClientPair, c.CertPEM(), c.KeyPEM(), material.Fields{}, time.Now())
		require.Empty(t, errs)
		require.Equal(t, string(k), m.Metadata.KeyAlgorithm)
	}
}

func TestCertPoolHoldsEveryCertificate(t *testing.T) {
	t.Parallel()
	a, b := mt.NewCA(t, mt.Options{CommonName: "A"}), mt.NewCA(t, mt.Options{CommonName: "B"})
	m, errs := material.Inspect(material.CABundle, bytes.Join([][]byte{a.CertPEM(), b.CertPEM()}, []byte("\n# comment between CAs\n")), nil, material.Fields{}, time.Now())
	require.Empty(t, errs)
	pool := m.CertPool()
	for _, ca := range []*mt.Cert{a, b} {
		leaf := ca.Issue(t, mt.Options{DNSNames: []string{"x.example.com"}})
		_, err := leaf.Cert.Verify(x509VerifyOptions(pool))
		require.NoError(t, err, ca.Cert.Subject.CommonName)
	}
}
