package material_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

var fingerprintRE = regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`)

func TestKind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		k           material.Kind
		valid, pair bool
	}{
		{material.CABundle, true, false},
		{material.ClientPair, true, true},
		{material.ServerPair, true, true},
		{"", false, false},
		{"CA-Bundle", false, false},
	} {
		require.Equal(t, tc.valid, tc.k.Valid(), tc.k)
		require.Equal(t, tc.pair, tc.k.IsPair(), tc.k)
	}
}

func TestInspectValidMaterial(t *testing.T) {
	t.Parallel()
	root, inter, leaf := mt.NewChain(t, mt.Options{CommonName: "edge", DNSNames: []string{"edge.example.com"}})
	san := []string{"test.example.com"}
	rsa := mt.NewSelfSigned(t, mt.Options{Key: mt.RSA2048, DNSNames: san})
	p256 := mt.NewSelfSigned(t, mt.Options{Key: mt.ECDSAP256, DNSNames: san})
	p384 := mt.NewSelfSigned(t, mt.Options{Key: mt.ECDSAP384, DNSNames: san})
	ed := mt.NewSelfSigned(t, mt.Options{Key: mt.Ed25519, DNSNames: san})

	tests := []struct {
		name      string
		kind      material.Kind
		cert, key []byte
		count     int
		alg       string
	}{
		{"rsa pkcs1", material.ClientPair, rsa.CertPEM(), rsa.KeyPEMAs(t, mt.PKCS1), 1, "RSA-2048"},
		{"rsa pkcs8", material.ServerPair, rsa.CertPEM(), rsa.KeyPEMAs(t, mt.PKCS8), 1, "RSA-2048"},
		{"p256 sec1", material.ClientPair, p256.CertPEM(), p256.KeyPEMAs(t, mt.SEC1), 1, "ECDSA-P256"},
		{"p256 pkcs8", material.ServerPair, p256.CertPEM(), p256.KeyPEM(), 1, "ECDSA-P256"},
		{"p384 sec1", material.ServerPair, p384.CertPEM(), p384.KeyPEMAs(t, mt.SEC1), 1, "ECDSA-P384"},
		{"ed25519 pkcs8", material.ClientPair, ed.CertPEM(), ed.KeyPEM(), 1, "Ed25519"},
		{"leaf and intermediate", material.ServerPair, leaf.ChainPEM(), leaf.KeyPEM(), 2, "ECDSA-P256"},
		{"full chain with root", material.ServerPair, mt.Bundle(leaf, inter, root), leaf.KeyPEM(), 3, "ECDSA-P256"},
		{"ca bundle", material.CABundle, mt.Bundle(root, inter), nil, 2, "ECDSA-P256"},
		{"explanatory text and CRLF", material.ServerPair,
			append([]byte("subject=CN = test\r\nissuer=CN = test\r\n"), bytes.ReplaceAll(p256.CertPEM(), []byte("\n"), []byte("\r\n"))...),
			append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), p256.KeyPEMAs(t, mt.SEC1)...),
			1, "ECDSA-P256"},
		{"mislabelled key", material.ClientPair, p256.CertPEM(),
			bytes.ReplaceAll(p256.KeyPEM(), []byte("PRIVATE KEY"), []byte("RSA PRIVATE KEY")), 1, "ECDSA-P256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, errs := material.Inspect(tc.kind, tc.cert, tc.key, material.PEMFields, time.Now())
			require.Empty(t, errs)
			require.NotNil(t, m)
			require.Empty(t, m.Warnings)
			md := m.Metadata
			require.Equal(t, tc.count, md.CertCount)
			require.Len(t, m.Certs, tc.count)
			require.Equal(t, tc.alg, md.KeyAlgorithm)
			require.Equal(t, tc.kind.IsPair(), md.HasPrivateKey)
			require.Equal(t, tc.kind.IsPair(), m.Key != nil)
			require.NotNil(t, md.DNSNames)
			require.Regexp(t, fingerprintRE, md.FingerprintSHA256)
			require.Equal(t, m.Certs[0].Subject.String(), md.Subject)
			if tc.kind.IsPair() {
				c, err := m.TLSCertificate()
				require.NoError(t, err)
				require.Len(t, c.Certificate, tc.count)
				require.Same(t, m.Certs[0], c.Leaf)
			} else {
				_, err := m.TLSCertificate()
				require.ErrorIs(t, err, material.ErrNoPrivateKey)
			}
		})
	}
}

func TestInspectMetadata(t *testing.T) {
	t.Parallel()
	nb := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	root := mt.NewCA(t, mt.Options{CommonName: "Root"})
	leaf := root.Issue(t, mt.Options{
		CommonName: "edge", DNSNames: []string{"a.example.com", "b.example.com"},
		Serial: big.NewInt(0x8F01), NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour),
	})
	m, errs := material.Inspect(material.ClientPair, leaf.ChainPEM(), leaf.KeyPEM(), material.Fields{}, nb.Add(time.Hour))
	require.Empty(t, errs)
	md := m.Metadata
	require.Equal(t, "8F:01", md.SerialNumber)
	require.Equal(t, "CN=edge,O=LOOPZE Test", md.Subject)
	require.Equal(t, "CN=Root,O=LOOPZE Test", md.Issuer)
	require.Equal(t, []string{"a.example.com", "b.example.com"}, md.DNSNames)
	require.Equal(t, time.UTC, md.NotBefore.Location())
	require.True(t, md.NotBefore.Equal(nb))
	require.True(t, md.NotAfter.Equal(nb.Add(90*24*time.Hour)))
	require.Equal(t, material.Fingerprint(leaf.Cert), md.FingerprintSHA256)

	// A leaf without SANs still reports an empty, non-nil list (JSON [] rather than null).
	m, errs = material.Inspect(material.CABundle, root.CertPEM(), nil, material.Fields{}, time.Now())
	require.Empty(t, errs)
	require.NotNil(t, m.Metadata.DNSNames)
	require.Empty(t, m.Metadata.DNSNames)
	require.Nil(t, m.Key)
	require.False(t, m.Metadata.HasPrivateKey)
}

func TestInspectErrors(t *testing.T) {
	t.Parallel()
	leaf := mt.NewSelfSigned(t, mt.Options{})
	other := mt.NewSelfSigned(t, mt.Options{})
	rsaLeaf := mt.NewSelfSigned(t, mt.Options{Key: mt.RSA2048})
	root := mt.NewCA(t, mt.Options{})
	cert, key := leaf.CertPEM(), leaf.KeyPEM()

	legacyEncrypted := pem.EncodeToMemory(&pem.Block{
		Type:    "RSA PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"},
		Bytes:   bytes.Repeat([]byte{7}, 64),
	})
	pkcs8Encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: bytes.Repeat([]byte{7}, 64)})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER at all")})
	badKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not DER at all")})
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}})
	pubDER, err := x509.MarshalPKIXPublicKey(leaf.Key.Public())
	require.NoError(t, err)
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	truncated := cert[:len(cert)/2]
	badBase64 := []byte("-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n")
	huge := append(bytes.Repeat([]byte("# padding\n"), material.MaxSize/10), cert...)

	tests := []struct {
		name      string
		kind      material.Kind
		cert, key []byte
		fields    material.Fields
		want      []want
	}{
		{"empty cert", material.CABundle, nil, nil, material.PEMFields,
			[]want{{"certPem", "no certificate given"}}},
		{"garbage", material.CABundle, []byte("hello, this is not a certificate"), nil, material.PEMFields,
			[]want{{"certPem", "no PEM block found"}}},
		{"trailing garbage", material.CABundle, append(root.CertPEM(), "garbage"...), nil, material.PEMFields,
			[]want{{"certPem", "data after the last PEM block is not PEM"}}},
		{"truncated block", material.CABundle, truncated, nil, material.PEMFields,
			[]want{{"certPem", "PEM block 1 has no END line"}}},
		{"truncated block before a good one", material.CABundle, append(append([]byte{}, truncated...), root.CertPEM()...), nil, material.PEMFields,
			[]want{{"certPem", "PEM block 1 has no END line"}}},
		{"bad base64", material.CABundle, badBase64, nil, material.PEMFields,
			[]want{{"certPem", "PEM block 1 is malformed"}}},
		{"key in certPem", material.ClientPair, append(append([]byte{}, cert...), key...), key, material.PEMFields,
			[]want{{"certPem", "PEM block 2 is a private key, not a certificate: the key belongs in keyPem"}}},
		{"only a key in certPem", material.CABundle, key, nil, material.PEMFields,
			[]want{{"certPem", "PEM block 1 is a private key"}}},
		{"csr in certPem", material.CABundle, csr, nil, material.PEMFields,
			[]want{{"certPem", `PEM block 1 is not a CERTIFICATE`}}},
		{"certificate does not parse", material.CABundle, badCert, nil, material.PEMFields,
			[]want{{"certPem", "certificate in PEM block 1 does not parse"}}},
		{"key does not match", material.ServerPair, cert, other.KeyPEM(), material.PEMFields,
			[]want{{"keyPem", "private key does not match the certificate's public key"}}},
		{"key of another algorithm", material.ServerPair, cert, rsaLeaf.KeyPEM(), material.PEMFields,
			[]want{{"keyPem", "certificate: ECDSA-P256, private key: RSA-2048"}}},
		{"missing key", material.ClientPair, cert, nil, material.PEMFields,
			[]want{{"keyPem", "a client-pair needs a private key"}}},
		{"blank key", material.ServerPair, cert, []byte(" \n"), material.PEMFields,
			[]want{{"keyPem", "a server-pair needs a private key"}}},
		{"key for a ca-bundle", material.CABundle, root.CertPEM(), root.KeyPEM(), material.PEMFields,
			[]want{{"keyPem", "a ca-bundle carries no private key"}}},
		{"legacy encrypted key", material.ClientPair, cert, legacyEncrypted, material.PEMFields,
			[]want{{"keyPem", "encrypted keys are not supported, decrypt it first"}}},
		{"pkcs8 encrypted key", material.ClientPair, cert, pkcs8Encrypted, material.PEMFields,
			[]want{{"keyPem", "encrypted keys are not supported, decrypt it first"}}},
		{"two keys", material.ClientPair, cert, append(append([]byte{}, key...), other.KeyPEM()...), material.PEMFields,
			[]want{{"keyPem", "keyPem holds 2 private keys: exactly one is allowed"}}},
		{"key does not parse", material.ClientPair, cert, badKey, material.PEMFields,
			[]want{{"keyPem", "does not parse as PKCS#1, PKCS#8 or SEC1"}}},
		{"key garbage", material.ClientPair, cert, []byte("secret-looking garbage"), material.PEMFields,
			[]want{{"keyPem", "no PEM block found"}}},
		{"certificate in keyPem", material.ClientPair, cert, append(append([]byte{}, key...), cert...), material.PEMFields,
			[]want{{"keyPem", "PEM block 2 is a certificate"}}},
		{"public key in keyPem", material.ClientPair, cert, pub, material.PEMFields,
			[]want{{"keyPem", "is a public key: a private key is needed"}}},
		{"only a certificate in keyPem", material.ClientPair, cert, cert, material.PEMFields,
			[]want{{"keyPem", "PEM block 1 is a certificate"}}},
		{"cert over MaxSize", material.CABundle, huge, nil, material.PEMFields,
			[]want{{"certPem", "over the 256 KiB limit"}}},
		{"key over MaxSize", material.ClientPair, cert, append(bytes.Repeat([]byte("\n"), material.MaxSize), key...), material.PEMFields,
			[]want{{"keyPem", "over the 256 KiB limit"}}},
		{"unknown kind", "root-ca", root.CertPEM(), nil, material.PEMFields,
			[]want{{"type", `unknown type "root-ca"`}}},
		{"swapped fields report both", material.ClientPair, key, cert, material.PEMFields,
			[]want{{"certPem", "PEM block 1 is a private key"}, {"keyPem", "PEM block 1 is a certificate"}}},
		{"every problem at once", material.ServerPair, []byte("junk"), legacyEncrypted, material.PEMFields,
			[]want{{"certPem", "no PEM block found"}, {"keyPem", "encrypted"}}},
		{"caller's field names", material.ClientPair, key, nil,
			material.Fields{Cert: "tls.clientCertFile", Key: "tls.clientKeyFile"},
			[]want{{"tls.clientCertFile", "the key belongs in tls.clientKeyFile"}, {"tls.clientKeyFile", "needs a private key"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, errs := material.Inspect(tc.kind, tc.cert, tc.key, tc.fields, time.Now())
			require.Nil(t, m)
			requireIssues(t, errs, tc.want)
			requireClean(t, errs, key, other.KeyPEM(), rsaLeaf.KeyPEM(), root.KeyPEM(), legacyEncrypted, pkcs8Encrypted)
		})
	}
}

func TestInspectWarnings(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root, inter, leaf := mt.NewChain(t, mt.Options{DNSNames: []string{"test.example.com"}})
	otherRoot := mt.NewCA(t, mt.Options{CommonName: "Other Root"})
	expired := mt.NewSelfSigned(t, mt.Options{CommonName: "old", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	future := mt.NewSelfSigned(t, mt.Options{CommonName: "new", DNSNames: []string{"new.example.com"}, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	weak := mt.NewSelfSigned(t, mt.Options{Key: mt.RSA1024})
	expiredCA := mt.NewCA(t, mt.Options{CommonName: "Old CA", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})

	tests := []struct {
		name      string
		kind      material.Kind
		cert, key []byte
		want      []want
	}{
		{"expired", material.ClientPair, expired.CertPEM(), expired.KeyPEM(),
			[]want{{"certPem", "certificate 1 (CN=old,O=LOOPZE Test) expired on " + expired.Cert.NotAfter.UTC().Format(time.RFC3339)}}},
		{"not yet valid", material.ServerPair, future.CertPEM(), future.KeyPEM(),
			[]want{{"certPem", "is not valid before " + future.Cert.NotBefore.UTC().Format(time.RFC3339)}}},
		{"chain does not link", material.ServerPair, mt.Bundle(leaf, otherRoot), leaf.KeyPEM(),
			[]want{{"certPem", "the chain does not link: the issuer of certificate 1, CN=Test Intermediate CA,O=LOOPZE Test, is missing (certificate 2 is CN=Other Root"}}},
		{"chain out of order", material.ServerPair, mt.Bundle(leaf, root, inter), leaf.KeyPEM(),
			[]want{{"certPem", "certificate 1 is not signed by certificate 2; its issuer is certificate 3 (out of order)"}}},
		{"chain breaks further up", material.ServerPair, mt.Bundle(leaf, inter, otherRoot), leaf.KeyPEM(),
			[]want{{"certPem", "the issuer of certificate 2, CN=Test Root CA,O=LOOPZE Test, is missing"}}},
		{"non-CA in bundle", material.CABundle, mt.Bundle(root, leaf), nil,
			[]want{{"certPem", "certificate 2 (CN=test,O=LOOPZE Test) is not a CA certificate"}}},
		{"weak RSA", material.ClientPair, weak.CertPEM(), weak.KeyPEM(),
			[]want{{"certPem", "weak RSA-1024 key"}}},
		{"expired CA in bundle", material.CABundle, mt.Bundle(root, expiredCA), nil,
			[]want{{"certPem", "certificate 2 (CN=Old CA,O=LOOPZE Test) expired on"}}},
		{"bundle order is not a chain", material.CABundle, mt.Bundle(otherRoot, root, inter), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, errs := material.Inspect(tc.kind, tc.cert, tc.key, material.PEMFields, now)
			require.Empty(t, errs)
			require.NotNil(t, m)
			requireIssues(t, m.Warnings, tc.want)
			requireClean(t, m.Warnings, tc.cert, tc.key)
		})
	}
}

// TestTLSHandshake proves the material works where it is used: a server presenting a pair
// and a client verifying it against a bundle.
func TestTLSHandshake(t *testing.T) {
	t.Parallel()
	root, _, leaf := mt.NewChain(t, mt.Options{DNSNames: []string{"edge.example.com"}})
	srv, errs := material.Inspect(material.ServerPair, leaf.ChainPEM(), leaf.KeyPEM(), material.Fields{}, time.Now())
	require.Empty(t, errs)
	bundle, errs := material.Inspect(material.CABundle, root.CertPEM(), nil, material.Fields{}, time.Now())
	require.Empty(t, errs)
	cert, err := srv.TLSCertificate()
	require.NoError(t, err)

	// Closing the raw pipe ends, not the TLS conns: a close_notify on a synchronous pipe
	// nobody reads would block until tls.Conn's close timeout.
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	done := make(chan error, 1)
	go func() {
		done <- tls.Server(a, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}).Handshake()
	}()
	c := tls.Client(b, &tls.Config{RootCAs: bundle.CertPool(), ServerName: "edge.example.com", MinVersion: tls.VersionTLS12})
	require.NoError(t, c.Handshake())
	require.NoError(t, <-done)
}

func x509VerifyOptions(pool *x509.CertPool) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: pool, DNSName: "x.example.com", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
}
