// Package materialtest makes certificates and keys for tests: CAs, intermediates, leaves,
// expired or not-yet-valid ones, in every key algorithm and PEM encoding the store accepts.
// It is imported only from tests, and by the bench for its scrypt-encrypted key.
//
//	ca := materialtest.NewCA(t, materialtest.Options{})
//	srv := ca.Issue(t, materialtest.Options{DNSNames: []string{"localhost"}})
//	certPEM, keyPEM := srv.ChainPEM(), srv.KeyPEM()
package materialtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// KeyType is the algorithm of a generated key.
type KeyType string

// The key types tests can ask for.
const (
	ECDSAP256 KeyType = "ECDSA-P256"
	ECDSAP384 KeyType = "ECDSA-P384"
	RSA1024   KeyType = "RSA-1024"
	RSA2048   KeyType = "RSA-2048"
	Ed25519   KeyType = "Ed25519"
)

// KeyFormat is a PEM encoding of a private key.
type KeyFormat string

// The private key encodings.
const (
	PKCS1 KeyFormat = "RSA PRIVATE KEY" // RSA only
	PKCS8 KeyFormat = "PRIVATE KEY"
	SEC1  KeyFormat = "EC PRIVATE KEY" // ECDSA only
)

// Options shape a generated certificate. The zero value is a valid ECDSA P-256 certificate
// for CN=test, valid from an hour ago for a day, usable for server and client auth.
type Options struct {
	// Key is the algorithm of the certificate's key; default ECDSAP256.
	Key KeyType
	// CommonName is the subject CN; default "test".
	CommonName string
	// DNSNames and IPAddresses are the subject alternative names.
	DNSNames    []string
	IPAddresses []net.IP
	// NotBefore and NotAfter bound validity; defaults now-1h and now+24h. Set them in the
	// past or future for expired or not-yet-valid certificates.
	NotBefore, NotAfter time.Time
	// IsCA makes a CA certificate (Issue sets it for intermediates you ask for).
	IsCA bool
	// Serial is the serial number; default random.
	Serial *big.Int
}

// Cert is a generated certificate and its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// parent is the issuer, nil for a self-signed certificate; ChainPEM follows it.
	parent *Cert
}

// NewCA returns a self-signed CA certificate.
func NewCA(t testing.TB, o Options) *Cert {
	t.Helper()
	o.IsCA = true
	if o.CommonName == "" {
		o.CommonName = "Test Root CA"
	}
	return create(t, o, nil)
}

// NewSelfSigned returns a self-signed certificate (a leaf unless o.IsCA).
func NewSelfSigned(t testing.TB, o Options) *Cert {
	t.Helper()
	return create(t, o, nil)
}

// Issue returns a certificate signed by c: a leaf, or an intermediate CA when o.IsCA.
func (c *Cert) Issue(t testing.TB, o Options) *Cert {
	t.Helper()
	return create(t, o, c)
}

// NewChain returns a root CA, an intermediate CA signed by it and a leaf signed by the
// intermediate, made with leaf's options (the CAs use ECDSA P-256).
func NewChain(t testing.TB, leaf Options) (root, intermediate, leafCert *Cert) {
	t.Helper()
	root = NewCA(t, Options{})
	intermediate = root.Issue(t, Options{IsCA: true, CommonName: "Test Intermediate CA"})
	return root, intermediate, intermediate.Issue(t, leaf)
}

// Pair returns the PEM of a self-signed leaf made with o and of its PKCS#8 key.
func Pair(t testing.TB, o Options) (certPEM, keyPEM []byte) {
	t.Helper()
	c := NewSelfSigned(t, o)
	return c.CertPEM(), c.KeyPEM()
}

// CertPEM returns the certificate alone, PEM encoded.
func (c *Cert) CertPEM() []byte { return EncodeCert(c.Cert) }

// ChainPEM returns the certificate followed by its issuers up to, not including, the
// self-signed root: what a server presents.
func (c *Cert) ChainPEM() []byte {
	var out []byte
	for cur := c; cur != nil; cur = cur.parent {
		if cur.parent == nil && cur != c {
			break // the root is the peer's trust anchor, not part of the presented chain
		}
		out = append(out, EncodeCert(cur.Cert)...)
	}
	return out
}

// KeyPEM returns the private key as PKCS#8 PEM.
func (c *Cert) KeyPEM() []byte {
	b, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic("materialtest: marshal PKCS#8 key: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: string(PKCS8), Bytes: b})
}

// KeyPEMAs returns the private key in the given encoding.
func (c *Cert) KeyPEMAs(t testing.TB, f KeyFormat) []byte {
	t.Helper()
	return EncodeKey(t, c.Key, f)
}

// Bundle concatenates the PEM of the given certificates, in order.
func Bundle(certs ...*Cert) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.CertPEM()...)
	}
	return out
}

// EncodeCert PEM-encodes a certificate.
func EncodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// EncodeKey PEM-encodes key in format f.
func EncodeKey(t testing.TB, key crypto.Signer, f KeyFormat) []byte {
	t.Helper()
	var (
		der []byte
		err error
	)
	switch f {
	case PKCS1:
		k, ok := key.(*rsa.PrivateKey)
		require.True(t, ok, "PKCS#1 needs an RSA key")
		der = x509.MarshalPKCS1PrivateKey(k)
	case SEC1:
		k, ok := key.(*ecdsa.PrivateKey)
		require.True(t, ok, "SEC1 needs an ECDSA key")
		der, err = x509.MarshalECPrivateKey(k)
	case PKCS8:
		der, err = x509.MarshalPKCS8PrivateKey(key)
	default:
		t.Fatalf("materialtest: unknown key format %q", f)
	}
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: string(f), Bytes: der})
}

// NewKey generates a private key of type k.
func NewKey(t testing.TB, k KeyType) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch k {
	case ECDSAP256, "":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA1024:
		key, err = rsa.GenerateKey(rand.Reader, 1024)
	case RSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("materialtest: unknown key type %q", k)
	}
	require.NoError(t, err)
	return key
}

// WriteFile writes data to dir/name with mode 0600 and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func create(t testing.TB, o Options, parent *Cert) *Cert {
	t.Helper()
	key := NewKey(t, o.Key)
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	if o.CommonName == "" {
		o.CommonName = "test"
	}
	serial := o.Serial
	if serial == nil {
		var err error
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		require.NoError(t, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"LOOPZE Test"}},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPAddresses,
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
	}
	if o.IsCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if _, ok := key.(*rsa.PrivateKey); ok {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	issuerCert, issuerKey := tmpl, key
	if parent != nil {
		issuerCert, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), issuerKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &Cert{Cert: cert, Key: key, parent: parent}
}
