package material_test

import (
	"testing"
	"time"

	"github.com/loopze/certstore/internal/material"
	mt "github.com/loopze/certstore/internal/material/materialtest"
)

var fuzzKinds = []material.Kind{material.CABundle, material.ClientPair, material.ServerPair, "bogus"}

// FuzzInspect feeds arbitrary bytes to Inspect: it must never panic, must return either
// material or issues, and no issue may quote PEM armour.
func FuzzInspect(f *testing.F) {
	root, _, leaf := mt.NewChain(f, mt.Options{DNSNames: []string{"a.example.com"}})
	ed := mt.NewSelfSigned(f, mt.Options{Key: mt.Ed25519})
	chain := leaf.ChainPEM()
	f.Add(chain, leaf.KeyPEM(), uint8(1))
	f.Add(chain, leaf.KeyPEMAs(f, mt.SEC1), uint8(2))
	f.Add(ed.CertPEM(), ed.KeyPEM(), uint8(1))
	f.Add(root.CertPEM(), []byte(nil), uint8(0))
	f.Add(chain[:len(chain)/2], leaf.KeyPEM()[:40], uint8(2))
	f.Add(append(root.CertPEM(), "trailing"...), []byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"), uint8(1))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"), []byte{}, uint8(3))

	now := time.Now()
	f.Fuzz(func(t *testing.T, cert, key []byte, kind uint8) {
		k := fuzzKinds[int(kind)%len(fuzzKinds)]
		m, errs := material.Inspect(k, cert, key, material.PEMFields, now)
		if (m == nil) == (len(errs) == 0) {
			t.Fatalf("want exactly one of material and issues, got %v and %v", m != nil, errs)
		}
		for _, is := range append(errs, warningsOf(m)...) {
			if is.Field == "" || is.Message == "" {
				t.Fatalf("issue without field or message: %q", is)
			}
			if len(is.Message) > 600 {
				t.Fatalf("issue message of %d bytes", len(is.Message))
			}
		}
		requireClean(t, errs)
		if m == nil {
			return
		}
		if m.Metadata.CertCount != len(m.Certs) || len(m.Certs) == 0 || m.Metadata.DNSNames == nil {
			t.Fatalf("inconsistent metadata: %+v", m.Metadata)
		}
		if k.IsPair() {
			if _, err := m.TLSCertificate(); err != nil {
				t.Fatalf("valid pair without TLS certificate: %v", err)
			}
		}
		_ = m.CertPool()
	})
}

func warningsOf(m *material.Material) []material.Issue {
	if m == nil {
		return nil
	}
	return m.Warnings
}
