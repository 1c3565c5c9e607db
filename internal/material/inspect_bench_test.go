package material_test

import (
	"testing"
	"time"

	"github.com/loopze/certstore/internal/material"
	"github.com/loopze/certstore/internal/material/materialtest"
	"github.com/loopze/certstore/internal/secret"
)

// BenchmarkInspect measures the PEM parse and validation every save and every
// BuildTLSConfig of inline material pays: decode, parse the chain, parse the key, check
// that they match, derive metadata.
func BenchmarkInspect(b *testing.B) {
	root, _, leaf := materialtest.NewChain(b, materialtest.Options{})
	rsaLeaf := root.Issue(b, materialtest.Options{Key: materialtest.RSA2048})
	bundle := append(append([]byte{}, root.CertPEM()...), leaf.ChainPEM()...)
	cases := []struct {
		name      string
		kind      material.Kind
		cert, key []byte
	}{
		{"ecdsa-p256-client-pair-chain3", material.ClientPair, leaf.ChainPEM(), leaf.KeyPEM()},
		{"rsa2048-client-pair", material.ClientPair, rsaLeaf.ChainPEM(), rsaLeaf.KeyPEM()},
		{"ca-bundle-4-certs", material.CABundle, bundle, nil},
	}
	now := time.Now()
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			cert, key := secret.PEM(tc.cert), secret.PEM(tc.key)
			b.SetBytes(int64(len(tc.cert) + len(tc.key)))
			b.ReportAllocs()
			for b.Loop() {
				if _, errs := material.Inspect(tc.kind, cert, key, material.PEMFields, now); len(errs) > 0 {
					b.Fatal(errs)
				}
			}
		})
	}
}

// BenchmarkTLSCertificate measures turning inspected material into the tls.Certificate a
// connection presents.
func BenchmarkTLSCertificate(b *testing.B) {
	_, _, leaf := materialtest.NewChain(b, materialtest.Options{})
	m, errs := material.Inspect(material.ClientPair, leaf.ChainPEM(), leaf.KeyPEM(), material.PEMFields, time.Now())
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.TLSCertificate(); err != nil {
			b.Fatal(err)
		}
	}
}
